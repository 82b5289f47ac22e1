"""The web console in a real Chromium, over a real local state made by the local runner."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta
from typing import Any

from playwright.sync_api import expect

from console.harness import (
    HTML_PIPELINE,
    HTML_STEP,
    Console,
    State,
    Watched,
    record_of,
    run_pipeline,
    slow_pipeline,
)


def run_url(run_id: str) -> str:
    return "/runs/" + urllib.parse.quote(run_id, safe="")


def listed(page: Any) -> list[str]:
    return [str(x) for x in page.locator("#runs tbody tr.run").evaluate_all("rows => rows.map(r => r.dataset.run)")]


def newest_first(records: list[dict[str, Any]]) -> list[str]:
    return [r["runId"] for r in sorted(records, key=lambda r: r["startedAt"], reverse=True)]


def step(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in record["steps"] if s["name"] == name)


def test_runs_list_is_newest_first_and_filters_by_pipeline_phase_and_time(page: Watched, state: State) -> None:
    pg = page.page
    pg.goto("/")
    expect(pg.locator("#run-count")).to_have_text("5 runs")
    assert listed(pg) == newest_first(state.records())
    assert listed(pg)[-1] == state.forged["runId"]  # started in 2020

    pg.select_option("#filter-pipeline", "small")
    expect(pg.locator("#run-count")).to_have_text("2 runs")
    assert listed(pg) == newest_first([state.first, state.second])
    assert "pipeline=small" in pg.url  # the filter is in the address, so a reload keeps it

    pg.select_option("#filter-pipeline", "")
    pg.select_option("#filter-phase", "Failed")
    expect(pg.locator("#run-count")).to_have_text("1 run")
    assert listed(pg) == [state.failed["runId"]]
    expect(pg.locator(f'tr[data-run="{state.failed["runId"]}"] .phase')).to_have_text("Failed")

    pg.select_option("#filter-phase", "")
    second_started = datetime.fromisoformat(state.second["startedAt"])
    before = (second_started - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")  # the page's zone is UTC
    pg.fill("#filter-until", before)
    expected = [
        r for r in state.records() if datetime.fromisoformat(r["startedAt"]) <= second_started - timedelta(seconds=1)
    ]
    expect(pg.locator("#run-count")).to_have_text(f"{len(expected)} run{'s' if len(expected) != 1 else ''}")
    assert set(listed(pg)) == {r["runId"] for r in expected}
    assert state.first["runId"] in listed(pg) and state.second["runId"] not in listed(pg)


def test_runs_list_pages(page: Watched, state: State) -> None:
    pg = page.page
    everything = newest_first(state.records())
    pg.goto("/?per=2")
    expect(pg.locator("#page-info")).to_have_text("page 1 of 3")
    assert listed(pg) == everything[:2]
    expect(pg.locator("#page-newer")).to_be_disabled()
    pg.click("#page-older")
    expect(pg.locator("#page-info")).to_have_text("page 2 of 3")
    assert listed(pg) == everything[2:4]
    pg.click("#page-older")
    expect(pg.locator("#page-info")).to_have_text("page 3 of 3")
    assert listed(pg) == everything[4:]
    expect(pg.locator("#page-older")).to_be_disabled()


def test_run_page_shows_the_dag_with_step_states_and_fan_out_counts(page: Watched, state: State) -> None:
    pg = page.page
    pg.goto(run_url(state.first["runId"]))
    dag = pg.locator(".dag svg")
    for name in ("make", "fan", "use", "plot"):
        expect(dag.locator(f'g.node[data-id="{name}"]')).to_have_attribute("data-state", "Succeeded")
    expect(dag.locator('g.node[data-id="fan"]')).to_contain_text("3/3 items")
    assert dag.locator("path.edge").count() == 3  # make→fan (dependsOn), make→use (input), use→plot
    expect(pg.locator(".timing svg rect.bar")).to_have_count(4)
    expect(pg.locator('img[alt="plot: ROC <curve>"]')).to_be_visible()
    assert pg.locator(".plots img").evaluate("img => img.naturalWidth") == 40

    pg.goto(run_url(state.second["runId"]))
    expect(pg.locator('.dag g.node[data-id="make"]')).to_have_attribute("data-state", "cached")
    pg.click('details.step[data-step="make"] > summary')
    expect(pg.locator('details.step[data-step="make"]')).to_contain_text("hit: outputs reused, nothing ran")

    pg.goto(run_url(state.failed["runId"]))
    states = {
        n: pg.locator(f'.dag g.node[data-id="{n}"]').get_attribute("data-state")
        for n in ("prepare", "explode", "never")
    }
    assert states == {"prepare": "Succeeded", "explode": "Failed", "never": "Cancelled"}
    failure = pg.locator("#failure")
    expect(failure).to_contain_text("Why it failed")
    expect(failure).to_contain_text("command exited with code 3")
    expect(failure).to_contain_text("<b>about to fail</b>")  # the log tail, as text
    assert failure.locator("b").count() == 0
    explode = pg.locator('details.step[data-step="explode"]')
    explode.locator("summary").first.click()
    attempts = explode.locator("table.attempts tbody tr")
    expect(attempts).to_have_count(2)  # retried once, failed both times
    assert [r.locator("td").nth(3).inner_text() for r in attempts.all()] == ["failed", "failed"]
    expect(explode.locator("details.log")).to_have_count(2)


def test_step_details_show_digests_sizes_metrics_and_the_archived_log(page: Watched, state: State) -> None:
    pg = page.page
    make = step(state.first, "make")
    pg.goto(run_url(state.first["runId"]))
    pg.click('.dag g.node[data-id="make"]')  # a node opens its step
    block = pg.locator('details.step[data-step="make"]')
    expect(block).to_have_attribute("open", "")
    row = block.locator("table.outputs tbody tr")
    expect(row).to_contain_text(make["outputs"][0]["digest"])
    expect(row).to_contain_text("100 B")
    metrics = block.locator("table.metrics")
    expect(metrics).to_contain_text("<i>odd</i>")
    assert metrics.locator("i").count() == 0
    block.locator("details.log summary").click()
    log = block.locator("pre.log-text")
    expect(log).to_contain_text("<script>alert(1)</script> made data")
    expect(log).to_contain_text("step make succeeded")
    assert log.locator("script").count() == 0

    use = pg.locator('details.step[data-step="use"]')
    use.locator("summary").first.click()
    expect(use.locator("table.inputs")).to_contain_text(make["outputs"][0]["digest"])
    expect(use.locator("table.inputs")).to_contain_text("make.data")
    expect(use.locator("table.metrics")).to_contain_text("0.5")

    fan = pg.locator('details.step[data-step="fan"]')
    fan.locator("summary").first.click()
    expect(fan.locator("table.items tbody tr")).to_have_count(3)
    fan.locator('details.log[data-key="fan[2]"] summary').click()
    expect(fan.locator('pre.log-text[data-key="fan[2]"]')).to_contain_text("item 3 at rate 0.5")


def test_no_secret_reaches_the_browser(page: Watched, state: State) -> None:
    """The conftest's `page` checks every response body for the secrets; here every page and log is opened."""
    pg = page.page
    pg.goto(run_url(state.first["runId"]))
    params = pg.locator("table.parameters")
    expect(params.locator("tr", has_text="api_token")).to_contain_text("redacted")
    expect(params.locator("tr", has_text="note")).to_contain_text("<b>bold</b>")
    pg.goto(run_url(state.failed["runId"]))
    prepare = pg.locator('details.step[data-step="prepare"]')
    prepare.locator("summary").first.click()
    prepare.locator("details.log summary").click()
    log = prepare.locator("pre.log-text")
    expect(log).to_contain_text("AWS_SECRET_ACCESS_KEY=•••redacted••• printed by mistake")
    pg.goto(
        "/compare?run=" + urllib.parse.quote(state.first["runId"]) + "&run=" + urllib.parse.quote(state.second["runId"])
    )
    expect(pg.locator("#comparison")).to_contain_text("api_token")
    assert any("/api/runs/" in url and "/logs/" in url for url, _ in page.bodies)


