"""The work of the `validate` component: one streaming pass per dataset into a profile, then checks on profiles.

What each check means, and the configuration, are documented with the contract in
`conveyor.components.validate`. Memory is bounded by the chunk size and the sample size, not by the
row count: a dataset is read in Arrow record batches and folded into a `DatasetProfile` (exact
counts, ranges and bounded category counts per column, a fixed-size sample per numeric column, and
8 bytes of row hash per row for duplicates); every check then reads the profiles, never the rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy import stats

from conveyor.components._html import page, table
from conveyor.components.atomic import atomic_output, json_safe, write_json
from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import require_columns
from conveyor.components.validate import ValidateConfig

SCHEMA_FORMAT = "conveyor.schema/v1"
ColumnType = Literal["integer", "float", "boolean", "string", "datetime", "other"]
_PSI_EPSILON = 1e-4
_MAX_LISTED = 10
DISTINCT_SKETCH_SIZE = 4096
"""Distinct counts are exact up to this many values, then a k-minimum-values estimate (about 1.6 % error)."""
_READ_BUFFER_BYTES = 1 << 20
_SAMPLE_SALT = 0x9E3779B97F4A7C15  # spreads the seed over 64 bits before the row numbers are hashed
_NULLABLE_PANDAS = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}
"""Row hashing converts integers and booleans to pandas' nullable types, so a value hashes the same in a
batch with missing values (where plain pandas would make the column float or object) as in one without."""


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


# --- reading ------------------------------------------------------------------------------------


def column_type(arrow_type: pa.DataType) -> ColumnType:
    """The logical type of a column, from its Arrow type (the file's, so the same in every batch)."""
    if pa.types.is_dictionary(arrow_type):
        return column_type(arrow_type.value_type)
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "float"
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return "datetime"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type):
        return "string"
    return "other"


def _is_numeric(kind: str) -> bool:
    return kind in ("integer", "float")


@dataclass(frozen=True)
class Source:
    """A dataset to profile: its Arrow schema, its row count, and its record batches on demand."""

    what: str
    schema: pa.Schema
    rows: int
    batches: Callable[[], Iterator[pa.RecordBatch]]

    @classmethod
    def parquet(cls, path: Path, what: str, chunk_rows: int) -> Source:
        """A Parquet file streamed in batches of `chunk_rows`; unreadable files are errors naming the input."""
        if not path.is_file():
            raise ComponentError(f"input {what!r}: no file at {path.name!r}")
        try:
            # pre_buffer (pyarrow's default) keeps every row group read so far in memory: 240 MiB for 1M rows
            # of the benchmark, growing with the file. A buffered stream reads each column chunk page by page.
            file = pq.ParquetFile(path, pre_buffer=False, buffer_size=_READ_BUFFER_BYTES)
            schema, rows = file.schema_arrow, file.metadata.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise ComponentError(f"input {what!r} is not a readable Parquet dataset: {exc}") from exc

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                yield from file.iter_batches(batch_size=chunk_rows)
            except (pa.ArrowException, OSError) as exc:
                raise ComponentError(f"input {what!r} is not a readable Parquet dataset: {exc}") from exc

        return cls(what, schema, rows, batches)

    @classmethod
    def frame(cls, frame: pd.DataFrame, what: str, chunk_rows: int) -> Source:
        """An in-memory frame, through the same Arrow conversion `write_dataset` uses."""
        table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        return cls(what, table.schema, table.num_rows, lambda: iter(table.to_batches(max_chunksize=chunk_rows)))

    def require(self, columns: list[str], field: str) -> None:
        require_columns(self.schema.empty_table().to_pandas(), columns, self.what, field)


