"""rerun, lineage (and --verify) and report on the tuning examples, on the local runner, through the CLI.

breast-cancer-tuning fans `train` out over a grid whose keys are not in alphabetical order, then fans in;
breast-cancer-halving tunes in one step. Every command must pass on both: the grid's items keep the
document's order through the stored spec, and the fan-in collection is read as its members, not a blob.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
EXAMPLES = ["breast-cancer-tuning", "breast-cancer-halving"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "conveyor.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=900, check=False
    )


@pytest.fixture(scope="module", params=EXAMPLES)
def example_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    work = tmp_path_factory.mktemp(request.param)
    done = cli("run", str(ROOT / "examples" / request.param / "pipeline.yaml"), "--no-progress", "--json", cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return work, json.loads(done.stdout)


def test_rerun_reproduces_every_model(example_run: tuple[Path, dict[str, Any]]) -> None:
    work, record = example_run
    done = cli("rerun", str(record["runId"]), "--local", "--no-progress", cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "NOT reproduced" not in done.stdout and "reproduced" in done.stdout


@pytest.mark.parametrize("verify", [[], ["--verify"]], ids=["exists", "verify"])
def test_lineage_finds_nothing_missing(example_run: tuple[Path, dict[str, Any]], verify: list[str]) -> None:
    work, record = example_run
    done = cli("lineage", str(record["runId"]), "--local", "--json", *verify, cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert json.loads(done.stdout)["problems"] == []


def test_report_has_no_bad_input(example_run: tuple[Path, dict[str, Any]]) -> None:
    work, record = example_run
    out = work / "report.html"
    done = cli("report", str(record["runId"]), "--local", "-o", str(out), cwd=work)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Bad input" not in out.read_text()


def test_grid_items_follow_the_document(example_run: tuple[Path, dict[str, Any]]) -> None:
    """The stored spec (what rerun runs) keeps each grid's keys in the document's order."""
    work, record = example_run
    document = yaml.safe_load((ROOT / "examples" / str(record["pipeline"]) / "pipeline.yaml").read_text())
    (stored,) = [json.loads(p.read_text()) for p in (work / ".conveyor" / "store" / "docs" / "specs").glob("*.json")]
    grids = [
        (s["name"], list(s["forEach"]["grid"])) for s in document["spec"]["steps"] if "grid" in s.get("forEach", {})
    ]
    assert grids == [
        (s["name"], list(s["forEach"]["grid"])) for s in stored["spec"]["steps"] if "grid" in s.get("forEach", {})
    ]
    if record["pipeline"] == "breast-cancer-tuning":
        assert grids == [("train", ["max_depth", "n_estimators", "max_features"])]
