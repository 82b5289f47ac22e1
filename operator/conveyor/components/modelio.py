"""Saving and loading fitted scikit-learn objects as safe, self-describing artifacts.

Artifact format (`conveyor.model/v1`): one uncompressed zip file holding exactly two entries,
written in this order with a fixed timestamp:

- `meta.json`: an `ArtifactMetadata` document (kind, estimator path, task, label, class
  labels, input signature, library versions, and the reviewed list of trusted types);
- `model.skops`: the object persisted with `skops.io` (never pickle).

One file keeps one digest per model, so the store, the run status and the server agree on
what "this model" is; the metadata can be read without loading the model.

Loading never trusts blindly: the types skops cannot vouch for are listed with
`skops.io.get_untrusted_types` and each must pass our allow-list (scikit-learn, numpy and
scipy, minus modules that read/write files or exist for testing) and must also be one the
artifact declared when it was saved. Anything else is refused with an error naming the type.
Saving applies the same check, so an artifact we could not load is never written.
Digests of artifacts are `conveyor.storage.digest.sha256_file`'s business, not this module's.
"""

from __future__ import annotations

import io
import platform
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import sklearn
import skops
import skops.io as sio
from pydantic import BaseModel, ConfigDict, ValidationError

from conveyor.components.atomic import atomic_output
from conveyor.components.base import ComponentError

ARTIFACT_FORMAT = "conveyor.model/v1"
META_ENTRY = "meta.json"
MODEL_ENTRY = "model.skops"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

# Module roots whose types we accept from an artifact when skops does not trust them by default.
TRUSTED_ROOTS: tuple[str, ...] = ("sklearn", "numpy", "scipy")
# Inside those roots, names that touch files, compile code or exist for tests: never trusted.
DENIED_NAMES: tuple[str, ...] = (
    "numpy.load",
    "numpy.loadtxt",
    "numpy.genfromtxt",
    "numpy.fromfile",
    "numpy.fromregex",
    "numpy.memmap",
    "numpy.save",
    "numpy.savez",
    "numpy.savez_compressed",
    "numpy.savetxt",
    "numpy.lib.npyio",
    "numpy.lib.format",
    "numpy.ctypeslib",
    "numpy.f2py",
    "numpy.distutils",
    "numpy.testing",
    "scipy.io",
    "scipy.datasets",
    "scipy.weave",
    "sklearn.datasets",
    "sklearn.externals",
    "sklearn.utils._testing",
)

Scalar = str | int | float | bool


class UntrustedTypeError(ComponentError):
    """An artifact holds a type outside our allow-list: it is refused, never loaded."""

    def __init__(self, types: list[str]) -> None:
        self.types = types
        super().__init__(
            "refused to load model artifact: untrusted type(s) "
            + ", ".join(types)
            + f" (allowed: {', '.join(r + '.*' for r in TRUSTED_ROOTS)}, except file and test helpers)"
        )


class FeatureSpec(BaseModel):
    """One input column of a model: its name and the pandas dtype it was trained on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dtype: str


class ArtifactMetadata(BaseModel):
    """What a server or a later step needs to know about an artifact without unpickling anything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["conveyor.model/v1"] = "conveyor.model/v1"
    kind: Literal["model", "transformer"]
    estimator: str
    """Import path of the fitted estimator's class (for a model: the final pipeline step)."""
    task: Literal["classification", "regression"] | None = None
    label: str | None = None
    classes: list[Scalar] | None = None
    inputs: list[FeatureSpec]
    """The input signature: the columns the object was fitted on, in order."""
    outputs: list[str] = []
    """Names of the transformed features (transformers), or of the prediction (models)."""
    params: dict[str, Any] = {}
    fit_warnings: list[str] = []
    """Warnings raised while fitting (e.g. non-convergence), kept with the model they describe."""
    sklearn_version: str = ""
    skops_version: str = ""
    numpy_version: str = ""
    python_version: str = ""
    trusted_types: list[str] = []


