"""`conveyor` commands that act on a cluster through the current kubeconfig."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from conveyor.core.validation import InvalidSpec, Issue

FINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})


def decide(
    cluster: Any, namespace: str, run: str, step: str, *, reject: bool, by: str, comment: str | None
) -> dict[str, Any]:
    """Record a person's decision on a step waiting for approval (the CLI's and the web console's way);
    InvalidSpec when the Run is gone or the step is not waiting for one."""
    body = cluster.get_custom("runs", namespace, run)
    if body is None:
        raise InvalidSpec([Issue("run", f"run {namespace}/{run} does not exist")])
    waiting = [
        s["name"]
        for s in body.get("status", {}).get("steps", [])
        if s.get("phase") == "Waiting" and "approval" in (s.get("message") or "")
    ]
    if step not in waiting:
        known = ", ".join(waiting) or "none"
        raise InvalidSpec([Issue("step", f"step {step!r} is not waiting for approval (waiting: {known})")])
    decision = {"step": step, "decision": "Reject" if reject else "Approve", "by": by}
    if comment:
        decision["comment"] = comment
    try:
        cluster.add_approval(namespace, run, decision)
    except ValueError as e:
        raise InvalidSpec([Issue("step", str(e))]) from None
    return decision


def cancel(cluster: Any, namespace: str, run: str) -> None:
    """Ask the operator to stop a Run (spec.cancel: running steps are killed, nothing new starts); InvalidSpec
    when the Run is gone or has ended already."""
    body = cluster.get_custom("runs", namespace, run)
    if body is None:
        raise InvalidSpec([Issue("run", f"run {namespace}/{run} does not exist")])
    phase = (body.get("status") or {}).get("phase")
    if phase in FINAL_PHASES:
        raise InvalidSpec([Issue("run", f"run {namespace}/{run} has ended already ({phase})")])
    if not cluster.patch_run_spec(namespace, run, {"cancel": True}):
        raise InvalidSpec([Issue("run", f"run {namespace}/{run} was deleted meanwhile")])


def cmd_approve(args: argparse.Namespace) -> int:
    """Approve (or reject) a step that waits for a person's decision."""
    from conveyor.kube.cluster import Cluster, load_kube_config  # noqa: PLC0415

    decision = decide(
        Cluster(load_kube_config()),
        args.namespace,
        args.run,
        args.step,
        reject=args.reject,
        by=args.by,
        comment=args.comment,
    )
    print(f"run {args.namespace}/{args.run}: step {args.step} {decision['decision'].lower()}d by {args.by}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Stop a Run."""
    from conveyor.kube.cluster import Cluster, load_kube_config  # noqa: PLC0415

    cancel(Cluster(load_kube_config()), args.namespace, args.run)
    print(f"run {args.namespace}/{args.run}: cancel requested")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    approve = sub.add_parser("approve", help="approve (or --reject) a step waiting for a person's decision")
    approve.add_argument("run")
    approve.add_argument("step")
    approve.add_argument("-n", "--namespace", default="default")
    approve.add_argument("--reject", action="store_true")
    approve.add_argument("--comment")
    approve.add_argument("--by", default=getpass.getuser(), help="who decides (default: your user name)")
    approve.set_defaults(func=cmd_approve)
    stop = sub.add_parser("cancel", help="stop a Run: its running steps are killed, nothing new starts")
    stop.add_argument("run")
    stop.add_argument("-n", "--namespace", default="default")
    stop.set_defaults(func=cmd_cancel)
