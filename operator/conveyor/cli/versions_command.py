"""`conveyor pipeline versions NAME`: the versions of a Pipeline that Runs ran, and which Runs ran each.

A version is the Pipeline's metadata.generation (on a cluster) and the digest of its spec (both shells). Runs
name theirs in status.pipelineVersion and in their record (pipelineGeneration, pipelineSpecDigest); a Run from
before status carried it is read from its record. Like `get`, `logs` and `lineage`, it reads the cluster of the
kubeconfig by default and the local runner's state with --local (where there is no Pipeline object, hence no
generation: a version is a spec digest).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from conveyor.cli.records import (
    EXIT_FAILED,
    EXIT_OK,
    ClusterRuns,
    LocalRuns,
    _short,
    _source,
    _store_errors_exit_1,
    _where,
    age,
    table,
)
from conveyor.kube.timestamps import parse_timestamp


@dataclass(frozen=True)
class VersionUse:
    """One Run and the version of its pipeline it ran (generation None: locally, or not known)."""

    run: str
    phase: str
    at: datetime | None
    generation: int | None
    spec_digest: str | None


@dataclass
class PipelineVersionRow:
    generation: int | None
    spec_digest: str | None
    current: bool = False
    runs: list[VersionUse] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "specDigest": self.spec_digest,
            "current": self.current,
            "runs": [
                {"name": u.run, "phase": u.phase, "at": u.at.isoformat() if u.at else None}
                for u in sorted(self.runs, key=_when, reverse=True)
            ],
        }


def _when(use: VersionUse) -> datetime:
    return use.at or datetime.min.replace(tzinfo=UTC)


def versions(uses: Iterable[VersionUse], current: tuple[int | None, str] | None = None) -> list[PipelineVersionRow]:
    """Runs grouped by (generation, spec digest), newest first: by generation where known, else by the latest Run.
    `current` is the Pipeline object's own version, listed (and marked) even when no Run has used it yet."""
    rows: dict[tuple[int | None, str | None], PipelineVersionRow] = {}
    if current is not None:
        rows[current] = PipelineVersionRow(current[0], current[1], current=True)
    for use in uses:
        key = (use.generation, use.spec_digest)
        rows.setdefault(key, PipelineVersionRow(*key)).runs.append(use)

    def newest(row: PipelineVersionRow) -> tuple[bool, int, datetime]:
        latest = max((_when(u) for u in row.runs), default=datetime.max.replace(tzinfo=UTC))
        return (row.generation is not None, row.generation or 0, latest)

    return sorted(rows.values(), key=newest, reverse=True)


def versions_text(rows: Sequence[PipelineVersionRow], now: datetime) -> str:
    """One line per Run, under its version; the version's cells only on its first line."""
    lines: list[list[str]] = []
    for row in rows:
        generation = "-" if row.generation is None else str(row.generation)
        first = [f"{generation} (current)" if row.current else generation, _short(row.spec_digest)]
        uses = sorted(row.runs, key=_when, reverse=True)
        if not uses:
            lines.append([*first, "(no runs)", "", ""])
        for i, u in enumerate(uses):
            lines.append([*(first if i == 0 else ["", ""]), u.run, u.phase, age(u.at, now)])
    return table(["GENERATION", "SPEC DIGEST", "RUN", "PHASE", "AGE"], lines)


# ------------------------------------------------------------------ where the Runs are


def local_uses(source: LocalRuns, pipeline: str) -> list[VersionUse]:
    """The local runner's runs of `pipeline`, from their records (a run still going has none yet)."""
    out = []
    for summary in source.runs():
        if summary.pipeline != pipeline:
            continue
        record = source.record(summary.name)
        out.append(
            VersionUse(
                summary.name,
                summary.phase,
                summary.created,
                record.get("pipelineGeneration"),
                record.get("pipelineSpecDigest"),
            )
        )
    return out


def cluster_uses(source: ClusterRuns, pipeline: str) -> list[VersionUse]:
    """The Runs in the namespace that reference `pipeline`: their status's version, else their record's."""
    out = []
    for body in source.cluster.list_custom("runs", source.namespace):
        if (body.get("spec", {}).get("pipelineRef") or {}).get("name") != pipeline:
            continue
        status = body.get("status") or {}
        version = status.get("pipelineVersion") or {}
        generation, digest = version.get("generation"), version.get("specDigest")
        if digest is None and status.get("recordUri"):
            record = source._record_of(body) or {}
            generation, digest = record.get("pipelineGeneration"), record.get("pipelineSpecDigest")
        out.append(
            VersionUse(
                body["metadata"]["name"],
                status.get("phase", "Pending"),
                parse_timestamp(body["metadata"].get("creationTimestamp")),
                generation,
                digest,
            )
        )
    return out


def cluster_current(source: ClusterRuns, pipeline: str) -> tuple[int | None, str] | None:
    """The Pipeline object's generation and spec digest; None when it does not exist (any more) or is invalid."""
    from pydantic import ValidationError  # noqa: PLC0415

    from conveyor.api.pipeline import Pipeline  # noqa: PLC0415
    from conveyor.core.record import spec_digest  # noqa: PLC0415

    body = source.cluster.get_custom("pipelines", source.namespace, pipeline)
    if body is None:
        return None
    try:
        spec = Pipeline.model_validate(body).spec
    except ValidationError:
        return None
    return body["metadata"].get("generation"), spec_digest(spec)


def cmd_pipeline_versions(args: argparse.Namespace) -> int:
    source = _source(args)
    if isinstance(source, LocalRuns):
        uses, current = local_uses(source, args.name), None
        where = str(source.state_dir)
    else:
        uses, current = cluster_uses(source, args.name), cluster_current(source, args.name)
        where = f"namespace {args.namespace}"
    if not uses and current is None:
        print(f"error: no pipeline {args.name!r} and no runs of it in {where}", file=sys.stderr)
        return EXIT_FAILED
    rows = versions(uses, current)
    if args.json:
        print(json.dumps({"pipeline": args.name, "versions": [r.to_json() for r in rows]}, indent=2))
    else:
        print(versions_text(rows, datetime.now(UTC)))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pipeline = sub.add_parser("pipeline", help="a pipeline's versions and the runs of each")
    verbs = pipeline.add_subparsers(dest="verb", required=True)
    ver = verbs.add_parser(
        "versions",
        help="the versions of a pipeline (generation, spec digest) and which runs ran each",
        description="Lists the versions of a Pipeline that its Runs ran (newest first; on a cluster the "
        "Pipeline's current generation too, even before a Run used it), and under each the Runs that ran it.",
    )
    ver.add_argument("name", help="the Pipeline's name")
    ver.add_argument("--json", action="store_true")
    _where(ver)
    ver.set_defaults(func=_store_errors_exit_1(cmd_pipeline_versions))
