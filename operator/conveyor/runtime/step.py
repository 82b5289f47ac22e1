"""The step runtime: what every step runs, as a local subprocess or as a Job's container.

Fetch inputs (verifying digests), run the component or command, store every declared output
with its digest, and report a small TaskResult. Nothing half-written is ever stored: outputs
are uploaded only after the step succeeded, and a missing output fails the step by name.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from pydantic import ValidationError

from conveyor.api.run import ArtifactRef
from conveyor.core.record import LOG_LIMIT_BYTES, log_document
from conveyor.core.redact import REDACTED, SECRETS_ENV, redact_secrets, secret_values
from conveyor.core.task import TaskInput, TaskResult, TaskSpec, result_document
from conveyor.core.templates import TemplateError, render
from conveyor.storage.digest import sha256_file
from conveyor.storage.store import (
    SIDECAR_SUFFIX,
    ArtifactMissing,
    ArtifactStore,
    DigestMismatch,
    StoredArtifact,
    StoreUnavailable,
)

log = logging.getLogger("conveyor.runtime")

MAX_DOWNLOAD_BYTES = 10 * 1024**3


class StepFailed(Exception):
    """The step cannot complete; the message says why, in terms of the pipeline."""


# The last lines the step printed or logged, for the failure message (Run condition, termination message).
TAIL: deque[str] = deque(maxlen=20)
TAIL_CHARS = 1500


class _TailHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        TAIL.append(self.format(record))


def with_tail(message: str) -> str:
    """A failure message plus the trimmed tail of the step's output; small enough for a termination message."""
    if not TAIL:
        return message
    tail = "\n".join(line[:200] for line in TAIL)[-TAIL_CHARS:]
    return f"{message[:1500]}\n--- last log lines:\n{tail}"


class LogArchive:
    """The last `limit` bytes of everything the step printed, kept to be stored once it ends (the pod's own
    log goes away with the pod). Memory stays bounded however much a step prints."""

    def __init__(self, limit: int = LOG_LIMIT_BYTES) -> None:
        self.limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            self._chunks.append(data)
            self._size += len(data)
            while self._chunks and self._size - len(self._chunks[0]) >= self.limit:
                first = self._chunks.popleft()
                self._size -= len(first)
                self.dropped += len(first)

    def text(self) -> str:
        with self._lock:
            data = b"".join(self._chunks)
            dropped = self.dropped
        if len(data) > self.limit:
            dropped += len(data) - self.limit
            data = data[-self.limit :]
        if not dropped:
            return data.decode(errors="replace")
        head = f"[... {dropped} earlier bytes dropped: the archive keeps the last {self.limit} ...]\n"
        return head + data.decode(errors="replace")


class _TeeBytes(io.RawIOBase):
    def __init__(self, original: Any, archive: LogArchive) -> None:
        self.original, self.archive = original, archive

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raw = bytes(data)
        self.archive.write(raw)
        self.original.write(raw)
        return len(raw)

    def flush(self) -> None:
        self.original.flush()


class _Tee(io.TextIOBase):
    """A text stream writing both to the original stream and into the archive (`.buffer` for bytes)."""

    def __init__(self, original: TextIO, archive: LogArchive) -> None:
        self.original, self.archive = original, archive
        self.buffer = _TeeBytes(original.buffer, archive)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.original.write(text)
        self.archive.write(text.encode(errors="replace"))
        return len(text)

    def flush(self) -> None:
        self.original.flush()

    def isatty(self) -> bool:
        return self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()


def archive_output() -> tuple[LogArchive, Any]:
    """Tee sys.stdout and sys.stderr into a LogArchive; returns it and a function restoring the streams."""
    archive = LogArchive()
    saved = sys.stdout, sys.stderr
    sys.stdout.flush()
    sys.stderr.flush()
    sys.stdout = _Tee(saved[0], archive)
    sys.stderr = _Tee(saved[1], archive)

    def restore() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved

    return archive, restore


