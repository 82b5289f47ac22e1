"""The work of the `select-best` component (the contract is `conveyor.components.select_best`)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.components._scoring import comparable, score_model
from conveyor.components.atomic import atomic_output, write_json
from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset
from conveyor.components.modelio import load_artifact
from conveyor.components.scoring import is_better, metrics_of
from conveyor.components.select_best import SelectBestConfig


@dataclass(frozen=True)
class Trial:
    """One fanned-out item's model: where it is and which grid point made it."""

    index: int
    item: Any
    path: Path
    digest: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def trials_of(models: Path) -> list[Trial]:
    """The trials of a fan-in directory (items.json order), or a single model file as one trial."""
    if models.is_file():
        return [Trial(index=0, item=None, path=models, digest=_sha256(models))]
    listing = models / "items.json"
    if not listing.is_file():
        raise ComponentError("input 'models': expected the fan-in of a fanned-out train step (no items.json)")
    try:
        entries = json.loads(listing.read_text())
        trials = [
            Trial(index=i, item=e.get("item"), path=models / str(e["path"]), digest=str(e.get("digest", "")))
            for i, e in enumerate(entries)
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ComponentError(f"input 'models': unreadable items.json: {exc}") from exc
    if not trials:
        raise ComponentError("input 'models' holds no trials")
    return trials


def run(config: SelectBestConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Score every trial in `models` on `validation`; copy the best to `model`; write `report`."""
    validation = read_dataset(inputs["validation"], "validation")
    direction = config.resolved_direction()
    rows: list[dict[str, Any]] = []
    best: int | None = None
    task = None
    trials = trials_of(inputs["models"])
    for trial in trials:
        where = f"trial {trial.index} (item {json.dumps(trial.item)})"
        try:
            loaded = load_artifact(trial.path, kind="model")
            scored = score_model(loaded, validation, label=config.label, what="validation")
        except ComponentError as exc:
            raise ComponentError(f"input 'models': {where}: {exc}") from exc
        if task is None:
            task = scored.task
            if config.metric not in metrics_of(task):
                raise ComponentError(f"metric: {config.metric!r} is not a {task} metric")
        elif scored.task != task:
            raise ComponentError(f"input 'models': {where} is a {scored.task} model, trial 0 a {task} model")
        scores = comparable(scored)
        if config.metric not in scores:
            why = " ".join(scored.detail.get("notes", [])) or "not computed"
            raise ComponentError(f"metric: {config.metric!r} could not be computed for {where}: {why}")
        score = scores[config.metric]
        rows.append(
            {
                "index": trial.index,
                "item": trial.item,
                "digest": trial.digest,
                "estimator": loaded.metadata.estimator,
                "params": loaded.metadata.params,
                "score": score,
                "metrics": scores,
            }
        )
        if best is None or is_better(score, rows[best]["score"], direction):
            best = len(rows) - 1
    assert best is not None
    winner = rows[best]
    with atomic_output(outputs["model"]) as tmp:
        shutil.copyfile(trials[best].path, tmp)
    report = {
        "metric": config.metric,
        "direction": direction,
        "task": task,
        "rows": len(validation),
        "trials": rows,
        "winner": {k: winner[k] for k in ("index", "item", "digest", "score", "params")},
    }
    write_json(report, outputs["report"])
    return {"best_score": float(winner["score"]), "best_index": float(winner["index"]), "trials": float(len(rows))}