def test_html_in_names_renders_as_text(page: Watched, state: State) -> None:
    pg = page.page
    pg.goto("/")
    link = pg.locator(f'tr[data-run="{state.html["runId"]}"] td.run-id a')
    expect(link).to_have_text(state.html["runId"])
    assert pg.locator("#runs img").count() == 0
    link.click()
    expect(pg.locator("#run-id")).to_have_text(state.html["runId"])  # the id survived the address
    expect(pg.locator("#summary")).to_contain_text(HTML_PIPELINE)
    assert pg.locator("main img:not(.plots img)").count() == 0

    pg.goto(run_url(state.forged["runId"]))
    node = pg.locator(".dag g.node").first
    expect(node).to_have_attribute("data-id", HTML_STEP)
    expect(node.locator("text").first).to_have_text(HTML_STEP[:27] + "…")  # the report's clipped label
    expect(pg.locator("details.step .step-name").first).to_have_text(HTML_STEP)
    assert pg.locator("main img:not(.plots img)").count() == 0
    assert pg.evaluate("window.__xss") is None


def test_compare_marks_differences(page: Watched, state: State) -> None:
    pg = page.page
    pg.goto("/?pipeline=small")
    for run in (state.first, state.second):
        pg.locator(f'tr[data-run="{run["runId"]}"] input.select').check()
    expect(pg.locator("#compare-selected")).to_have_text("Compare selected (2)")
    pg.click("#compare-selected")
    expect(pg.locator("h1")).to_have_text("Compare 2 runs")

    def row(section: str, name: str) -> Any:
        return pg.locator(f'#comparison tr[data-section="{section}"][data-name="{name}"]')

    rate = row("parameter", "rate")
    expect(rate).to_have_class(re.compile(r"\bdiffers\b"))
    expect(rate.locator("td.marker")).to_have_text("≠")
    assert sorted(rate.locator("td.value").all_text_contents()) == ["0.5", "0.7"]
    expect(row("parameter", "note")).not_to_have_class(re.compile(r"\bdiffers\b"))
    expect(row("metric", "use.score")).to_have_class(re.compile(r"\bdiffers\b"))
    expect(row("output", "make.data")).not_to_have_class(re.compile(r"\bdiffers\b"))
    pg.check("#only-differences")
    expect(row("parameter", "note")).to_be_hidden()
    expect(rate).to_be_visible()


