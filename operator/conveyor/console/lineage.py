"""The Lineage page's documents: from an artifact (a model, by digest) back to the data, across Runs (pure).

Built on what `conveyor lineage` already has: each run's view is `cli.records.lineage(record)`, the
drawing is `cli.graph.lineage_graph` over the steps upstream of the artifact, fan-in collections are
`lifecycle.integrity.collections`, and missing or corrupt artifacts come from a checker
(`lifecycle.integrity.store_checker`, passed in, so this module stays pure). What is new here is the
index over many records: which run computed a digest (the oldest run that ran the step, a run that only
reused it from the cache if none did, the rule `conveyor lineage sha256:...` follows), which runs read
it, and, for a step that was a cache hit, the run that really computed its outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.api.pipeline import PipelineSpec
from conveyor.cli.graph import lineage_graph, to_svg
from conveyor.cli.records import lineage
from conveyor.console.views import BadQuery
from conveyor.core.redact import redact
from conveyor.kube.timestamps import parse_timestamp
from conveyor.lifecycle.integrity import collections

MIN_PREFIX_HEX = 6
MODELS_SHOWN = 200


@dataclass(frozen=True)
class Made:
    """One step output (or fan-out item output) naming a digest in one run's record."""

    run: str
    step: str
    output: str
    cache_hit: bool
    item: str | None = None  # `step[i]` when a fan-out item wrote it


@dataclass(frozen=True)
class ArtifactIndex:
    """Every digest the records name: who wrote it and who read it, runs oldest first."""

    records: Mapping[str, Mapping[str, Any]]  # run id → (redacted) record
    made: Mapping[str, Sequence[Made]]
    read: Mapping[str, Sequence[tuple[str, str]]]  # digest → (run, step) of every reader

    def producer(self, digest: str) -> Made | None:
        """The run that computed `digest`: the oldest that ran the step, else the oldest that reused it."""
        found = self.made.get(digest) or ()
        return next((m for m in found if not m.cache_hit), found[0] if found else None)

    def resolve(self, digest: str) -> str:
        """A full digest from a digest or a unique prefix of one (at least six hex digits)."""
        text = digest.strip()
        if not text.startswith("sha256:") or len(text) < len("sha256:") + MIN_PREFIX_HEX:
            raise BadQuery(f"digest: expected sha256: and at least {MIN_PREFIX_HEX} hex digits, got {digest!r}")
        if text in self.made or text in self.read:
            return text
        matches = sorted({d for d in (*self.made, *self.read) if d.startswith(text)})
        if len(matches) > 1:
            raise BadQuery(f"digest: {text!r} matches {len(matches)} artifacts; give more of it")
        if not matches:
            raise LookupError(f"no recorded run wrote or read an artifact {text}")
        return matches[0]


def _started(record: Mapping[str, Any]) -> float:
    moment = parse_timestamp(record.get("startedAt"))
    return moment.timestamp() if moment else 0.0


def artifact_index(records: Sequence[Mapping[str, Any]]) -> ArtifactIndex:
    """The index over final run records (any order; they are sorted oldest first), redacted here."""
    safe = sorted((redact(r) for r in records), key=lambda r: (_started(r), str(r["runId"])))
    made: dict[str, list[Made]] = {}
    read: dict[str, list[tuple[str, str]]] = {}
    for r in safe:
        run = str(r["runId"])
        for s in r.get("steps", []):
            hit = bool(s.get("cacheHit"))
            for o in s.get("outputs", []):
                made.setdefault(str(o["digest"]), []).append(Made(run, s["name"], o["name"], hit))
            for i in s.get("inputs", []):
                if i.get("digest"):
                    read.setdefault(str(i["digest"]), []).append((run, s["name"]))
        for step, units in (r.get("items") or {}).items():
            for u in units:
                for o in u.get("outputs", []):
                    item = Made(run, step, o["name"], bool(u.get("cacheHit")), str(u.get("key")))
                    made.setdefault(str(o["digest"]), []).append(item)
    return ArtifactIndex({str(r["runId"]): r for r in safe}, made, read)


def _upstream(steps: Mapping[str, Mapping[str, Any]], start: str) -> list[tuple[str, int]]:
    """(step, hops from `start`) of `start` and every step it read from, nearest first."""
    out: dict[str, int] = {start: 0}
    frontier = [start]
    while frontier:
        nxt = []
        for name in frontier:
            for i in steps.get(name, {}).get("inputs", []):
                up = i.get("step")
                if up and up in steps and up not in out:
                    out[up] = out[name] + 1
                    nxt.append(up)
        frontier = nxt
    return sorted(out.items(), key=lambda kv: kv[1])


def _size_of(record: Mapping[str, Any], step: str, output: str) -> Any:
    entry: Mapping[str, Any] = next((s for s in record.get("steps", []) if s["name"] == step), {})
    return next((o.get("size") for o in entry.get("outputs", []) if o["name"] == output), None)


