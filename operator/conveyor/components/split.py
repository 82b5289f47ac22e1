"""The `split` component: hold out a test set without leaking rows, groups or the future into training.

Strategies: `random`, `stratified` (class proportions kept, needs `label`), `group` (every
value of `group_column` lands wholly in train or wholly in test) and `time` (rows sorted by
`time_column`; the latest rows form the test set, and rows sharing the boundary timestamp all
go to test, so every training timestamp is strictly earlier than every test timestamp).
Both outputs keep the input's row order (time: chronological order).

This module is the contract, cheap to import; the work (pandas, scikit-learn) is in `_split`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator

from conveyor.components.base import Component, ComponentConfig, Metrics


class SplitConfig(ComponentConfig):
    """How to hold out the test set."""

    label: str | None = None
    test_size: float = Field(default=0.2, gt=0.0, lt=1.0)
    seed: int = 0
    strategy: Literal["random", "stratified", "group", "time"] = "random"
    group_column: str | None = None
    time_column: str | None = None

    @model_validator(mode="after")
    def _strategy_needs_its_column(self) -> Self:
        needed = {
            "stratified": ("label", self.label),
            "group": ("group_column", self.group_column),
            "time": ("time_column", self.time_column),
        }.get(self.strategy)
        if needed is not None and needed[1] is None:
            raise ValueError(f"strategy {self.strategy!r} needs {needed[0]!r} to be set")
        return self


def run(config: ComponentConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Split `dataset` into `train` and `test`."""
    from conveyor.components import _split  # noqa: PLC0415  # the ML stack loads when a step runs, not on import

    assert isinstance(config, SplitConfig)
    return _split.run(config, inputs, outputs)


COMPONENT = Component(
    name="split",
    config=SplitConfig,
    run=run,
    required_inputs=frozenset({"dataset"}),
    outputs=frozenset({"train", "test"}),
    description="Split a dataset into train and test (random, stratified, by group, or by time).",
)
