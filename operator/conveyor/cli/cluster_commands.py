"""`conveyor` commands that act on a cluster through the current kubeconfig."""

from __future__ import annotations

import argparse
import getpass

from conveyor.core.validation import InvalidSpec, Issue


def cmd_approve(args: argparse.Namespace) -> int:
    """Approve (or reject) a step that waits for a person's decision."""
    from conveyor.kube.cluster import Cluster, load_kube_config  # noqa: PLC0415

    cluster = Cluster(load_kube_config())
    run = cluster.get_custom("runs", args.namespace, args.run)
    if run is None:
        raise InvalidSpec([Issue("run", f"run {args.namespace}/{args.run} does not exist")])
    waiting = [
        s["name"]
        for s in run.get("status", {}).get("steps", [])
        if s.get("phase") == "Waiting" and "approval" in (s.get("message") or "")
    ]
    if args.step not in waiting:
        known = ", ".join(waiting) or "none"
        raise InvalidSpec([Issue("step", f"step {args.step!r} is not waiting for approval (waiting: {known})")])
    decision = {"step": args.step, "decision": "Reject" if args.reject else "Approve", "by": args.by}
    if args.comment:
        decision["comment"] = args.comment
    try:
        cluster.add_approval(args.namespace, args.run, decision)
    except ValueError as e:
        raise InvalidSpec([Issue("step", str(e))]) from None
    print(f"run {args.namespace}/{args.run}: step {args.step} {decision['decision'].lower()}d by {args.by}")
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
