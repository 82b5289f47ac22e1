"""`conveyor get`, `logs`, `lineage`, `compare`: read Runs, their records and archived logs.

Two sources with one shape: the cluster (Runs through kube/cluster.py, records and logs in the S3 store the
operator writes to) and the local runner (`--local`: `.conveyor/runs` and its directory store). Records and
logs outlive the Run's pods, so every command works after the pods are gone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from conveyor.core.validation import InvalidSpec, Issue
from conveyor.kube.timestamps import parse_timestamp

EXIT_OK, EXIT_FAILED = 0, 1


# ------------------------------------------------------------------ where runs are


@dataclass(frozen=True)
class RunSummary:
    name: str
    pipeline: str
    phase: str
    steps: str
    created: datetime | None


class RunSource(Protocol):
    def runs(self) -> list[RunSummary]: ...

    def record(self, run: str) -> dict[str, Any]:
        """The run's record; InvalidSpec naming the run when it has none (yet)."""
        ...

    def log_names(self, run: str) -> list[str]:
        """The store documents of the run's archived logs, steps in order, attempts in order."""
        ...

    def text(self, name: str) -> str | None: ...


def _no_run(run: str, where: str) -> InvalidSpec:
    return InvalidSpec([Issue("run", f"run {run!r} does not exist in {where}")])


def _no_record(run: str, phase: str) -> InvalidSpec:
    return InvalidSpec(
        [Issue("run", f"run {run!r} has no record yet (phase {phase}); records are written when a run ends")]
    )


def _corrupt_record(run: str, why: str) -> InvalidSpec:
    return InvalidSpec([Issue("record", f"the record of run {run!r} is corrupt ({why}); nothing was read from it")])


def checked_record(run: str, read: Any) -> dict[str, Any] | None:
    """`read()` (a record or None), refusing one that is not JSON or not shaped like a record."""
    try:
        record = read()
    except ValueError as e:
        raise _corrupt_record(run, f"not JSON: {e}") from None
    if record is None:
        return None
    if not isinstance(record, dict) or record.get("kind") != "RunRecord" or not isinstance(record.get("steps"), list):
        raise _corrupt_record(run, "not a RunRecord with steps")
    for s in record["steps"]:
        if not isinstance(s, dict) or "name" not in s or not all("digest" in o for o in s.get("outputs", [])):
            raise _corrupt_record(run, "a step entry without a name or an output without a digest")
    return record


def _progress(record: Mapping[str, Any]) -> str:
    steps = record.get("steps", [])
    done = sum(1 for s in steps if s.get("phase") in ("Succeeded", "Failed", "Skipped", "Cancelled"))
    return f"{done}/{len(steps)}"