def test_live_updates_without_reloading(page: Watched, state: State, console: Console) -> None:
    """A new run shows up in the open list, and its open page follows it: a running step's log, then the end."""
    pg = page.page
    pg.goto("/")
    expect(pg.locator("#run-count")).to_have_text(re.compile(r"\d+ runs"))
    before = set(listed(pg))
    gate = state.work / "gate"
    proc = run_pipeline(slow_pipeline(gate), state.work)
    try:
        new_row = pg.locator("#runs tr.run", has=pg.locator("td.pipeline", has_text="slow"))
        expect(new_row).to_have_count(1, timeout=15_000)
        run_id = new_row.get_attribute("data-run")
        assert run_id not in before and listed(pg)[0] == run_id  # newest first
        pg.locator(f'tr[data-run="{run_id}"] td.run-id a').click()
        node = pg.locator('.dag g.node[data-id="wait"]')
        expect(node).to_have_attribute("data-state", "Running", timeout=15_000)
        expect(pg.locator('.dag g.node[data-id="first"]')).to_have_attribute("data-state", "Succeeded")
        wait = pg.locator('details.step[data-step="wait"]')
        wait.locator("summary").first.click()
        wait.locator("details.log summary").click()
        expect(wait.locator("pre.log-text")).to_contain_text("waiting now")
        expect(pg.locator("h1 .phase")).to_have_text("Running")
        gate.touch()  # let the step finish
        expect(pg.locator("h1 .phase")).to_have_text("Succeeded", timeout=20_000)
        expect(node).to_have_attribute("data-state", "Succeeded")
        expect(wait.locator("pre.log-text")).to_contain_text("done waiting")  # the open log followed it
    finally:
        gate.touch()
        record = record_of(proc)
    assert record["runId"] == run_id


def test_the_console_is_read_only_and_sets_a_strict_policy(console: Console, state: State) -> None:
    request = urllib.request.Request(console.url + "api/runs", method="POST", data=b"{}")
    try:
        urllib.request.urlopen(request, timeout=5)
        raise AssertionError("POST was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 405 and e.headers["Allow"] == "GET, HEAD"
    with urllib.request.urlopen(console.url, timeout=5) as r:
        policy = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
    for bad in (
        "api/runs/..%2F..%2Fetc",
        "api/runs/nope",
        "api/runs/" + urllib.parse.quote(state.first["runId"]) + "/logs/make/9",
    ):
        try:
            urllib.request.urlopen(console.url + bad, timeout=5)
            raise AssertionError(f"{bad} was found")
        except urllib.error.HTTPError as e:
            assert e.code == 404, bad
            assert "error" in json.loads(e.read())


def test_every_page_passes_an_accessibility_check(page: Watched, state: State) -> None:
    """axe-core (the copy inside axe-playwright-python, injected by Playwright) on each page, every step and log open."""
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()
    pg = page.page
    both = "run=" + urllib.parse.quote(state.first["runId"]) + "&run=" + urllib.parse.quote(state.failed["runId"])
    for url in ("/", run_url(state.first["runId"]), run_url(state.failed["runId"]), "/compare?" + both):
        pg.goto(url)
        expect(pg.locator("main h1")).to_be_visible()
        for details in pg.locator("details.step").all():
            details.locator("summary").first.click()
        for log in pg.locator("details.log").all():
            log.locator("summary").click()
        if pg.locator("pre.log-text").count():
            expect(pg.locator("pre.log-text").last).not_to_be_empty()
        violations = [
            (v["impact"], v["id"], v["help"], [n["target"] for n in v["nodes"]][:3])
            for v in axe.run(pg).response["violations"]
        ]
        assert violations == [], url
