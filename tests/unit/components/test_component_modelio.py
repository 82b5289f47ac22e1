"""Model artifacts: skops round trip, metadata, and refusal of untrusted types."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from conveyor.components.base import ComponentError
from conveyor.components.modelio import (
    ArtifactMetadata,
    FeatureSpec,
    UntrustedTypeError,
    is_trusted_type,
    load_artifact,
    read_metadata,
    save_artifact,
)


def _double(x: Any) -> Any:
    return x * 2


def _metadata() -> ArtifactMetadata:
    return ArtifactMetadata(
        kind="model",
        estimator="sklearn.ensemble.RandomForestClassifier",
        task="classification",
        label="target",
        classes=[0, 1, 2],
        inputs=[FeatureSpec(name=f"f{i}", dtype="float64") for i in range(4)],
    )


def _fitted() -> Pipeline:
    x, y = load_iris(return_X_y=True)
    return Pipeline(
        [("scale", StandardScaler()), ("model", RandomForestClassifier(n_estimators=5, random_state=0))]
    ).fit(x, y)


def _write_raw(path: Path, obj: object, trusted_types: list[str]) -> None:
    """An artifact written around our checks, as an attacker or an old writer could."""
    meta = _metadata().model_copy(update={"trusted_types": trusted_types})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta.json", meta.model_dump_json())
        archive.writestr("model.skops", sio.dumps(obj))


def test_round_trip_keeps_predictions_and_records_metadata(tmp_path: Path) -> None:
    model = _fitted()
    path = tmp_path / "model.zip"
    written = save_artifact(model, path, _metadata())
    loaded = load_artifact(path, kind="model")
    x = load_iris().data
    np.testing.assert_array_equal(loaded.obj.predict_proba(x), model.predict_proba(x))
    assert loaded.metadata == written
    assert written.sklearn_version and written.skops_version and written.numpy_version
    assert "sklearn.tree._tree.Tree" in written.trusted_types
    assert read_metadata(path).classes == [0, 1, 2]
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["meta.json", "model.skops"]


def test_wrong_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.zip"
    save_artifact(_fitted(), path, _metadata())
    with pytest.raises(ComponentError, match="holds a model, expected a transformer"):
        load_artifact(path, kind="transformer")


@pytest.mark.parametrize(
    ("func", "type_name"),
    [
        (eval, "builtins.eval"),
        (np.load, "numpy.load"),
        (_double, "_double"),
    ],
)
def test_saving_an_untrusted_type_is_refused_before_writing(
    tmp_path: Path, func: Any, type_name: str
) -> None:
    path = tmp_path / "model.zip"
    with pytest.raises(UntrustedTypeError, match=type_name):
        save_artifact(FunctionTransformer(func), path, _metadata())
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


@pytest.mark.parametrize(
    ("func", "type_name"),
    [
        (eval, "builtins.eval"),
        (np.load, "numpy.load"),
        (_double, "_double"),
    ],
)
def test_loading_an_untrusted_type_is_refused_even_if_declared(
    tmp_path: Path, func: Any, type_name: str
) -> None:
    path = tmp_path / "evil.zip"
    transformer = FunctionTransformer(func)
    _write_raw(path, transformer, sio.get_untrusted_types(data=sio.dumps(transformer)))
    with pytest.raises(UntrustedTypeError, match=type_name) as caught:
        load_artifact(path)
    assert "refused to load" in str(caught.value)


def test_loading_a_type_not_declared_at_save_time_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.zip"
    _write_raw(path, _fitted(), trusted_types=[])
    with pytest.raises(UntrustedTypeError, match=r"sklearn\.tree\._tree\.Tree"):
        load_artifact(path)


@pytest.mark.parametrize(
    ("name", "trusted"),
    [
        ("sklearn.tree._tree.Tree", True),
        ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor", True),
        ("numpy.dtype", True),
        ("numpy.ravel", True),
        ("scipy.sparse._csr.csr_matrix", True),
        ("numpy.load", False),
        ("numpy.loadtxt", False),
        ("numpy.lib.npyio.NpzFile", False),
        ("numpy.testing.assert_equal", False),
        ("scipy.io.loadmat", False),
        ("sklearn.datasets.fetch_openml", False),
        ("builtins.eval", False),
        ("os.system", False),
        ("sklearnx.Model", False),
    ],
)
def test_allow_list(name: str, trusted: bool) -> None:
    assert is_trusted_type(name) is trusted


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a zip", "not a conveyor.model/v1 artifact"),
        (None, "entries"),
    ],
)
def test_malformed_artifacts_are_rejected(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "model.zip"
    if content is None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("model.skops", b"")
        content = buffer.getvalue()
    path.write_bytes(content)
    with pytest.raises(ComponentError, match=message):
        load_artifact(path)


def test_missing_artifact_is_a_component_error(tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match=r"no model artifact at 'absent\.zip'"):
        read_metadata(tmp_path / "absent.zip")
