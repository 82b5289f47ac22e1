"""CEL rules shared by admission and local validation: written once, enforced twice.

Each rule becomes an `x-kubernetes-validations` entry in the generated CRD, so the API
server rejects a violating object at admission, and the same expression is evaluated in
Python when a model is validated, so `conveyor run` rejects exactly what the cluster would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import cel as cel_lib

T = TypeVar("T")


@dataclass(frozen=True)
class CelRule:
    rule: str
    message: str

    @property
    def is_transition_rule(self) -> bool:
        """Rules over oldSelf only apply to updates; the API server alone can judge them."""
        return "oldSelf" in self.rule


def cel(rule: str, message: str) -> Callable[[T], T]:
    """Attach a CEL validation rule to a model class (evaluated with the class's wire form as `self`)."""

    def attach(cls: T) -> T:
        existing: tuple[CelRule, ...] = getattr(cls, "__dict__", {}).get("__cel_rules__", ())
        cls.__cel_rules__ = (CelRule(rule, message), *existing)  # type: ignore[attr-defined]
        return cls

    return attach


def rules_of(cls: type) -> tuple[CelRule, ...]:
    rules: tuple[CelRule, ...] = cls.__dict__.get("__cel_rules__", ())
    return rules


@cache
def _program(rule: str) -> Any:
    return cel_lib.compile(rule)


def violations(cls: type, wire: dict[str, Any]) -> list[str]:
    """Messages of the class's rules that `wire` (camelCase, unset fields absent) breaks."""
    failed = []
    for r in rules_of(cls):
        if r.is_transition_rule:
            continue
        if _program(r.rule).execute({"self": wire}) is not True:
            failed.append(r.message)
    return failed