SECRET_FILE_BYTES = 64 * 1024
SECRET_FILES_MAX = 256


def _secret_files(paths: list[str]) -> dict[str, str]:
    """The keys of the Secret volumes mounted at `paths` (skipping the `..data` links a Secret volume holds)."""
    files: dict[str, str] = {}
    for root in paths:
        base = Path(root)
        candidates = [base] if base.is_file() else sorted(base.rglob("*"))[:SECRET_FILES_MAX] if base.is_dir() else []
        for path in candidates:
            if path != base and any(part.startswith("..") for part in path.relative_to(base).parts):
                continue
            try:
                if path.is_file() and path.stat().st_size <= SECRET_FILE_BYTES:
                    files[str(path)] = path.read_bytes().decode("utf-8", errors="ignore")
            except OSError:
                continue
    return files


def own_secrets(environ: dict[str, str] | None = None) -> list[str]:
    """The values this step was given from Secrets, as named by the operator in $CONVEYOR_SECRETS (names and paths
    only: the operator never reads a Secret): they must stay out of the Run's status, Events and the console."""
    environ = dict(os.environ) if environ is None else environ
    try:
        sources = json.loads(environ.get(SECRETS_ENV) or "{}")
    except ValueError:
        sources = {}
    if not isinstance(sources, dict):
        sources = {}
    return secret_values(sources, environ, _secret_files([str(p) for p in sources.get("paths") or ()]))


def redacted_result(result: TaskResult, secrets: list[str]) -> TaskResult:
    """The result as the operator may read it: no Secret value nor credential-looking text in its message."""
    if not result.message:
        return result
    return result.model_copy(update={"message": redact_secrets(result.message, secrets)})


def redact_log(text: str, secrets: list[str]) -> str:
    """The archived log (served by the console) without the step's Secret values; exact matches only, since the
    rest is the user's own output. The pod's live log is the container's output as printed, like any program's."""
    for value in secrets:
        text = text.replace(value, REDACTED)
    return text


def store_log(store: ArtifactStore, task: TaskSpec, archive: LogArchive, secrets: list[str] | None = None) -> None:
    """Store the attempt's log; failing to is worth a warning, never a failed step."""
    try:
        text = redact_log(archive.text(), secrets or [])
        store.put_text(log_document(task.run_id, task.key, task.attempt), text)
    except Exception as e:
        log.warning("could not store the log of step %s: %s", task.key, e)


def _terminated(signum: int, frame: FrameType | None) -> None:
    print(f"conveyor-step: terminated by signal {signum}", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)  # unwinds through `finally`, so the log is stored even when killed


def _fetch_external(inp: TaskInput, dest: Path) -> None:
    assert inp.uri is not None
    if inp.uri.startswith("file://"):
        src = Path(urllib.request.url2pathname(inp.uri.removeprefix("file://")))
        if not src.is_file():
            raise StepFailed(f"input {inp.name!r}: {inp.uri} does not exist")
        shutil.copyfile(src, dest)
    elif inp.uri.startswith("https://"):
        with urllib.request.urlopen(inp.uri, timeout=60) as resp, dest.open("wb") as f:  # noqa: S310 - https only
            copied = 0
            while chunk := resp.read(1 << 20):
                copied += len(chunk)
                if copied > MAX_DOWNLOAD_BYTES:
                    raise StepFailed(f"input {inp.name!r}: {inp.uri} is larger than {MAX_DOWNLOAD_BYTES} bytes")
                f.write(chunk)
    else:
        raise StepFailed(f"input {inp.name!r}: {inp.uri.split(':')[0]}:// inputs are not supported yet by the runtime")
    if inp.digest is not None:
        actual = sha256_file(dest)
        if actual != inp.digest:
            raise StepFailed(f"input {inp.name!r}: {inp.uri} has digest {actual}, expected {inp.digest}")


