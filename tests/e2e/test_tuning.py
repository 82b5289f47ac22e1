"""Tuning end to end on the local runner: eight trials in parallel, the best one kept, the gate deciding.

Runs examples/breast-cancer-tuning/pipeline.yaml through real step subprocesses and the real store.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sklearn.metrics import roc_auc_score

from conveyor.api.pipeline import Pipeline
from conveyor.api.run import RunPhase, StepPhase
from conveyor.components.datasets import read_dataset
from conveyor.components.modelio import load_artifact
from conveyor.core.validation import resolve_parameters
from conveyor.local.runner import LocalRunner, RunOutcome
from conveyor.storage.digest import hex_of

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "breast-cancer-tuning" / "pipeline.yaml"
TRIALS = 8
MAX_CONCURRENCY = 4


def run_pipeline(document: dict[str, Any], state: Path, **params: Any) -> RunOutcome:
    pipeline = Pipeline.model_validate(document)
    values, issues = resolve_parameters(pipeline.spec, params)
    assert issues == []
    return LocalRunner(pipeline.spec, values, pipeline_name="tuning", state_dir=state, parallelism=4).run()


def blob(state: Path, digest: str) -> Path:
    return state / "store" / "blobs" / "sha256" / hex_of(digest)[:2] / hex_of(digest)


def output(state: Path, outcome: RunOutcome, key: str, name: str) -> Path:
    return blob(state, outcome.states[key].outputs[name].digest)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunOutcome]:
    state = tmp_path_factory.mktemp("tuning")
    return state, run_pipeline(yaml.safe_load(EXAMPLE.read_text()), state)


def test_eight_trials_run_in_parallel(tuned: tuple[Path, RunOutcome]) -> None:
    _, outcome = tuned
    assert outcome.phase is RunPhase.SUCCEEDED, outcome.message
    record = json.loads(outcome.record_path.read_text())
    trials = record["items"]["train"]
    assert len(trials) == TRIALS and all(t["phase"] == "Succeeded" for t in trials)
    spans = [(datetime.fromisoformat(t["startedAt"]), datetime.fromisoformat(t["finishedAt"])) for t in trials]
    # the most trials running at one instant: sweep over start (+1) and finish (-1) events
    events = sorted([(s, 1) for s, _ in spans] + [(f, -1) for _, f in spans], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert 2 <= peak <= MAX_CONCURRENCY, spans
    busy = sum((f - s).total_seconds() for s, f in spans)
    wall = (max(f for _, f in spans) - min(s for s, _ in spans)).total_seconds()
    assert wall < 0.75 * busy, (wall, busy)  # in sequence, wall would be at least busy
    print(f"\ntrials: peak {peak} at once; wall {wall:.1f}s for {busy:.1f}s of trial time", file=sys.stderr)


def test_the_selected_model_is_the_best_trial(tuned: tuple[Path, RunOutcome]) -> None:
    state, outcome = tuned
    report = json.loads(output(state, outcome, "select", "report").read_text())
    validation = read_dataset(output(state, outcome, "split-validation", "test"))
    # every trial scored again here, independently of select-best
    scores = []
    for i in range(TRIALS):
        loaded = load_artifact(output(state, outcome, f"train[{i}]", "model"))
        signature = [f.name for f in loaded.metadata.inputs]
        proba = loaded.obj.predict_proba(validation[signature])[:, 1]
        scores.append(float(roc_auc_score(validation["target"], proba)))
        trial = report["trials"][i]
        assert trial["score"] == pytest.approx(scores[i])
        # grid values reach the estimator with their types ({{ item.max_depth }} stays an int)
        assert {k: trial["params"][k] for k in trial["item"]} == trial["item"]
        assert isinstance(trial["params"]["max_depth"], int)
    assert len({json.dumps(t["item"], sort_keys=True) for t in report["trials"]}) == TRIALS
    best = scores.index(max(scores))
    assert outcome.states["select"].metrics == {"best_score": pytest.approx(max(scores)), "best_index": best,
                                                "trials": TRIALS}  # fmt: skip
    # the selected model is the winning trial's artifact, byte for byte
    assert outcome.states["select"].outputs["model"].digest == outcome.states[f"train[{best}]"].outputs["model"].digest
    assert outcome.states["evaluate"].metrics["roc_auc"] >= 0.95
    assert outcome.states["gate"].metrics["blessed"] == 1.0
    print(f"\nbest trial {best} {report['winner']['item']}: validation roc_auc {max(scores):.4f}", file=sys.stderr)


def test_a_rejected_model_stops_the_pipeline(tuned: tuple[Path, RunOutcome]) -> None:
    state, _ = tuned
    outcome = run_pipeline(yaml.safe_load(EXAMPLE.read_text()), state, min_roc_auc=0.9999)
    assert outcome.phase is RunPhase.FAILED
    assert outcome.states["gate"].phase is StepPhase.FAILED
    assert "the gate rejected the candidate: roc_auc" in (outcome.message or "")
    assert "is below the minimum 0.9999" in (outcome.message or "")
    assert all(outcome.states[f"train[{i}]"].cache_hit for i in range(TRIALS))  # only the gate ran again


def test_a_recorded_rejection_skips_deployment(tuned: tuple[Path, RunOutcome]) -> None:
    state, _ = tuned
    document = yaml.safe_load(EXAMPLE.read_text())
    steps = document["spec"]["steps"]
    next(s for s in steps if s["name"] == "gate")["with"]["on_reject"] = "record"
    deploy = {"image": "local", "command": [sys.executable, "-c", "print('deployed')"]}
    steps.append(
        {"name": "deploy", "container": deploy, "dependsOn": ["gate"], "when": "steps.gate.metrics.blessed == 1.0"}
    )
    outcome = run_pipeline(document, state, min_roc_auc=0.9999)
    assert outcome.phase is RunPhase.SUCCEEDED, outcome.message
    assert outcome.states["gate"].metrics["blessed"] == 0.0
    assert outcome.states["deploy"].phase is StepPhase.SKIPPED
    blessed = run_pipeline(document, state)
    assert blessed.states["gate"].metrics["blessed"] == 1.0
    assert blessed.states["deploy"].phase is StepPhase.SUCCEEDED
