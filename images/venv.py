"""Builder-stage helper of images/Dockerfile: what to pip install into /opt/conveyor, and what to strip after.

    python3 venv.py requirements EXTRA   the requirements of the core plus one extra of pyproject.toml
    python3 venv.py build-requirements   pyproject.toml's [build-system] requires
    python3 venv.py strip VENV           remove what no image runs: pip and build tools, packages' own tests,
                                         C headers and Cython sources, subsystems no image uses, duplicate
                                         shared-library copies; strip shared libraries' symbol tables

Runs with the base image's Python (3.11: tomllib) and the standard library only.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import Distribution, distributions
from pathlib import Path

PYPROJECT = Path("/src/pyproject.toml")
# Directories that hold a package's own test suite. Only these names: `testing` modules (numpy.testing,
# pandas._testing, sklearn.utils._testing) are imported at run time and stay.
TEST_DIRS = {"tests", "test"}
# Build inputs that wheels ship and nothing imports: C/C++ headers and sources, Cython sources and declarations.
BUILD_SUFFIXES = {".h", ".hpp", ".c", ".cc", ".cpp", ".pyx", ".pxd", ".pxi", ".a"}
# Shipped as data of a package, never loaded by one.
DROP_DIRS = {"include"}
TOOLS = ("pip", "setuptools", "wheel")
# Parts of dependencies that no image imports (each image's tests run what it does use):
UNUSED = (
    # test suites not named tests/: onnx's backend conformance data (~17 MB), pyarrow's C++ test module
    "onnx/backend/test",
    "pyarrow/_pyarrow_cpp_tests*.so",
    # kubernetes' asyncio client (~68 MB): the operator uses the synchronous one and kopf its own
    "kubernetes/aio",
    # Arrow Flight RPC and Arrow's own S3 filesystem (~50 MB): the components read and write local
    # Parquet files and reach S3 through boto3; `import pyarrow.flight` fails, pyarrow.fs lists S3 as absent
    "pyarrow/flight.py",
    "pyarrow/_flight.*.so",
    "pyarrow/libarrow_flight.so*",
    "pyarrow/libarrow_python_flight.so*",
    "pyarrow/_s3fs.*.so",
    "pyarrow/libarrow_s3.so*",
)
# botocore's API models of every AWS service (~27 MB): the images call S3 alone; botocore's credential
# providers call STS (web identity, assume-role), SSO, SSO-OIDC and sign-in.
BOTOCORE_SERVICES = {"s3", "sts", "sso", "sso-oidc", "signin"}
_SELF = re.compile(r"^conveyor\s*\[([^\]]+)\]\s*$")


def _project() -> dict[str, object]:
    with PYPROJECT.open("rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def requirements(extra: str) -> list[str]:
    project = _project()
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})  # type: ignore[assignment]
    if extra not in extras:
        raise SystemExit(f"venv.py: pyproject.toml has no extra {extra!r} (has: {', '.join(sorted(extras))})")
    out: list[str] = list(project.get("dependencies", []))  # type: ignore[call-overload]
    pending, seen = [extra], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for req in extras[name]:
            self_ref = _SELF.match(req)
            if self_ref:  # conveyor[a,b]: the extras of this very project
                pending.extend(x.strip() for x in self_ref.group(1).split(","))
            elif req not in out:
                out.append(req)
    return out


def build_requirements() -> list[str]:
    with PYPROJECT.open("rb") as f:
        return list(tomllib.load(f)["build-system"]["requires"])


def _required_names(dists: list[Distribution]) -> set[str]:
    names = set()
    for dist in dists:
        for req in dist.requires or []:
            if "extra ==" not in req:
                names.add(re.split(r"[\s\[<>=!~;(]", req, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def _remove(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        size = path.lstat().st_size
        path.unlink()
        return size
    size = sum(p.lstat().st_size for p in path.rglob("*") if not p.is_symlink() and p.is_file())
    shutil.rmtree(path)
    return size


def _tool_paths(site: Path, venv: Path, dists: list[Distribution]) -> list[Path]:
    """pip, and setuptools and wheel unless an installed distribution needs them at run time."""
    needed = _required_names([d for d in dists if (d.metadata["Name"] or "").lower() not in TOOLS])
    paths: list[Path] = []
    for dist in dists:
        name = (dist.metadata["Name"] or "").lower()
        if name in TOOLS and name not in needed:
            # Whole top-level entries (pip/, _distutils_hack/, distutils-precedence.pth): RECORD does not list
            # the byte-code pip compiled, so removing only the listed files would leave directories behind.
            files = [f for f in dist.files or [] if f.parts[0] != ".."]
            paths.extend(site / top for top in {f.parts[0] for f in files})
            paths.extend(site / str(f) for f in dist.files or [] if f.parts[0] == "..")  # its scripts
    paths.extend(venv.glob("bin/pip*"))
    return paths


def strip(venv: Path) -> None:
    site = next(venv.glob("lib/python3.*/site-packages"))
    dists = list(distributions(path=[str(site)]))
    freed = 0
    for path in _tool_paths(site, venv, dists):
        if path.exists() or path.is_symlink():
            freed += _remove(path)
    for pattern in UNUSED:
        for path in site.glob(pattern):
            freed += _remove(path)
    for service in (site / "botocore" / "data").glob("*/"):
        if service.name not in BOTOCORE_SERVICES:
            freed += _remove(service)
    for path in sorted(site.rglob("*"), key=lambda p: len(p.parts)):
        if not (path.exists() or path.is_symlink()) or path.is_symlink():
            continue
        rel = path.relative_to(site)
        top = rel.parts[0]
        if top.endswith((".dist-info", ".data")):
            continue  # metadata and licences stay
        test_or_headers = path.is_dir() and len(rel.parts) > 1 and path.name in TEST_DIRS | DROP_DIRS
        if test_or_headers or (path.is_file() and path.suffix in BUILD_SUFFIXES):
            freed += _remove(path)
    freed += _dedupe_shared_libraries(site)
    freed += _strip_symbols(site)
    for cache in site.rglob("__pycache__"):
        if not any(cache.iterdir()):
            cache.rmdir()
    print(f"venv.py: stripped {freed / 1e6:.0f} MB from {venv}")


def _dedupe_shared_libraries(site: Path) -> int:
    """Wheels cannot hold symlinks, so libfoo.so, libfoo.so.1 and libfoo.so.1.2 arrive as three copies:
    keep the longest name and link the others to it."""
    freed = 0
    for folder in {p.parent for p in site.rglob("*.so*") if p.is_file() and not p.is_symlink()}:
        by_digest: dict[tuple[int, str], list[Path]] = {}
        for lib in folder.glob("lib*.so*"):
            if lib.is_file() and not lib.is_symlink():
                digest = hashlib.sha256(lib.read_bytes()).hexdigest()
                by_digest.setdefault((lib.stat().st_size, digest), []).append(lib)
        for copies in by_digest.values():
            if len(copies) < 2:
                continue
            keep = max(copies, key=lambda p: len(p.name))
            for copy in copies:
                if copy != keep:
                    freed += copy.stat().st_size
                    copy.unlink()
                    copy.symlink_to(keep.name)
    return freed


def _loads(lib: Path) -> bool:
    """The dynamic loader accepts the file (in a child process: a broken library may crash its loader)."""
    probe = "import ctypes, sys; ctypes.CDLL(sys.argv[1])"
    return subprocess.run([sys.executable, "-c", probe, str(lib)], capture_output=True, check=False).returncode == 0


def _strip_symbols(site: Path) -> int:
    """What Debian's packaging does to shared libraries: drop the symbol table and debug sections (the
    dynamic symbols that linking and loading use stay); wheels often ship them. Some wheels' libraries were
    rewritten by patchelf (auditwheel), and binutils' strip can leave those unloadable ("ELF load command
    address/offset not page-aligned"): a stripped copy replaces its original only once the loader has
    accepted it on its own (a library that cannot be loaded alone keeps its symbols)."""
    strip_tool = shutil.which("strip")
    if strip_tool is None:
        print("venv.py: no `strip` (binutils) in the builder; shared libraries keep their symbol tables")
        return 0
    freed = 0
    for lib in site.rglob("*.so*"):
        if lib.is_symlink() or not lib.is_file():
            continue
        with lib.open("rb") as f:
            if f.read(4) != b"\x7fELF":
                continue
        # Beside the original, so that $ORIGIN in its run path finds the same neighbours.
        copy = lib.with_name(f".{lib.name}.stripped")
        sections = ["--strip-unneeded", "--remove-section=.comment", "--remove-section=.note"]
        subprocess.run([strip_tool, *sections, "-o", str(copy), str(lib)], check=True)
        saved = lib.stat().st_size - copy.stat().st_size
        if saved < 64 << 10 or not _loads(copy):
            copy.unlink()
            continue
        shutil.copymode(lib, copy)
        copy.replace(lib)
        freed += saved
    return freed


def main(argv: list[str]) -> None:
    match argv:
        case ["requirements", extra]:
            print("\n".join(requirements(extra)))
        case ["build-requirements"]:
            print("\n".join(build_requirements()))
        case ["strip", venv]:
            strip(Path(venv))
        case _:
            raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
