"""`python -m conveyor.controller`: run the operator (see `--help`)."""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from typing import Any

from conveyor.controller.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="conveyor-operator",
        description="Reconcile Conveyor Pipelines, Runs and ModelDeployments. Settings come from CONVEYOR_* variables.",
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="no peering, whatever CONVEYOR_PEERING says (a single replica, or tests); by default replicas elect "
        "one active operator through the kopf peering object CONVEYOR_PEERING",
    )
    parser.add_argument("--namespace", action="append", default=[], help="watch only this namespace (repeatable)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # kopf logs "Handler '...' succeeded." at INFO for every event of every watched Job, pod and Run: at
        # 1,000 Runs that is ~20,000 lines saying nothing. Failures are still logged (WARNING and ERROR).
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        config = load_config()
    except ConfigError as e:
        print(f"conveyor-operator: invalid configuration: {e}", file=sys.stderr)
        return 2
    import kopf  # noqa: PLC0415 - only the running operator needs it

    import conveyor.controller.main  # noqa: PLC0415 - registers the handlers

    namespaces = args.namespace or config.namespaces
    standalone = args.standalone or not config.peering
    conveyor.controller.main.STANDALONE = standalone
    peering: dict[str, Any] = {}
    if not standalone:
        from conveyor.kube.cluster import Cluster, load_kube_config  # noqa: PLC0415

        assert config.peering is not None
        Cluster(load_kube_config()).ensure_peering(config.peering, namespaces)
        # Distinct priorities: kopf pauses every replica when two share one.
        priority = config.peering_priority if config.peering_priority is not None else secrets.randbelow(2**31)
        peering = {"peering_name": config.peering, "priority": priority}
        logging.getLogger("conveyor.operator").info("peering %s with priority %d", config.peering, priority)
    kopf.run(
        standalone=standalone,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None,
        **peering,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
