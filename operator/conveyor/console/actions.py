"""The console's actions on a cluster: cancel a Run, rerun a Run, approve or reject a waiting step.

Each is the CLI's own function (`conveyor cancel`, `conveyor rerun --no-wait`, `conveyor approve`), called
with a cluster client made from the console's credentials, so there is one implementation of each. Off
unless `conveyor ui --actions` (the chart's `console.actions.enabled`) turns them on; the API server's
RBAC still decides what the console's ServiceAccount may do. Requests reach these only after the app has
checked the session's CSRF token (app.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from conveyor.console.objects import split_id
from conveyor.console.source import NotFound
from conveyor.core.validation import InvalidSpec

DECIDED_BY = "conveyor console"
"""Who an approval made in the console is recorded as: the console has no login of its own yet."""


class Refused(Exception):
    """An action that cannot be done (the Run has ended, the step is not waiting): the app answers 409."""


class Actions(Protocol):
    def cancel(self, run_id: str) -> dict[str, Any]: ...

    def rerun(self, run_id: str) -> dict[str, Any]: ...

    def decide(self, run_id: str, step: str, approve: bool) -> dict[str, Any]: ...


@dataclass
class ClusterActions:
    """The CLI's cluster operations over `cluster` (kube.cluster.Cluster or one like it) and the store.

    `namespaces`: the console's own; a Run elsewhere is not found, as on its pages."""

    cluster: Any
    store: Any
    namespaces: tuple[str, ...] = ()
    after: Any = None
    """Called after a change (the source's cache of Runs is then dropped so the pages show it at once)."""

    def _where(self, run_id: str) -> tuple[str, str]:
        where = split_id(run_id)
        if where is None or (self.namespaces and where[0] not in self.namespaces):
            raise NotFound(f"run {run_id!r} does not exist (runs are named namespace/name)")
        return where

    def _changed(self) -> None:
        if self.after is not None:
            self.after()

    def cancel(self, run_id: str) -> dict[str, Any]:
        from conveyor.cli.cluster_commands import cancel  # noqa: PLC0415

        ns, name = self._where(run_id)
        _refused_on_invalid(lambda: cancel(self.cluster, ns, name))
        self._changed()
        return {"run": run_id, "action": "cancel", "message": f"run {run_id}: cancel requested"}

    def rerun(self, run_id: str) -> dict[str, Any]:
        from conveyor.cli.lifecycle_commands import rerun_of  # noqa: PLC0415
        from conveyor.cli.records import ClusterRuns  # noqa: PLC0415

        ns, name = self._where(run_id)
        created = _refused_on_invalid(lambda: rerun_of(ClusterRuns.over(ns, self.cluster, self.store), name))
        self._changed()
        new_id = f"{ns}/{created}"
        return {"run": run_id, "action": "rerun", "created": new_id, "message": f"created run {new_id}"}

    def decide(self, run_id: str, step: str, approve: bool) -> dict[str, Any]:
        from conveyor.cli.cluster_commands import decide  # noqa: PLC0415

        ns, name = self._where(run_id)
        decision = _refused_on_invalid(
            lambda: decide(self.cluster, ns, name, step, reject=not approve, by=DECIDED_BY, comment=None)
        )
        self._changed()
        verb = "approved" if approve else "rejected"
        return {"run": run_id, "action": verb, "step": step, "message": f"step {step} {verb}", "decision": decision}


def _refused_on_invalid(action: Any) -> Any:
    """`action()`, the CLI's InvalidSpec (its way of saying no) turned into Refused with its words."""
    try:
        return action()
    except InvalidSpec as e:
        raise Refused("; ".join(i.message for i in e.issues) or str(e)) from None
