"""The served model: fetched, digest-verified, loaded with skops, and fed pandas frames of decoded rows.

The artifact is fetched into the work dir and its sha256 checked against the digest the server was
started with *before* a byte of it is deserialized; `conveyor.components.modelio.load_artifact` then
refuses any type outside the allow-list. The model is the fitted `Pipeline` the train component
saved (a `ColumnTransformer` in front), so it takes a DataFrame with the signature's columns: built
from one float64 block when every feature is numeric, which costs a few microseconds per batch.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from conveyor.components.base import ComponentError
from conveyor.components.modelio import OUTPUT_PREDICT, OUTPUT_PROBA, ArtifactMetadata, load_artifact
from conveyor.serving.codec import Rows, Signature, datatype_of
from conveyor.serving.fastpath import FastModel, compile_fast_path
from conveyor.storage.digest import hex_of, sha256_file
from conveyor.storage.store import ArtifactMissing, StoreUnavailable


class ModelLoadError(Exception):
    """Why the model cannot be served; the server reports this message on its readiness endpoints."""


@dataclass(frozen=True)
class ModelSource:
    uri: str
    digest: str
    s3_endpoint: str | None = None


def _file_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise ModelLoadError(f"file URI with a host is not supported: {uri!r}")
    return Path(unquote(parsed.path))


def fetch_artifact(
    source: ModelSource, work_dir: Path, *, attempts: int = 4, sleep: Callable[[float], None] = time.sleep
) -> Path:
    """Copy the artifact into `work_dir` and verify its digest; ModelLoadError says why not.

    A store that cannot be reached is retried (it may be starting along with us); a missing object or
    a wrong digest is final.
    """
    try:
        expected_hex = hex_of(source.digest)
    except ValueError as exc:
        raise ModelLoadError(f"invalid model digest: {exc}") from None
    dest = work_dir / f"model-{expected_hex[:16]}.zip"
    scheme = source.uri.partition("://")[0]
    for attempt in range(1, attempts + 1):
        try:
            if scheme == "s3":
                from conveyor.storage.s3 import download_object  # noqa: PLC0415  # boto3 only for s3:// models

                download_object(source.uri, dest, endpoint=source.s3_endpoint)
            elif scheme == "file":
                src = _file_path(source.uri)
                if not src.is_file():
                    raise ModelLoadError(f"no model artifact at {source.uri}")
                shutil.copyfile(src, dest)
            else:
                raise ModelLoadError(f"unsupported model URI {source.uri!r} (s3://bucket/key or file:///path)")
            break
        except ArtifactMissing as exc:
            raise ModelLoadError(f"model artifact not found: {exc}") from None
        except StoreUnavailable as exc:
            if attempt == attempts:
                raise ModelLoadError(f"could not fetch the model: {exc}") from None
            sleep(min(2.0**attempt, 10.0))
        except ValueError as exc:
            raise ModelLoadError(f"could not fetch the model: {exc}") from None
        except OSError as exc:
            raise ModelLoadError(f"could not fetch the model: {type(exc).__name__}: {exc}") from None
    actual = sha256_file(dest)
    if actual != f"sha256:{expected_hex}":
        dest.unlink(missing_ok=True)
        raise ModelLoadError(f"model digest mismatch: expected sha256:{expected_hex}, got {actual}")
    return dest


def _is_numeric(dtype: str) -> bool:
    import pandas as pd  # type: ignore[import-untyped]  # noqa: PLC0415

    try:
        resolved = pd.api.types.pandas_dtype(dtype)
    except TypeError:
        return False
    return bool(pd.api.types.is_numeric_dtype(resolved) and not pd.api.types.is_bool_dtype(resolved))


@dataclass(frozen=True)
class Prediction:
    """One request's slice of a batch: `predict` always, `proba` when asked for."""

    predict: np.ndarray[Any, Any]
    proba: np.ndarray[Any, Any] | None