def _row_keys(offset: int, n: int, seed: int) -> np.ndarray:
    """A pseudo-random 64-bit key per row number: the sample keeps the rows with the smallest keys.

    Keys depend on the row's position and the seed only, so the sample is the same whatever the chunk
    size, and uniform (pandas' integer hash is the splitmix64 finaliser, a bijection: no ties).
    """
    rows = np.arange(offset, offset + n, dtype=np.uint64) ^ np.uint64((seed * _SAMPLE_SALT) % 2**64)
    keys: np.ndarray = pd.util.hash_array(rows)
    return keys


def _category(value: Any) -> str:
    """How a value is named in category counts: integral floats as integers, so 1 and 1.0 are one class."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- profiles -------------------------------------------------------------------------------------


@dataclass
class ColumnProfile:
    """Everything the checks need to know about one column, folded batch by batch in bounded memory."""

    name: str
    kind: ColumnType
    category_cap: int
    sample_size: int
    rows: int = 0
    missing: int = 0
    minimum: Any = None
    maximum: Any = None
    integral: bool = True
    """Every present value is a whole number (always so for integer columns)."""
    counts: dict[str, int] | None = field(default_factory=dict)
    """Exact count per category, or None once there are more than `category_cap` categories."""
    smallest_hashes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    sample_values: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float64))
    sample_keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    out_of_range: int = 0
    unseen: int = 0
    unseen_examples: list[str] = field(default_factory=list)
    numbers: int = 0
    """Text values that read as numbers (a text column)."""
    not_numbers: dict[str, int] = field(default_factory=dict)
    """Text values that do not, with their counts (at most _MAX_LISTED kept; `not_number_count` has all)."""
    not_number_count: int = 0

    @property
    def present(self) -> int:
        return self.rows - self.missing

    @property
    def distinct(self) -> tuple[int, bool]:
        """(distinct present values, whether that is an estimate)."""
        if self.counts is not None:
            return len(self.counts), False
        k = len(self.smallest_hashes)
        if k < DISTINCT_SKETCH_SIZE:
            return k, False
        kth = float(self.smallest_hashes[-1]) / 2.0**64  # k-minimum values: k-th smallest of uniform hashes
        return round((k - 1) / kth), True

    def add(self, array: pa.Array, keys: np.ndarray, spec: Mapping[str, Any] | None) -> None:
        """Fold one batch of this column in; with a baseline `spec`, count range and domain violations too."""
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        self.rows += len(array)
        if _is_numeric(self.kind):
            self._add_numeric(array, keys, spec)
        elif self.kind != "other":
            self._add_categorical(array, spec)
        else:
            self.missing += array.null_count

    def _add_numeric(self, array: pa.Array, keys: np.ndarray, spec: Mapping[str, Any] | None) -> None:
        present_mask = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        values = np.asarray(pc.drop_null(array).to_numpy(zero_copy_only=False))
        if self.kind == "float":
            values = values.astype(np.float64, copy=False)
            number = ~np.isnan(values)
            if not number.all():  # NaN counts as missing, as in pandas
                present_mask[np.flatnonzero(present_mask)[~number]] = False
                values = values[number]
        self.missing += len(array) - len(values)
        if len(values) == 0:
            return
        low, high = values.min().item(), values.max().item()
        self.minimum = low if self.minimum is None else min(self.minimum, low)
        self.maximum = high if self.maximum is None else max(self.maximum, high)
        if self.kind == "float" and self.integral:
            self.integral = bool(np.all(np.mod(values, 1) == 0))
        if spec is not None and spec.get("min") is not None and spec.get("max") is not None:
            self.out_of_range += int(np.count_nonzero((values < spec["min"]) | (values > spec["max"])))
        uniques, counts = np.unique(values, return_counts=True)
        self._add_hashes(pd.util.hash_array(uniques))
        if self.counts is not None:
            if len(uniques) > self.category_cap:
                self.counts = None
            else:
                self._add_counts([_category(v) for v in uniques.tolist()], counts.tolist())
        self._add_sample(values.astype(np.float64, copy=False), keys[present_mask])

    def _add_categorical(self, array: pa.Array, spec: Mapping[str, Any] | None) -> None:
        self.missing += array.null_count
        present = pc.drop_null(array)
        if len(present) == 0:
            return
        value_counts = pc.value_counts(present)
        names = [_category(v) for v in value_counts.field("values").to_pylist()]
        counts = value_counts.field("counts").to_pylist()
        self._add_hashes(pd.util.hash_array(np.asarray(names, dtype=object)))
        if self.kind == "string":
            self._add_text_numbers(names, counts)
        if spec is not None and spec.get("categories") is not None:
            known = {str(v) for v in spec["categories"]}
            unseen = [(n, c) for n, c in zip(names, counts, strict=True) if n not in known]
            self.unseen += sum(c for _, c in unseen)
            self.unseen_examples = sorted({*self.unseen_examples, *(n for n, _ in unseen)})[:_MAX_LISTED]
        if self.counts is not None:
            self._add_counts(names, counts)

    def _add_text_numbers(self, names: list[str], counts: list[int]) -> None:
        """Count the text values that are numbers and keep the ones that are not: a numeric column read as
        text because some cells hold `n/a`, `-` or `?` is told apart from a real text column by them."""
        parsed = pd.to_numeric(pd.Series(names, dtype=object), errors="coerce").notna().to_numpy()
        for name, count, number in zip(names, counts, parsed, strict=True):
            if number:
                self.numbers += count
            else:
                self.not_number_count += count
                if name in self.not_numbers or len(self.not_numbers) < _MAX_LISTED:
                    self.not_numbers[name] = self.not_numbers.get(name, 0) + count

    def _add_counts(self, names: list[str], counts: list[int]) -> None:
        assert self.counts is not None
        for name, count in zip(names, counts, strict=True):
            self.counts[name] = self.counts.get(name, 0) + count
        if len(self.counts) > self.category_cap:
            self.counts = None

    def _add_hashes(self, hashes: np.ndarray) -> None:
        if len(self.smallest_hashes) == DISTINCT_SKETCH_SIZE:
            hashes = hashes[hashes < self.smallest_hashes[-1]]
        if len(hashes):
            self.smallest_hashes = np.union1d(self.smallest_hashes, hashes)[:DISTINCT_SKETCH_SIZE]

    def _add_sample(self, values: np.ndarray, keys: np.ndarray) -> None:
        """Bottom-k sampling: keep the values of the `sample_size` rows with the smallest keys (uniform)."""
        if len(self.sample_keys) == self.sample_size:
            below = keys < self.sample_keys.max()
            values, keys = values[below], keys[below]
        all_keys = np.concatenate([self.sample_keys, keys])
        all_values = np.concatenate([self.sample_values, values])
        if len(all_keys) > self.sample_size:
            keep = np.argpartition(all_keys, self.sample_size - 1)[: self.sample_size]
            all_keys, all_values = all_keys[keep], all_values[keep]
        self.sample_keys, self.sample_values = all_keys, all_values

    @property
    def sampled(self) -> bool:
        """Whether drift tests see a sample of this column's values rather than all of them."""
        return len(self.sample_values) < self.present


