"""The `conveyor` command: run pipelines locally, validate documents, generate CRDs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conveyor import __version__
from conveyor.core.validation import InvalidSpec, Issue

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED = 0, 1, 2, 130


def _parse_params(pairs: Sequence[str], spec: Any) -> tuple[dict[str, Any], list[Issue]]:
    from conveyor.core.validation import coerce_cli_value  # noqa: PLC0415

    declared = {p.name: p for p in spec.parameters}
    values: dict[str, Any] = {}
    issues = []
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            issues.append(Issue(f"-p {pair}", "expected key=value"))
        elif key not in declared:
            issues.append(Issue(f"parameters.{key}", f"unknown parameter (declared: {', '.join(declared) or 'none'})"))
        else:
            try:
                values[key] = coerce_cli_value(declared[key], text)
            except ValueError as e:
                issues.append(Issue(f"parameters.{key}", str(e)))
    return values, issues


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console  # noqa: PLC0415

    from conveyor.api.pipeline import Pipeline  # noqa: PLC0415
    from conveyor.api.run import Run  # noqa: PLC0415
    from conveyor.cli.documents import load_documents  # noqa: PLC0415
    from conveyor.core.support import LOCAL, unsupported  # noqa: PLC0415
    from conveyor.core.validation import resolve_parameters  # noqa: PLC0415
    from conveyor.local.view import run_with_progress  # noqa: PLC0415

    docs = load_documents(args.file)
    pipelines = [d for d in docs if isinstance(d, Pipeline)]
    runs = [d for d in docs if isinstance(d, Run) and d.spec.pipeline_spec is not None]
    if len(pipelines) + len(runs) != 1:
        raise InvalidSpec(
            [Issue("(file)", "expected exactly one Pipeline (or one Run with an inline pipelineSpec)")], str(args.file)
        )
    if pipelines:
        spec, name, given = pipelines[0].spec, pipelines[0].metadata.get("name", args.file.stem), {}
    else:
        assert runs[0].spec.pipeline_spec is not None
        spec, name, given = (
            runs[0].spec.pipeline_spec,
            runs[0].metadata.get("name", args.file.stem),
            runs[0].spec.parameters,
        )
    cli_values, issues = _parse_params(args.param or [], spec)
    params, param_issues = resolve_parameters(spec, {**given, **cli_values})
    issues += param_issues + unsupported(spec, LOCAL)
    from conveyor.local.env_file import read_env_file  # noqa: PLC0415

    env_file, env_issues = read_env_file(args.env_file, spec)
    issues += env_issues
    if issues:
        raise InvalidSpec(issues, str(args.file))
    from conveyor.lifecycle.specs import store_spec  # noqa: PLC0415
    from conveyor.storage.local import LocalStore  # noqa: PLC0415

    store_spec(LocalStore(args.state_dir.resolve() / "store"), spec, str(name))  # for `conveyor rerun`
    console = Console(stderr=args.json)  # with --json, stdout holds the record alone (for jq)
    outcome = run_with_progress(
        spec,
        params,
        pipeline_name=str(name),
        state_dir=args.state_dir,
        parallelism=args.parallelism,
        console=console,
        live=not args.no_progress,
        env_file=env_file,
    )
    if args.json:
        print(outcome.record_path.read_text())
    return {"Succeeded": EXIT_OK, "Cancelled": EXIT_CANCELLED}.get(outcome.phase.value, EXIT_FAILED)


def cmd_validate(args: argparse.Namespace) -> int:
    """Every file checked, each reported: its documents valid, or its problems."""
    from conveyor.cli.documents import load_documents  # noqa: PLC0415

    invalid = 0
    for path in args.files:
        try:
            docs = load_documents(path)
        except InvalidSpec as e:
            invalid += 1
            report_invalid(e)
            continue
        for d in docs:
            print(f"{path}: {d.kind} {d.metadata.get('name', '(unnamed)')} is valid")
    if invalid and len(args.files) > 1:
        print(f"{invalid} of {len(args.files)} files are invalid", file=sys.stderr)
    return EXIT_INVALID if invalid else EXIT_OK


def cmd_crds(args: argparse.Namespace) -> int:
    """Write (or --check) the CRDs into --out and, in the repository layout, into the Helm chart's and the
    kustomize base's crds/ too.

    The chart sits beside --out (`charts/conveyor/crds/` next to `crds/`); Helm installs the CRDs
    from that directory, so both copies come from one generator run and cannot drift apart.
    """
    from conveyor.api.crd import render_crds  # noqa: PLC0415

    rendered = render_crds()
    out_dirs: list[Path] = [args.out]
    chart = args.out.parent / "charts" / "conveyor"
    if (chart / "Chart.yaml").exists():
        out_dirs.append(chart / "crds")
    kustomize = args.out.parent / "deploy" / "kustomize" / "base"
    if (kustomize / "kustomization.yaml").exists():
        out_dirs.append(kustomize / "crds")  # kustomize loads nothing from outside its directory
    if args.check:
        failed = False
        for out in out_dirs:
            stale = [n for n, text in rendered.items() if not (out / n).exists() or (out / n).read_text() != text]
            extra = sorted(p.name for p in out.glob("*.yaml") if p.name not in rendered)
            if stale or extra:
                print(f"stale CRDs in {out}: {', '.join(stale + extra)}; run `conveyor crds`", file=sys.stderr)
                failed = True
        return EXIT_FAILED if failed else EXIT_OK
    for out in out_dirs:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in rendered.items():
            (out / name).write_text(text)
            print(f"wrote {out / name}")
    return EXIT_OK


def cmd_components(args: argparse.Namespace) -> int:
    from conveyor.components.registry import component_names, get_component  # noqa: PLC0415

    for name in component_names():
        c = get_component(name)
        if args.json:
            print(json.dumps({"name": name, "config": c.config.model_json_schema()}))
        else:
            print(
                f"{name:12} inputs: {', '.join(sorted(c.required_inputs)) or '-'}"
                f"{' (optional: ' + ', '.join(sorted(c.optional_inputs)) + ')' if c.optional_inputs else ''}"
                f"  outputs: {', '.join(sorted(c.outputs))}"
            )
    return EXIT_OK


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conveyor", description="Machine-learning pipelines as Kubernetes objects.")
    parser.add_argument("--version", action="version", version=f"conveyor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline on this machine (no cluster needed)")
    run.add_argument("file", type=Path, help="a YAML file with one Pipeline (or a Run with an inline pipelineSpec)")
    run.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="override a parameter (repeatable)")
    run.add_argument(
        "--parallelism", type=_at_least_one, default=None, help="at most this many steps at once (default: CPUs)"
    )
    run.add_argument("--state-dir", type=Path, default=Path(".conveyor"), help="store, cache and run records")
    run.add_argument("--no-progress", action="store_true", help="no live view (for logs and CI)")
    run.add_argument(
        "--env-file",
        type=Path,
        metavar="FILE",
        help="dotenv KEY=VALUE lines giving the steps' pod.env valueFrom variables (Secrets, ConfigMaps) by the "
        "variable's name; the values reach the step processes only (see docs/pod-settings.md)",
    )
    run.add_argument(
        "--json", action="store_true", help="print the run record as JSON at the end (progress goes to stderr)"
    )
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="check documents without running them")
    val.add_argument("files", type=Path, nargs="+")
    val.set_defaults(func=cmd_validate)

    crds = sub.add_parser("crds", help="write the CustomResourceDefinitions generated from the API models")
    crds.add_argument("--out", type=Path, default=Path("crds"))
    crds.add_argument("--check", action="store_true", help="exit 1 if the files differ from what would be written")
    crds.set_defaults(func=cmd_crds)

    from conveyor.cli.cluster_commands import add_commands  # noqa: PLC0415

    add_commands(sub)

    from conveyor.cli.records import add_commands as add_record_commands  # noqa: PLC0415

    add_record_commands(sub)
    from conveyor.cli.compile_command import add_commands as add_compile_commands  # noqa: PLC0415

    add_compile_commands(sub)

    from conveyor.cli.lifecycle_commands import add_commands as add_lifecycle_commands  # noqa: PLC0415
    from conveyor.cli.report import add_commands as add_report_commands  # noqa: PLC0415

    add_lifecycle_commands(sub)
    add_report_commands(sub)

    from conveyor.cli.console_command import add_commands as add_console_commands  # noqa: PLC0415

    add_console_commands(sub)

    from conveyor.cli.versions_command import add_commands as add_version_commands  # noqa: PLC0415

    add_version_commands(sub)

    comps = sub.add_parser("components", help="list the built-in components")
    comps.add_argument("--json", action="store_true")
    comps.set_defaults(func=cmd_components)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except InvalidSpec as e:
        report_invalid(e)
        return EXIT_INVALID
    return code


def report_invalid(e: InvalidSpec) -> None:
    print(f"error: {e}" if len(e.issues) == 1 else f"error: {len(e.issues)} problems:\n{e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
