"""The ingest component: sklearn sample data, local files, deterministic Parquet, clear errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd  # type: ignore[import-untyped]
import pytest
from pydantic import ValidationError

from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset
from conveyor.components.registry import get_component
from conveyor.storage.digest import sha256_file

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
        ("http://example.org/data.csv", None, r"plain http:// is allowed only for loopback hosts, not 'example.org'"),
        ("http://10.0.0.1/data.csv", None, r"plain http:// is allowed only for loopback hosts"),
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


def test_report_records_source_digest_rows_and_schema(run_step: RunStep, tmp_path: Path) -> None:
    source = tmp_path / "data.csv"
    FRAME.to_csv(source, index=False)
    out, report_path = tmp_path / "dataset.parquet", tmp_path / "report.json"
    run_step("ingest", {"source": f"file://{source}"}, {}, {"dataset": out, "report": report_path})
    report = json.loads(report_path.read_text())
    assert report["format"] == "conveyor.ingest-report/v1"
    assert report["source"] == {
        "uri": f"file://{source}",
        "sha256": sha256_file(source),
        "bytes": source.stat().st_size,
    }
    assert (report["rows"], report["columns"]) == (3, 3)
    assert [(c["name"], c["dtype"], c["arrow_type"], c["missing"]) for c in report["schema"]] == [
        ("x", "float64", "double", 1),
        ("colour", str(FRAME["colour"].dtype), "large_string", 0),
        ("n", "int64", "int64", 0),
    ]
    again = tmp_path / "again.json"
    run_step("ingest", {"source": f"file://{source}"}, {}, {"dataset": tmp_path / "b.parquet", "report": again})
    assert again.read_bytes() == report_path.read_bytes()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"source": "ftp://host/data.csv"}, r"scheme 'ftp://' is not supported"),
        ({"source": "https://user:secret@host/data.csv"}, r"holds credentials"),
        ({"sql": {"url": "postgresql://reader:secret@db/sales", "table": "t"}}, r"holds a password"),
        ({"sql": {"url": "postgresql://reader@db/sales"}}, r"exactly one of 'query' or 'table'"),
        ({"sql": {"url": "postgresql://reader@db/sales", "table": "t", "query": "select 1"}}, r"exactly one"),
        ({"sql": {"url": "not a url", "table": "t"}}, r"not an SQLAlchemy URL"),
        ({"source": "sklearn://iris", "sql": {"url": "sqlite://", "table": "t"}}, r"'source' or 'sql', not both"),
        ({"source": "sklearn://iris", "max_bytes": 0}, r"max_bytes"),
    ],
)
def test_config_rejections_name_the_problem(config: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        get_component("ingest").config.model_validate(config)


def test_sql_from_sqlite(run_step: RunStep, tmp_path: Path) -> None:
    """The SQL path end to end on an in-process database; PostgreSQL is tested in tests/integration."""
    import sqlite3

    db = tmp_path / "db.sqlite"
    with sqlite3.connect(db) as connection:
        connection.execute("create table t (id integer, score real, name text)")
        connection.executemany("insert into t values (?, ?, ?)", [(2, 0.5, "b"), (1, None, "a")])
    connection.close()
    out = tmp_path / "dataset.parquet"
    sql = {"url": f"sqlite:///{db}", "query": "select * from t order by id"}
    assert run_step("ingest", {"sql": sql}, {}, {"dataset": out}) == {"rows": 2, "columns": 3}
    frame = read_dataset(out)
    assert frame["id"].tolist() == [1, 2]
    assert frame["name"].tolist() == ["a", "b"]
    run_step("ingest", {"sql": {"url": f"sqlite:///{db}", "table": "t"}}, {}, {"dataset": out})
    assert sorted(read_dataset(out)["id"].tolist()) == [1, 2]
    with pytest.raises(
        ComponentError, match=r"sql: reading from sqlite:///.* failed: OperationalError: no such table: nope"
    ):
        run_step("ingest", {"sql": {"url": f"sqlite:///{db}", "query": "select * from nope"}}, {}, {"dataset": out})
    with pytest.raises(ComponentError, match=r"sql.table: .*nope"):
        run_step("ingest", {"sql": {"url": f"sqlite:///{db}", "table": "nope"}}, {}, {"dataset": out})
    with pytest.raises(ComponentError, match=r"sql.password_env: the environment variable 'CONVEYOR_TEST_UNSET_PW'"):
        sql = {"url": f"sqlite:///{db}", "table": "t", "password_env": "CONVEYOR_TEST_UNSET_PW"}
        run_step("ingest", {"sql": sql}, {}, {"dataset": out})
