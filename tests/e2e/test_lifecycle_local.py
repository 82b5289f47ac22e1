"""Reproduction, reports and the artifact lifecycle on the local runner, through the `conveyor` CLI.

The example runs twice with different parameters; `rerun` reproduces the first run's model digest with
the cache bypassed; `report` and `lineage --graph` draw it; after the first run (and its rerun) are
deleted and a tiny grace period passes, `gc` removes exactly the artifacts nobody else uses, and the
cache recomputes instead of handing out a deleted or corrupt artifact.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from conveyor.storage.digest import hex_of, sha256_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "breast-cancer" / "pipeline.yaml"
PY = sys.executable
Runs = tuple[Path, dict[str, Any], dict[str, Any]]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "conveyor.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=900, check=False
    )


def run_example(work: Path, *params: str) -> dict[str, Any]:
    done = cli("run", str(EXAMPLE), "--no-progress", "--json", *params, cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{\n") :])
    return record


def outputs(record: dict[str, Any]) -> dict[str, str]:
    return {f"{s['name']}.{o['name']}": o["digest"] for s in record["steps"] for o in s["outputs"]}


def blob(work: Path, digest: str) -> Path:
    return work / ".conveyor" / "store" / "blobs" / "sha256" / hex_of(digest)[:2] / hex_of(digest)


def newest_record(work: Path) -> dict[str, Any]:
    runs = sorted((work / ".conveyor" / "runs").iterdir(), key=lambda d: d.stat().st_mtime)
    record: dict[str, Any] = json.loads((runs[-1] / "record.json").read_text())
    return record


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The example twice: defaults (200 trees), then 50 trees (train and evaluate run again)."""
    work = tmp_path_factory.mktemp("lifecycle")
    return work, run_example(work), run_example(work, "-p", "n_estimators=50")


@pytest.fixture
def copy_of(two_runs: Runs, tmp_path: Path) -> Runs:
    """A private copy of the two runs' state, for tests that damage or collect it."""
    work, first, second = two_runs
    shutil.copytree(work / ".conveyor", tmp_path / ".conveyor")
    return tmp_path, first, second


def test_compare_then_rerun_reproduces_the_model_digest(two_runs: Runs) -> None:
    work, first, second = two_runs
    compare = cli("compare", first["runId"], second["runId"], "--local", cwd=work)
    assert compare.returncode == 0, compare.stderr
    rows = {ln.split("│")[3].strip(): ln for ln in compare.stdout.splitlines() if ln.count("│") >= 5}
    assert "≠" in rows["n_estimators"] and "≠" in rows["train.model"] and "≠" not in rows["ingest.dataset"]

    rerun = cli("rerun", first["runId"], "--local", "--no-progress", cwd=work)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    again = newest_record(work)
    assert again["runId"] != first["runId"] and again["parameters"] == first["parameters"]
    # the cache was bypassed: every step really ran again
    assert all(not s["cacheHit"] and s["attempts"] == 1 for s in again["steps"]), again["steps"]
    assert outputs(again) == outputs(first)
    model = outputs(first)["train.model"]
    (model_row,) = [ln for ln in rerun.stdout.splitlines() if ln.split()[:2] == ["train", "model"]]
    assert model_row.split()[2:] == [model, model, "="]
    assert f"reproduced: all {len(outputs(first))} output digests are identical" in rerun.stdout


def test_rerun_refuses_what_it_cannot_reproduce(copy_of: Runs) -> None:
    work, first, _ = copy_of
    store = work / ".conveyor" / "store"
    (store / "docs" / "specs" / f"{hex_of(first['pipelineSpecDigest'])}.json").unlink()
    no_spec = cli("rerun", first["runId"], "--local", cwd=work)
    assert no_spec.returncode == 2 and first["pipelineSpecDigest"] in no_spec.stderr and "-f" in no_spec.stderr
    other = ROOT / "examples" / "diabetes" / "pipeline.yaml"
    wrong_file = cli("rerun", first["runId"], "--local", "-f", str(other), cwd=work)
    assert wrong_file.returncode == 2 and f"not in the store, {other}" in wrong_file.stderr

    record = store / "docs" / "runs" / first["runId"] / "record.json"
    record.write_text(record.read_text()[:200])
    corrupt = cli("rerun", first["runId"], "--local", cwd=work)
    assert corrupt.returncode == 2 and "is corrupt (not JSON" in corrupt.stderr, corrupt.stderr
    assert "Traceback" not in corrupt.stderr


