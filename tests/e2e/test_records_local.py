"""Run records and archived logs on the local runner, read back through the `conveyor` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "breast-cancer" / "pipeline.yaml"
PY = sys.executable
Runs = tuple[Path, dict[str, Any], dict[str, Any]]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "conveyor.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=900, check=False
    )


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The example twice: defaults, then fewer trees (train and evaluate run again)."""
    work = tmp_path_factory.mktemp("records")
    records = []
    for params in ([], ["-p", "n_estimators=50"]):
        done = cli("run", str(EXAMPLE), "--no-progress", "--json", *params, cwd=work)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        records.append(json.loads(done.stdout[done.stdout.index("{\n") :]))
    return work, records[0], records[1]


def test_record_is_in_the_store_and_complete(two_runs: Runs) -> None:
    work, first, second = two_runs
    stored = json.loads(
        (work / ".conveyor" / "store" / "docs" / "runs" / str(first["runId"]) / "record.json").read_text()
    )
    assert stored == first
    assert first["pipeline"] == "breast-cancer" and str(first["pipelineSpecDigest"]).startswith("sha256:")
    assert first["pipelineSpecDigest"] == second["pipelineSpecDigest"]
    steps = {s["name"]: s for s in second["steps"]}
    assert steps["train"]["parameters"]["n_estimators"] == 50 and not steps["train"]["cacheHit"]
    assert steps["preprocess"]["cacheHit"] and steps["preprocess"]["logs"] == []
    (train_input,) = [i for i in steps["train"]["inputs"] if i["name"] == "train"]
    assert train_input["step"] == "split" and train_input["digest"] == next(
        o["digest"] for o in steps["split"]["outputs"] if o["name"] == "train"
    )


def test_get_runs_lists_both(two_runs: Runs) -> None:
    work, first, second = two_runs
    out = cli("get", "runs", "--local", cwd=work)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "PIPELINE", "PHASE", "STEPS", "AGE"]
    assert [ln.split()[:4] for ln in lines[1:]] == [
        [str(first["runId"]), "breast-cancer", "Succeeded", "6/6"],
        [str(second["runId"]), "breast-cancer", "Succeeded", "6/6"],
    ]


def test_lineage_names_the_dataset_digest_and_parameters(two_runs: Runs) -> None:
    work, first, _ = two_runs
    dataset = next(s for s in first["steps"] if s["name"] == "ingest")["outputs"][0]["digest"]
    out = cli("lineage", str(first["runId"]), "--local", cwd=work)
    assert out.returncode == 0, out.stderr
    assert f"dataset ← ingest.dataset  {dataset}" in out.stdout
    assert "n_estimators=200" in out.stdout and "scaling=standard" in out.stdout
    as_json = json.loads(cli("lineage", str(first["runId"]), "--local", "--json", cwd=work).stdout)
    validate = next(s for s in as_json["steps"] if s["name"] == "validate")
    assert validate["inputs"][0] == {"name": "dataset", "step": "ingest", "output": "dataset", "digest": dataset}


def test_compare_shows_parameter_and_metric_differences(two_runs: Runs) -> None:
    work, first, second = two_runs
    out = cli("compare", str(first["runId"]), str(second["runId"]), "--local", cwd=work)
    assert out.returncode == 0, out.stderr
    rows = {ln.split("│")[3].strip(): ln for ln in out.stdout.splitlines() if ln.count("│") >= 5}
    assert "≠" in rows["n_estimators"] and "200" in rows["n_estimators"] and "50" in rows["n_estimators"]
    assert "≠" not in rows["scaling"]
    assert "≠" in rows["train.model"]
    assert "≠" not in rows["ingest.dataset"]
    metric_rows = [name for name in rows if name.startswith("evaluate.")]
    assert metric_rows and "evaluate.roc_auc" in rows


def test_logs_print_a_steps_log(two_runs: Runs) -> None:
    work, first, _ = two_runs
    out = cli("logs", str(first["runId"]), "train", "--local", cwd=work)
    assert out.returncode == 0, out.stderr
    assert "step train succeeded" in out.stdout
    every = cli("logs", str(first["runId"]), "--local", cwd=work)
    headers = [ln for ln in every.stdout.splitlines() if ln.startswith("==> ")]
    assert headers == [
        f"==> {s} (attempt 1) <==" for s in ("ingest", "validate", "split", "preprocess", "train", "evaluate")
    ]
    unknown = cli("logs", str(first["runId"]), "nope", "--local", cwd=work)
    assert unknown.returncode == 2 and "has no step 'nope'" in unknown.stderr
