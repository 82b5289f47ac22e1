"""The `validate` component: check a dataset against a schema and a reference before it is used.

Baseline: the `schema` input (from an earlier run) if given, else a schema inferred from the
`reference` input, else none (then only the checks that need no baseline run). The output
`schema` is always inferred from the dataset itself, so this run can be the next run's baseline.

Checks (each firing check is one anomaly in the report; every score is reported either way):

- schema: missing and new columns, type mismatches (an integer column read back as float
  because of missing values is not one);
- ranges and domains, as rates so that sampling noise at the edges of the observed range
  does not alert: values outside the baseline [min, max] (`max_out_of_range_rate`), values
  outside the baseline categories (`max_unseen_category_rate`), missing-rate increases
  (`max_missing_rate_increase`);
- duplicate rows (`max_duplicate_rate`) and missing labels;
- values that are not numbers in a numeric column (`not_numbers`): a text column whose values are
  mostly numbers holds some that are not, such as `n/a`, `-` or `?` (ingest keeps them as text, so
  they are never silently taken for missing); reported whatever the missing-value thresholds;
- against `reference`: label class balance (alerts when a class share moves by at least
  `label_shift_threshold` and a chi-squared test on the class counts is significant), and
  per-feature drift.

Drift tests (a feature drifts only when the change is both significant and large enough):

- numeric columns with more than `discrete_max_unique` distinct values: the two-sample
  Kolmogorov-Smirnov test (scipy). The significance level is `drift_p_value` divided by the
  number of features tested (Bonferroni), so the chance of any false alarm on a dataset is
  at most `drift_p_value`; the KS critical distance shrinks with sample size as
  sqrt((n+m)/(n·m)), and the floor `drift_min_statistic` on the KS distance stops very large
  samples from alerting on negligible shifts (the failure mode users report of p-value tests).
- categorical and low-cardinality columns: a chi-squared test on the category counts (same
  corrected level) together with the population stability index (PSI ≥ `psi_threshold`) as
  the effect size. Columns with more than `max_domain_size` categories (ids, free text) are
  not tested.

The dataset-level verdict is Evidently's: the dataset drifted when the share of drifted
features reaches `drift_share`. With `on_failure: fail` any anomaly fails the step after
both outputs are written, so the report of a failed validation is never lost.

Memory is bounded: the dataset (and the reference) is read in Parquet record batches of
`chunk_rows` rows and folded into a per-column profile, so the step's peak follows the chunk
size and `drift_sample_size`, not the row count. What is exact and what is sampled:

- exact over all rows: row count, per-column missing counts, min/max, range and domain
  violations, category counts (up to `max_domain_size` categories; more makes a column id-like,
  as before), class balance of the label, and so the chi-squared and PSI tests;
- duplicate rows: one 64-bit hash per row (pandas' row hash; 8 bytes a row), sorted and
  counted at the end; two different rows collide with probability about n²/2⁶⁵ (3·10⁻⁸ for a
  million rows), which could only add a duplicate, never hide one;
- distinct counts in the schema: exact up to 4,096 values, then a k-minimum-values estimate
  (about 1.6 % relative error; the schema marks it `unique_estimated`);
- the KS test of numeric columns (and of a regression label): a uniform sample without
  replacement of at most `drift_sample_size` values per column and dataset (default 100,000),
  chosen by a seeded hash of the row number, so the same data, seed and size give the same
  sample whatever the chunk size. Below that size the test sees every value, as before; the
  report marks a sampled test `sampled: true` and gives the sizes actually compared. At
  100,000 values a side the KS critical distance at level 0.05/20 is about 0.008, far below the
  `drift_min_statistic` floor of 0.1, so sampling does not change which shifts alert.

For comparison (see the quality reference): TFDV samples nothing by default (`StatsOptions`
`sample_rate` and `sample_count` unset) but computes its statistics in Beam with sketches
(quantiles with epsilon 0.01, top 20 values, 10-bucket histograms) and compares histograms, not
raw samples; Evidently samples nothing and holds both frames in pandas, switching from KS
and chi² to distances (Wasserstein, Jensen-Shannon) above 1,000 reference rows because
p-values on big samples flag negligible shifts, the problem our statistic floor addresses.

This module is the contract, cheap to import; the work (pyarrow, pandas, numpy, scipy) is in `_validate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field

from conveyor.components.base import Component, ComponentConfig, Metrics


class ValidateConfig(ComponentConfig):
    """Which column is the label, what counts as an anomaly, and what an anomaly does."""

    label: str | None = None
    on_failure: Literal["fail", "warn"] = "fail"
    drift_p_value: float = Field(default=0.05, gt=0.0, lt=1.0)
    drift_min_statistic: float = Field(default=0.1, ge=0.0, le=1.0)
    psi_threshold: float = Field(default=0.1, ge=0.0)
    drift_share: float = Field(default=0.5, gt=0.0, le=1.0)
    label_shift_threshold: float = Field(default=0.1, gt=0.0, le=1.0)
    max_missing_rate_increase: float = Field(default=0.05, ge=0.0, le=1.0)
    max_out_of_range_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    max_unseen_category_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    max_duplicate_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    max_domain_size: int = Field(default=100, gt=0)
    discrete_max_unique: int = Field(default=5, ge=1)
    max_label_classes: int = Field(default=20, ge=2)
    """A label with at most this many distinct integral values is a class label, not a target value."""
    drift_sample_size: int = Field(default=100_000, ge=1_000)
    """Values per numeric column (and dataset) that the KS test compares: a seeded uniform sample beyond this."""
    seed: int = Field(default=0, ge=0)
    """Seed of the KS sample."""
    chunk_rows: int = Field(default=100_000, ge=1)
    """Rows read per batch: the step's memory follows this, not the dataset's size."""


def run(config: ComponentConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Validate `dataset`; write `schema` and `report`, then fail if asked to and anything was found."""
    from conveyor.components import _validate  # noqa: PLC0415  # the ML stack loads when a step runs, not on import

    assert isinstance(config, ValidateConfig)
    return _validate.run(config, inputs, outputs)


COMPONENT = Component(
    name="validate",
    config=ValidateConfig,
    run=run,
    required_inputs=frozenset({"dataset"}),
    optional_inputs=frozenset({"schema", "reference"}),
    outputs=frozenset({"schema", "report", "report_html"}),
    description=(
        "Check a dataset against a schema and a reference: types, ranges, domains, labels, drift; JSON and HTML report."
    ),
)