@dataclass
class DatasetProfile:
    """A dataset folded into per-column profiles plus one 64-bit hash per row (for duplicates)."""

    rows: int
    columns: dict[str, ColumnProfile]
    duplicate_rows: int


def profile(source: Source, config: ValidateConfig, baseline: Mapping[str, Any] | None = None) -> DatasetProfile:
    """One pass over `source`; with a `baseline` schema, range and domain violations are counted on the way."""
    cap = max(config.max_domain_size, config.max_label_classes, config.discrete_max_unique)
    columns = {
        f.name: ColumnProfile(f.name, column_type(f.type), category_cap=cap, sample_size=config.drift_sample_size)
        for f in source.schema
    }
    specs = {c["name"]: c for c in baseline["columns"]} if baseline is not None else {}
    hashable = [f.name for f in source.schema if column_type(f.type) != "other"]
    row_hashes: list[np.ndarray] = []
    offset = 0
    for batch in source.batches():
        keys = _row_keys(offset, batch.num_rows, config.seed)
        for name, array in zip(batch.schema.names, batch.columns, strict=True):
            columns[name].add(array, keys, specs.get(name))
        if hashable:
            frame = batch.select(hashable).to_pandas(types_mapper=_NULLABLE_PANDAS.get)
            row_hashes.append(pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64))
        offset += batch.num_rows
    hashes = np.concatenate(row_hashes) if row_hashes else np.empty(0, dtype=np.uint64)
    del row_hashes  # two copies at most: 16 bytes a row, briefly
    hashes.sort()
    duplicates = int(np.count_nonzero(hashes[1:] == hashes[:-1]))
    return DatasetProfile(rows=offset, columns=columns, duplicate_rows=duplicates)


