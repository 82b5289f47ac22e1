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

This module is the contract, cheap to import; the work (pandas, numpy, scipy) is in `_validate`.
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
    outputs=frozenset({"schema", "report"}),
    description="Check a dataset against a schema and a reference: types, ranges, domains, labels, drift.",
)
