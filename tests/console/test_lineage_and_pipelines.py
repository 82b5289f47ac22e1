"""The console's Lineage and Pipelines pages in a real Chromium, over real runs of built-in ML components.

The state: the iris pipeline (ingest, split, preprocess, train, and a container step reading the model
with a password in its environment) run twice by the local runner, the second time with another tree
depth, so its ingest, split and preprocess are cache hits of the first run and only train ran again.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from console.harness import Console, Watched, ml_pipeline, record_of, run_pipeline, serving


@dataclass
class MlState:
    work: Path
    state_dir: Path
    first: dict[str, Any]  # depth 2: every step ran
    second: dict[str, Any]  # depth 3: train and publish ran, the rest were cache hits of `first`


@pytest.fixture(scope="module")
def ml_state(tmp_path_factory: pytest.TempPathFactory) -> MlState:
    work = tmp_path_factory.mktemp("console-ml")
    first = record_of(run_pipeline(ml_pipeline(), work))
    second = record_of(run_pipeline(ml_pipeline(), work, "depth=3"))
    return MlState(work, work / ".conveyor", first, second)


@pytest.fixture(scope="module")
def console(ml_state: MlState) -> Iterator[Console]:
    """This module's `conveyor ui`, over the iris runs (the `page` fixture opens pages on it)."""
    with serving(ml_state.work, ml_state.state_dir) as running:
        yield running


def step(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in record["steps"] if s["name"] == name)


def output(record: dict[str, Any], name: str, out: str) -> str:
    return str(next(o["digest"] for o in step(record, name)["outputs"] if o["name"] == out))


def test_the_runs_are_what_the_lineage_tests_need(ml_state: MlState) -> None:
    hits = {s["name"]: s["cacheHit"] for s in ml_state.second["steps"]}
    assert hits == {"ingest": True, "split": True, "preprocess": True, "train": False, "publish": False}
    assert output(ml_state.first, "train", "model") != output(ml_state.second, "train", "model")


def test_lineage_of_the_trained_model_from_the_run_page_back_to_the_ingest(page: Watched, ml_state: MlState) -> None:
    first, second = ml_state.first, ml_state.second
    model = output(second, "train", "model")
    pg = page.page
    pg.goto("/runs/" + urllib.parse.quote(second["runId"], safe=""))
    train = pg.locator('details.step[data-step="train"]')
    train.locator("summary").first.click()
    link = train.locator("table.outputs a.lineage-link")
    expect(link).to_have_text(model)
    link.click()

    expect(pg).to_have_url(re.compile(r"/lineage/sha256"))
    expect(pg.locator("h1")).to_contain_text("train.model")
    expect(pg.locator("#artifact")).to_have_text(model)
    made_by = pg.locator("#made-by")
    expect(made_by).to_contain_text(second["runId"])
    expect(made_by).to_contain_text(second["pipelineSpecDigest"])
    expect(pg.locator("table.parameters tr", has_text="depth")).to_contain_text("3")

    hops = pg.locator("#chain > li.hop")
    expect(hops).to_have_count(4)
    assert hops.evaluate_all("hs => hs.map(h => h.dataset.step)") in (
        ["train", "split", "preprocess", "ingest"],
        ["train", "preprocess", "split", "ingest"],
    )  # nearest first: train read split and preprocess, which read the ingest's data
    hop = {
        name: pg.locator(f'#chain > li.hop[data-step="{name}"]') for name in ("train", "split", "preprocess", "ingest")
    }
    expect(hop["train"].locator(".made-in")).to_have_text(f"ran in {second['runId']}")
    for name in ("split", "preprocess", "ingest"):  # cache hits: the lineage crosses into the run that ran them
        expect(hop[name].locator("a.computed-in")).to_have_text(first["runId"])
        for o in step(second, name)["outputs"]:
            expect(hop[name].locator("table.outputs")).to_contain_text(o["digest"])
    expect(hop["ingest"]).to_contain_text("where the data enters")
    expect(hop["ingest"]).to_contain_text("component ingest")
    expect(hop["ingest"].locator("table.step-settings")).to_contain_text("sklearn://iris")  # the data's source
    expect(hop["train"].locator("table.step-settings")).to_contain_text("sklearn.tree.DecisionTreeClassifier")
    dataset = output(first, "ingest", "dataset")
    assert dataset == output(second, "ingest", "dataset")
    expect(hop["split"].locator("table.inputs")).to_contain_text(dataset)
    expect(hop["train"].locator("table.inputs")).to_contain_text(output(first, "split", "train"))
    expect(hop["train"].locator("table.inputs")).to_contain_text(output(first, "preprocess", "transformer"))
    expect(pg.locator("#problems")).to_have_count(0)  # every artifact is in the store

    graph = pg.locator(".lineage-graph svg")
    for node in ("step:ingest", "step:split", "step:preprocess", "step:train", "out:train.model"):
        expect(graph.locator(f'g.node[data-id="{node}"]')).to_have_count(1)
    expect(graph.locator('g.node[data-id="step:publish"]')).to_have_count(0)  # downstream: not in the lineage
    expect(pg.locator("#read-by")).to_contain_text("step publish")
    involved = pg.locator("#runs-involved li").all_text_contents()
    assert involved == [second["runId"], first["runId"]]

    hop["ingest"].locator("table.outputs a.lineage-link", has_text=dataset).click()  # follow the data itself
    expect(pg.locator("#artifact")).to_have_text(dataset)
    expect(pg.locator("#made-by")).to_contain_text(first["runId"])  # the run that computed it, not a cache hit
    expect(pg.locator("#chain > li.hop")).to_have_count(1)
    readers = pg.locator("#read-by li")
    expect(readers).to_have_count(2)  # split read it in both runs (the second time as a cache hit)
    assert readers.all_text_contents() == [f"{first['runId']} step split", f"{second['runId']} step split"]


