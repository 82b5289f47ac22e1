"""Where the console's runs come from: the seam between the console and a state (local now, a cluster later).

A `ConsoleSource` answers: which runs exist (rows for the list), one run's view, one attempt's log, a
run's evaluation plots, the records of runs to compare, an artifact's lineage across runs (and the models
to start from), and the pipelines the runs ran. `LocalSource` answers
them from the local runner's state directory through the CLI's `LocalRuns` (records and archived logs
in the store); a cluster source will answer them from the API server and the S3 store the same way
`ClusterRuns` does. Every answer is already redacted: the app serves what it gets.

A running local run has no record yet; its view is built from the attempts the runner has started
(`runs/<id>/steps/<key>-<attempt>/`: which step and attempt, and the result once there is one). The
attempt's task file also holds the step's environment, which is never read here.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.api.pipeline import PipelineSpec
from conveyor.console.lineage import ArtifactIndex, artifact_index, lineage_view, models_view
from conveyor.console.pipelines import pipeline_view, pipelines_view
from conveyor.console.views import FINAL_PHASES, RunRow, run_row, run_view
from conveyor.core.record import log_document
from conveyor.core.redact import redact_text
from conveyor.core.validation import InvalidSpec

if TYPE_CHECKING:
    from conveyor.storage.store import ArtifactStore

RECORD_WRITE_SECONDS = 10.0
_RUN_ID_SUFFIX = re.compile(r"-\d{8}-\d{6}-[0-9a-f]{6}$")
_ATTEMPT_DIR = re.compile(r"^(?P<key>.+)-(?P<attempt>\d+)$")


class NotFound(LookupError):
    """No such run, log or plot (the app answers 404 with the message)."""


class Unavailable(RuntimeError):
    """Where the runs are could not answer (the API server refused or failed): the app answers 503 with the
    message, which names what was asked and never a credential."""


@dataclass(frozen=True)
class Plot:
    step: str
    index: int
    title: str
    file: str


class ConsoleSource(Protocol):
    description: str
    """Where the runs are, for the page header (no credentials)."""

    def rows(self) -> list[RunRow]: ...

    def run(self, run_id: str) -> dict[str, Any]:
        """The Run page's document (views.run_view); NotFound for an unknown run."""
        ...

    def log(self, run_id: str, key: str, attempt: int) -> str | None:
        """One attempt's log, redacted; None when it has none (yet); NotFound for an attempt the run never had."""
        ...

    def plot_png(self, run_id: str, step: str, index: int) -> bytes: ...

    def records(self, run_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Final records of the runs to compare; NotFound naming the first that has none."""
        ...

    def models(self) -> dict[str, Any]:
        """The Lineage page's starting points (lineage.models_view)."""
        ...

    def lineage(self, digest: str) -> dict[str, Any]:
        """An artifact's lineage (lineage.lineage_view); NotFound when no record names it, BadQuery for a
        digest too short or matching several."""
        ...

    def pipelines(self) -> dict[str, Any]:
        """The pipelines the runs ran (pipelines.pipelines_view)."""
        ...

    def pipeline(self, name: str) -> dict[str, Any]:
        """One pipeline's versions and recent runs (pipelines.pipeline_view); NotFound for an unknown name."""
        ...

    def deployments(self) -> dict[str, Any]:
        """The ModelDeployments (models.deployments_view); a local state has none."""
        ...

    def deployment(self, deployment: str) -> dict[str, Any]:
        """One ModelDeployment (models.deployment_view); NotFound for an unknown one."""
        ...


class StoredRecords:
    """What both sources answer from the runs' final records and the store they point into: evaluation
    plots, stored specs (the DAG's `dependsOn` edges, the Pipelines pages), the artifact index (Lineage).
    A source says which rows and which readable records there are."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self._plots: dict[str, list[tuple[Plot, bytes]]] = {}
        self._specs: dict[str, PipelineSpec] = {}  # stored specs never change: they are kept by digest
        self._artifacts: tuple[tuple[str, ...], ArtifactIndex] | None = None
        self._lock = threading.Lock()

    def rows(self) -> list[RunRow]:
        raise NotImplementedError

    def _all_records(self) -> list[dict[str, Any]]:
        """Every readable final record (a corrupt one, or a run still going, has none to offer)."""
        raise NotImplementedError

    def _depends_on(self, record: Mapping[str, Any]) -> dict[str, list[str]]:
        """`dependsOn` edges from the stored spec (inputs alone give the rest); none when it is not stored."""
        digest = record.get("pipelineSpecDigest")
        spec = self._specs_of([digest]).get(digest) if isinstance(digest, str) else None
        return {s.name: list(s.depends_on) for s in spec.steps} if spec is not None else {}

    # ------------------------------------------------------------ lineage and pipelines

    def _index(self) -> ArtifactIndex:
        """The artifact index over every record, made again only when the set of records changed."""
        records = self._all_records()
        key = tuple(sorted(_record_key(r) for r in records))
        cached = self._artifacts
        if cached is not None and cached[0] == key:
            return cached[1]
        index = artifact_index(records)
        with self._lock:
            self._artifacts = (key, index)
        return index

    def models(self) -> dict[str, Any]:
        return models_view(self._index())

    def lineage(self, digest: str) -> dict[str, Any]:
        from conveyor.lifecycle.integrity import store_checker  # noqa: PLC0415

        index = self._index()
        try:
            full = index.resolve(digest)
        except LookupError as e:
            raise NotFound(str(e)) from None
        made = index.producer(full)
        spec_digest = index.records[made.run].get("pipelineSpecDigest") if made is not None else None
        specs = self._specs_of([str(spec_digest)] if spec_digest else [])
        return lineage_view(index, full, store_checker(self.store, content=False), specs)

    def _specs_of(self, digests: Sequence[str]) -> dict[str, PipelineSpec | None]:
        """The stored specs by digest (None for one the store does not have)."""
        from conveyor.lifecycle.specs import load_spec  # noqa: PLC0415

        out: dict[str, PipelineSpec | None] = {}
        for digest in digests:
            if digest not in self._specs:
                spec = load_spec(self.store, digest)
                if spec is None:
                    out[digest] = None  # not stored (yet): asked again next time
                    continue
                with self._lock:
                    self._specs[digest] = spec
            out[digest] = self._specs[digest]
        return out

    def pipelines(self) -> dict[str, Any]:
        return pipelines_view(self.rows(), self._all_records())

    def pipeline(self, name: str) -> dict[str, Any]:
        records = [r for r in self._all_records() if r.get("pipeline") == name]
        specs = self._specs_of(sorted({str(r["pipelineSpecDigest"]) for r in records if r.get("pipelineSpecDigest")}))
        try:
            return pipeline_view(name, self.rows(), records, specs)
        except LookupError as e:
            raise NotFound(str(e)) from None

    # ------------------------------------------------------------ plots

    def _plots_of(self, record: Mapping[str, Any]) -> list[tuple[Plot, bytes]]:
        """Every PNG in the `plots` outputs (evaluate's zip with an index.json), read through the store,
        which checks its digest; an unreadable archive shows no plots rather than breaking the page."""
        from conveyor.storage.store import ArtifactMissing, DigestMismatch  # noqa: PLC0415

        key = _record_key(record)
        if key in self._plots:
            return self._plots[key]
        found: list[tuple[Plot, bytes]] = []
        for s in record.get("steps", []):
            ref = next((o for o in s.get("outputs", []) if o.get("name") == "plots"), None)
            if ref is None:
                continue
            with tempfile.TemporaryDirectory(prefix="conveyor-console-") as tmp:
                path = Path(tmp) / "plots.zip"
                try:
                    self.store.get_file(ref["digest"], path)
                    with zipfile.ZipFile(path) as archive:
                        index = json.loads(archive.read("index.json"))
                        for i, plot in enumerate(index.get("plots", [])):
                            title = str(plot.get("title") or plot["file"])
                            found.append((Plot(s["name"], i, title, plot["file"]), archive.read(plot["file"])))
                except (ArtifactMissing, DigestMismatch, zipfile.BadZipFile, KeyError, ValueError, OSError):
                    continue
        with self._lock:
            self._plots[key] = found
        return found

    def _plot_in(self, record: Mapping[str, Any] | None, run_id: str, step: str, index: int) -> bytes:
        for plot, data in self._plots_of(record) if record is not None else []:
            if plot.step == step and plot.index == index:
                return data
        raise NotFound(f"run {run_id!r} has no plot {index} of step {step!r}")


class LocalSource(StoredRecords):
    """The local runner's state directory (`conveyor run --state-dir`)."""

    def __init__(self, state_dir: Path) -> None:
        from conveyor.cli.records import LocalRuns  # noqa: PLC0415

        self.local = LocalRuns(state_dir)
        super().__init__(self.local.store)
        self.state_dir = self.local.state_dir
        self.description = f"local state {state_dir}"
        self._final: dict[str, dict[str, Any]] = {}  # records never change once written
        self._views: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------ runs

    def _run_dirs(self) -> dict[str, Path]:
        root = self.state_dir / "runs"
        return {d.name: d for d in root.iterdir() if d.is_dir()} if root.is_dir() else {}

    def _dir(self, run_id: str) -> Path:
        """The run's directory; only names that exist are accepted, so no request can point elsewhere."""
        found = self._run_dirs().get(run_id)
        if found is None:
            raise NotFound(f"run {run_id!r} does not exist in this state directory")
        return found

    def _record(self, run_id: str, run_dir: Path) -> dict[str, Any] | None:
        """The final record, or None while the run has none; InvalidSpec when it is corrupt."""
        cached = self._final.get(run_id)
        if cached is not None:
            return cached
        from conveyor.core.record import record_document  # noqa: PLC0415

        stored = self.state_dir / "store" / "docs" / record_document(run_id)
        plain = run_dir / "record.json"
        if not plain.exists() and not stored.exists():
            return None
        try:
            record = self.local.record(run_id)
        except InvalidSpec:
            # the runner writes record.json in place, then the store's copy atomically: a record.json that
            # does not parse yet, with no store copy, is one being written, not a corrupt one
            if not stored.exists() and time.time() - plain.stat().st_mtime < RECORD_WRITE_SECONDS:
                return None
            raise
        with self._lock:
            self._final[run_id] = record
        return record

    def rows(self) -> list[RunRow]:
        out = []
        for run_id, run_dir in self._run_dirs().items():
            created = datetime.fromtimestamp(run_dir.stat().st_ctime, UTC)
            try:
                record = self._record(run_id, run_dir)
            except InvalidSpec:
                out.append(RunRow(run_id, _pipeline_of(run_id), "(corrupt record)", created, None, ""))
                continue
            out.append(run_row(record if record is not None else _live_record(run_id, run_dir, created), created))
        return out

    def run(self, run_id: str) -> dict[str, Any]:
        cached = self._views.get(run_id)
        if cached is not None:
            return cached
        run_dir = self._dir(run_id)
        created = datetime.fromtimestamp(run_dir.stat().st_ctime, UTC)
        try:
            record = self._record(run_id, run_dir)
        except InvalidSpec as e:
            live = _live_record(run_id, run_dir, created)
            return run_view(live, {}, live=True, problem=redact_text(str(e)))
        if record is None:
            return run_view(_live_record(run_id, run_dir, created), {}, attempts=_attempt_list(run_dir), live=True)
        plots = [plot_json(run_id, p) for p, _ in self._plots_of(record)]
        view = run_view(record, self._depends_on(record), plots, _attempt_list(run_dir))
        if record.get("phase") in FINAL_PHASES:
            with self._lock:
                self._views[run_id] = view
        return view

    def records(self, run_ids: Sequence[str]) -> list[dict[str, Any]]:
        out = []
        for run_id in run_ids:
            run_dir = self._dir(run_id)
            try:
                record = self._record(run_id, run_dir)
            except InvalidSpec as e:
                raise NotFound(redact_text(str(e))) from None
            if record is None:
                raise NotFound(f"run {run_id!r} is still running: runs are compared once they have a record")
            out.append(record)
        return out

    # ------------------------------------------------------------ lineage and pipelines

    def _all_records(self) -> list[dict[str, Any]]:
        """Every readable final record (a corrupt one, or a run still going, has none to offer)."""
        out = []
        for run_id, run_dir in self._run_dirs().items():
            try:
                record = self._record(run_id, run_dir)
            except InvalidSpec:
                continue
            if record is not None:
                out.append(record)
        return out

    # ------------------------------------------------------------ logs

    def log(self, run_id: str, key: str, attempt: int) -> str | None:
        run_dir = self._dir(run_id)
        name = log_document(run_id, key, attempt)
        try:
            record = self._record(run_id, run_dir)
        except InvalidSpec:
            record = None
        if record is not None:
            known = {n for s in record.get("steps", []) for n in s.get("logs", [])}
        else:
            known = {log_document(run_id, k, n) for k, n in _attempts(run_dir)}
        if name not in known:
            raise NotFound(f"run {run_id!r} has no attempt {attempt} of {key!r}")
        text = self.local.text(name)
        if text is None and record is None:
            text = _live_log(run_dir / "logs" / f"{key}.log", attempt)  # still running: what it printed so far
        return None if text is None else redact_text(text)

    def deployments(self) -> dict[str, Any]:
        return {"deployments": [], "total": 0, "note": "models are served on a cluster: a local state has none"}

    def deployment(self, deployment: str) -> dict[str, Any]:
        raise NotFound(f"no model deployment {deployment!r}: a local state has none (open the console on a cluster)")

    def plot_png(self, run_id: str, step: str, index: int) -> bytes:
        run_dir = self._dir(run_id)
        return self._plot_in(self._record(run_id, run_dir), run_id, step, index)


def _record_key(record: Mapping[str, Any]) -> str:
    """A record's key in the caches: its run and start (a cluster Run deleted and made again is another run)."""
    return f"{record['runId']}@{record.get('startedAt')}"


def plot_json(run_id: str, p: Plot) -> dict[str, Any]:
    return {"step": p.step, "index": p.index, "title": p.title}


def _pipeline_of(run_id: str) -> str:
    """The local runner names runs `<pipeline>-<date>-<time>-<hex>`."""
    return _RUN_ID_SUFFIX.sub("", run_id)


def _attempts(run_dir: Path) -> list[tuple[str, int]]:
    """(key, attempt) of every attempt the runner has started, from its attempt directories."""
    out = []
    steps = run_dir / "steps"
    for d in steps.iterdir() if steps.is_dir() else []:
        m = _ATTEMPT_DIR.match(d.name)
        if m and d.is_dir():
            out.append((m["key"], int(m["attempt"])))
    return out


def _attempt_list(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every attempt of each step (not of fan-out items), in order: when it started and how it ended."""
    out: dict[str, list[dict[str, Any]]] = {}
    for key, attempt in sorted(_attempts(run_dir), key=lambda a: a[1]):
        if "[" in key:
            continue
        attempt_dir = run_dir / "steps" / f"{key}-{attempt}"
        task = attempt_dir / "task.json"
        started = datetime.fromtimestamp((task if task.exists() else attempt_dir).stat().st_mtime, UTC)
        result = _read_json(attempt_dir / "result.json")
        outcome = "running" if result is None else ("succeeded" if result.get("ok") else "failed")
        out.setdefault(key, []).append(
            {
                "attempt": attempt,
                "startedAt": started.isoformat(),
                "finishedAt": (result or {}).get("finished_at"),
                "outcome": outcome,
                "message": (result or {}).get("message"),
            }
        )
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or being written
    return doc if isinstance(doc, dict) else None


def _live_record(run_id: str, run_dir: Path, created: datetime) -> dict[str, Any]:
    """A record-shaped document of a run still going: one entry per step seen so far, fan-outs counted.

    Only the attempt's key and number and its result (outputs, metrics, message) are read; the task
    file's environment and command never are."""
    by_key: dict[str, dict[str, Any]] = {}
    for key, attempt in sorted(_attempts(run_dir), key=lambda a: a[1]):
        attempt_dir = run_dir / "steps" / f"{key}-{attempt}"
        result = _read_json(attempt_dir / "result.json")
        task = attempt_dir / "task.json"  # written once at launch (the directory's own mtime moves later)
        started = datetime.fromtimestamp((task if task.exists() else attempt_dir).stat().st_mtime, UTC)
        phase = "Running" if result is None else ("Succeeded" if result.get("ok") else "Failed")
        entry = by_key.setdefault(key, {"startedAt": started.isoformat()})
        entry.update(
            {
                "name": key,
                "phase": phase,
                "attempts": attempt,
                "finishedAt": (result or {}).get("finished_at"),
                "outputs": (result or {}).get("outputs") or [],
                "metrics": (result or {}).get("metrics") or {},
                "message": (result or {}).get("message"),
                "logs": [log_document(run_id, key, n) for n in range(1, attempt + 1)],
            }
        )
    steps: dict[str, dict[str, Any]] = {}
    items: dict[str, list[dict[str, Any]]] = {}
    for key, entry in sorted(by_key.items(), key=lambda kv: str(kv[1]["startedAt"])):
        name, bracket, rest = key.partition("[")
        if not bracket:
            steps[key] = entry
            continue
        index = int(rest.rstrip("]")) if rest.rstrip("]").isdigit() else 0
        items.setdefault(name, []).append({**entry, "name": name, "key": key, "index": index})
    for name, members in items.items():
        members.sort(key=lambda i: int(i["index"]))
        count = {p: sum(1 for i in members if i["phase"] == p) for p in ("Succeeded", "Failed", "Running")}
        steps[name] = {
            "name": name,
            "phase": "Running" if count["Running"] else ("Failed" if count["Failed"] else "Running"),
            "attempts": 0,
            "startedAt": min(str(i["startedAt"]) for i in members),
            "outputs": [],
            "metrics": {},
            "logs": [n for i in members for n in i["logs"]],
            "fanOut": {
                "total": len(members),
                "succeeded": count["Succeeded"],
                "failed": count["Failed"],
                "running": count["Running"],
                "skipped": 0,
            },
        }
    return {
        "runId": run_id,
        "name": run_id,
        "pipeline": _pipeline_of(run_id),
        "phase": "Running",
        "startedAt": created.isoformat(),
        "parameters": {},
        "steps": sorted(steps.values(), key=lambda s: str(s["startedAt"])),
        "items": items,
    }


def _live_log(path: Path, attempt: int) -> str | None:
    """The part of a step's live log file from the runner's `--- attempt N` line on (it appends attempts)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    marker = f"--- attempt {attempt} at "
    start = text.find(marker)
    if start < 0:
        return None
    end = text.find("--- attempt ", start + len(marker))
    return text[start : end if end >= 0 else None]