def test_report_is_one_self_contained_page(two_runs: Runs) -> None:
    work, first, _ = two_runs
    out = cli("report", first["runId"], "--local", "-o", "report.html", cwd=work)
    assert out.returncode == 0, out.stderr
    page = (work / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert 'src="http' not in page and 'href="http' not in page  # nothing fetched from elsewhere
    # the DAG: one node per step, and an edge per dependency
    dag = page[page.index('<div class="dag">') : page.index("</svg>", page.index('<div class="dag">'))]
    for step in ("ingest", "validate", "split", "preprocess", "train", "evaluate"):
        assert f'data-id="{step}"' in dag
    assert 'data-from="split" data-to="train"' in dag and 'data-from="train" data-to="evaluate"' in dag
    # timings: a bar per step that ran
    assert page.count('class="bar"') == 6
    # validation verdict, metrics, and the evaluation plots inline
    assert "<h3>validate: passed</h3>" in page
    assert f"{next(s for s in first['steps'] if s['name'] == 'evaluate')['metrics']['roc_auc']:.6g}" in page
    assert page.count('src="data:image/png;base64,') >= 3
    assert "Bad input" not in page


def test_lineage_graph_svg_and_png(two_runs: Runs) -> None:
    work, first, _ = two_runs
    svg = cli("lineage", first["runId"], "--local", "--graph", "lineage.svg", cwd=work)
    assert svg.returncode == 0, svg.stderr
    root = ET.parse(work / "lineage.svg").getroot()
    ns = {"s": "http://www.w3.org/2000/svg"}
    ids = {g.get("data-id") for g in root.iterfind(".//s:g[@class='node']", ns)}
    assert {"step:ingest", "step:train", "out:train.model", "out:ingest.dataset"} <= ids
    edges = {(p.get("data-from"), p.get("data-to")) for p in root.iterfind(".//s:path[@class='edge']", ns)}
    assert ("out:split.train", "step:train") in edges and ("step:train", "out:train.model") in edges
    png = cli("lineage", first["runId"], "--local", "--graph", "lineage.png", cwd=work)
    assert png.returncode == 0, png.stderr
    assert (work / "lineage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a model by digest leads to the run that made it
    model = outputs(first)["train.model"]
    by_model = cli("lineage", model[:20], "--local", cwd=work)
    assert by_model.returncode == 0, by_model.stderr
    assert f"model {model[:20]} was made by run" in by_model.stdout and "step output train.model" in by_model.stdout


def test_missing_and_corrupt_artifacts_are_reported_with_their_dependents(copy_of: Runs) -> None:
    work, first, _ = copy_of
    digests = outputs(first)
    dataset, train = blob(work, digests["ingest.dataset"]), blob(work, digests["split.train"])
    dataset.unlink()
    train.chmod(stat.S_IWUSR | stat.S_IRUSR)
    train.write_bytes(b"not the training split")
    quick = cli("lineage", first["runId"], "--local", cwd=work)
    assert quick.returncode == 1
    assert (
        f"bad input: ingest.dataset {digests['ingest.dataset']} is missing; "
        "depends on it: validate, split, preprocess, train, evaluate"
    ) in quick.stdout
    full = cli("lineage", first["runId"], "--local", "--verify", cwd=work)
    assert full.returncode == 1
    assert f"bad input: split.train {digests['split.train']} is corrupt" in full.stdout
    assert "depends on it: preprocess, train, evaluate" in full.stdout
    report = cli("report", first["runId"], "--local", "-o", "bad.html", cwd=work)
    assert report.returncode == 1 and "bad input" in report.stderr
    page = (work / "bad.html").read_text()
    assert "Bad input" in page and f"{digests['ingest.dataset']} is missing" in page


def test_gc_removes_unshared_artifacts_after_the_grace_period(copy_of: Runs) -> None:
    work, first, second = copy_of
    old, kept = outputs(first), outputs(second)
    shared = {k for k in old if old[k] == kept[k]}
    unshared = {k for k in old if old[k] not in kept.values()}
    assert {"ingest.dataset", "split.train", "preprocess.transformer"} <= shared
    assert "train.model" in unshared and "evaluate.metrics" in unshared

    nothing = cli("gc", "--local", "--dry-run", cwd=work)
    assert nothing.returncode == 0 and "0 would delete" in nothing.stdout and "would mark" not in nothing.stdout
    # every run of the first parameters goes (the rerun made the same digests)
    for run in sorted(p.name for p in (work / ".conveyor" / "runs").iterdir() if p.name != second["runId"]):
        assert cli("delete", run, "--local", cwd=work).returncode == 0
    dry = cli("gc", "--local", "--dry-run", "--grace", "1s", cwd=work)
    assert dry.returncode == 0, dry.stderr
    assert {ln.split()[2].rstrip(":") for ln in dry.stdout.splitlines() if ln.startswith("would mark")} == {
        old[k] for k in unshared
    }
    assert all(blob(work, old[k]).exists() for k in unshared)  # a dry run changes nothing
    marks = work / ".conveyor" / "store" / "docs" / "gc" / "marks.json"
    assert not marks.exists()

    first_pass = cli("gc", "--local", "--grace", "1s", cwd=work)
    assert first_pass.returncode == 0 and "0 deleted" in first_pass.stdout, first_pass.stdout
    assert set(json.loads(marks.read_text())["marks"]) == {old[k] for k in unshared}
    assert all(blob(work, old[k]).exists() for k in unshared)  # marked, not yet deleted
    time.sleep(1.2)
    second_pass = cli("gc", "--local", "--grace", "1s", cwd=work)
    assert second_pass.returncode == 0, second_pass.stderr
    assert {ln.split()[1] for ln in second_pass.stdout.splitlines() if ln.startswith("deleted ")} == {
        old[k] for k in unshared
    }
    assert not any(blob(work, old[k]).exists() for k in unshared)
    assert all(blob(work, d).exists() for d in kept.values())  # the live run's, shared or not
    assert json.loads(marks.read_text())["marks"] == {}
    assert (
        cli("gc", "--local", "--grace", "1s", cwd=work)
        .stdout.splitlines()[-1]
        .startswith(f"{len(set(kept.values()))} referenced, 0 waiting")
    )

    # the cache never hands out a deleted artifact: the first parameters again recompute train and evaluate
    again = run_example(work)
    by_step = {s["name"]: s for s in again["steps"]}
    assert not by_step["train"]["cacheHit"] and not by_step["evaluate"]["cacheHit"]
    assert by_step["preprocess"]["cacheHit"]  # its artifacts were shared, so its entry stayed
    assert outputs(again)["train.model"] == old["train.model"] and blob(work, old["train.model"]).exists()


def test_cache_refuses_a_deleted_or_corrupt_artifact_outside_gc(copy_of: Runs) -> None:
    """Blobs lost or damaged behind Conveyor's back (not by gc, so the cache entries still name them)."""
    work, _, second = copy_of
    digests = outputs(second)
    blob(work, digests["preprocess.transformer"]).unlink()
    model = blob(work, digests["train.model"])
    model.chmod(stat.S_IWUSR | stat.S_IRUSR)
    model.write_bytes(model.read_bytes()[:-10])  # truncated: still there, no longer its digest
    again = run_example(work, "-p", "n_estimators=50")
    by_step = {s["name"]: s for s in again["steps"]}
    assert by_step["split"]["cacheHit"]
    assert not by_step["preprocess"]["cacheHit"] and not by_step["train"]["cacheHit"]
    assert outputs(again) == digests  # recomputed, identical, and stored again
    assert sha256_file(blob(work, digests["train.model"])) == digests["train.model"]
    assert blob(work, digests["preprocess.transformer"]).exists()
