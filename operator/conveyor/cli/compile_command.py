"""`conveyor compile`: a pipeline written in Python → its Pipeline YAML (byte for byte the same every time)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_STALE = 0, 1


def cmd_compile(args: argparse.Namespace) -> int:
    """Write (or print, or --check) the YAML; an invalid pipeline raises InvalidSpec naming file:line (exit 2)."""
    from conveyor.sdk.compiler import load, to_yaml  # noqa: PLC0415

    pipeline = load(args.pipeline)
    text = to_yaml(pipeline)
    name = pipeline.metadata["name"]
    if args.out is None or str(args.out) == "-":
        if args.check:
            print("error: --check needs -o FILE, the YAML to compare with", file=sys.stderr)
            return 2
        sys.stdout.write(text)
        return EXIT_OK
    out: Path = args.out
    current = out.read_text() if out.is_file() else None
    if args.check:
        if current == text:
            print(f"{out}: Pipeline {name} is up to date", file=sys.stderr)
            return EXIT_OK
        why = "does not exist" if current is None else "differs from what the Python compiles to"
        print(f"{out} {why}: run `conveyor compile {args.pipeline} -o {out}`", file=sys.stderr)
        return EXIT_STALE
    if current != text:  # an unchanged file keeps its modification time (make, watchers)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    exits = f" and {len(pipeline.spec.on_exit)} onExit" if pipeline.spec.on_exit else ""
    print(f"wrote {out}: Pipeline {name}, {len(pipeline.spec.steps)}{exits} steps", file=sys.stderr)
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    comp = sub.add_parser(
        "compile",
        help="write the Pipeline YAML of a pipeline written in Python",
        description="Compile a @pipeline function to Pipeline YAML, validated as `conveyor validate` validates.",
    )
    comp.add_argument(
        "pipeline",
        help="module:name or path/to/file.py:name (`:name` may be left out when the module defines one pipeline)",
    )
    comp.add_argument("-o", "--out", type=Path, help="the YAML file to write (default: standard output)")
    comp.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if -o FILE differs from what would be written"
    )
    comp.set_defaults(func=cmd_compile)