def _fetch_collection(inp: TaskInput, store: ArtifactStore, dest: Path) -> None:
    """A fan-in input: a directory with one file per fanned-out item and items.json listing them in order."""
    dest.mkdir(parents=True, exist_ok=True)
    listing = []
    for i, member in enumerate(inp.items or []):
        store.get_file(member.digest, dest / str(i))
        listing.append({"item": member.item, "path": str(i), "digest": member.digest})
    (dest / "items.json").write_text(json.dumps(listing, indent=1))


def fetch_inputs(task: TaskSpec, store: ArtifactStore, into: Path) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for inp in task.inputs:
        dest = into / inp.name
        try:
            if inp.uri is not None:
                _fetch_external(inp, dest)
            elif inp.collection:
                _fetch_collection(inp, store, dest)
            else:
                assert inp.digest is not None
                store.get_file(inp.digest, dest)
        except (ArtifactMissing, DigestMismatch) as e:
            raise StepFailed(f"input {inp.name!r}: {e}") from None
        except OSError as e:
            raise StepFailed(f"input {inp.name!r}: could not fetch it: {e}") from None
        paths[inp.name] = dest
    return paths


def _run_component(task: TaskSpec, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict[str, float]:
    from conveyor.components.base import ComponentError  # noqa: PLC0415
    from conveyor.components.registry import get_component  # noqa: PLC0415

    assert task.component is not None
    component = get_component(task.component)
    try:
        config = component.config.model_validate(task.config)
    except ValidationError as e:
        problems = "; ".join(f"with.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise StepFailed(f"invalid configuration of component {task.component!r}: {problems}") from None
    try:
        return dict(component.run(config, inputs, outputs))
    except ComponentError as e:
        raise StepFailed(str(e)) from None


def _run_command(task: TaskSpec, workdir: Path, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict[str, float]:
    context = {"inputs": {k: str(v) for k, v in inputs.items()}, "outputs": {k: str(v) for k, v in outputs.items()}}
    try:
        argv = [str(render(a, context)) for a in task.command]
        env_extra = {k: str(render(v, context)) for k, v in task.env.items()}
    except TemplateError as e:
        raise StepFailed(str(e)) from None
    metrics_file = workdir / "metrics.json"
    env = {
        **os.environ,
        **env_extra,
        "CONVEYOR_INPUTS_DIR": str(workdir / "inputs"),
        "CONVEYOR_OUTPUTS_DIR": str(workdir / "outputs"),
        "CONVEYOR_METRICS_FILE": str(metrics_file),
    }
    sys.stdout.flush()
    try:
        proc = subprocess.Popen(
            argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise StepFailed(f"command not found: {argv[0]!r}") from None
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:  # tee: the pod log and the archive get everything, the failure message the tail
            sys.stdout.buffer.write(raw)
            sys.stdout.flush()
            TAIL.append(raw.decode(errors="replace").rstrip("\n"))
    except BaseException:  # terminated: do not leave the command running behind us
        proc.kill()
        proc.wait()
        raise
    code = proc.wait()
    if code != 0:
        raise StepFailed(f"command exited with code {code}")
    if not metrics_file.exists():
        return {}
    try:
        raw = json.loads(metrics_file.read_text())
        return {str(k): float(v) for k, v in raw.items()}
    except (ValueError, TypeError, AttributeError) as e:
        raise StepFailed(f"the metrics file is not a JSON object of numbers: {e}") from None


def store_output(store: ArtifactStore, path: Path) -> StoredArtifact:
    """Store an output, and the sidecar document the step wrote beside it (`<output>.meta.json`, as
    `modelio.save_artifact` does for a model), beside its blob: readers of the metadata need not fetch it."""
    stored = store.put_file(path)
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    if sidecar.is_file():
        document = json.loads(sidecar.read_bytes())
        if not isinstance(document, dict):
            raise ValueError(f"{sidecar.name} holds a JSON {type(document).__name__}")
        store.put_sidecar(stored.digest, document)
    return stored


def execute(task: TaskSpec, store: ArtifactStore, workdir: Path) -> TaskResult:
    """Run one attempt; every expected failure becomes a TaskResult with ok=False and a message."""
    started = time.monotonic()
    in_dir, out_dir = workdir / "inputs", workdir / "outputs"
    in_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {name: out_dir / name for name in task.outputs}
    try:
        inputs = fetch_inputs(task, store, in_dir)
        log.info("fetched %d inputs for step %s", len(inputs), task.step)
        if task.component is not None:
            metrics = _run_component(task, inputs, outputs)
        else:
            metrics = _run_command(task, workdir, inputs, outputs)
        missing = [n for n, p in outputs.items() if not p.is_file()]
        if missing:
            raise StepFailed(f"the step did not write output(s) {', '.join(repr(m) for m in missing)}")
        refs = []
        for name, path in outputs.items():
            try:
                stored = store_output(store, path)
            except StoreUnavailable as e:
                raise StepFailed(f"could not store output {name!r}: {e}") from None
            except ValueError as e:
                raise StepFailed(f"output {name!r} has a sidecar that is not a JSON object: {e}") from None
            refs.append(ArtifactRef(name=name, uri=stored.uri, digest=stored.digest, size=stored.size))
    except StepFailed as e:
        message = with_tail(str(e))
        log.error("step %s failed: %s", task.step, e)
        return TaskResult(ok=False, message=message)
    log.info("step %s succeeded in %.2fs", task.step, time.monotonic() - started)
    return TaskResult(ok=True, outputs=refs, metrics=metrics)


def termination_log_path() -> Path | None:
    """Where Kubernetes reads the termination message (overridable for the test node agent)."""
    explicit = os.environ.get("CONVEYOR_TERMINATION_LOG")
    if explicit:
        return Path(explicit)
    default = Path("/dev/termination-log")
    return default if default.exists() and os.access(default, os.W_OK) else None


def write_result(result: TaskResult, result_file: Path | None) -> None:
    if result.finished_at is None:
        result = result.model_copy(update={"finished_at": datetime.now(UTC)})
    data = result.model_dump_json(exclude_none=True)
    for path in (result_file, termination_log_path()):
        if path is not None:
            path.write_text(data)


def main(argv: list[str] | None = None) -> int:
    """`python -m conveyor.runtime TASK.json [--result FILE] [--workdir DIR]`, or the task in $CONVEYOR_TASK."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="conveyor-step", description=main.__doc__)
    parser.add_argument("task", nargs="?", help="task JSON file (default: $CONVEYOR_TASK holds the JSON)")
    parser.add_argument("--result", type=Path, help="write the TaskResult JSON here")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one)")
    args = parser.parse_args(argv)
    archive, restore = archive_output()
    try:
        return _main(args, parser, archive)
    finally:
        restore()


def _main(args: Any, parser: Any, archive: LogArchive) -> int:
    import tempfile  # noqa: PLC0415

    from conveyor.storage.factory import open_store  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    tail_handler = _TailHandler(logging.WARNING)
    tail_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(tail_handler)

    raw: Any = Path(args.task).read_text() if args.task else os.environ.get("CONVEYOR_TASK")
    if not raw:
        parser.error("no task: give a file or set CONVEYOR_TASK")
    try:
        task = TaskSpec.model_validate_json(raw)
    except ValidationError as e:
        print(f"conveyor-step: invalid task: {e}", file=sys.stderr)
        return 2
    store = open_store(task.store)
    secrets = own_secrets()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    try:
        if args.workdir:
            args.workdir.mkdir(parents=True, exist_ok=True)
            result = execute(task, store, args.workdir)
        else:
            with tempfile.TemporaryDirectory(prefix=f"conveyor-{task.step}-") as tmp:
                result = execute(task, store, Path(tmp))
        result = redacted_result(result, secrets)
        try:
            store.put_document(result_document(task.run_id, task.key, task.attempt), result.model_dump(mode="json"))
        except Exception as e:
            log.warning("could not store the result record: %s", e)
        write_result(result, args.result)
    finally:
        store_log(store, task, archive, secrets)
    return 0 if result.ok else 1