# --- schema -------------------------------------------------------------------------------------


def _profile_of(data: pd.DataFrame | DatasetProfile, config: ValidateConfig, what: str) -> DatasetProfile:
    if isinstance(data, DatasetProfile):
        return data
    return profile(Source.frame(data, what, config.chunk_rows), config)


def infer_schema(data: pd.DataFrame | DatasetProfile, label: str | None, max_domain_size: int) -> dict[str, Any]:
    """Describe each column: type, missing rate, numeric range, and the category domain when small."""
    found = _profile_of(data, ValidateConfig(label=label, max_domain_size=max_domain_size), "dataset")
    columns = []
    for column in found.columns.values():
        unique, estimated = column.distinct
        entry: dict[str, Any] = {
            "name": column.name,
            "type": column.kind,
            "missing_rate": column.missing / column.rows if column.rows else 0.0,
            "unique": unique,
        }
        if estimated:
            entry["unique_estimated"] = True
        if _is_numeric(column.kind) and column.present:
            entry["min"], entry["max"] = column.minimum, column.maximum
        if column.kind in ("string", "boolean") and column.counts is not None and unique <= max_domain_size:
            names = sorted(column.counts, key=str)
            entry["categories"] = [n == "True" for n in names] if column.kind == "boolean" else names
        columns.append(entry)
    schema: dict[str, Any] = json_safe(
        {"format": SCHEMA_FORMAT, "rows": found.rows, "label": label, "columns": columns}
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


def _types_compatible(expected: str, column: ColumnProfile) -> bool:
    """Whether a column of `column.kind` can hold data of the `expected` type (no values contradict none)."""
    actual = column.kind
    if expected == actual or (expected == "float" and actual == "integer") or column.present == 0:
        return True
    return expected == "integer" and actual == "float" and column.integral


def check_schema(data: DatasetProfile, schema: dict[str, Any], config: ValidateConfig, found: Findings) -> None:
    """Columns, types, ranges, domains and missing rates against the baseline schema."""
    expected = {c["name"]: c for c in schema["columns"]}
    for name in expected:
        if name not in data.columns:
            found.anomaly("missing_column", name, f"column {name!r} is in the schema but not in the data", None, None)
    for name, column in data.columns.items():
        if name not in expected:
            found.anomaly("new_column", name, f"column {name!r} is not in the schema", None, None)
            continue
        spec = expected[name]
        scores = found.scores(name)
        if not _types_compatible(spec["type"], column):
            found.anomaly(
                "type_mismatch",
                name,
                f"column {name!r} has type {column.kind}, the schema says {spec['type']}",
                column.kind,
                spec["type"],
            )
            continue
        _check_missing(column, spec, config, found)
        if column.rows == 0:
            continue
        if _is_numeric(column.kind) and spec.get("min") is not None and spec.get("max") is not None:
            rate = column.out_of_range / column.rows
            scores.update(out_of_range_count=column.out_of_range, out_of_range_rate=rate)
            if rate > config.max_out_of_range_rate:
                found.anomaly(
                    "out_of_range",
                    name,
                    f"{column.out_of_range} values of {name!r} ({rate:.1%}) lie outside [{spec['min']}, {spec['max']}]",
                    rate,
                    config.max_out_of_range_rate,
                )
        if spec.get("categories") is not None and not _is_numeric(column.kind):
            rate = column.unseen / column.rows
            unseen = column.unseen_examples
            scores.update(unseen_categories=unseen, unseen_category_rate=rate)
            if rate > config.max_unseen_category_rate:
                found.anomaly(
                    "unseen_categories",
                    name,
                    f"{rate:.1%} of {name!r} are categories never seen before, e.g. {unseen[:3]!r}",
                    rate,
                    config.max_unseen_category_rate,
                )


def check_not_numbers(column: ColumnProfile, found: Findings) -> None:
    """A text column whose values are mostly numbers holds some that are not (`n/a`, `-`, `?`): report them
    as such, whatever any threshold on missing values says, since a reader may have taken them for missing."""
    if column.not_number_count == 0 or column.numbers < column.not_number_count:
        return
    shown = ", ".join(f"{v!r}: {n}" for v, n in sorted(column.not_numbers.items(), key=lambda x: (-x[1], x[0])))
    found.scores(column.name)["not_numbers"] = column.not_number_count
    found.anomaly(
        "not_numbers",
        column.name,
        f"column {column.name!r} is numeric but {column.not_number_count} of {column.present} values are not "
        f"numbers ({shown}); they were kept as text, not taken for missing",
        column.not_number_count,
        0,
    )


def _check_missing(column: ColumnProfile, spec: dict[str, Any], config: ValidateConfig, found: Findings) -> None:
    rate = column.missing / column.rows if column.rows else 0.0
    baseline = float(spec.get("missing_rate", 0.0))
    found.scores(column.name).update(missing_rate=rate, baseline_missing_rate=baseline)
    if rate - baseline > config.max_missing_rate_increase:
        found.anomaly(
            "missing_rate_increase",
            column.name,
            f"missing rate of {column.name!r} rose from {baseline:.1%} to {rate:.1%}",
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


def _category_counts(reference: dict[str, int], current: dict[str, int]) -> tuple[list[str], np.ndarray, np.ndarray]:
    categories = sorted(set(reference) | set(current))
    return (
        categories,
        np.array([reference.get(c, 0) for c in categories], dtype=float),
        np.array([current.get(c, 0) for c in categories], dtype=float),
    )


def _chi_squared_p(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    if len(ref_counts) < 2:
        return 1.0
    return float(stats.chi2_contingency(np.vstack([ref_counts, cur_counts])).pvalue)


def drift_test(
    reference: ColumnProfile, current: ColumnProfile, alpha: float, config: ValidateConfig
) -> dict[str, Any] | None:
    """Test one column for drift; None when the column is not testable (empty, or id-like)."""
    if reference.present == 0 or current.present == 0:
        return None
    both_counted = reference.counts is not None and current.counts is not None
    distinct = len(set(reference.counts or {}) | set(current.counts or {})) if both_counted else None
    if (
        _is_numeric(reference.kind)
        and _is_numeric(current.kind)
        and (distinct is None or distinct > config.discrete_max_unique)
    ):
        ref, cur = reference.sample_values, current.sample_values
        result = stats.ks_2samp(ref, cur)
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
            "sampled": reference.sampled or current.sampled,
            "drifted": p_value < alpha and statistic >= config.drift_min_statistic,
        }
    if distinct is None or distinct > config.max_domain_size:
        return None
    assert reference.counts is not None and current.counts is not None
    _, ref_counts, cur_counts = _category_counts(reference.counts, current.counts)
    psi = population_stability_index(ref_counts, cur_counts)
    p_value = _chi_squared_p(ref_counts, cur_counts)
    return {
        "test": "chi2+psi",
        "statistic": psi,
        "p_value": p_value,
        "alpha": alpha,
        "min_statistic": config.psi_threshold,
        "reference_rows": reference.present,
        "current_rows": current.present,
        "sampled": False,
        "drifted": p_value < alpha and psi >= config.psi_threshold,
    }


def _is_class_label(column: ColumnProfile, max_classes: int) -> bool:
    if column.counts is None:
        return False
    if column.kind in ("string", "boolean"):
        return True
    return _is_numeric(column.kind) and column.integral and len(column.counts) <= max_classes


def check_label_shift(
    reference: ColumnProfile, current: ColumnProfile, config: ValidateConfig, found: Findings
) -> dict[str, Any]:
    """Class balance (classification) or target distribution (regression) against the reference."""
    name = current.name
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
    assert reference.counts is not None and current.counts is not None
    classes, ref_counts, cur_counts = _category_counts(reference.counts, current.counts)
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
    data: DatasetProfile, reference: DatasetProfile, label: str | None, config: ValidateConfig, found: Findings
) -> dict[str, Any]:
    """Per-feature drift tests and the dataset-level verdict."""
    pairs = [(reference.columns[c], data.columns[c]) for c in data.columns if c in reference.columns and c != label]
    compatible = [
        (ref, cur) for ref, cur in pairs if _types_compatible(ref.kind, cur) or _types_compatible(cur.kind, ref)
    ]
    alpha = config.drift_p_value / max(1, len(compatible))
    results = {cur.name: drift_test(ref, cur, alpha, config) for ref, cur in compatible}
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
        "sample_size": config.drift_sample_size,
        "dataset_drift": dataset_drift,
    }