def test_lineage_lists_the_models_and_takes_a_digest_prefix(page: Watched, ml_state: MlState) -> None:
    pg = page.page
    pg.goto("/")
    pg.click("header nav a:text('Lineage')")
    expect(pg.locator("h1")).to_have_text("Lineage")
    rows = pg.locator("table.models tbody tr")
    expect(rows).to_have_count(2)
    newest = output(ml_state.second, "train", "model")
    expect(rows.first).to_contain_text(ml_state.second["runId"])
    expect(rows.first.locator("a.lineage-link")).to_have_attribute("title", f"lineage of {newest}")
    older = output(ml_state.first, "train", "model")
    pg.fill("#lineage-digest", older[: len("sha256:") + 10])
    pg.click("form button[type=submit]")
    expect(pg.locator("#artifact")).to_have_text(older)
    expect(pg.locator('#chain > li.hop[data-step="ingest"] .made-in')).to_have_text(f"ran in {ml_state.first['runId']}")


def test_pipelines_page_lists_the_pipeline_and_its_runs(page: Watched, ml_state: MlState) -> None:
    first, second = ml_state.first, ml_state.second
    pg = page.page
    pg.goto("/runs/" + urllib.parse.quote(first["runId"], safe=""))
    pg.locator("#summary a", has_text="iris").click()  # the run's pipeline links to its page
    expect(pg.locator("#pipeline-name")).to_have_text("iris")
    pg.click("header nav a:text('Pipelines')")
    expect(pg.locator('header nav a[aria-current="page"]')).to_have_text("Pipelines")
    row = pg.locator('#pipelines tr.pipeline[data-pipeline="iris"]')
    expect(pg.locator("#pipelines tr.pipeline")).to_have_count(1)
    expect(row.locator("td.runs")).to_have_text("2")
    expect(row).to_contain_text("2 Succeeded")
    expect(row).to_contain_text(second["runId"])
    row.locator("td.name a").click()

    expect(pg.locator("#pipeline-name")).to_have_text("iris")
    runs = pg.locator("#pipeline-runs tbody tr.run")
    assert runs.evaluate_all("rs => rs.map(r => r.dataset.run)") == [second["runId"], first["runId"]]  # newest first
    for run in (first, second):
        r = pg.locator(f'#pipeline-runs tr[data-run="{run["runId"]}"]')
        expect(r.locator(".phase")).to_have_text("Succeeded")
        expect(r.locator("td.params")).to_contain_text(f"depth={run['parameters']['depth']}")
        expect(r.locator("td.params")).to_contain_text("api_token=•••redacted•••")
    assert first["pipelineSpecDigest"] == second["pipelineSpecDigest"]  # parameters are not part of the spec
    version = pg.locator(f'section.version[data-digest="{first["pipelineSpecDigest"]}"]')
    expect(pg.locator("section.version")).to_have_count(1)
    expect(version).to_contain_text("2 runs")
    expect(version).to_contain_text("Iris <species> from the measurements")
    params = version.locator("table.spec-params")
    expect(params.locator("tr", has_text="depth")).to_contain_text("the tree's max_depth")
    expect(params.locator("tr", has_text="api_token")).to_contain_text("•••redacted•••")
    steps = version.locator("table.spec-steps tbody tr")
    expect(steps).to_have_count(5)
    assert [r.locator("td").first.inner_text() for r in steps.all()] == [
        "ingest", "split", "preprocess", "train", "publish"
    ]  # fmt: skip
    expect(steps.nth(3)).to_contain_text("split.train, preprocess.transformer")
    expect(steps.nth(4)).to_contain_text("image local")
    assert "PASSWORD" not in pg.content()  # a container's environment is never part of the page


def test_the_new_api_answers_404_and_400(console: Console, ml_state: MlState) -> None:
    for bad, code in (
        ("api/lineage/sha256:" + "0" * 64, 404),
        ("api/lineage/sha256:12", 400),
        ("api/lineage/nonsense", 400),
        ("api/pipelines/nope", 404),
    ):
        try:
            urllib.request.urlopen(console.url + bad, timeout=5)
            raise AssertionError(f"{bad} was answered")
        except urllib.error.HTTPError as e:
            assert e.code == code, bad
            assert "error" in json.loads(e.read())
    with urllib.request.urlopen(console.url + "api/pipelines", timeout=5) as r:
        assert [p["name"] for p in json.loads(r.read())["pipelines"]] == ["iris"]


def test_lineage_and_pipelines_pages_pass_an_accessibility_check(page: Watched, ml_state: MlState) -> None:
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()
    pg = page.page
    model = urllib.parse.quote(output(ml_state.second, "train", "model"), safe="")
    for url in ("/lineage", f"/lineage/{model}", "/pipelines", "/pipelines/iris"):
        pg.goto(url)
        expect(pg.locator("main h1")).to_be_visible()
        expect(pg.locator("main table").first).to_be_visible()
        violations = [
            (v["impact"], v["id"], v["help"], [n["target"] for n in v["nodes"]][:3])
            for v in axe.run(pg).response["violations"]
        ]
        assert violations == [], url
