"""`conveyor rerun`, `gc` and `delete`: reproduce a Run and prove it with digests; collect unreferenced artifacts.

Both against the local runner's state (`--local`) and against a cluster (kubeconfig and the operator's S3
store), like the record commands.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conveyor.cli.records import ClusterRuns, LocalRuns, _source, _store_errors_exit_1, _where, table
from conveyor.core.validation import InvalidSpec, Issue
from conveyor.kube.timestamps import format_timestamp

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
MODEL_OUTPUTS = frozenset({"model"})
"""Output names whose digest must be reproduced exactly for `rerun` to succeed."""


# ------------------------------------------------------------------ rerun: the recorded spec


def recorded_spec(source: LocalRuns | ClusterRuns, run: str, record: Mapping[str, Any], file: Path | None) -> Any:
    """The pipeline spec that ran, found by the record's digest: in the store, on the Run object or its
    Pipeline (cluster), or in `file`; a candidate that hashes differently is never used."""
    from conveyor.api.pipeline import Pipeline  # noqa: PLC0415
    from conveyor.api.run import Run  # noqa: PLC0415
    from conveyor.cli.documents import load_documents  # noqa: PLC0415
    from conveyor.core.record import spec_digest  # noqa: PLC0415
    from conveyor.lifecycle.specs import load_spec, spec_matching  # noqa: PLC0415

    digest = record.get("pipelineSpecDigest")
    if not digest:
        raise InvalidSpec([Issue("record", f"the record of run {run!r} names no pipelineSpecDigest")])
    tried = []
    spec = load_spec(source.store, digest)
    if spec is not None:
        return spec
    tried.append("the store")
    if isinstance(source, ClusterRuns):
        body = source.cluster.get_custom("runs", source.namespace, run) or {}
        inline = (body.get("spec") or {}).get("pipelineSpec")
        if inline is not None and (spec := spec_matching(inline, digest)) is not None:
            return spec
        ref = ((body.get("spec") or {}).get("pipelineRef") or {}).get("name") or record.get("pipeline")
        pipeline = source.cluster.get_custom("pipelines", source.namespace, ref) if ref else None
        if pipeline is not None and (spec := spec_matching(pipeline.get("spec"), digest)) is not None:
            return spec
        tried.append(f"Run {run} and Pipeline {ref} (changed since)" if pipeline else f"Run {run}")
    if file is not None:
        for doc in load_documents(file):
            candidate = (
                doc.spec if isinstance(doc, Pipeline) else (doc.spec.pipeline_spec if isinstance(doc, Run) else None)
            )
            if candidate is not None and spec_digest(candidate) == digest:
                return candidate
        tried.append(str(file))
    raise InvalidSpec(
        [
            Issue(
                "pipeline spec",
                f"the spec run {run!r} ran ({digest}) is not in {', '.join(tried)}; "
                "give the pipeline file it ran from with -f",
            )
        ]
    )


def external_input_problems(record: Mapping[str, Any]) -> list[str]:
    """Local external inputs (file://) whose content changed or vanished since the run, with their readers."""
    from conveyor.lifecycle.integrity import downstream_of  # noqa: PLC0415
    from conveyor.storage.digest import sha256_file  # noqa: PLC0415

    problems = []
    for uri, digest in sorted((record.get("externalInputs") or {}).items()):
        if not uri.startswith("file://"):
            continue
        path = Path(urllib.request.url2pathname(uri.removeprefix("file://")))
        now = sha256_file(path) if path.is_file() else None
        if now != digest:
            _, downstream = downstream_of(record, digest)
            what = "missing" if now is None else f"changed (now {now})"
            problems.append(f"input {uri} {digest} is {what}; depends on it: {', '.join(downstream) or '-'}")
    return problems


# ------------------------------------------------------------------ rerun: the proof


def output_digests(record: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """(step or item key, output) → digest, for every output of the record."""
    out = {(s["name"], o["name"]): o["digest"] for s in record.get("steps", []) for o in s.get("outputs", [])}
    for items in (record.get("items") or {}).values():
        for item in items:
            out.update({(str(item.get("key")), o["name"]): o["digest"] for o in item.get("outputs", [])})
    return out


def proof(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[list[str]], list[str], list[str]]:
    """Rows (step, output, recorded, rerun, =/≠), the differing model outputs, the other differing outputs."""
    before, after = output_digests(old), output_digests(new)
    rows: list[list[str]] = []
    models: list[str] = []
    others: list[str] = []
    for key in list(dict.fromkeys([*before, *after])):
        a, b = before.get(key), after.get(key)
        same = a is not None and a == b
        rows.append([key[0], key[1], a or "-", b or "-", "=" if same else "≠"])
        if not same:
            (models if key[1] in MODEL_OUTPUTS else others).append(f"{key[0]}.{key[1]}")
    return rows, models, others


def print_proof(old: Mapping[str, Any], new: Mapping[str, Any], *, strict: bool) -> int:
    rows, models, others = proof(old, new)
    print(table(["STEP", "OUTPUT", "RECORDED", "RERUN", ""], rows))
    if new.get("phase") != "Succeeded":
        print(f"not reproduced: the rerun {new.get('phase', '?')}: {new.get('message') or new.get('reason') or ''}")
        return EXIT_FAILED
    if models:
        print(f"NOT reproduced: model digest differs for {', '.join(models)}")
        return EXIT_FAILED
    if others:
        print(f"model reproduced; other outputs differ: {', '.join(others)}")
        return EXIT_FAILED if strict else EXIT_OK
    print(f"reproduced: all {len(rows)} output digests are identical")
    return EXIT_OK


def _rerun_local(args: argparse.Namespace, source: LocalRuns, run_id: str, record: dict[str, Any], spec: Any) -> int:
    from rich.console import Console  # noqa: PLC0415

    from conveyor.lifecycle.specs import store_spec, without_cache  # noqa: PLC0415
    from conveyor.local.env_file import read_env_file  # noqa: PLC0415
    from conveyor.local.view import run_with_progress  # noqa: PLC0415

    # The values are not in the record (nor in any cache key), so a rerun is given them again, as `conveyor run` was.
    env_file, issues = read_env_file(args.env_file, spec)
    if issues:
        raise InvalidSpec(issues, f"rerun of {run_id}")
    store_spec(source.store, spec, str(record["pipeline"]))
    console = Console(stderr=True)
    outcome = run_with_progress(
        without_cache(spec),
        record.get("parameters", {}),
        pipeline_name=str(record["pipeline"]),
        state_dir=args.state_dir,
        parallelism=None,
        console=console,
        live=not args.no_progress,
        env_file=env_file,
    )
    new = source.record(outcome.run_id)
    print(f"rerun of {run_id}: {outcome.run_id}")
    return print_proof(record, new, strict=args.strict)


def create_rerun(source: ClusterRuns, run: str, record: Mapping[str, Any], spec: Any, name: str | None = None) -> str:
    """Create a Run of the recorded spec and parameters with the cache off (`conveyor rerun`'s and the web
    console's way); returns its name. InvalidSpec when one of that name exists already."""
    from conveyor.lifecycle.specs import store_spec, without_cache  # noqa: PLC0415

    store_spec(source.store, spec, str(record["pipeline"]))
    name = name or f"{run[:40]}-rerun-{uuid.uuid4().hex[:5]}"
    body = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Run",
        "metadata": {
            "name": name,
            "namespace": source.namespace,
            "labels": {"conveyor.dev/rerun-of": run},
            "annotations": {
                "conveyor.dev/rerun-of-uid": str(record["runId"]),
                "conveyor.dev/pipeline-spec-digest": str(record["pipelineSpecDigest"]),
            },
        },
        "spec": {"pipelineSpec": without_cache(spec).to_wire(), "parameters": record.get("parameters", {})},
    }
    if not source.cluster.create_run(body):
        raise InvalidSpec([Issue("--name", f"run {source.namespace}/{name} exists already")])
    return name


def rerun_of(source: ClusterRuns, run: str, name: str | None = None) -> str:
    """Rerun a cluster Run from its record alone (the web console's action): its recorded spec, checked
    external inputs, then `create_rerun`. InvalidSpec saying why it cannot be rerun."""
    record = source.record(run)
    spec = recorded_spec(source, run, record, None)
    problems = external_input_problems(record)
    if problems:
        raise InvalidSpec([Issue("inputs", p) for p in problems])
    return create_rerun(source, run, record, spec, name)


def _rerun_cluster(args: argparse.Namespace, source: ClusterRuns, record: dict[str, Any], spec: Any) -> int:
    name = create_rerun(source, args.run, record, spec, args.name)
    print(f"created run {source.namespace}/{name}: the recorded spec and parameters, cache disabled", file=sys.stderr)
    if args.no_wait:
        return EXIT_OK
    deadline = time.monotonic() + args.timeout
    while True:
        current = source.cluster.get_custom("runs", source.namespace, name)
        status = (current or {}).get("status") or {}
        if current is None:
            raise InvalidSpec([Issue("run", f"run {source.namespace}/{name} was deleted while it ran")])
        if status.get("phase") in ("Succeeded", "Failed", "Cancelled") and status.get("recordUri"):
            break
        if time.monotonic() > deadline:
            print(f"error: run {name} did not finish within {args.timeout:.0f}s", file=sys.stderr)
            return EXIT_FAILED
        time.sleep(1)
    print(f"rerun of {args.run}: {name}")
    return print_proof(record, source.record(name), strict=args.strict)


def cmd_rerun(args: argparse.Namespace) -> int:
    if args.env_file is not None and not args.local:
        raise InvalidSpec(
            [
                Issue(
                    "--env-file",
                    "is for a rerun on this machine (--local): on a cluster the kubelet fills valueFrom variables from "
                    f"the Secrets and ConfigMaps of namespace {args.namespace}",
                )
            ]
        )
    source = _source(args)
    record = source.record(args.run)
    run_id = source.resolve(args.run) if isinstance(source, LocalRuns) else args.run
    spec = recorded_spec(source, run_id, record, args.file)
    problems = external_input_problems(record)
    if problems:
        raise InvalidSpec([Issue("inputs", p) for p in problems])
    if isinstance(source, LocalRuns):
        return _rerun_local(args, source, run_id, record, spec)
    return _rerun_cluster(args, source, record, spec)


# ------------------------------------------------------------------ gc


def cmd_gc(args: argparse.Namespace) -> int:
    from conveyor.lifecycle.collect import cluster_gatherer, collect_garbage, local_inputs  # noqa: PLC0415
    from conveyor.lifecycle.gc import parse_duration  # noqa: PLC0415

    try:
        grace = parse_duration(args.grace)
    except ValueError as e:
        raise InvalidSpec([Issue("--grace", str(e))]) from None
    source = _source(args)
    if isinstance(source, LocalRuns):
        state_dir = source.state_dir

        def gather() -> Any:
            return local_inputs(state_dir, source.store)

    else:
        gather = cluster_gatherer(source.cluster, source.store)
    now = datetime.now(UTC)
    result = collect_garbage(source.store, gather, now=now, grace=grace, dry_run=args.dry_run)
    print_gc(result, now)
    return EXIT_OK


def print_gc(result: Any, now: datetime) -> None:
    plan = result.plan
    verb = "would delete" if result.dry_run else "deleted"
    gone = sorted(plan.delete) if result.dry_run else sorted(result.deleted)
    for digest in gone:
        print(f"{verb} {digest}")
    for name in plan.drop_cache_entries:
        print(f"{'would drop' if result.dry_run else 'dropped'} cache entry {name}")
    for p in plan.pending:
        if p.digest in plan.mark:
            what = f"{'would mark' if result.dry_run else 'marked'} {p.digest}: unreferenced from now"
        else:
            what = f"marked {p.digest}: unreferenced since {format_timestamp(p.marked_at)}"
        print(f"{what}, {'would be' if result.dry_run else 'to be'} deleted after {format_timestamp(p.due)}")
    for digest in sorted(result.spared):
        print(f"kept {digest}: referenced again while collecting")
    print(
        f"{len(plan.kept)} referenced, {len(plan.pending)} waiting for the grace period, "
        f"{len(gone)} {verb}, {len(plan.drop_cache_entries)} cache entries "
        f"{'would be dropped' if result.dry_run else 'dropped'}"
    )


# ------------------------------------------------------------------ delete


def cmd_delete(args: argparse.Namespace) -> int:
    import shutil  # noqa: PLC0415

    source = _source(args)
    for run in args.runs:
        if isinstance(source, LocalRuns):
            run_id = source.resolve(run)
            shutil.rmtree(source.state_dir / "runs" / run_id)
            print(f"run {run_id} deleted (its record stays in the store; `conveyor gc` collects its artifacts)")
        else:
            if source.cluster.get_custom("runs", source.namespace, run) is None:
                raise InvalidSpec([Issue("run", f"run {run!r} does not exist in namespace {source.namespace}")])
            source.cluster.delete_run(source.namespace, run)
            print(f'run.conveyor.dev "{run}" deleted')
    return EXIT_OK


# ------------------------------------------------------------------ registration


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rerun = sub.add_parser(
        "rerun", help="run a Run again exactly (recorded spec and parameters, no cache) and compare every output digest"
    )
    rerun.add_argument("run")
    rerun.add_argument("-f", "--file", type=Path, help="the pipeline file, when the store does not hold the spec")
    rerun.add_argument("--name", help="the new Run's name (cluster; default: RUN-rerun-<random>)")
    rerun.add_argument("--no-wait", action="store_true", help="create the Run and return (cluster)")
    rerun.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the rerun (cluster)")
    rerun.add_argument("--strict", action="store_true", help="exit 1 when any output differs, not only a model")
    rerun.add_argument("--no-progress", action="store_true", help="no live view (local)")
    rerun.add_argument(
        "--env-file",
        type=Path,
        metavar="FILE",
        help="as for `conveyor run`: dotenv lines giving the steps' pod.env valueFrom variables by name (local; the "
        "run record never holds them, so a rerun needs them again)",
    )
    _where(rerun)
    rerun.set_defaults(func=_store_errors_exit_1(cmd_rerun))

    gc = sub.add_parser(
        "gc",
        help="delete artifacts no Run, cache entry of a Run or deployed model references, "
        "once unreferenced for the grace period",
    )
    gc.add_argument("--dry-run", action="store_true", help="list what would be marked and removed; change nothing")
    gc.add_argument("--grace", default="24h", help="how long an artifact stays unreferenced before deletion (24h)")
    _where(gc)
    gc.set_defaults(func=_store_errors_exit_1(cmd_gc))

    delete = sub.add_parser("delete", help="delete Runs (their artifacts go with `conveyor gc`)")
    delete.add_argument("runs", nargs="+")
    _where(delete)
    delete.set_defaults(func=_store_errors_exit_1(cmd_delete))
