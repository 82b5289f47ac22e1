"""`python -m conveyor.controller`: run the operator (see `--help`)."""

from __future__ import annotations

import argparse
import logging
import sys

from conveyor.controller.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conveyor-operator", description="Reconcile Conveyor Pipelines and Runs.")
    parser.add_argument("--standalone", action="store_true", help="no peering (a single replica, or tests)")
    parser.add_argument("--namespace", action="append", default=[], help="watch only this namespace (repeatable)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config()
    except ConfigError as e:
        print(f"conveyor-operator: invalid configuration: {e}", file=sys.stderr)
        return 2
    import kopf  # noqa: PLC0415 - only the running operator needs it

    import conveyor.controller.main  # noqa: F401, PLC0415 - registers the handlers

    namespaces = args.namespace or config.namespaces
    kopf.run(
        standalone=args.standalone,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
