"""The `tune` component: search hyper-parameters in one step, by successive halving or exhaustively.

Two ways to tune in Conveyor, for two different needs:

- Fan-out (`train` with `forEach: {grid: ...}`, then `select-best`): one Job per trial. Each
  trial is cached, retried and scheduled on its own, in parallel across nodes; changing one grid
  value re-runs one trial. This stays the way to get one Job per trial.
- `tune` (this component): the whole search inside one step, with scikit-learn's searches.
  `strategy: halving-grid` or `halving-random` runs successive halving: every candidate is
  cross-validated on a small budget of the `resource` (training rows by default, or an
  estimator parameter such as `n_estimators`), the best 1/`factor` of them go on to a budget
  `factor` times larger, and so on until one round remains. Each round depends on the scores
  of the round before, so the rounds cannot be independent Jobs fanned out from the planner;
  within a round the fits run in parallel in the step's own processes (`n_jobs`, which should
  match the step's CPU request). `grid` and `random` are the plain exhaustive and randomized
  searches, for when the candidates are few or a single step is simply more convenient.

As in `train`, the fitted transformer (from `preprocess`) is kept exactly as fitted: the search
fits and cross-validates only the estimator, on the transformed training data, and the winner
is refitted on all of it. The transformer was fitted on all the training rows, so cross-validation
scores are slightly optimistic for every candidate alike; the held-out evaluation is the honest
number. The output `model` is the same servable artifact `train` writes (the pipeline of the
transformer and the refitted best estimator, the same metadata and training-data profile), so
`evaluate`, `gate`, `batch-predict` and the server take it unchanged.

`space` maps estimator parameter names to candidate values: a list (every strategy), or, for the
random strategies, a distribution written `{"uniform": [low, high]}`, `{"loguniform": [low, high]}`
(low > 0; for scales such as `C` or `alpha`) or `{"randint": [low, high]}` (an integer, both ends
included). Lists in a random strategy are sampled uniformly. `params` are fixed constructor
parameters, as in `train`. Parameter names are checked against the estimator before anything is
fitted, so a typo fails at once naming the parameter and the valid ones.

`metric` is the score being maximized or minimized, by the names `evaluate`, `gate` and
`select-best` use (computed by the same code, so a `roc_auc` here means what it means there); by
default accuracy for a classifier and R² for a regressor. Candidates whose fit fails score null
and are recorded as fit warnings; the step fails only if every candidate fails.

Output `trials` (JSON): the search settings, every candidate of every round (round, resource
budget, params, mean and standard deviation of the cross-validated score in the metric's own sign,
whether it was promoted to the next round), the candidates and budget of each round, the winner,
and the warnings the search raised (failed fits, undefined scores). Metrics: `best_score`,
`candidates`, `rounds`, `candidates_round_<i>` per round (0-based), `train_rows`,
`input_features`, `fit_warnings` (the winner's refit, also in the model's metadata as in `train`)
and `search_warnings`. With the same data, configuration and `seed` (used for the estimator's
`random_state`, the cross-validation folds, the sampled candidates and the halving subsamples)
the model has the same digest, whatever `n_jobs` (warnings raised inside worker processes do not
reach the `trials` record, so with `n_jobs` > 1 its warning list can be shorter).

This module is the contract, cheap to import; the work (pandas, scikit-learn, skops) is in `_tune`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from conveyor.components.base import Component, ComponentConfig, Metrics
from conveyor.components.scoring import check_metric

Strategy = Literal["halving-grid", "halving-random", "grid", "random"]
ParamValue = str | int | float | bool | None
DISTRIBUTIONS = ("loguniform", "randint", "uniform")
"""The distributions a random strategy can sample a parameter from, by the key that names them."""
DEFAULT_RANDOM_CANDIDATES = 10
"""Candidates `strategy: random` samples when `n_candidates` is not set."""


def _check_distribution(name: str, spec: Mapping[str, Any]) -> None:
    if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ValueError(
            f"space.{name}: a distribution is one of {', '.join(f'{{{d}: [low, high]}}' for d in DISTRIBUTIONS)}; "
            f"got keys {sorted(spec)!r}"
        )
    kind, bounds = next(iter(spec.items()))
    if not (isinstance(bounds, list | tuple) and len(bounds) == 2):
        raise ValueError(f"space.{name}: {kind} needs [low, high], got {bounds!r}")
    numeric = all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
    if not numeric or (kind == "randint" and not all(isinstance(b, int) for b in bounds)):
        raise ValueError(f"space.{name}: {kind} bounds must be {'integers' if kind == 'randint' else 'numbers'}")
    low, high = bounds
    if kind == "randint" and low > high:
        raise ValueError(f"space.{name}: randint needs low <= high, got [{low}, {high}]")
    if kind != "randint" and not low < high:
        raise ValueError(f"space.{name}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"space.{name}: loguniform needs low > 0, got {low}")


class TuneConfig(ComponentConfig):
    """Which estimator to tune over which space, how to search, and which score decides."""

    estimator: str
    """Import path of a scikit-learn estimator class, e.g. `sklearn.ensemble.RandomForestClassifier`."""
    params: dict[str, Any] = {}
    """Fixed constructor parameters (not searched); unknown names are errors."""
    space: dict[str, list[ParamValue] | dict[str, list[float | int]]] = Field(min_length=1)
    """Parameter name → candidate values (a list) or, for random strategies, a distribution."""
    label: str
    strategy: Strategy = "halving-grid"
    resource: str = "n_samples"
    """Halving only: what grows from round to round, `n_samples` (training rows) or an integer
    estimator parameter such as `n_estimators` or `max_iter` (then `max_resources` is required)."""
    factor: float = Field(default=3.0, gt=1)
    """Halving only: each round keeps 1/factor of the candidates and gives them factor times the resource."""
    min_resources: int | None = Field(default=None, ge=1)
    """Halving only: the first round's budget; by default scikit-learn's (`exhaust` for a grid: as
    large as lets the last round use `max_resources`; `smallest` for random)."""
    max_resources: int | None = Field(default=None, ge=1)
    """Halving only: the last round's budget at most; by default every training row."""
    aggressive_elimination: bool = False
    """Halving only: eliminate extra candidates in the first rounds when the budget runs out before one remains."""
    n_candidates: int | None = Field(default=None, ge=1)
    """Random strategies: how many candidates to sample (halving-random's default fills the budget,
    `random`'s is `DEFAULT_RANDOM_CANDIDATES`)."""
    metric: str | None = None
    """The score that decides (names as in `evaluate`/`gate`); default accuracy or R²."""
    cv: int = Field(default=5, ge=2)
    """Cross-validation folds (stratified for classifiers, shuffled with `seed`)."""
    seed: int = 0
    """Seeds the estimator's `random_state` (unless `params` sets it), the folds, the candidates and subsamples."""
    n_jobs: int = Field(default=1, ge=1)
    """Fits run in parallel in this many processes; match the step's CPU request."""

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        return None if value is None else check_metric(value, "metric")

    @field_validator("space")
    @classmethod
    def _well_formed_space(
        cls, space: dict[str, list[ParamValue] | dict[str, list[float | int]]]
    ) -> dict[str, list[ParamValue] | dict[str, list[float | int]]]:
        for name, values in space.items():
            if isinstance(values, list):
                if not values:
                    raise ValueError(f"space.{name}: the list of candidate values is empty")
            else:
                _check_distribution(name, values)
        return space

    @model_validator(mode="after")
    def _space_fits_strategy(self) -> TuneConfig:
        if self.strategy in ("grid", "halving-grid"):
            sampled = sorted(name for name, values in self.space.items() if not isinstance(values, list))
            if sampled:
                raise ValueError(
                    f"space.{sampled[0]}: a distribution needs strategy random or halving-random; "
                    f"strategy {self.strategy} takes a list of values"
                )
        return self


def run(config: ComponentConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Search `space` on `train` (through the fitted transformer); save the best pipeline and every trial."""
    from conveyor.components import _tune  # noqa: PLC0415  # the ML stack loads when a step runs, not on import

    assert isinstance(config, TuneConfig)
    return _tune.run(config, inputs, outputs)


COMPONENT = Component(
    name="tune",
    config=TuneConfig,
    run=run,
    required_inputs=frozenset({"train"}),
    optional_inputs=frozenset({"transformer"}),
    outputs=frozenset({"model", "trials"}),
    description="Search hyper-parameters in one step (successive halving, grid or random); save the best model.",
)
