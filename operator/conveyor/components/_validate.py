"""The work of the `validate` component: schema inference, checks and drift tests over pandas frames.

What each check means, and the configuration, are documented with the contract in `conveyor.components.validate`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from scipy import stats

from conveyor.components.atomic import json_safe, write_json
from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset, require_columns, require_rows
from conveyor.components.validate import ValidateConfig

SCHEMA_FORMAT = "conveyor.schema/v1"
ColumnType = Literal["integer", "float", "boolean", "string", "datetime", "other"]
_PSI_EPSILON = 1e-4
_MAX_LISTED = 10


@dataclass
class Findings:
    """What the checks found: anomalies plus every score, keyed by column."""

    anomalies: list[dict[str, Any]] = field(default_factory=list)
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)

    def anomaly(self, check: str, column: str | None, message: str, value: Any, threshold: Any) -> None:
        self.anomalies.append(
            {"check": check, "column": column, "message": message, "value": value, "threshold": threshold}
        )

    def scores(self, column: str) -> dict[str, Any]:
        return self.columns.setdefault(column, {})


# --- schema -------------------------------------------------------------------------------


def column_type(series: pd.Series) -> ColumnType:
    """The logical type of a column, independent of pandas' storage details."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if (
        pd.api.types.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_object_dtype(dtype)
    ):
        return "string"
    return "other"


def _is_numeric(kind: str) -> bool:
    return kind in ("integer", "float")


def infer_schema(frame: pd.DataFrame, label: str | None, max_domain_size: int) -> dict[str, Any]:
    """Describe each column: type, missing rate, numeric range, and the category domain when small."""
    columns = []
    for name in frame.columns:
        series = frame[name]
        kind = column_type(series)
        present = series.dropna()
        entry: dict[str, Any] = {
            "name": name,
            "type": kind,
            "missing_rate": float(series.isna().mean()) if len(series) else 0.0,
            "unique": int(present.nunique()),
        }
        if _is_numeric(kind) and len(present):
            entry["min"], entry["max"] = present.min(), present.max()
        if kind in ("string", "boolean") and entry["unique"] <= max_domain_size:
            entry["categories"] = sorted(json_safe(present.unique().tolist()), key=str)
        columns.append(entry)
    schema: dict[str, Any] = json_safe(
        {"format": SCHEMA_FORMAT, "rows": len(frame), "label": label, "columns": columns}
    )
    return schema


