"""The ingest component: sklearn sample data, local files, deterministic Parquet, clear errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd  # type: ignore[import-untyped]
import pytest
from pydantic import ValidationError

from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset
from conveyor.components.registry import get_component

RunStep = Callable[..., Metrics]


@pytest.mark.parametrize(
    ("name", "rows", "columns"),
    [
        ("breast_cancer", 569, 31),
        ("iris", 150, 5),
        ("wine", 178, 14),
        ("diabetes", 442, 11),
        ("digits", 1797, 65),
    ],
)
def test_sklearn_datasets(run_step: RunStep, tmp_path: Path, name: str, rows: int, columns: int) -> None:
    out = tmp_path / "dataset.parquet"
    metrics = run_step("ingest", {"source": f"sklearn://{name}"}, {}, {"dataset": out})
    assert metrics == {"rows": rows, "columns": columns}
    frame = read_dataset(out)
    assert frame.shape == (rows, columns)
    assert frame.columns[-1] == "target"
    assert not frame["target"].isna().any()


def test_output_is_deterministic(run_step: RunStep, tmp_path: Path) -> None:
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    run_step("ingest", {"source": "sklearn://wine"}, {}, {"dataset": first})
    run_step("ingest", {"source": "sklearn://wine"}, {}, {"dataset": second})
    assert first.read_bytes() == second.read_bytes()


FRAME = pd.DataFrame({"x": [1.5, 2.5, None], "colour": ["red", "blue", "red"], "n": [1, 2, 3]})


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_local_files(run_step: RunStep, tmp_path: Path, suffix: str) -> None:
    source = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        FRAME.to_csv(source, index=False)
    elif suffix == ".parquet":
        FRAME.to_parquet(source, index=False)
    else:
        FRAME.to_json(source, orient="records", lines=True)
    out = tmp_path / "dataset.parquet"
    metrics = run_step("ingest", {"source": f"file://{source}"}, {}, {"dataset": out})
    assert metrics == {"rows": 3, "columns": 3}
    frame = read_dataset(out)
    assert list(frame.columns) == ["x", "colour", "n"]
    assert frame["colour"].tolist() == ["red", "blue", "red"]
    assert frame["x"].isna().tolist() == [False, False, True]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_fetched_input_without_suffix_is_sniffed(run_step: RunStep, tmp_path: Path, fmt: str) -> None:
    source = tmp_path / "data"  # the runtime stores inputs under their name, without a suffix
    if fmt == "csv":
        FRAME.to_csv(source, index=False)
    elif fmt == "parquet":
        FRAME.to_parquet(source, index=False)
    else:
        FRAME.to_json(source, orient="records", lines=True)
    out = tmp_path / "dataset.parquet"
    metrics = run_step("ingest", {}, {"data": source}, {"dataset": out})
    assert metrics == {"rows": 3, "columns": 3}
    assert read_dataset(out)["colour"].tolist() == ["red", "blue", "red"]


@pytest.mark.parametrize(
    ("source", "content", "message"),
    [
        ("s3://bucket/data.csv", None, r"scheme 's3://' is not supported yet"),
        ("https://example.org/data.csv", None, r"scheme 'https://' is not supported yet"),
        ("sklearn://titanic", None, r"unknown scikit-learn dataset 'titanic'.*breast_cancer"),
        ("data.csv", None, r"source: 'data.csv' is not a URI"),
        ("file://{dir}/absent.csv", None, r"source: no file at"),
        ("file://{dir}/empty.csv", "", r"source: 'empty.csv' is empty"),
        ("file://{dir}/empty.csv", "a,b\n", r"input 'dataset' is empty \(0 rows\)"),
        ("file://{dir}/bad.jsonl", "{not json", r"source: 'bad.jsonl' is not valid jsonl"),
    ],
)
def test_bad_sources(run_step: RunStep, tmp_path: Path, source: str, content: str | None, message: str) -> None:
    source = source.format(dir=tmp_path)
    if content is not None:
        Path(source.removeprefix("file://")).write_text(content)
    out = tmp_path / "dataset.parquet"
    with pytest.raises(ComponentError, match=message):
        run_step("ingest", {"source": source}, {}, {"dataset": out})
    assert not out.exists()


def test_source_and_data_are_exclusive(run_step: RunStep, tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match="exactly one"):
        run_step("ingest", {}, {}, {"dataset": tmp_path / "d.parquet"})


def test_config_typo_names_the_key() -> None:
    with pytest.raises(ValidationError, match="sorce"):
        get_component("ingest").config.model_validate({"sorce": "sklearn://iris"})
