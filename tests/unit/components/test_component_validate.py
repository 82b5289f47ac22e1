"""The validate component: schema checks, label shift and drift statistics on real and generated data."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from pydantic import ValidationError
from sklearn.datasets import load_breast_cancer

from conveyor.components._validate import infer_schema, validate
from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import write_dataset
from conveyor.components.registry import get_component
from conveyor.components.validate import ValidateConfig

RunStep = Callable[..., Metrics]


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    frame: pd.DataFrame = load_breast_cancer(as_frame=True).frame
    return frame


def _halves(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(frame))
    half = len(frame) // 2
    return frame.iloc[order[:half]].reset_index(drop=True), frame.iloc[order[half:]].reset_index(drop=True)


def _checks(report: dict[str, Any]) -> list[tuple[str, str | None]]:
    return sorted((a["check"], a["column"]) for a in report["anomalies"])


# --- drift statistics on breast_cancer ------------------------------------------------------------


def test_random_halves_do_not_drift(cancer: pd.DataFrame) -> None:
    reference, current = _halves(cancer, seed=0)
    report = validate(current, ValidateConfig(label="target"), None, reference)
    assert report["anomalies"] == []
    assert report["dataset"]["drift"]["features_tested"] == 30
    assert report["dataset"]["drift"]["drifted_features"] == []
    # Every score is reported, not only the verdict.
    drift = report["columns"]["mean radius"]["drift"]
    assert drift["test"] == "ks" and 0 <= drift["statistic"] < 0.2 and drift["p_value"] > drift["alpha"]
    assert report["label"]["kind"] == "classification" and not report["label"]["shifted"]


def test_random_halves_rarely_alert_over_many_splits(cancer: pd.DataFrame) -> None:
    # Bonferroni keeps the chance of any false alarm per split at most 5 %; over 20 splits
    # we allow 2 (expected: at most 1) and never a dataset-level drift verdict.
    alerts, dataset_drifts = 0, 0
    for seed in range(20):
        reference, current = _halves(cancer, seed)
        report = validate(current, ValidateConfig(label="target"), None, reference)
        alerts += bool(report["anomalies"])
        dataset_drifts += report["dataset"]["drift"]["dataset_drift"]
    assert dataset_drifts == 0
    assert alerts <= 2


def test_three_features_shifted_by_two_standard_deviations_are_flagged(cancer: pd.DataFrame) -> None:
    reference, current = _halves(cancer, seed=0)
    shifted = ["mean radius", "worst texture", "mean smoothness"]
    for column in shifted:
        current[column] = current[column] + 2 * reference[column].std()
    report = validate(current, ValidateConfig(label="target"), None, reference)
    drift = report["dataset"]["drift"]
    assert drift["drifted_features"] == sorted(shifted)  # those three and no other
    assert drift["drifted_share"] == pytest.approx(0.1)
    assert drift["dataset_drift"] is False  # 10 % of features is below the 50 % dataset verdict
    for column in shifted:
        assert report["columns"][column]["drift"]["statistic"] > 0.5
    assert {c for check, c in _checks(report) if check == "feature_drift"} == set(shifted)


def test_label_balance_shift_from_50_50_to_70_30_alerts(cancer: pd.DataFrame) -> None:
    benign, malignant = cancer[cancer["target"] == 1], cancer[cancer["target"] == 0]
    reference = pd.concat([benign.iloc[:100], malignant.iloc[:100]])
    current = pd.concat([benign.iloc[100:240], malignant.iloc[100:160]])
    report = validate(current, ValidateConfig(label="target"), None, reference)
    label = report["label"]
    assert label["shifted"] is True
    assert label["reference_shares"] == {"0": 0.5, "1": 0.5}
    assert label["current_shares"] == {"0": pytest.approx(0.3), "1": pytest.approx(0.7)}
    assert ("label_shift", "target") in _checks(report)


def test_label_balance_within_noise_does_not_alert(cancer: pd.DataFrame) -> None:
    benign, malignant = cancer[cancer["target"] == 1], cancer[cancer["target"] == 0]
    reference = pd.concat([benign.iloc[:100], malignant.iloc[:100]])
    current = pd.concat([benign.iloc[100:204], malignant.iloc[100:196]])  # 52/48
    report = validate(current, ValidateConfig(label="target"), None, reference)
    assert report["label"]["shifted"] is False
    assert ("label_shift", "target") not in _checks(report)


# --- drift statistics on generated data ----------------------------------------------------------


def test_large_samples_do_not_alert_on_negligible_shifts() -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 50_000)})
    current = pd.DataFrame({"x": rng.normal(0.05, 1, 50_000)})  # significant, but tiny
    default = validate(current, ValidateConfig(), None, reference)["columns"]["x"]["drift"]
    assert default["p_value"] < default["alpha"]
    assert default["statistic"] < 0.1 and default["drifted"] is False
    strict = validate(current, ValidateConfig(drift_min_statistic=0.0), None, reference)
    assert strict["columns"]["x"]["drift"]["drifted"] is True


def test_critical_distance_shrinks_with_sample_size() -> None:
    rng = np.random.default_rng(1)
    critical = []
    for n in (100, 10_000):
        frame = pd.DataFrame({"x": rng.normal(size=n)})
        critical.append(validate(frame, ValidateConfig(), None, frame)["columns"]["x"]["drift"]["critical_statistic"])
    assert critical[0] == pytest.approx(10 * critical[1])


def test_categorical_drift_uses_chi_squared_and_psi() -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"plan": rng.choice(["free", "pro", "team"], 2000, p=[0.5, 0.3, 0.2])})
    same = pd.DataFrame({"plan": rng.choice(["free", "pro", "team"], 2000, p=[0.5, 0.3, 0.2])})
    moved = pd.DataFrame({"plan": rng.choice(["free", "pro", "team"], 2000, p=[0.2, 0.3, 0.5])})
    calm = validate(same, ValidateConfig(), None, reference)["columns"]["plan"]["drift"]
    drifted = validate(moved, ValidateConfig(), None, reference)["columns"]["plan"]["drift"]
    assert calm["test"] == drifted["test"] == "chi2+psi"
    assert calm["drifted"] is False and calm["statistic"] < 0.01
    assert drifted["drifted"] is True and drifted["statistic"] > 0.3


def test_regression_label_is_tested_for_drift() -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"x": rng.normal(size=500), "price": rng.normal(100, 10, 500)})
    current = pd.DataFrame({"x": rng.normal(size=500), "price": rng.normal(130, 10, 500)})
    report = validate(current, ValidateConfig(label="price"), None, reference)
    assert report["label"]["kind"] == "regression" and report["label"]["drifted"] is True
    assert ("label_drift", "price") in _checks(report)
    assert "price" not in report["dataset"]["drift"]["drifted_features"]  # the label is not a feature


# --- schema checks -------------------------------------------------------------------------------


def _base_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 400
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "income": rng.normal(50.0, 10.0, n),
            "city": rng.choice(["paris", "lyon", "nice"], n),
            "label": rng.integers(0, 2, n),
        }
    )


def _break(frame: pd.DataFrame, how: str) -> pd.DataFrame:
    frame = frame.copy()
    if how == "type":
        frame["income"] = frame["income"].map(lambda v: f"{v:.2f} EUR")
    elif how == "range":
        frame.loc[:39, "income"] = frame.loc[:39, "income"] * 1000  # 10 %: a unit change in some rows
    elif how == "unseen":
        frame.loc[:19, "city"] = "marseille"  # 5 %
    elif how == "missing":
        frame.loc[:59, "income"] = np.nan  # 15 %
    elif how == "duplicates":
        frame.iloc[:20] = frame.iloc[20:40].to_numpy()
    elif how == "drop":
        frame = frame.drop(columns=["city"])
    elif how == "new":
        frame["score"] = 1.0
    elif how == "label_missing":
        frame["label"] = frame["label"].astype(float)
        frame.loc[0, "label"] = np.nan
    return frame


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("type", [("type_mismatch", "income")]),
        ("range", [("out_of_range", "income")]),
        ("unseen", [("unseen_categories", "city")]),
        ("missing", [("missing_rate_increase", "income")]),
        ("duplicates", [("duplicate_rows", None)]),
        ("drop", [("missing_column", "city")]),
        ("new", [("new_column", "score")]),
        ("label_missing", [("label_missing", "label")]),
    ],
)
def test_schema_checks(how: str, expected: list[tuple[str, str | None]]) -> None:
    base = _base_frame()
    schema = infer_schema(base, "label", max_domain_size=100)
    report = validate(_break(base, how), ValidateConfig(label="label"), schema, None)
    assert _checks(report) == expected
    assert report["passed"] is False and report["baseline"] == "schema"


def test_clean_data_passes_its_own_schema() -> None:
    base = _base_frame()
    report = validate(base, ValidateConfig(label="label"), infer_schema(base, "label", 100), None)
    assert report["passed"] is True and report["anomalies"] == []
    assert report["columns"]["income"]["out_of_range_rate"] == 0
    assert report["columns"]["city"]["unseen_category_rate"] == 0


def test_integers_read_back_as_floats_are_not_a_type_mismatch() -> None:
    base = _base_frame()
    schema = infer_schema(base, "label", 100)
    current = base.assign(age=base["age"].astype(float))
    current.loc[0, "age"] = np.nan
    assert validate(current, ValidateConfig(label="label"), schema, None)["anomalies"] == []
    current.loc[1, "age"] = 30.5
    assert _checks(validate(current, ValidateConfig(label="label"), schema, None)) == [("type_mismatch", "age")]


def test_schema_records_types_ranges_categories_and_missing_rates() -> None:
    base = _base_frame()
    base.loc[:3, "income"] = np.nan
    schema = infer_schema(base, "label", 100)
    columns = {c["name"]: c for c in schema["columns"]}
    assert columns["age"]["type"] == "integer" and columns["income"]["type"] == "float"
    assert columns["age"]["min"] == base["age"].min() and columns["age"]["max"] == base["age"].max()
    assert columns["city"]["categories"] == ["lyon", "nice", "paris"]
    assert columns["income"]["missing_rate"] == pytest.approx(0.01)


# --- the component -------------------------------------------------------------------------------


def _paths(tmp_path: Path) -> dict[str, Path]:
    return {"schema": tmp_path / "schema.json", "report": tmp_path / "report.json"}


def test_on_failure_fail_raises_after_writing_the_report(run_step: RunStep, tmp_path: Path) -> None:
    base = _base_frame()
    write_dataset(base, tmp_path / "reference")
    write_dataset(_break(base, "range"), tmp_path / "current")
    inputs = {"dataset": tmp_path / "current", "reference": tmp_path / "reference"}
    with pytest.raises(ComponentError, match=r"validation found \d+ anomalies: .*'income'"):
        run_step("validate", {"label": "label"}, inputs, _paths(tmp_path))
    report = json.loads((tmp_path / "report.json").read_text())
    assert ("out_of_range", "income") in _checks(report)
    assert json.loads((tmp_path / "schema.json").read_text())["format"] == "conveyor.schema/v1"


def test_on_failure_warn_returns_metrics(run_step: RunStep, tmp_path: Path, cancer: pd.DataFrame) -> None:
    reference, current = _halves(cancer, seed=0)
    for column in ["mean radius", "worst texture", "mean smoothness"]:
        current[column] = current[column] + 2 * reference[column].std()
    write_dataset(reference, tmp_path / "reference")
    write_dataset(current, tmp_path / "current")
    metrics = run_step(
        "validate",
        {"label": "target", "on_failure": "warn"},
        {"dataset": tmp_path / "current", "reference": tmp_path / "reference"},
        _paths(tmp_path),
    )
    assert metrics["drifted_features"] == 3
    assert metrics["anomalies"] >= 3 and metrics["passed"] == 0


def test_a_schema_from_an_earlier_run_is_the_baseline(run_step: RunStep, tmp_path: Path) -> None:
    base = _base_frame()
    write_dataset(base, tmp_path / "first")
    first = tmp_path / "first-run"
    run_step("validate", {"label": "label"}, {"dataset": tmp_path / "first"}, _paths(first))
    write_dataset(_break(base, "unseen"), tmp_path / "second")
    with pytest.raises(ComponentError, match="marseille"):
        run_step(
            "validate",
            {"label": "label"},
            {"dataset": tmp_path / "second", "schema": first / "schema.json"},
            _paths(tmp_path / "second-run"),
        )


@pytest.mark.parametrize(
    ("config", "frame", "extra_inputs", "message"),
    [
        ({"label": "outcome"}, "base", {}, r"label: column 'outcome' is not in input 'dataset'"),
        ({}, "empty", {}, r"input 'dataset' is empty"),
        ({}, "base", {"schema": "not-json"}, r"input 'schema' is not readable JSON"),
        ({}, "base", {"schema": "other-json"}, r"input 'schema' is not a conveyor.schema/v1 document"),
    ],
)
def test_bad_input(
    run_step: RunStep,
    tmp_path: Path,
    *,
    config: dict[str, Any],
    frame: str,
    extra_inputs: dict[str, str],
    message: str,
) -> None:
    data = _base_frame() if frame == "base" else _base_frame().iloc[:0]
    write_dataset(data, tmp_path / "dataset")
    inputs = {"dataset": tmp_path / "dataset"}
    for name, content in extra_inputs.items():
        (tmp_path / name).write_text("{oops" if content == "not-json" else '{"columns": []}')
        inputs[name] = tmp_path / name
    with pytest.raises(ComponentError, match=message):
        run_step("validate", config, inputs, _paths(tmp_path))
    assert not (tmp_path / "report.json").exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"on_failure": "ignore"}, "on_failure"),
        ({"drift_p_value": 0}, "drift_p_value"),
        ({"drift_treshold": 0.1}, "drift_treshold"),
    ],
)
def test_bad_config(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        get_component("validate").config.model_validate(config)


# --- streaming: chunks, samples, sketches --------------------------------------------------------


def _mixed_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "count": pd.array(rng.integers(0, 50, n), dtype="Int64"),
            "plan": rng.choice(["free", "pro", "team"], n),
            "flag": rng.random(n) < 0.3,
            "label": rng.integers(0, 2, n),
        }
    )
    frame.loc[rng.random(n) < 0.05, "x"] = np.nan
    frame.loc[:9, "count"] = pd.NA  # missing values in the first chunk only: plain pandas would make it float there
    frame.loc[n - 10 :, ["x", "count", "plan", "flag", "label"]] = frame.loc[
        :9, ["x", "count", "plan", "flag", "label"]
    ].to_numpy()
    return frame


def test_chunked_reading_gives_the_same_report_as_one_chunk() -> None:
    reference, current = _mixed_frame(3000, seed=1), _mixed_frame(2000, seed=2)
    whole = validate(current, ValidateConfig(label="label"), None, reference)
    chunked = validate(current, ValidateConfig(label="label", chunk_rows=37), None, reference)
    assert chunked == {**whole, "thresholds": chunked["thresholds"]}
    # The last 10 rows repeat the first 10, across chunks (and rows without `x` repeat by chance): as pandas counts.
    assert whole["dataset"]["duplicate_rows"] == int(current.duplicated().sum()) >= 10
    assert whole["columns"]["count"]["type"] == "integer"


def test_the_component_streams_a_parquet_file_like_the_in_memory_path(run_step: RunStep, tmp_path: Path) -> None:
    reference, current = _mixed_frame(3000, seed=1), _mixed_frame(2000, seed=2)
    write_dataset(reference, tmp_path / "reference")
    write_dataset(current, tmp_path / "current")
    config = {"label": "label", "on_failure": "warn", "chunk_rows": 250}
    inputs = {"dataset": tmp_path / "current", "reference": tmp_path / "reference"}
    run_step("validate", config, inputs, _paths(tmp_path))
    written = json.loads((tmp_path / "report.json").read_text())
    assert written == json.loads(json.dumps(validate(current, ValidateConfig(**config), None, reference)))
    schema = json.loads((tmp_path / "schema.json").read_text())
    assert {c["name"]: c["type"] for c in schema["columns"]} == {
        "x": "float", "count": "integer", "plan": "string", "flag": "boolean", "label": "integer",
    }  # fmt: skip
    assert {c["name"]: c.get("categories") for c in schema["columns"]}["flag"] == [False, True]


def test_ks_on_a_sample_beyond_the_sample_size() -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"x": rng.normal(size=20_000), "y": rng.normal(size=20_000)})
    current = pd.DataFrame({"x": rng.normal(size=30_000), "y": rng.normal(0.5, 1, size=30_000)})
    config = ValidateConfig(drift_sample_size=1_000, chunk_rows=4_096)
    report = validate(current, config, None, reference)
    x, y = report["columns"]["x"]["drift"], report["columns"]["y"]["drift"]
    assert x["sampled"] is True and x["reference_rows"] == x["current_rows"] == 1_000
    assert x["drifted"] is False and y["drifted"] is True and y["statistic"] > 0.15
    assert report["dataset"]["drift"]["sample_size"] == 1_000
    # The sample depends on the seed and the rows, not on how the file is chunked.
    again = validate(current, config.model_copy(update={"chunk_rows": 999}), None, reference)
    assert again["columns"] == report["columns"]
    other_seed = validate(current, config.model_copy(update={"seed": 1}), None, reference)
    assert other_seed["columns"]["x"]["drift"]["statistic"] != x["statistic"]


def test_small_data_is_tested_whole() -> None:
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"x": rng.normal(size=5_000)})
    drift = validate(frame, ValidateConfig(drift_sample_size=5_000), None, frame)["columns"]["x"]["drift"]
    assert drift["sampled"] is False and drift["reference_rows"] == 5_000 and drift["statistic"] == 0


def test_distinct_counts_are_exact_then_estimated() -> None:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"few": rng.integers(0, 3_000, 50_000), "many": np.arange(50_000) * 1.5})
    columns = {c["name"]: c for c in infer_schema(frame, None, max_domain_size=100)["columns"]}
    assert columns["few"]["unique"] == frame["few"].nunique() and "unique_estimated" not in columns["few"]
    assert columns["many"]["unique_estimated"] is True
    assert columns["many"]["unique"] == pytest.approx(50_000, rel=0.05)
    assert "categories" not in columns["few"]


def test_html_report_shows_the_verdict_every_anomaly_and_every_column(tmp_path: Path) -> None:
    """The page people read: drifted features are named with their scores, every column has a row."""
    from conveyor.components._validate import render_html
    from conveyor.components.registry import get_component

    ingest, validate = get_component("ingest"), get_component("validate")
    ingest.run(ingest.config.model_validate({"source": "sklearn://breast_cancer"}), {}, {"dataset": tmp_path / "ref"})
    frame = pd.read_parquet(tmp_path / "ref")
    shifted = frame.copy()
    for column in ["mean radius", "mean texture", "mean perimeter"]:
        shifted[column] = shifted[column] + 2 * shifted[column].std()
    shifted.to_parquet(tmp_path / "cur")
    outputs = {"schema": tmp_path / "schema", "report": tmp_path / "report", "report_html": tmp_path / "page.html"}
    config = validate.config.model_validate({"label": "target", "on_failure": "warn"})
    validate.run(config, {"dataset": tmp_path / "cur", "reference": tmp_path / "ref"}, outputs)
    page = outputs["report_html"].read_text()
    report = json.loads(outputs["report"].read_text())
    assert page == render_html(report)  # the file is exactly the rendering of the JSON report
    assert "3 anomalies" in page and "<h2>Anomalies</h2>" in page
    for column in ["mean radius", "mean texture", "mean perimeter"]:
        assert f"&#x27;{column}&#x27; drifted" in page  # escaped, named in the anomaly table
    assert page.count("<tr>") >= 1 + len(report["columns"])  # a row per column, drifted or not
    assert "<script" not in page


@pytest.mark.parametrize("token", ["n/a", "NA", "null", "-", "?"])
def test_values_that_are_not_numbers_in_a_numeric_csv_column_are_reported(
    run_step: Callable[..., Metrics], tmp_path: Path, token: str
) -> None:
    """`n/a` was read as missing by the CSV reader's defaults and, below the missing-value threshold,
    nothing was said; whatever the token, it is now kept and reported as not a number."""
    source = tmp_path / "data.csv"
    rows = [f"{i}.5,{i % 3}" for i in range(40)] + [f"{token},1", ",2"]  # and one really empty cell
    source.write_text("x,y\n" + "\n".join(rows) + "\n")
    run_step("ingest", {"source": f"file://{source}"}, {}, {"dataset": tmp_path / "dataset", "report": tmp_path / "r"})
    config = {"on_failure": "warn"}
    outputs = {
        "schema": tmp_path / "schema.json",
        "report": tmp_path / "report.json",
        "report_html": tmp_path / "r.html",
    }
    run_step("validate", config, {"dataset": tmp_path / "dataset"}, outputs)
    report = json.loads((tmp_path / "report.json").read_text())
    (anomaly,) = [a for a in report["anomalies"] if a["check"] == "not_numbers"]
    assert anomaly["column"] == "x" and anomaly["value"] == 1
    assert f"column 'x' is numeric but 1 of 41 values are not numbers ({token!r}: 1)" in anomaly["message"]
    assert not report["passed"]


def test_a_text_column_is_not_taken_for_a_numeric_one() -> None:
    frame = pd.DataFrame({"colour": ["red", "blue", "1", "green"], "zip": ["02139", "10001", "94105", "60601"]})
    report = validate(frame, ValidateConfig(), None, None)
    assert [a for a in report["anomalies"] if a["check"] == "not_numbers"] == []
