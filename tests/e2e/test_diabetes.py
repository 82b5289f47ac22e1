"""The diabetes regression example end to end on the local runner: R², MAE and RMSE reported, the gate on R².

Runs examples/diabetes/pipeline.yaml through real step subprocesses and the real directory store.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.api.pipeline import Pipeline
from conveyor.api.run import RunPhase, StepPhase
from conveyor.core.validation import resolve_parameters
from conveyor.local.runner import LocalRunner, RunOutcome
from conveyor.storage.digest import hex_of

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "diabetes" / "pipeline.yaml"
STEPS = {"ingest", "validate", "split", "preprocess", "train", "evaluate", "gate"}


def run_pipeline(state: Path, **params: Any) -> RunOutcome:
    pipeline = Pipeline.model_validate(yaml.safe_load(EXAMPLE.read_text()))
    values, issues = resolve_parameters(pipeline.spec, params)
    assert issues == []
    return LocalRunner(pipeline.spec, values, pipeline_name="diabetes", state_dir=state).run()


def stored(state: Path, outcome: RunOutcome, step: str, output: str) -> Path:
    digest = outcome.states[step].outputs[output].digest
    return state / "store" / "blobs" / "sha256" / hex_of(digest)[:2] / hex_of(digest)


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunOutcome]:
    state = tmp_path_factory.mktemp("diabetes")
    return state, run_pipeline(state)


def test_example_succeeds_and_reports_regression_metrics(diabetes: tuple[Path, RunOutcome]) -> None:
    state, outcome = diabetes
    assert outcome.phase is RunPhase.SUCCEEDED, outcome.message
    assert set(outcome.states) == STEPS and all(s.phase is StepPhase.SUCCEEDED for s in outcome.states.values())
    metrics = outcome.states["evaluate"].metrics
    # A noisy target: a ridge regression explains about half of the variance (0.49 on this split).
    assert 0.3 <= metrics["r2"] <= 0.65
    assert 35 <= metrics["mae"] <= metrics["rmse"] <= 65  # the target spans 25 to 346
    assert metrics["rows"] == 111  # a quarter of 442 rows held out
    assert outcome.states["validate"].metrics["passed"] == 1.0
    gate = outcome.states["gate"].metrics
    assert gate["blessed"] == 1.0 and gate["failed_checks"] == 0
    verdict = json.loads(stored(state, outcome, "gate", "verdict").read_text())
    assert verdict["metrics"]["r2"]["candidate"] == pytest.approx(metrics["r2"])


def test_evaluate_writes_regression_plots_and_a_page(diabetes: tuple[Path, RunOutcome]) -> None:
    state, outcome = diabetes
    with zipfile.ZipFile(stored(state, outcome, "evaluate", "plots")) as archive:
        assert archive.namelist() == ["index.json", "predicted_vs_actual.png", "residuals.png"]
    page = stored(state, outcome, "evaluate", "report_html").read_text(encoding="utf-8")
    assert "<td>r2</td>" in page and page.count("data:image/png;base64,") == 2


def test_the_gate_stops_a_model_below_the_r2_threshold(diabetes: tuple[Path, RunOutcome]) -> None:
    state, _ = diabetes
    outcome = run_pipeline(state, min_r2=0.9)
    assert outcome.phase is RunPhase.FAILED
    assert outcome.states["gate"].phase is StepPhase.FAILED
    assert "r2" in outcome.message
    # Only the gate ran again: every other step's key is unchanged.
    assert {n for n, s in outcome.states.items() if s.cache_hit} == STEPS - {"gate"}
