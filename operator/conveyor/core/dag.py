"""The step graph of a pipeline: edges, topological order, and cycles named step by step."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter

from conveyor.api.pipeline import Step


class CycleFound(ValueError):
    """The DAG has a cycle; `cycle` lists it with the first step repeated at the end."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("cycle: " + " → ".join(cycle))


def step_dependencies(step: Step) -> list[str]:
    """Steps this one waits for: producers of its inputs, then explicit dependsOn, in order, once each."""
    deps = [i.step for i in step.inputs if i.step is not None] + list(step.depends_on)
    return list(dict.fromkeys(deps))


@dataclass(frozen=True)
class Dag:
    """Edges from each step to the steps it depends on (only between steps that exist)."""

    upstream: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, steps: Iterable[Step]) -> Dag:
        steps = list(steps)
        names = {s.name for s in steps}
        return cls({s.name: tuple(d for d in step_dependencies(s) if d in names) for s in steps})

    def order(self) -> list[str]:
        """A topological order (dependencies first) that otherwise keeps declaration order,
        so plans and tables read the way the pipeline was written; raises CycleFound."""
        try:
            TopologicalSorter(self.upstream).prepare()
        except CycleError as e:
            cycle = list(e.args[1])  # each node feeds the next: data-flow order
            raise CycleFound(cycle) from None
        done: list[str] = []
        emitted: set[str] = set()
        while len(done) < len(self.upstream):
            for name, deps in self.upstream.items():
                if name not in emitted and all(d in emitted for d in deps):
                    done.append(name)
                    emitted.add(name)
        return done

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.upstream.get(name, ()))
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self.upstream.get(n, ()))
        return seen

    def descendants(self, name: str) -> set[str]:
        return {n for n in self.upstream if name in self.ancestors(n)}