class ServedModel:
    """A loaded model with its metadata, name and version: turns rows into predictions."""

    def __init__(self, name: str, version: str, digest: str, obj: Any, metadata: ArtifactMetadata) -> None:
        import pandas as pd  # noqa: PLC0415

        self._pd = pd
        self.name = name
        self.version = version
        self.digest = digest
        self.pipeline = obj
        self.metadata = metadata
        self.signature = Signature([f.name for f in metadata.inputs], [_is_numeric(f.dtype) for f in metadata.inputs])
        self.task = metadata.task or ("classification" if hasattr(obj, "classes_") else "regression")
        self.classes: list[Any] = list(metadata.classes or [])
        self.has_proba = self.task == "classification" and hasattr(obj, "predict_proba")
        self.fast: FastModel | None = None
        self.fast_path = "not tried"

    def enable_fast_path(self, tree_threads: int = 1) -> str:
        """Serve all-numeric batches through the numpy fast path if it is proven equal (see `fastpath`)."""
        if not self.signature.all_numeric:
            self.fast_path = "not compiled: non-numeric features"
        else:
            self.fast, self.fast_path = compile_fast_path(
                self.pipeline, self.signature.names, tree_threads=tree_threads
            )
        return self.fast_path

    @classmethod
    def load(
        cls,
        name: str,
        version: str,
        source: ModelSource,
        work_dir: Path,
        *,
        fast_path: bool = True,
        tree_threads: int = 1,
    ) -> ServedModel:
        path = fetch_artifact(source, work_dir)
        try:
            loaded = load_artifact(path, kind="model")
        except ComponentError as exc:  # UntrustedTypeError is one
            raise ModelLoadError(str(exc)) from None
        except Exception as exc:  # a corrupt payload surfaces as assorted types
            raise ModelLoadError(f"could not load the model: {type(exc).__name__}: {exc}") from None
        finally:
            path.unlink(missing_ok=True)
        model = cls(name, version, source.digest, loaded.obj, loaded.metadata)
        if not model.signature.names:
            raise ModelLoadError("the model artifact declares no inputs")
        if fast_path:
            model.enable_fast_path(tree_threads)
        return model

    def frame(self, rows: Rows) -> Any:
        """The model's input: a DataFrame with the signature's columns, in order."""
        names = self.signature.names
        if rows.matrix is not None:
            return self._pd.DataFrame(rows.matrix, columns=names, copy=False)
        return self._pd.DataFrame(dict(zip(names, rows.columns, strict=True)), copy=False)

    def predict(self, rows: Rows, proba: bool) -> Prediction:
        if self.fast is not None and rows.matrix is not None:
            return Prediction(*self.fast.predict(rows.matrix, proba))
        frame = self.frame(rows)
        predicted = np.asarray(self.pipeline.predict(frame))
        probabilities = np.asarray(self.pipeline.predict_proba(frame), dtype=np.float64) if proba else None
        return Prediction(predicted, probabilities)

    def output_metadata(self) -> list[dict[str, Any]]:
        if self.task == "classification":
            sample = np.asarray(self.classes) if self.classes else np.asarray([0])
            outputs = [{"name": OUTPUT_PREDICT, "datatype": datatype_of(sample), "shape": [-1]}]
            if self.has_proba:
                outputs.append({"name": OUTPUT_PROBA, "datatype": "FP64", "shape": [-1, len(self.classes)]})
            return outputs
        return [{"name": OUTPUT_PREDICT, "datatype": "FP64", "shape": [-1]}]

    def metadata_document(self) -> dict[str, Any]:
        """The protocol's model metadata, with the task, classes and digest as parameters."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "sklearn",
            "inputs": [
                {"name": n, "datatype": "FP64" if numeric else "BYTES", "shape": [-1]}
                for n, numeric in zip(self.signature.names, self.signature.numeric, strict=True)
            ],
            "outputs": self.output_metadata(),
            "parameters": {
                "task": self.task,
                "classes": self.classes,
                "label": self.metadata.label,
                "estimator": self.metadata.estimator,
                "digest": self.digest,
                "fast_path": self.fast is not None,
            },
        }


def prepare_model_thread(threads: int = 1) -> None:
    """Run once on the model's worker thread: native thread pools capped, parameter checks off.

    With two cores the event loop needs one; BLAS or OpenMP spreading a small batch over both only
    adds contention. Parameter validation re-checks constructor arguments on every call, which the
    fit already did (`skip_parameter_validation` is thread-local, hence set on this thread).
    """
    import sklearn  # noqa: PLC0415
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # noqa: PLC0415

    threadpool_limits(limits=threads)
    sklearn.set_config(skip_parameter_validation=True)


def concat_rows(parts: Sequence[Rows]) -> Rows:
    """Rows of several requests as one batch, in order."""
    if len(parts) == 1:
        return parts[0]
    count = sum(p.count for p in parts)
    if all(p.matrix is not None for p in parts):
        matrix = np.concatenate([p.matrix for p in parts if p.matrix is not None])
        return Rows(count, list(matrix.T), matrix)
    columns = [np.concatenate(cols) for cols in zip(*(p.columns for p in parts), strict=True)]
    return Rows(count, columns, None)