# --- the component -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Validation:
    """The report, and the profile of the validated dataset (whose schema becomes the next baseline)."""

    report: dict[str, Any]
    profile: DatasetProfile


def validate_sources(
    source: Source, config: ValidateConfig, schema: dict[str, Any] | None, reference: Source | None
) -> Validation:
    """Profile the reference (if any), then the dataset against the baseline, then run every check."""
    baseline = "schema" if schema is not None else "reference" if reference is not None else "none"
    reference_profile = profile(reference, config) if reference is not None else None
    if schema is None and reference_profile is not None:
        schema = infer_schema(reference_profile, config.label, config.max_domain_size)
    data = profile(source, config, schema)
    found = Findings()
    for name, column in data.columns.items():
        found.scores(name).update(type=column.kind, missing_rate=column.missing / column.rows if column.rows else 0.0)
    if schema is not None:
        check_schema(data, schema, config, found)
    for column in data.columns.values():
        check_not_numbers(column, found)
    duplicate_rate = data.duplicate_rows / data.rows if data.rows else 0.0
    if duplicate_rate > config.max_duplicate_rate:
        found.anomaly(
            "duplicate_rows",
            None,
            f"{data.duplicate_rows} duplicate rows ({duplicate_rate:.1%})",
            duplicate_rate,
            config.max_duplicate_rate,
        )
    label_report: dict[str, Any] | None = None
    if config.label is not None and config.label in data.columns:
        missing = data.columns[config.label].missing
        if missing:
            found.anomaly(
                "label_missing", config.label, f"label {config.label!r} is missing in {missing} rows", missing, 0
            )
        if reference_profile is not None and config.label in reference_profile.columns:
            label_report = check_label_shift(
                reference_profile.columns[config.label], data.columns[config.label], config, found
            )
    drift = check_drift(data, reference_profile, config.label, config, found) if reference_profile is not None else None
    report: dict[str, Any] = json_safe(
        {
            "passed": not found.anomalies,
            "on_failure": config.on_failure,
            "baseline": baseline,
            "rows": data.rows,
            "columns": found.columns,
            "anomalies": found.anomalies,
            "dataset": {
                "duplicate_rows": data.duplicate_rows,
                "duplicate_rate": duplicate_rate,
                "duplicates_by": "64-bit row hashes",
                "drift": drift,
            },
            "label": label_report,
            "thresholds": config.model_dump(mode="json"),
        }
    )
    return Validation(report, data)


