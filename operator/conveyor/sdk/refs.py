"""Placeholders a pipeline function works with: parameters, fan-out items, step outputs and metrics.

While a pipeline is built nothing has a value yet, so these stand for values the Run will have. Each turns
into the text the YAML would hold: a template (`{{ params.seed }}`) where a string goes, a CEL operand
(`params.seed`, `steps.evaluate.metrics.roc_auc`) in a `when` condition.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.api.pipeline import ParameterType

if TYPE_CHECKING:
    from conveyor.sdk.builder import StepHandle

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Binding strength in CEL (and in Python's & | ~): operands and ! bind tightest, then comparisons, &&, ||.
_OR, _AND, _COMPARISON, _ATOM = 1, 2, 3, 4


def _no_value(what: str) -> TypeError:
    return TypeError(
        f"{what} has no value while the pipeline is built: pass it where the YAML would hold a template "
        "(with_, a container's command or args) or compare it for when=; Python's if/and/or cannot read it"
    )


def _operand(value: Any) -> tuple[str, frozenset[str]]:
    """(CEL text, steps read) of one side of a comparison."""
    if isinstance(value, Expr):
        return (value.text if value.level == _ATOM else f"({value.text})"), value.steps
    if isinstance(value, ParamRef | MetricRef | RunField):
        return value.cel, value.steps
    if isinstance(value, str | int | float | bool | list) or value is None:
        return json.dumps(value), frozenset()
    raise TypeError(f"cannot compare with {type(value).__name__} {value!r} in a condition")


class _Comparable:
    """Comparison operators that build CEL conditions instead of booleans."""

    cel: str
    steps: frozenset[str] = frozenset()

    def _compare(self, op: str, other: Any) -> Expr:
        right, steps = _operand(other)
        return Expr(f"{self.cel} {op} {right}", _COMPARISON, self.steps | steps)

    def __lt__(self, other: Any) -> Expr:
        return self._compare("<", other)

    def __le__(self, other: Any) -> Expr:
        return self._compare("<=", other)

    def __gt__(self, other: Any) -> Expr:
        return self._compare(">", other)

    def __ge__(self, other: Any) -> Expr:
        return self._compare(">=", other)

    def __eq__(self, other: Any) -> Expr:  # type: ignore[override]
        return self._compare("==", other)

    def __ne__(self, other: Any) -> Expr:  # type: ignore[override]
        return self._compare("!=", other)

    __hash__ = object.__hash__


class ParamRef(_Comparable):
    """A pipeline parameter: `{{ params.NAME }}` in strings, `params.NAME` in conditions."""

    def __init__(self, name: str, type_: ParameterType) -> None:
        self.name = name
        self.type = type_
        self.cel = f"params.{name}"

    def __str__(self) -> str:
        return f"{{{{ params.{self.name} }}}}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __repr__(self) -> str:
        return f"<parameter {self.name} ({self.type.value})>"

    def __bool__(self) -> bool:
        raise _no_value(f"parameter {self.name!r}")

    def __and__(self, other: Any) -> Expr:
        return Expr(self.cel, _ATOM).__and__(other)

    def __or__(self, other: Any) -> Expr:
        return Expr(self.cel, _ATOM).__or__(other)

    def __invert__(self) -> Expr:
        return ~Expr(self.cel, _ATOM)


class MetricRef(_Comparable):
    """A metric an upstream step reports, for conditions: `steps.NAME.metrics.METRIC`."""

    def __init__(self, step: str, metric: str) -> None:
        head = f"steps.{step}" if _IDENTIFIER.match(step) else f"steps[{json.dumps(step)}]"
        self.step, self.metric = step, metric
        self.cel = f"{head}.metrics.{metric}" if _IDENTIFIER.match(metric) else f"{head}.metrics[{json.dumps(metric)}]"
        self.steps = frozenset({step})

    def __repr__(self) -> str:
        return f"<metric {self.metric} of step {self.step}>"

    def __bool__(self) -> bool:
        raise _no_value(f"metric {self.metric!r} of step {self.step!r}")


@dataclass(frozen=True, eq=False)
class Expr:
    """A CEL condition for `when=`, built with comparisons and & | ~ (Python's `and`/`or` cannot be hooked)."""

    text: str
    level: int = _ATOM
    steps: frozenset[str] = field(default_factory=frozenset)

    def _wrap(self, at_least: int) -> str:
        return self.text if self.level >= at_least else f"({self.text})"

    def __and__(self, other: Any) -> Expr:
        right = _condition(other)
        return Expr(f"{self._wrap(_AND)} && {right._wrap(_AND)}", _AND, self.steps | right.steps)

    def __rand__(self, other: Any) -> Expr:
        return _condition(other) & self

    def __or__(self, other: Any) -> Expr:
        right = _condition(other)
        return Expr(f"{self.text} || {right.text}", _OR, self.steps | right.steps)

    def __ror__(self, other: Any) -> Expr:
        return _condition(other) | self

    def __invert__(self) -> Expr:
        return Expr(f"!{self._wrap(_ATOM)}", _ATOM, self.steps)

    def __bool__(self) -> bool:
        raise _no_value(f"condition {self.text!r}")

    def __str__(self) -> str:
        return self.text


def _condition(value: Any) -> Expr:
    if isinstance(value, Expr):
        return value
    if isinstance(value, ParamRef):
        return Expr(value.cel, _ATOM)
    if isinstance(value, bool):
        return Expr(json.dumps(value), _ATOM)
    raise TypeError(f"a condition combines conditions, not {type(value).__name__} {value!r}")


def condition_text(value: Expr | ParamRef | str) -> tuple[str, frozenset[str]]:
    """(CEL text, steps it reads) of what was given as `when=`."""
    if isinstance(value, str):
        return value, frozenset()
    expr = _condition(value)
    return expr.text, expr.steps


class ItemRef:
    """The current fan-out item: `{{ item }}`, or `{{ item.KEY }}` for a grid's key."""

    def __init__(self, key: str | None = None) -> None:
        self._key = key

    def __getattr__(self, key: str) -> ItemRef:
        if key.startswith("__") or self._key is not None:
            raise AttributeError(key)
        return ItemRef(key)

    def __getitem__(self, key: str) -> ItemRef:
        return self.__getattr__(key)

    def __str__(self) -> str:
        return "{{ item }}" if self._key is None else f"{{{{ item.{self._key} }}}}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __repr__(self) -> str:
        return f"<{self}>"


@dataclass(frozen=True)
class OutputRef:
    """One output of a step, passed to another step's inputs (the edge of the DAG)."""

    step: StepHandle
    output: str

    def __str__(self) -> str:
        raise _no_value(f"output {self.output!r} of step {self.step.name!r} (pass it in inputs=)")


def input_path(name: str) -> str:
    """`{{ inputs.NAME }}`: where a container step finds an input's file."""
    return f"{{{{ inputs.{name} }}}}"


def output_path(name: str) -> str:
    """`{{ outputs.NAME }}`: where a container step writes an output."""
    return f"{{{{ outputs.{name} }}}}"


class RunField(_Comparable):
    """How the steps ended, for onExit steps: `{{ run.FIELD }}` in strings, `run.FIELD` in conditions."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cel = f"run.{name}"

    def __str__(self) -> str:
        return f"{{{{ run.{self.name} }}}}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __repr__(self) -> str:
        return f"<run.{self.name}>"

    def __bool__(self) -> bool:
        raise _no_value(f"run.{self.name}")


item = ItemRef()
run_name = "{{ run.name }}"
run_namespace = "{{ run.namespace }}"
run_id = "{{ run.id }}"
run_phase = RunField("phase")
"""The steps' outcome in an onExit step: Succeeded, Failed or Cancelled."""
run_failed_steps = RunField("failedSteps")
"""The steps that failed, in an onExit step: comma-separated in a template, a list in a condition."""
run_message = RunField("message")
"""Why the steps ended as they did (the Succeeded condition's message), in an onExit step."""


def template_value(value: Any) -> Any:
    """A `with_`/args value with every placeholder turned into its template text; the rest unchanged."""
    if isinstance(value, ParamRef | ItemRef | RunField):
        return str(value)
    if isinstance(value, dict):
        return {k: template_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [template_value(v) for v in value]
    if isinstance(value, OutputRef):
        raise TypeError(
            f"output {value.output!r} of step {value.step.name!r} goes in inputs=, not in with_ or a command"
        )
    if isinstance(value, Expr | MetricRef):
        raise TypeError(f"{value!r} is a condition; it goes in when=")
    return value
