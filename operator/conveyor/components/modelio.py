"""Saving and loading fitted scikit-learn objects as safe, self-describing artifacts.

Artifact format (`conveyor.model/v1`): one uncompressed zip file holding exactly two entries,
written in this order with a fixed timestamp:

- `meta.json`: an `ArtifactMetadata` document (kind, estimator path, task, label, class
  labels, input signature, for models the training data's profile per input feature, library
  versions, and the reviewed list of trusted types);
- `model.skops`: the object persisted with `skops.io` (never pickle).

One file keeps one digest per model, so the store, the run status and the server agree on
what "this model" is; the metadata can be read without loading the model. The same `meta.json` bytes
are also written beside the artifact as its sidecar (`<artifact>.meta.json`), which the step runtime
stores beside the blob, so a reader (the ModelDeployment controller) gets the metadata without
fetching a model of up to 2 GiB.

Loading never trusts blindly: the types skops cannot vouch for are listed with
`skops.io.get_untrusted_types` and each must pass our allow-list (scikit-learn, numpy and
scipy, minus modules that read/write files or exist for testing) and must also be one the
artifact declared when it was saved. Anything else is refused with an error naming the type.
Saving applies the same check, so an artifact we could not load is never written.
Digests of artifacts are `conveyor.storage.digest.sha256_file`'s business, not this module's.

The same fitted object gives the same bytes in any process (with the same library versions, which
the metadata records), so a retrained model with identical params and data has the same digest
and content-addressed caching holds. skops alone does not
give that: it names the arrays in its zip after `id()` of the objects, records those ids as
`__id__` in `schema.json`, and names bytes entries with random UUIDs. `canonical_skops` rewrites
its output: ids renumbered in document order, entries renamed after their first reference and
written in that order with a fixed timestamp. scikit-learn's own process-local caches
(`_PROCESS_LOCAL_ATTRIBUTES`) are dropped from the state, as they are meaningless after loading.

Importing this module is cheap (skops, scikit-learn and numpy load when a model is saved or loaded),
so metadata can be read and the component contracts imported without the ML stack.
"""

from __future__ import annotations

import io
import json
import platform
import zipfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from conveyor.components.atomic import atomic_output
from conveyor.components.base import ComponentError
from conveyor.storage.store import SIDECAR_SUFFIX

OUTPUT_PREDICT = "predict"
OUTPUT_PROBA = "predict_proba"
"""A model's outputs, one vocabulary everywhere: the model server's Open Inference Protocol output names
(which clients key on), the artifact metadata's `outputs` and batch-predict's columns (`predict`,
`predict_proba_<class>`). scikit-learn's method names, as MLServer's scikit-learn runtime names them too."""

ARTIFACT_FORMAT = "conveyor.model/v1"
META_ENTRY = "meta.json"
MODEL_ENTRY = "model.skops"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_SKOPS_SCHEMA = "schema.json"

# (module of a class, attribute): state scikit-learn keeps only for the life of a process. The
# vectorizers store `id(self.stop_words)` to skip re-checking stop words; after a load it names
# nothing, and an attribute that is absent only means the check runs once more.
_PROCESS_LOCAL_ATTRIBUTES: frozenset[tuple[str, str]] = frozenset(
    {("sklearn.feature_extraction.text", "_stop_words_id")}
)

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


PROFILE_QUANTILES: tuple[tuple[str, float], ...] = (
    ("p01", 0.01),
    ("p05", 0.05),
    ("p10", 0.10),
    ("p25", 0.25),
    ("p50", 0.50),
    ("p75", 0.75),
    ("p90", 0.90),
    ("p95", 0.95),
    ("p99", 0.99),
)
"""The quantiles a numeric `FeatureProfile` records, by key and probability: consecutive ones bound
bins of known training mass (1 %, 4 %, 5 %, 15 %, 25 %, ...), which is what a binned drift score
(PSI and the like) compares live traffic against."""
PROFILE_TOP_CATEGORIES = 50
"""At most this many categories are listed per categorical or text feature (the most frequent)."""


class CategoryCount(BaseModel):
    """One category of a categorical or text feature and how often the training data held it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: Scalar
    """The value as the training data held it (a string, number or boolean)."""
    count: int
    frequency: float
    """`count` over the feature's present (non-missing) values."""