def lineage_view(
    index: ArtifactIndex,
    digest: str,
    check: Callable[[str], str | None] = lambda _d: None,
    specs: Mapping[str, PipelineSpec | None] | None = None,
) -> dict[str, Any]:
    """The Lineage page's document for one artifact: the run and step that made it, then each step it was
    made from, nearest first, back to the steps that read no other step (the data: an ingest, or an
    external URI by digest). A step that was a cache hit names the run that really ran it.

    `check(digest)`: None when the artifact is sound, else what is wrong (`missing`, `corrupt ...`).
    `specs`: stored specs by digest; with the producing run's, each step also shows its `with` settings
    (the ingest's source, the estimator), redacted."""
    full = index.resolve(digest)
    made = index.producer(full)
    readers = [{"run": run, "step": step} for run, step in index.read.get(full, ())]
    if made is None:  # only read: an external input, or a step output whose producer's record is gone
        return {
            "digest": full,
            "found": False,
            "madeBy": None,
            "readBy": readers,
            "steps": [],
            "data": [],
            "runs": sorted({r["run"] for r in readers}),
            "graph": "",
            "problems": {},
        }
    record = index.records[made.run]
    spec = (specs or {}).get(str(record.get("pipelineSpecDigest")))
    settings = {st.name: redact(dict(st.with_)) for st in spec.steps if st.with_} if spec is not None else {}
    view = lineage(record)
    steps = {s["name"]: s for s in view["steps"]}
    chain = _upstream(steps, made.step)
    members = collections(record)
    problems: dict[str, str] = {}

    def checked(d: str | None) -> str | None:
        if not d or d in members:  # a collection is no blob: its members are checked where they are made
            return None
        if d not in problems:
            what = check(d)
            if what is None:
                return None
            problems[d] = what
        return problems[d]

    hops = []
    data = []
    for name, distance in chain:
        s = steps[name]
        computed = None
        if s["cacheHit"] and s["outputs"]:
            first = index.producer(s["outputs"][0]["digest"])
            computed = first.run if first is not None and not first.cache_hit and first.run != made.run else None
        inputs = []
        for i in s["inputs"]:
            source = f"{i['step']}.{i['output']}" if i.get("step") else i.get("uri")
            digest_in = i.get("digest")
            inputs.append(
                {
                    "name": i["name"],
                    "from": source,
                    "step": i.get("step"),
                    "digest": digest_in,
                    "problem": checked(digest_in),
                }
            )
            if not i.get("step"):
                data.append({"uri": i.get("uri"), "digest": i.get("digest"), "readBy": name})
        hops.append(
            {
                "step": name,
                "hops": distance,
                "run": made.run,
                "phase": s["phase"],
                "component": s["component"],
                "image": s["image"],
                "cacheHit": s["cacheHit"],
                "computedIn": computed,
                "parameters": dict(s["parameters"]),
                "settings": settings.get(name) if spec is not None else None,
                "inputs": inputs,
                "outputs": [
                    {
                        "name": o["name"],
                        "digest": o["digest"],
                        "size": _size_of(record, name, o["name"]),
                        "problem": checked(o["digest"]),
                    }
                    for o in s["outputs"]
                ],
                "source": not any(i.get("step") for i in s["inputs"]),  # reads no other step: where data enters
            }
        )
    kept = {name for name, _ in chain}
    drawn = {**view, "steps": [s for s in view["steps"] if s["name"] in kept]}
    runs = [made.run, *sorted({h["computedIn"] for h in hops if h["computedIn"]})]
    runs += sorted({r["run"] for r in readers} - set(runs))
    return {
        "digest": full,
        "found": True,
        "madeBy": {
            "run": made.run,
            "step": made.step,
            "item": made.item,
            "output": made.output,
            "cacheHit": made.cache_hit,
            "pipeline": record.get("pipeline") or "",
            "pipelineSpecDigest": record.get("pipelineSpecDigest"),
            "phase": record.get("phase"),
            "startedAt": record.get("startedAt"),
            "parameters": dict(record.get("parameters") or {}),
        },
        "readBy": readers,
        "steps": hops,
        "data": data,
        "runs": runs,
        "graph": to_svg(lineage_graph(drawn, problems), f"lineage of {full}"),
        "problems": problems,
    }


def models_view(index: ArtifactIndex, limit: int = MODELS_SHOWN) -> dict[str, Any]:
    """Every model the records name (an output called `model`, as the lineage drawing marks them), each once,
    with the run that computed it, newest first: the Lineage page's starting points."""
    models: list[tuple[float, str, dict[str, Any]]] = []
    for digest, found in index.made.items():
        made = index.producer(digest)
        if made is None or made.output != "model":
            continue
        record = index.records[made.run]
        doc = {
            "digest": digest,
            "run": made.run,
            "step": made.item or made.step,
            "pipeline": record.get("pipeline") or "",
            "startedAt": record.get("startedAt"),
            "runs": len({m.run for m in found}),
        }
        models.append((-_started(record), digest, doc))
    models.sort(key=lambda m: m[:2])
    return {"models": [doc for *_, doc in models[:limit]], "total": len(models)}