class LoadedArtifact(BaseModel):
    """A loaded artifact: the fitted object and its metadata."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    obj: Any
    metadata: ArtifactMetadata


def class_path(obj: object) -> str:
    """The import path of an object's class, as recorded in metadata."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def is_trusted_type(name: str) -> bool:
    """Whether a type name reported by skops passes our allow-list."""
    root = name.split(".", 1)[0]
    if root not in TRUSTED_ROOTS:
        return False
    return not any(name == d or name.startswith(d + ".") for d in DENIED_NAMES)


def _check_trust(untrusted: list[str]) -> None:
    refused = sorted(t for t in untrusted if not is_trusted_type(t))
    if refused:
        raise UntrustedTypeError(refused)


def library_versions() -> dict[str, str]:
    """The versions a fitted object depends on: scikit-learn does not promise cross-version loading."""
    return {
        "sklearn_version": sklearn.__version__,
        "skops_version": skops.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
    }


def save_artifact(obj: object, path: Path, metadata: ArtifactMetadata) -> ArtifactMetadata:
    """Persist `obj` with skops plus its metadata as one zip, atomically; return the metadata written.

    The trusted-type list and library versions are filled in here, from the bytes actually written.
    """
    buffer = io.BytesIO()
    sio.dump(obj, buffer, compression=zipfile.ZIP_DEFLATED)
    model_bytes = buffer.getvalue()
    untrusted = sorted(sio.get_untrusted_types(data=model_bytes))
    _check_trust(untrusted)
    final = metadata.model_copy(update={"trusted_types": untrusted, **library_versions()})
    meta_bytes = (final.model_dump_json(indent=2) + "\n").encode()
    with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in ((META_ENTRY, meta_bytes), (MODEL_ENTRY, model_bytes)):
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return final


def _open(path: Path) -> tuple[ArtifactMetadata, bytes]:
    if not path.is_file():
        raise ComponentError(f"no model artifact at {path.name!r}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if names != [META_ENTRY, MODEL_ENTRY]:
                raise ComponentError(
                    f"{path.name!r} is not a {ARTIFACT_FORMAT} artifact: entries {names!r}, "
                    f"expected {[META_ENTRY, MODEL_ENTRY]!r}"
                )
            meta_bytes = archive.read(META_ENTRY)
            model_bytes = archive.read(MODEL_ENTRY)
    except zipfile.BadZipFile as exc:
        raise ComponentError(f"{path.name!r} is not a {ARTIFACT_FORMAT} artifact: {exc}") from exc
    try:
        metadata = ArtifactMetadata.model_validate_json(meta_bytes)
    except ValidationError as exc:
        raise ComponentError(f"{path.name!r}: invalid {META_ENTRY}: {exc}") from exc
    return metadata, model_bytes


def read_metadata(path: Path) -> ArtifactMetadata:
    """Read an artifact's metadata without deserializing the model."""
    return _open(path)[0]


def load_artifact(path: Path, kind: Literal["model", "transformer"] | None = None) -> LoadedArtifact:
    """Load an artifact, refusing any type outside the allow-list or not declared at save time."""
    metadata, model_bytes = _open(path)
    if kind is not None and metadata.kind != kind:
        raise ComponentError(f"{path.name!r} holds a {metadata.kind}, expected a {kind}")
    untrusted = sorted(sio.get_untrusted_types(data=model_bytes))
    _check_trust(untrusted)
    undeclared = sorted(set(untrusted) - set(metadata.trusted_types))
    if undeclared:
        raise UntrustedTypeError(undeclared)
    try:
        obj = sio.loads(model_bytes, trusted=untrusted)
    except Exception as exc:  # skops raises assorted types for corrupt payloads
        raise ComponentError(f"{path.name!r}: could not load {MODEL_ENTRY}: {exc}") from exc
    return LoadedArtifact(obj=obj, metadata=metadata)