class FeatureProfile(BaseModel):
    """A summary of one input feature of the training data, taken before preprocessing.

    It is the reference live inputs are compared with to detect drift. `count` is the number of
    present values and `missing` the number of missing ones (None, NaN, and for numeric features
    also ±inf, which no model can use), so `count + missing` is the number of training rows.

    A `numeric` feature (any numeric dtype but boolean) records `mean`, `std` (the population
    standard deviation, ddof=0, as numpy computes it and as a streaming server can update it),
    `min`, `max` and the `PROFILE_QUANTILES` (numpy's default linear interpolation). A `categorical`
    feature (strings, categories, booleans) or a `text` feature (a column the transformer vectorizes
    with TF-IDF) records its number of `distinct` values and the `top` most frequent ones, at most
    `PROFILE_TOP_CATEGORIES`, most frequent first, ties in the order of the values' text. Floats are
    rounded to 12 significant digits, so that a last-bit difference in a sum does not change the
    artifact's bytes; statistics a feature with no present value cannot have are None (empty `top`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["numeric", "categorical", "text"]
    count: int
    missing: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    quantiles: dict[str, float] = {}
    """Numeric features: the value at each of `PROFILE_QUANTILES`, keyed `p01` ... `p99`."""
    distinct: int | None = None
    """Categorical and text features: the number of distinct present values."""
    top: list[CategoryCount] = []
    """Categorical and text features: the most frequent values."""


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
    """Names of the transformed features (transformers), or of the model's outputs (OUTPUT_PREDICT, and
    OUTPUT_PROBA for a classifier with probabilities; older artifacts say `prediction`)."""
    params: dict[str, Any] = {}
    fit_warnings: list[str] = []
    """Warnings raised while fitting (e.g. non-convergence), kept with the model they describe."""
    profile: list[FeatureProfile] | None = None
    """Models: the training data's profile, one entry per feature of `inputs`, in the same order (the
    reference for drift monitoring). None for transformers and for models saved before it existed."""
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
    import numpy as np  # noqa: PLC0415  # the ML stack loads when a model is saved, not on import
    import sklearn  # noqa: PLC0415
    import skops  # noqa: PLC0415

    return {
        "sklearn_version": sklearn.__version__,
        "skops_version": skops.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
    }


def _zip_entry(name: str, compress_type: int) -> zipfile.ZipInfo:
    """An entry header that depends on nothing but the name: fixed time, mode and creator system."""
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.compress_type = compress_type
    info.create_system = 3  # Unix, whatever the writing platform, so that the mode below means the same
    info.external_attr = 0o644 << 16
    return info


def _drop_process_local_state(node: dict[str, Any]) -> None:
    """Remove `_PROCESS_LOCAL_ATTRIBUTES` from an object node's state (a dict node of attributes)."""
    state = node.get("content")
    if node.get("__loader__") != "ObjectNode" or not isinstance(state, dict):
        return
    attributes = state.get("content")
    if not isinstance(attributes, dict):
        return
    for module, attribute in _PROCESS_LOCAL_ATTRIBUTES:
        if node.get("__module__") == module:
            attributes.pop(attribute, None)


def canonical_skops(data: bytes) -> bytes:
    """Rewrite a `skops.io` zip so that its bytes depend only on the object saved, not on the process.

    Walking `schema.json` in document order, every `__id__` becomes 1, 2, ... by first appearance
    (several nodes sharing an id, i.e. one object, keep sharing the new one; 0 is avoided because
    skops ignores a false id) and every entry a node names in `file` becomes `<n><suffix>` by first
    reference. The entries are written schema first, then in that order, with `_zip_entry` headers.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        entries = {info.filename: source.read(info) for info in source.infolist()}
    schema = json.loads(entries.pop(_SKOPS_SCHEMA))
    ids: dict[int, int] = {}
    renamed: dict[str, str] = {}

    def visit(value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                visit(item)
            return
        if not isinstance(value, dict):
            return
        if "__loader__" in value:
            _drop_process_local_state(value)
            saved_id = value.get("__id__")
            if isinstance(saved_id, int):
                value["__id__"] = ids.setdefault(saved_id, len(ids) + 1)
            name = value.get("file")
            if isinstance(name, str) and name in entries:
                value["file"] = renamed.setdefault(name, f"{len(renamed) + 1}{Path(name).suffix}")
        for child in value.values():
            visit(child)

    visit(schema)
    unreferenced = sorted(set(entries) - set(renamed))
    if unreferenced:
        # A skops format this rewrite does not know; writing the entries under their old names would
        # keep process-dependent bytes, and dropping them would break the model.
        raise RuntimeError(f"skops archive holds entries no node references: {unreferenced[:5]!r}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        # skops writes its schema with indent=2 and keys in state order, which loading depends on.
        archive.writestr(_zip_entry(_SKOPS_SCHEMA, zipfile.ZIP_DEFLATED), json.dumps(schema, indent=2))
        for old, new in renamed.items():
            archive.writestr(_zip_entry(new, zipfile.ZIP_DEFLATED), entries[old])
    return buffer.getvalue()


def save_artifact(obj: object, path: Path, metadata: ArtifactMetadata) -> ArtifactMetadata:
    """Persist `obj` with skops plus its metadata as one zip, atomically; return the metadata written.

    The trusted-type list and library versions are filled in here, from the bytes actually written;
    those bytes are `canonical_skops`'s, so the same fitted object always gives the same artifact.
    """
    import skops.io as sio  # noqa: PLC0415  # the ML stack loads when a model is saved, not on import

    model_bytes = canonical_skops(sio.dumps(obj))
    untrusted = sorted(sio.get_untrusted_types(data=model_bytes))
    _check_trust(untrusted)
    final = metadata.model_copy(update={"trusted_types": untrusted, **library_versions()})
    meta_bytes = (final.model_dump_json(indent=2) + "\n").encode()
    with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for name, data in ((META_ENTRY, meta_bytes), (MODEL_ENTRY, model_bytes)):
            archive.writestr(_zip_entry(name, zipfile.ZIP_STORED), data)
    with atomic_output(sidecar_path(path)) as tmp:
        tmp.write_bytes(meta_bytes)
    return final


def sidecar_path(path: Path) -> Path:
    """Where `save_artifact` puts the artifact's metadata document beside it."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


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
    import skops.io as sio  # noqa: PLC0415  # the ML stack loads when a model is loaded, not on import

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
