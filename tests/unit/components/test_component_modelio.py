"""Model artifacts: skops round trip, metadata, refusal of untrusted types, and identical bytes across processes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
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
    CategoryCount,
    FeatureProfile,
    FeatureSpec,
    UntrustedTypeError,
    canonical_skops,
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


def _write_raw(path: Path, obj: object, trusted_types: list[str], *, rewrite: bool = False) -> None:
    """An artifact written around our checks, as an attacker or an old writer could."""
    meta = _metadata().model_copy(update={"trusted_types": trusted_types})
    model_bytes = sio.dumps(obj)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta.json", meta.model_dump_json())
        archive.writestr("model.skops", canonical_skops(model_bytes) if rewrite else model_bytes)


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


def test_an_artifact_written_before_profiles_existed_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.zip"
    model = _fitted()
    written = save_artifact(model, path, _metadata())
    meta = json.loads(written.model_dump_json())
    del meta["profile"]  # what a writer from before the field wrote
    with zipfile.ZipFile(path) as archive:
        model_bytes = archive.read("model.skops")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta.json", json.dumps(meta))
        archive.writestr("model.skops", model_bytes)
    loaded = load_artifact(path, kind="model")
    assert loaded.metadata.profile is None
    assert loaded.metadata == written
    np.testing.assert_array_equal(loaded.obj.predict(load_iris().data), model.predict(load_iris().data))


def test_a_profile_round_trips_through_the_metadata(tmp_path: Path) -> None:
    profile = [
        FeatureProfile(
            name="f0",
            kind="numeric",
            count=3,
            missing=1,
            mean=0.5,
            std=0.25,
            min=0.0,
            max=1.0,
            quantiles={"p01": 0.0, "p50": 0.5, "p99": 1.0},
        ),
        FeatureProfile(
            name="f1",
            kind="categorical",
            count=4,
            missing=0,
            distinct=2,
            top=[CategoryCount(value="a", count=3, frequency=0.75), CategoryCount(value=True, count=1, frequency=0.25)],
        ),
    ]
    path = tmp_path / "model.zip"
    written = save_artifact(_fitted(), path, _metadata().model_copy(update={"profile": profile}))
    read = read_metadata(path)
    assert read == written and read.profile == profile
    assert read.profile is not None and read.profile[1].top[1].value is True  # a boolean stays a boolean


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
def test_saving_an_untrusted_type_is_refused_before_writing(tmp_path: Path, func: Any, type_name: str) -> None:
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
@pytest.mark.parametrize("rewrite", [False, True], ids=["skops", "rewritten"])
def test_loading_an_untrusted_type_is_refused_even_if_declared(
    tmp_path: Path, func: Any, type_name: str, rewrite: bool
) -> None:
    path = tmp_path / "evil.zip"
    transformer = FunctionTransformer(func)
    _write_raw(path, transformer, sio.get_untrusted_types(data=sio.dumps(transformer)), rewrite=rewrite)
    with pytest.raises(UntrustedTypeError, match=type_name) as caught:
        load_artifact(path)
    assert "refused to load" in str(caught.value)


@pytest.mark.parametrize("rewrite", [False, True], ids=["skops", "rewritten"])
def test_loading_a_type_not_declared_at_save_time_is_refused(tmp_path: Path, rewrite: bool) -> None:
    path = tmp_path / "model.zip"
    _write_raw(path, _fitted(), trusted_types=[], rewrite=rewrite)
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


@pytest.mark.parametrize(
    ("func", "type_name"),
    [
        (eval, "builtins.eval"),
        (np.load, "numpy.load"),
        (_double, "_double"),
    ],
)
def test_the_rewrite_hides_no_type_from_skops(func: Any, type_name: str) -> None:
    data = sio.dumps(FunctionTransformer(func))
    rewritten = canonical_skops(data)
    assert sio.get_untrusted_types(data=rewritten) == sio.get_untrusted_types(data=data)
    assert any(type_name in t for t in sio.get_untrusted_types(data=rewritten))
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException, match=type_name):
        sio.loads(rewritten)


def _schema_ids(node: Any) -> list[int]:
    if isinstance(node, list):
        return [i for item in node for i in _schema_ids(item)]
    if not isinstance(node, dict):
        return []
    own = [node["__id__"]] if "__loader__" in node and "__id__" in node else []
    return own + [i for value in node.values() for i in _schema_ids(value)]


def test_the_rewrite_numbers_ids_and_entries_and_still_loads() -> None:
    model = _fitted()
    rewritten = canonical_skops(sio.dumps(model))
    with zipfile.ZipFile(io.BytesIO(rewritten)) as archive:
        names = archive.namelist()
        ids = _schema_ids(json.loads(archive.read("schema.json")))
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert names == ["schema.json", *(f"{n}.npy" for n in range(1, len(names)))]
    assert sorted(set(ids)) == list(range(1, len(set(ids)) + 1))
    assert len(ids) > len(set(ids))  # shared objects (e.g. None, small ints) still share one id
    loaded = sio.load(io.BytesIO(rewritten), trusted=sio.get_untrusted_types(data=rewritten))
    x = load_iris().data
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    assert canonical_skops(rewritten) == rewritten


# Fits a transformer (TF-IDF included: it keeps an id() of its own) and a model behind it with the
# preprocess and train components, then prints the sha256 of both artifacts.
_TRAIN_TWICE = """
import hashlib, json, sys
from pathlib import Path
import numpy as np
import pandas as pd
from conveyor.components.datasets import write_dataset
from conveyor.components.registry import get_component

def step(name, config, inputs, outputs):
    component = get_component(name)
    component.run(component.config.model_validate(config), inputs, outputs)

out = Path(sys.argv[1])
rng = np.random.default_rng(0)
n = 200
frame = pd.DataFrame({
    "income": rng.normal(50.0, 10.0, size=n),
    "city": rng.choice(["paris", "lyon", "nice"], size=n),
    "review": rng.choice(["great product", "bad service", "would buy again"], size=n),
    "label": rng.integers(0, 2, size=n),
})
write_dataset(frame, out / "train")
step("preprocess", {"label": "label", "text_columns": ["review"]}, {"train": out / "train"},
     {"transformer": out / "transformer"})
step("train", {"estimator": "sklearn.ensemble.RandomForestClassifier", "params": {"n_estimators": 5},
               "label": "label", "seed": 0},
     {"train": out / "train", "transformer": out / "transformer"}, {"model": out / "model"})
print(json.dumps({a: hashlib.sha256((out / a).read_bytes()).hexdigest() for a in ("transformer", "model")}))
"""


def test_the_same_fit_in_two_processes_gives_identical_artifacts(tmp_path: Path) -> None:
    """The honest test of determinism: object ids and string hashing differ between the two processes."""
    runs = []
    for seed in ("1", "2"):
        out = tmp_path / f"process-{seed}"
        out.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": seed}
        runs.append(
            subprocess.Popen(
                [sys.executable, "-c", _TRAIN_TWICE, str(out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    digests = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
        digests.append(json.loads(stdout))
    assert digests[0] == digests[1]
    for name in ("transformer", "model"):  # what was compared is what loads
        loaded = load_artifact(tmp_path / "process-1" / name)
        assert hashlib.sha256((tmp_path / "process-1" / name).read_bytes()).hexdigest() == digests[0][name]
        assert loaded.metadata.kind == ("model" if name == "model" else "transformer")