class LocalRuns:
    """The local runner's runs: `STATE/runs/<id>/` and the store in `STATE/store`."""

    def __init__(self, state_dir: Path) -> None:
        from conveyor.storage.local import LocalStore  # noqa: PLC0415

        self.state_dir = state_dir.resolve()
        self.store = LocalStore(self.state_dir / "store")

    def _dirs(self) -> list[Path]:
        root = self.state_dir / "runs"
        return (
            sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime) if root.is_dir() else []
        )

    def resolve(self, run: str) -> str:
        """A run id, or an unambiguous prefix of one."""
        names = [d.name for d in self._dirs()]
        if run in names:
            return run
        matches = [n for n in names if n.startswith(run)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise InvalidSpec([Issue("run", f"{run!r} matches several runs: {', '.join(matches)}")])
        raise _no_run(run, str(self.state_dir / "runs"))

    def _record_or_none(self, run_id: str) -> dict[str, Any] | None:
        from conveyor.core.record import record_document  # noqa: PLC0415

        doc = checked_record(run_id, lambda: self.store.get_document(record_document(run_id)))
        if doc is not None:
            return doc
        path = self.state_dir / "runs" / run_id / "record.json"
        return checked_record(run_id, lambda: json.loads(path.read_text()) if path.exists() else None)

    def runs(self) -> list[RunSummary]:
        out = []
        for d in self._dirs():
            try:
                record = self._record_or_none(d.name)
            except InvalidSpec:
                out.append(RunSummary(d.name, "", "(corrupt record)", "", None))
                continue
            created = datetime.fromtimestamp(d.stat().st_ctime, UTC)
            if record is None:
                out.append(RunSummary(d.name, "", "Running", "", created))
            else:
                started = parse_timestamp(record.get("startedAt")) or created
                out.append(RunSummary(d.name, record["pipeline"], record["phase"], _progress(record), started))
        return out

    def record(self, run: str) -> dict[str, Any]:
        run_id = self.resolve(run)
        record = self._record_or_none(run_id)
        if record is None:
            raise _no_record(run_id, "Running")
        return record

    def log_names(self, run: str) -> list[str]:
        run_id = self.resolve(run)
        record = self._record_or_none(run_id)
        if record is not None:
            return [name for step in record["steps"] for name in step.get("logs", [])]
        # still running: the attempts whose logs were archived so far, in the order they started
        docs = self.state_dir / "store" / "docs"
        found = sorted((docs / "runs" / run_id / "logs").glob("*.log"), key=lambda p: p.stat().st_mtime)
        return [str(p.relative_to(docs)) for p in found]

    def text(self, name: str) -> str | None:
        return self.store.get_text(name)


class ClusterRuns:
    """Runs in a namespace of the current kubeconfig's cluster; records and logs in the operator's S3 store."""

    def __init__(self, namespace: str, endpoint: str | None, bucket: str, prefix: str) -> None:
        from conveyor.kube.cluster import Cluster, load_kube_config  # noqa: PLC0415
        from conveyor.storage.s3 import S3Store  # noqa: PLC0415

        self.namespace = namespace
        self.cluster = Cluster(load_kube_config())
        self.store = S3Store(bucket, prefix, endpoint)

    @classmethod
    def over(cls, namespace: str, cluster: Any, store: Any) -> ClusterRuns:
        """The same, over a cluster client and store made elsewhere (the web console's, with its kubeconfig)."""
        runs = cls.__new__(cls)
        runs.namespace, runs.cluster, runs.store = namespace, cluster, store
        return runs

    def _run(self, run: str) -> dict[str, Any]:
        body = self.cluster.get_custom("runs", self.namespace, run)
        if body is None:
            raise _no_run(run, f"namespace {self.namespace}")
        return body

    def runs(self) -> list[RunSummary]:
        out = []
        for body in self.cluster.list_custom("runs", self.namespace):
            status = body.get("status", {})
            out.append(
                RunSummary(
                    body["metadata"]["name"],
                    status.get("pipeline") or body.get("spec", {}).get("pipelineRef", {}).get("name", ""),
                    status.get("phase", ""),
                    status.get("progress", ""),
                    parse_timestamp(body["metadata"].get("creationTimestamp")),
                )
            )
        return sorted(out, key=lambda r: (r.created or datetime.min.replace(tzinfo=UTC), r.name))

    def pipelines(self) -> list[dict[str, Any]]:
        return sorted(self.cluster.list_custom("pipelines", self.namespace), key=lambda p: p["metadata"]["name"])

    def _record_of(self, body: dict[str, Any]) -> dict[str, Any] | None:
        from conveyor.core.record import record_document  # noqa: PLC0415

        return checked_record(
            body["metadata"]["name"], lambda: self.store.get_document(record_document(body["metadata"]["uid"]))
        )

    def record(self, run: str) -> dict[str, Any]:
        body = self._run(run)
        record = self._record_of(body)
        if record is None:
            raise _no_record(run, body.get("status", {}).get("phase", "Pending"))
        return record

    def log_names(self, run: str) -> list[str]:
        from conveyor.api.run import RunStatus  # noqa: PLC0415
        from conveyor.core.record import log_documents  # noqa: PLC0415
        from conveyor.core.status import state_from_wire, states_from_status  # noqa: PLC0415
        from conveyor.core.task import units_document  # noqa: PLC0415

        body = self._run(run)
        uid = body["metadata"]["uid"]
        record = self._record_of(body)
        if record is not None:
            return [name for step in record["steps"] for name in step.get("logs", [])]
        # still running: the attempts the status knows of (and the fan-out items the store keeps)
        status = RunStatus.model_validate(body.get("status", {}))
        states = states_from_status(status.steps)
        if any(s.fan_out for s in status.steps):
            units = self.store.get_document(units_document(uid)) or {"units": {}}
            states.update({k: state_from_wire(v) for k, v in units["units"].items()})
        return [name for s in status.steps for name in log_documents(uid, states, s.name)]

    def text(self, name: str) -> str | None:
        return self.store.get_text(name)


def _source(args: argparse.Namespace) -> LocalRuns | ClusterRuns:
    if args.local:
        return LocalRuns(args.state_dir)
    return ClusterRuns(args.namespace, args.s3_endpoint or None, args.bucket, args.prefix)


# ------------------------------------------------------------------ get


def age(created: datetime | None, now: datetime) -> str:
    """A duration the way kubectl prints ages: 45s, 3m20s, 17m, 2h5m, 9h, 3d4h, 12d."""
    if created is None:
        return "<unknown>"
    s = max(0, int((now - created).total_seconds()))
    if s < 120:
        return f"{s}s"
    m, h, d = s // 60, s // 3600, s // 86400
    if s < 600:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if s < 3 * 3600:
        return f"{m}m"
    if s < 8 * 3600:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if s < 2 * 86400:
        return f"{h}h"
    if s < 8 * 86400:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    return f"{d}d"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns as kubectl prints them: upper-case headers, left-aligned, three spaces apart."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["   ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def cmd_get(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    source = _source(args)
    if args.kind in ("runs", "run", "cvrun"):
        runs = source.runs()
        if not runs:
            print("No runs found." if args.local else f"No runs found in {args.namespace} namespace.", file=sys.stderr)
            return EXIT_OK
        rows = [[r.name, r.pipeline, r.phase, r.steps, age(r.created, now)] for r in runs]
        print(table(["NAME", "PIPELINE", "PHASE", "STEPS", "AGE"], rows))
        return EXIT_OK
    if isinstance(source, LocalRuns):  # the local runner keeps no Pipeline objects: what its runs ran
        by_pipeline: dict[str, list[RunSummary]] = {}
        for r in source.runs():
            if r.pipeline:
                by_pipeline.setdefault(r.pipeline, []).append(r)
        if not by_pipeline:
            print("No pipelines found.", file=sys.stderr)
            return EXIT_OK
        rows = [[n, str(len(rs)), rs[-1].name, rs[-1].phase, age(rs[-1].created, now)] for n, rs in by_pipeline.items()]
        print(table(["NAME", "RUNS", "LAST RUN", "LAST PHASE", "AGE"], sorted(rows)))
        return EXIT_OK
    pipelines = source.pipelines()
    if not pipelines:
        print(f"No pipelines found in {args.namespace} namespace.", file=sys.stderr)
        return EXIT_OK
    rows = []
    for p in pipelines:
        ready = next((c["status"] for c in p.get("status", {}).get("conditions", []) if c["type"] == "Ready"), "")
        schedule = p.get("spec", {}).get("schedule") or {}
        created = parse_timestamp(p["metadata"].get("creationTimestamp"))
        rows.append(
            [
                p["metadata"]["name"],
                ready,
                schedule.get("cron", ""),
                p.get("status", {}).get("lastRun", ""),
                age(created, now),
            ]
        )
    print(table(["NAME", "READY", "SCHEDULE", "LAST RUN", "AGE"], rows))
    return EXIT_OK


# ------------------------------------------------------------------ logs


def split_log_name(name: str) -> tuple[str, int]:
    """`runs/<id>/logs/<key>-<attempt>.log` → (key, attempt)."""
    key, _, attempt = name.rsplit("/", 1)[-1].removesuffix(".log").rpartition("-")
    return key, int(attempt)


def cmd_logs(args: argparse.Namespace) -> int:
    source = _source(args)
    names = source.log_names(args.run)
    if args.step:
        names = [
            n for n in names if split_log_name(n)[0] == args.step or split_log_name(n)[0].startswith(f"{args.step}[")
        ]
        if not names:
            record = _safe_record(source, args.run)
            known = [s["name"] for s in record["steps"]] if record else []
            if record and args.step not in known:
                raise InvalidSpec(
                    [Issue("step", f"run {args.run!r} has no step {args.step!r} (steps: {', '.join(known)})")]
                )
            hit = record and any(s["name"] == args.step and s.get("cacheHit") for s in record["steps"])
            print(f"step {args.step}: {'a cache hit, nothing ran' if hit else 'no archived log'}", file=sys.stderr)
            return EXIT_OK
    if not names:
        print(
            f"run {args.run}: no archived logs (every step was a cache hit, skipped, or has not run)", file=sys.stderr
        )
        return EXIT_OK
    for i, name in enumerate(names):
        key, attempt = split_log_name(name)
        text = source.text(name)
        if len(names) > 1 or not args.step:
            print(f"{'' if i == 0 else chr(10)}==> {key} (attempt {attempt}) <==")
        if text is None:
            print(f"(no archived log for {key} attempt {attempt}: still running, or it could not be stored)")
            continue
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    return EXIT_OK


def _safe_record(source: LocalRuns | ClusterRuns, run: str) -> dict[str, Any] | None:
    try:
        return source.record(run)
    except InvalidSpec:
        return None


# ------------------------------------------------------------------ lineage


def lineage(record: Mapping[str, Any]) -> dict[str, Any]:
    """What each step read (and who produced it), what it wrote, and which parameters it used."""
    return {
        "run": record.get("name") or record["runId"],
        "runId": record["runId"],
        "pipeline": record["pipeline"],
        "pipelineSpecDigest": record.get("pipelineSpecDigest"),
        "codeVersion": record.get("codeVersion"),
        "phase": record["phase"],
        "parameters": record.get("parameters", {}),
        "steps": [
            {
                "name": s["name"],
                "phase": s["phase"],
                "cacheHit": s.get("cacheHit", False),
                "cacheKey": s.get("cacheKey"),
                "image": s.get("image"),
                "component": s.get("component"),
                "parameters": s.get("parameters", {}),
                "inputs": s.get("inputs", []),
                "outputs": [{"name": o["name"], "digest": o["digest"], "uri": o["uri"]} for o in s.get("outputs", [])],
                **({"itemCount": s["itemCount"]} if "itemCount" in s else {}),
            }
            for s in record["steps"]
        ],
    }


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def lineage_text(view: Mapping[str, Any]) -> str:
    params = ", ".join(f"{k}={_value(v)}" for k, v in sorted(view["parameters"].items())) or "(none)"
    lines = [
        f"run {view['run']}  ({view['phase']})",
        f"  pipeline    {view['pipeline']}  spec {view['pipelineSpecDigest']}",
        f"  code        conveyor {view['codeVersion']}",
        f"  parameters  {params}",
    ]
    steps = view["steps"]
    for i, s in enumerate(steps):
        last = i == len(steps) - 1
        branch, rail = ("└── ", "    ") if last else ("├── ", "│   ")
        notes = [s["phase"]]
        if s["cacheHit"]:
            notes.append("cache hit")
        if "itemCount" in s:
            notes.append(f"{s['itemCount']} items")
        what = s["component"] or s["image"] or ""
        lines.append(f"{branch}{s['name']}  [{', '.join(notes)}]  {what}".rstrip())
        used = ", ".join(f"{k}={_value(v)}" for k, v in sorted(s["parameters"].items()))
        if used:
            lines.append(f"{rail}    params  {used}")
        for inp in s["inputs"]:
            source = f"{inp['step']}.{inp['output']}" if inp.get("step") else inp.get("uri", "?")
            lines.append(f"{rail}    in   {inp['name']} ← {source}  {inp.get('digest') or '(no digest)'}")
        for out in s["outputs"]:
            lines.append(f"{rail}    out  {out['name']}  {out['digest']}  {out['uri']}")
    return "\n".join(lines)


def _model_digest(source: LocalRuns | ClusterRuns, target: str) -> str | None:
    """A model named by digest (or a unique prefix of one), or a ModelDeployment's (`md/NAME`) serving one."""
    kind, sep, name = target.partition("/")
    if sep and kind in ("md", "modeldeployment", "modeldeployments") and isinstance(source, ClusterRuns):
        body = source.cluster.get_custom("modeldeployments", source.namespace, name)
        if body is None:
            raise InvalidSpec([Issue("model", f"modeldeployment {name!r} does not exist in {source.namespace}")])
        status, model = body.get("status") or {}, (body.get("spec") or {}).get("model") or {}
        digest = (status.get("current") or {}).get("digest") or model.get("digest")
        if not digest:
            raise InvalidSpec([Issue("model", f"modeldeployment {name!r} serves no model yet and names no digest")])
        return str(digest)
    return target if target.startswith("sha256:") else None


def _run_of_model(source: LocalRuns | ClusterRuns, digest: str) -> tuple[str, dict[str, Any], str]:
    """(run, record, step.output) of the first run that computed an artifact (one that reused it from the
    cache only if none did)."""
    if len(digest) < len("sha256:") + 6:
        raise InvalidSpec([Issue("model", f"{digest!r}: give at least 6 hex digits of the digest")])
    found: list[tuple[bool, str, dict[str, Any], str]] = []
    for summary in source.runs():
        try:
            record = source.record(summary.name)
        except InvalidSpec:
            continue
        for s in record["steps"]:
            for o in s.get("outputs", []):
                if o["digest"].startswith(digest):
                    found.append((bool(s.get("cacheHit")), summary.name, record, f"{s['name']}.{o['name']}"))
    if not found:
        raise InvalidSpec([Issue("model", f"no recorded run made an artifact {digest}")])
    _, run, record, made = min(found, key=lambda f: f[0])  # stable: the oldest computing run
    return run, record, made


def cmd_lineage(args: argparse.Namespace) -> int:
    from conveyor.lifecycle.integrity import check_record, store_checker  # noqa: PLC0415

    source = _source(args)
    digest = _model_digest(source, args.run)
    if digest is not None:
        run, record, made = _run_of_model(source, digest)
        header = f"model {digest} was made by run {run}, step output {made}"
    else:
        record, header = source.record(args.run), ""
    view = lineage(record)
    problems = check_record(record, store_checker(source.store, content=args.verify))
    if args.json:
        view["problems"] = [
            {"digest": p.digest, "what": p.what, "source": p.source, "dependents": list(p.downstream)} for p in problems
        ]
        print(json.dumps(view, indent=2))
    else:
        print("\n".join(x for x in (header, lineage_text(view)) if x))
        for p in problems:
            print(f"bad input: {p.text()}")
    if args.graph is not None:
        from conveyor.cli.graph import lineage_graph, write_graph  # noqa: PLC0415

        try:
            write_graph(
                lineage_graph(view, {p.digest: p.what for p in problems}), args.graph, f"lineage of {view['run']}"
            )
        except ValueError as e:
            raise InvalidSpec([Issue("--graph", str(e))]) from None
        print(f"wrote {args.graph}", file=sys.stderr)
    return EXIT_FAILED if problems else EXIT_OK


# ------------------------------------------------------------------ compare


def _short(digest: str | None) -> str:
    return digest[: len("sha256:") + 12] if digest else "-"


def comparison(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, list[str], bool]]:
    """(section, row name, one value per run, differs) for parameters, metrics and output digests."""
    rows: list[tuple[str, str, list[str], bool]] = []

    def add(section: str, name: str, values: list[str]) -> None:
        rows.append((section, name, values, len(set(values)) > 1))

    add("run", "phase", [r["phase"] for r in records])
    add("run", "pipeline spec", [_short(r.get("pipelineSpecDigest")) for r in records])
    for p in sorted({k for r in records for k in r.get("parameters", {})}):
        add("parameter", p, [_value(r["parameters"][p]) if p in r.get("parameters", {}) else "-" for r in records])
    order = list(dict.fromkeys(s["name"] for r in records for s in r["steps"]))
    by_run = [{s["name"]: s for s in r["steps"]} for r in records]
    for step in order:
        for m in sorted({k for steps in by_run for k in steps.get(step, {}).get("metrics", {})}):
            values = [steps.get(step, {}).get("metrics", {}).get(m) for steps in by_run]
            add("metric", f"{step}.{m}", ["-" if v is None else f"{v:.6g}" for v in values])
    for step in order:
        outs = sorted({o["name"] for steps in by_run for o in steps.get(step, {}).get("outputs", [])})
        for o in outs:
            values = [
                _short(next((x["digest"] for x in steps.get(step, {}).get("outputs", []) if x["name"] == o), None))
                for steps in by_run
            ]
            add("output", f"{step}.{o}", values)
    return rows


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    if len(args.runs) < 2:
        raise InvalidSpec([Issue("runs", "give at least two runs to compare")])
    source = _source(args)
    records = [source.record(r) for r in args.runs]
    rows = comparison(records)
    names = [str(r.get("name") or r["runId"]) for r in records]
    t = Table(title=f"{len(records)} runs, differences marked ≠ and highlighted", title_justify="left")
    t.add_column("")
    t.add_column("")
    t.add_column("")
    for n in names:
        t.add_column(n, overflow="fold")
    for section, name, values, differs in rows:
        t.add_row("≠" if differs else "", section, name, *values, style="bold yellow" if differs else None)
    console = Console()
    if not console.is_terminal:  # a pipe or a file: never wrap the table to a guessed width
        console = Console(width=max(120, 40 + sum(max(len(n), 20) + 3 for n in names)))
    console.print(t)
    different = sum(1 for *_, d in rows if d)
    console.print(f"{different} of {len(rows)} rows differ")
    return EXIT_OK


# ------------------------------------------------------------------ registration


def _store_errors_exit_1(func: Any) -> Any:
    """An unreachable store is an error message and exit code 1, never a traceback."""
    from conveyor.storage.store import StoreUnavailable  # noqa: PLC0415

    def run(args: argparse.Namespace) -> int:
        try:
            code: int = func(args)
        except StoreUnavailable as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
        return code

    return run


def _where(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", default="default", help="the Runs' namespace (cluster)")
    p.add_argument("--local", action="store_true", help="the local runner's runs instead of the cluster's")
    p.add_argument("--state-dir", type=Path, default=Path(".conveyor"), help="the local runner's state (with --local)")
    p.add_argument(
        "--s3-endpoint",
        default=os.environ.get("CONVEYOR_S3_ENDPOINT"),
        help="the operator's artifact store (default: $CONVEYOR_S3_ENDPOINT); credentials from AWS_* variables",
    )
    p.add_argument(
        "--bucket", default=os.environ.get("CONVEYOR_S3_BUCKET") or "conveyor", help="(default: $CONVEYOR_S3_BUCKET)"
    )
    p.add_argument("--prefix", default=os.environ.get("CONVEYOR_S3_PREFIX", ""), help="(default: $CONVEYOR_S3_PREFIX)")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    get = sub.add_parser("get", help="list runs or pipelines, like kubectl get")
    get.add_argument("kind", choices=["runs", "run", "cvrun", "pipelines", "pipeline", "pl"])
    _where(get)
    get.set_defaults(func=_store_errors_exit_1(cmd_get))

    logs = sub.add_parser("logs", help="print a run's archived step logs (they outlive the pods)")
    logs.add_argument("run")
    logs.add_argument("step", nargs="?", help="only this step (all its attempts and items)")
    _where(logs)
    logs.set_defaults(func=_store_errors_exit_1(cmd_logs))

    lin = sub.add_parser("lineage", help="what each step of a run read, wrote and used")
    lin.add_argument("run", help="a run, a model digest (sha256:...), or md/NAME (the model a ModelDeployment serves)")
    lin.add_argument("--json", action="store_true")
    lin.add_argument("--graph", type=Path, help="also draw the lineage into this .svg or .png file")
    lin.add_argument("--verify", action="store_true", help="re-hash every artifact, not only check it exists")
    _where(lin)
    lin.set_defaults(func=_store_errors_exit_1(cmd_lineage))

    cmp = sub.add_parser("compare", help="parameters, metrics and output digests of runs side by side")
    cmp.add_argument("runs", nargs="+")
    _where(cmp)
    cmp.set_defaults(func=_store_errors_exit_1(cmd_compare))