def _read_schema(path: Path) -> dict[str, Any]:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ComponentError(f"input 'schema' is not readable JSON: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("format") != SCHEMA_FORMAT:
        raise ComponentError(f"input 'schema' is not a {SCHEMA_FORMAT} document")
    return schema


# --- checks against the baseline schema ---------------------------------------------------------


def _types_compatible(expected: str, series: pd.Series, actual: str) -> bool:
    if expected == actual or (expected == "float" and actual == "integer"):
        return True
    if expected == "integer" and actual == "float":
        present = series.dropna().to_numpy(dtype=float)
        return bool(np.all(np.mod(present, 1) == 0))
    return False


def check_schema(frame: pd.DataFrame, schema: dict[str, Any], config: ValidateConfig, found: Findings) -> None:
    """Columns, types, ranges, domains and missing rates against the baseline schema."""
    expected = {c["name"]: c for c in schema["columns"]}
    for name in expected:
        if name not in frame.columns:
            found.anomaly("missing_column", name, f"column {name!r} is in the schema but not in the data", None, None)
    for name in frame.columns:
        if name not in expected:
            found.anomaly("new_column", name, f"column {name!r} is not in the schema", None, None)
            continue
        spec, series = expected[name], frame[name]
        scores = found.scores(name)
        actual = column_type(series)
        scores["type"] = actual
        if not _types_compatible(spec["type"], series, actual):
            found.anomaly(
                "type_mismatch",
                name,
                f"column {name!r} has type {actual}, the schema says {spec['type']}",
                actual,
                spec["type"],
            )
            continue
        _check_missing(name, series, spec, config, found)
        present = series.dropna()
        if len(series) == 0:
            continue
        if _is_numeric(actual) and spec.get("min") is not None and spec.get("max") is not None:
            outside = int(((present < spec["min"]) | (present > spec["max"])).sum())
            rate = outside / len(series)
            scores.update(out_of_range_count=outside, out_of_range_rate=rate)
            if rate > config.max_out_of_range_rate:
                found.anomaly(
                    "out_of_range",
                    name,
                    f"{outside} values of {name!r} ({rate:.1%}) lie outside [{spec['min']}, {spec['max']}]",
                    rate,
                    config.max_out_of_range_rate,
                )
        if spec.get("categories") is not None:
            known = {str(v) for v in spec["categories"]}
            unseen_mask = ~present.astype(str).isin(known)
            rate = int(unseen_mask.sum()) / len(series)
            unseen = sorted({str(v) for v in present[unseen_mask].unique().tolist()})
            scores.update(unseen_categories=unseen[:_MAX_LISTED], unseen_category_rate=rate)
            if rate > config.max_unseen_category_rate:
                found.anomaly(
                    "unseen_categories",
                    name,
                    f"{rate:.1%} of {name!r} are categories never seen before, e.g. {unseen[:3]!r}",
                    rate,
                    config.max_unseen_category_rate,
                )


def _check_missing(name: str, series: pd.Series, spec: dict[str, Any], config: ValidateConfig, found: Findings) -> None:
    rate = float(series.isna().mean()) if len(series) else 0.0
    baseline = float(spec.get("missing_rate", 0.0))
    found.scores(name).update(missing_rate=rate, baseline_missing_rate=baseline)
    if rate - baseline > config.max_missing_rate_increase:
        found.anomaly(
            "missing_rate_increase",
            name,
            f"missing rate of {name!r} rose from {baseline:.1%} to {rate:.1%}",
            rate - baseline,
            config.max_missing_rate_increase,
        )


# --- statistics ----------------------------------------------------------------------------------


def ks_critical_distance(n: int, m: int, alpha: float) -> float:
    """The asymptotic KS critical distance for samples of n and m rows at level alpha."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def population_stability_index(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI between two category-share vectors (shares floored at a small epsilon, as usual)."""
    ref = np.maximum(reference / reference.sum(), _PSI_EPSILON)
    cur = np.maximum(current / current.sum(), _PSI_EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _category_counts(reference: pd.Series, current: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    ref, cur = reference.astype(str).value_counts(), current.astype(str).value_counts()
    categories = sorted(set(ref.index) | set(cur.index))
    return (
        categories,
        ref.reindex(categories, fill_value=0).to_numpy(dtype=float),
        cur.reindex(categories, fill_value=0).to_numpy(dtype=float),
    )


def _chi_squared_p(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    if len(ref_counts) < 2:
        return 1.0
    return float(stats.chi2_contingency(np.vstack([ref_counts, cur_counts])).pvalue)


def drift_test(reference: pd.Series, current: pd.Series, alpha: float, config: ValidateConfig) -> dict[str, Any] | None:
    """Test one column for drift; None when the column is not testable (empty, or id-like)."""
    ref, cur = reference.dropna(), current.dropna()
    if len(ref) == 0 or len(cur) == 0:
        return None
    kind = column_type(reference)
    distinct = len(set(ref.unique().tolist()) | set(cur.unique().tolist()))
    if _is_numeric(kind) and _is_numeric(column_type(current)) and distinct > config.discrete_max_unique:
        result = stats.ks_2samp(ref.to_numpy(dtype=float), cur.to_numpy(dtype=float))
        statistic, p_value = float(result.statistic), float(result.pvalue)
        return {
            "test": "ks",
            "statistic": statistic,
            "p_value": p_value,
            "alpha": alpha,
            "critical_statistic": ks_critical_distance(len(ref), len(cur), alpha),
            "min_statistic": config.drift_min_statistic,
            "reference_rows": len(ref),
            "current_rows": len(cur),
            "drifted": p_value < alpha and statistic >= config.drift_min_statistic,
        }
    if distinct > config.max_domain_size:
        return None
    _, ref_counts, cur_counts = _category_counts(ref, cur)
    psi = population_stability_index(ref_counts, cur_counts)
    p_value = _chi_squared_p(ref_counts, cur_counts)
    return {
        "test": "chi2+psi",
        "statistic": psi,
        "p_value": p_value,
        "alpha": alpha,
        "min_statistic": config.psi_threshold,
        "reference_rows": len(ref),
        "current_rows": len(cur),
        "drifted": p_value < alpha and psi >= config.psi_threshold,
    }


def _is_class_label(series: pd.Series, max_classes: int) -> bool:
    kind = column_type(series)
    if kind in ("string", "boolean"):
        return True
    if not _is_numeric(kind):
        return False
    present = series.dropna().to_numpy(dtype=float)
    return bool(np.all(np.mod(present, 1) == 0)) and len(np.unique(present)) <= max_classes


def check_label_shift(
    reference: pd.Series, current: pd.Series, config: ValidateConfig, found: Findings
) -> dict[str, Any]:
    """Class balance (classification) or target distribution (regression) against the reference."""
    name = str(current.name)
    if not (
        _is_class_label(reference, config.max_label_classes) and _is_class_label(current, config.max_label_classes)
    ):
        result = drift_test(reference, current, config.drift_p_value, config) or {}
        if result.get("drifted"):
            found.anomaly(
                "label_drift",
                name,
                f"the distribution of label {name!r} drifted (KS distance {result['statistic']:.3f})",
                result["statistic"],
                config.drift_min_statistic,
            )
        return {"kind": "regression", **result}
    classes, ref_counts, cur_counts = _category_counts(reference.dropna(), current.dropna())
    ref_share, cur_share = ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()
    change = np.abs(cur_share - ref_share)
    p_value = _chi_squared_p(ref_counts, cur_counts)
    shifted = bool(change.max() >= config.label_shift_threshold and p_value < config.drift_p_value)
    worst = classes[int(change.argmax())]
    if shifted:
        found.anomaly(
            "label_shift",
            name,
            f"share of class {worst!r} in {name!r} moved from {ref_share[change.argmax()]:.1%} "
            f"to {cur_share[change.argmax()]:.1%} (chi-squared p={p_value:.2g})",
            float(change.max()),
            config.label_shift_threshold,
        )
    return {
        "kind": "classification",
        "reference_shares": dict(zip(classes, ref_share.tolist(), strict=True)),
        "current_shares": dict(zip(classes, cur_share.tolist(), strict=True)),
        "max_share_change": float(change.max()),
        "p_value": p_value,
        "shifted": shifted,
    }


def check_drift(
    frame: pd.DataFrame, reference: pd.DataFrame, label: str | None, config: ValidateConfig, found: Findings
) -> dict[str, Any]:
    """Per-feature drift tests and the dataset-level verdict."""
    candidates = [c for c in frame.columns if c in reference.columns and c != label]
    compatible = [
        c
        for c in candidates
        if _types_compatible(column_type(reference[c]), frame[c], column_type(frame[c]))
        or _types_compatible(column_type(frame[c]), reference[c], column_type(reference[c]))
    ]
    alpha = config.drift_p_value / max(1, len(compatible))
    results = {c: drift_test(reference[c], frame[c], alpha, config) for c in compatible}
    tested = {c: r for c, r in results.items() if r is not None}
    drifted = sorted(c for c, r in tested.items() if r["drifted"])
    for column, result in results.items():
        found.scores(column)["drift"] = result if result is not None else {"test": None, "drifted": False}
    for column in drifted:
        result = tested[column]
        found.anomaly(
            "feature_drift",
            column,
            f"{column!r} drifted ({result['test']} statistic {result['statistic']:.3f}, p={result['p_value']:.2g})",
            result["statistic"],
            result["min_statistic"],
        )
    share = len(drifted) / len(tested) if tested else 0.0
    dataset_drift = bool(tested) and share >= config.drift_share
    if dataset_drift:
        found.anomaly(
            "dataset_drift",
            None,
            f"{len(drifted)} of {len(tested)} features drifted ({share:.0%} ≥ {config.drift_share:.0%})",
            share,
            config.drift_share,
        )
    return {
        "features_tested": len(tested),
        "drifted_features": drifted,
        "drifted_share": share,
        "drift_share_threshold": config.drift_share,
        "per_test_alpha": alpha,
        "dataset_drift": dataset_drift,
    }


# --- the component -------------------------------------------------------------------------------


def validate(
    frame: pd.DataFrame,
    config: ValidateConfig,
    schema: dict[str, Any] | None,
    reference: pd.DataFrame | None,
) -> dict[str, Any]:
    """Run every check and return the full report (pure: no files)."""
    found = Findings()
    baseline = "schema" if schema is not None else "reference" if reference is not None else "none"
    if schema is None and reference is not None:
        schema = infer_schema(reference, config.label, config.max_domain_size)
    for name in frame.columns:
        found.scores(name).update(type=column_type(frame[name]), missing_rate=float(frame[name].isna().mean()))
    if schema is not None:
        check_schema(frame, schema, config, found)
    duplicates = int(frame.duplicated().sum())
    duplicate_rate = duplicates / len(frame)
    if duplicate_rate > config.max_duplicate_rate:
        found.anomaly(
            "duplicate_rows",
            None,
            f"{duplicates} duplicate rows ({duplicate_rate:.1%})",
            duplicate_rate,
            config.max_duplicate_rate,
        )
    label_report: dict[str, Any] | None = None
    if config.label is not None:
        missing = int(frame[config.label].isna().sum())
        if missing:
            found.anomaly(
                "label_missing",
                config.label,
                f"label {config.label!r} is missing in {missing} rows",
                missing,
                0,
            )
        if reference is not None and config.label in reference.columns:
            label_report = check_label_shift(reference[config.label], frame[config.label], config, found)
    drift = check_drift(frame, reference, config.label, config, found) if reference is not None else None
    report: dict[str, Any] = json_safe(
        {
            "passed": not found.anomalies,
            "on_failure": config.on_failure,
            "baseline": baseline,
            "rows": len(frame),
            "columns": found.columns,
            "anomalies": found.anomalies,
            "dataset": {"duplicate_rows": duplicates, "duplicate_rate": duplicate_rate, "drift": drift},
            "label": label_report,
            "thresholds": config.model_dump(mode="json"),
        }
    )
    return report


def run(config: ValidateConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Validate `dataset`; write `schema` and `report`, then fail if asked to and anything was found."""
    frame = read_dataset(inputs["dataset"])
    require_rows(frame, "dataset")
    if config.label is not None:
        require_columns(frame, [config.label], "dataset", "label")
    schema = _read_schema(inputs["schema"]) if "schema" in inputs else None
    reference = read_dataset(inputs["reference"], "reference") if "reference" in inputs else None
    if reference is not None:
        require_rows(reference, "reference")
    report = validate(frame, config, schema, reference)
    write_json(infer_schema(frame, config.label, config.max_domain_size), outputs["schema"])
    write_json(report, outputs["report"])
    anomalies = report["anomalies"]
    drift = report["dataset"]["drift"] or {}
    if anomalies and config.on_failure == "fail":
        listed = "; ".join(a["message"] for a in anomalies[:5])
        more = f" (and {len(anomalies) - 5} more)" if len(anomalies) > 5 else ""
        raise ComponentError(f"validation found {len(anomalies)} anomalies: {listed}{more}")
    return {
        "anomalies": float(len(anomalies)),
        "drifted_features": float(len(drift.get("drifted_features", []))),
        "drifted_share": float(drift.get("drifted_share", 0.0)),
        "duplicate_rows": float(report["dataset"]["duplicate_rows"]),
        "rows": float(len(frame)),
        "passed": 1.0 if report["passed"] else 0.0,
    }