def validate(
    frame: pd.DataFrame,
    config: ValidateConfig,
    schema: dict[str, Any] | None,
    reference: pd.DataFrame | None,
) -> dict[str, Any]:
    """Validate in-memory frames (pure: no files), through the same streaming code as the component."""
    current = Source.frame(frame, "dataset", config.chunk_rows)
    baseline = Source.frame(reference, "reference", config.chunk_rows) if reference is not None else None
    return validate_sources(current, config, schema, baseline).report


def render_html(report: Mapping[str, Any]) -> str:
    """One page for people: the verdict, every anomaly, and every column's scores (not only the failing ones)."""
    drift = report["dataset"]["drift"] or {}
    verdict = "passed" if report["passed"] else f"{len(report['anomalies'])} anomalies"
    about = [
        ("verdict", verdict),
        ("rows", int(report["rows"])),
        ("duplicate rows", int(report["dataset"]["duplicate_rows"])),
        ("dataset drift", "yes" if drift.get("dataset_drift") else ("no" if drift else "no reference")),
        ("drifted share", float(drift.get("drifted_share", 0.0))),
    ]
    sections = [table(["", ""], about)]
    if report["anomalies"]:
        rows = [(a.get("column") or "(dataset)", a.get("check", ""), a["message"]) for a in report["anomalies"]]
        sections += ["<h2>Anomalies</h2>", table(["column", "check", "message"], rows)]
    columns = []
    for name, col in sorted(report["columns"].items()):
        test = col.get("drift") or {}
        columns.append(
            (
                name,
                col.get("type", ""),
                float(col.get("missing_rate", 0.0)),
                float(col.get("out_of_range_rate", 0.0)),
                test.get("test", ""),
                float(test["statistic"]) if "statistic" in test else "",
                float(test["p_value"]) if "p_value" in test else "",
                "yes" if test.get("drifted") else "",
            )
        )
    header = ["column", "type", "missing rate", "out of range", "drift test", "statistic", "p-value", "drifted"]
    sections += ["<h2>Columns</h2>", table(header, columns)]
    label = report.get("label")
    if label:
        shares = sorted(set(label.get("current_shares", {})) | set(label.get("reference_shares", {})))
        rows = [
            (k, label.get("reference_shares", {}).get(k, ""), label.get("current_shares", {}).get(k, ""))
            for k in shares
        ]
        sections += ["<h2>Label balance</h2>", table(["class", "reference share", "current share"], rows)]
    return page("Data validation report", "\n".join(sections))


def run(config: ValidateConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Validate `dataset`; write `schema` and `report`, then fail if asked to and anything was found."""
    source = Source.parquet(inputs["dataset"], "dataset", config.chunk_rows)
    if source.rows == 0:
        raise ComponentError("input 'dataset' is empty (0 rows)")
    if config.label is not None:
        source.require([config.label], "label")
    schema = _read_schema(inputs["schema"]) if "schema" in inputs else None
    reference = Source.parquet(inputs["reference"], "reference", config.chunk_rows) if "reference" in inputs else None
    if reference is not None and reference.rows == 0:
        raise ComponentError("input 'reference' is empty (0 rows)")
    validation = validate_sources(source, config, schema, reference)
    report = validation.report
    write_json(infer_schema(validation.profile, config.label, config.max_domain_size), outputs["schema"])
    write_json(report, outputs["report"])
    if "report_html" in outputs:
        with atomic_output(outputs["report_html"]) as tmp:
            tmp.write_text(render_html(report), encoding="utf-8")
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
        "rows": float(report["rows"]),
        "passed": 1.0 if report["passed"] else 0.0,
    }
