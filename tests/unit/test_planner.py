"""The run planner on plain data: (spec, observed step states) → actions, and convergence."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor.api.pipeline import Approval, PipelineSpec
from conveyor.api.run import ArtifactRef, Decision, RunPhase, StepApproval, StepPhase
from conveyor.core.cachekey import cache_key
from conveyor.core.planner import (
    CacheEntry,
    Kill,
    Launch,
    Plan,
    RunContext,
    RunPlanner,
    StepState,
    adopt_launched,
    finished,
    killed,
    started,
)
from conveyor.core.retry import backoff_seconds
from conveyor.core.task import StoreConfig, TaskResult

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
D = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def spec(**extra: Any) -> PipelineSpec:
    """a → b → c, and d independent; d reads a parameter."""
    steps = [
        {"name": "a", "container": {"image": "i", "command": ["a"]}, "outputs": [{"name": "out"}]},
        {
            "name": "b",
            "container": {"image": "i", "command": ["b", "{{ inputs.x }}"]},
            "inputs": [{"name": "x", "step": "a", "output": "out"}],
            "outputs": [{"name": "out"}],
            "retries": {"limit": 2, "backoff": {"initialSeconds": 10, "factor": 3, "maxSeconds": 60}},
        },
        {
            "name": "c",
            "container": {"image": "i", "command": ["c"]},
            "inputs": [{"name": "x", "step": "b", "output": "out"}],
        },
        {"name": "d", "container": {"image": "i", "command": ["d", "{{ params.k }}"]}},
    ]
    return PipelineSpec.model_validate(
        {"parameters": [{"name": "k", "type": "integer", "default": 1}], "steps": steps, **extra}
    )


def planner(
    s: PipelineSpec | None = None, params: Mapping[str, Any] | None = None, parallelism: int | None = None
) -> RunPlanner:
    ctx = RunContext(
        run_id="r1",
        name="r1",
        namespace="ns",
        code_version="test",
        store=StoreConfig(kind="local", root="/s"),
    )
    return RunPlanner(s or spec(), params or {"k": 1}, ctx, parallelism=parallelism)


def ok(digest: str = D) -> StepState:
    return StepState(
        phase=StepPhase.SUCCEEDED,
        attempts=1,
        outputs={"out": ArtifactRef(name="out", uri="u", digest=digest)},
        started_at=NOW,
        finished_at=NOW,
    )


def running(at: datetime = NOW) -> StepState:
    return StepState(phase=StepPhase.RUNNING, attempts=1, started_at=at)


def kinds(plan: Plan) -> list[tuple[str, str]]:
    return [(type(a).__name__, a.step) for a in plan.actions]


CASES: list[tuple[str, dict[str, StepState], list[tuple[str, str]], RunPhase]] = [
    ("fresh run launches roots", {}, [("Launch", "a"), ("Launch", "d")], RunPhase.RUNNING),
    ("downstream waits for running upstream", {"a": running(), "d": running()}, [], RunPhase.RUNNING),
    ("success unblocks the next step", {"a": ok(), "d": ok()}, [("Launch", "b")], RunPhase.RUNNING),
    ("all done", {"a": ok(), "b": ok(), "c": ok(), "d": ok()}, [], RunPhase.SUCCEEDED),
    (
        "failure with nothing running fails the run and cancels the rest",
        {"a": StepState(phase=StepPhase.FAILED, attempts=1, message="boom"), "d": ok()},
        [("CancelStep", "b"), ("CancelStep", "c")],
        RunPhase.FAILED,
    ),
    (
        "fail-fast launches nothing new after a failure",
        {"a": StepState(phase=StepPhase.FAILED, attempts=1)},
        [("CancelStep", "b"), ("CancelStep", "c"), ("CancelStep", "d")],
        RunPhase.FAILED,
    ),
    (
        "waiting for backoff launches nothing",
        {
            "a": ok(),
            "d": ok(),
            "b": StepState(phase=StepPhase.WAITING, attempts=1, next_attempt_at=NOW + timedelta(seconds=5)),
        },
        [],
        RunPhase.RUNNING,
    ),
    (
        "backoff over: next attempt",
        {
            "a": ok(),
            "d": ok(),
            "b": StepState(phase=StepPhase.WAITING, attempts=1, next_attempt_at=NOW - timedelta(seconds=1)),
        },
        [("Launch", "b")],
        RunPhase.RUNNING,
    ),
]


@pytest.mark.parametrize(("states", "expected", "phase"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan_table(states: dict[str, StepState], expected: list[tuple[str, str]], phase: RunPhase) -> None:
    plan = planner().plan(states, NOW, cache={})
    assert kinds(plan) == expected
    assert plan.phase is phase


def test_failed_run_message_names_the_step() -> None:
    plan = planner().plan({"a": StepState(phase=StepPhase.FAILED, attempts=3, message="exit 1")}, NOW, cache={})
    assert plan.reason == "StepFailed" and plan.message == "step 'a' failed: exit 1"


def test_without_fail_fast_independent_branches_finish() -> None:
    plan = planner(spec(failFast=False)).plan({"a": StepState(phase=StepPhase.FAILED, attempts=1)}, NOW, cache={})
    assert kinds(plan) == [("Launch", "d")]


def test_parallelism_caps_launches() -> None:
    assert kinds(planner(parallelism=1).plan({}, NOW, cache={})) == [("Launch", "a")]
    assert kinds(planner(parallelism=1).plan({"a": running()}, NOW, cache={})) == []


def test_templates_are_resolved_and_paths_left_for_the_runtime() -> None:
    plan = planner(params={"k": 7}).plan({"a": ok(), "d": ok()}, NOW, cache={})
    (launch,) = plan.actions
    assert isinstance(launch, Launch)
    assert launch.task.command == ["b", "{{ inputs.x }}"]
    assert launch.task.inputs[0].digest == D
    d_task = planner(params={"k": 7}).plan({}, NOW, cache={}).actions[1]
    assert isinstance(d_task, Launch) and d_task.task.command == ["d", "7"]


def _key_of(step: str, states: dict[str, StepState], params: Mapping[str, Any] | None = None) -> str:
    plan = planner(params=params).plan(states, NOW, cache={})
    return next(a.task.cache_key for a in plan.actions if isinstance(a, Launch) and a.step == step)


def test_cache_key_follows_input_content_and_used_parameters_only() -> None:
    base = _key_of("b", {"a": ok(), "d": ok()})
    assert _key_of("b", {"a": ok(), "d": ok()}, {"k": 99}) == base  # b does not read k
    assert _key_of("b", {"a": ok(D2), "d": ok()}) != base  # a's output changed
    assert _key_of("d", {}, {"k": 1}) != _key_of("d", {}, {"k": 2})  # d reads k


def test_cache_hit_reuses_outputs_and_launches_nothing() -> None:
    key = _key_of("b", {"a": ok(), "d": ok()})
    entry = CacheEntry(key=key, outputs=(ArtifactRef(name="out", uri="u", digest=D2),), metrics={"m": 1.0})
    plan = planner().plan({"a": ok(), "d": ok()}, NOW, cache={key: entry})
    assert kinds(plan)[0] == ("ReuseCached", "b")
    # c is planned in the same pass, from b's reused output
    assert kinds(plan)[1] == ("Launch", "c")
    c_launch = plan.actions[1]
    assert isinstance(c_launch, Launch) and c_launch.task.inputs[0].digest == D2


WAITING_B = StepState(phase=StepPhase.WAITING, attempts=1, next_attempt_at=NOW + timedelta(seconds=30))

ADOPTION_CASES: list[tuple[str, dict[str, StepState], tuple[str, int], StepPhase, int]] = [
    ("a pending step's first attempt exists", {}, ("a", 1), StepPhase.RUNNING, 1),
    (
        "a waiting step's next attempt exists (launched when its backoff ended)",
        {"b": WAITING_B},
        ("b", 2),
        StepPhase.RUNNING,
        2,
    ),
    ("a running attempt is known already", {"a": running()}, ("a", 1), StepPhase.RUNNING, 1),
    ("a finished attempt stays finished", {"a": ok()}, ("a", 1), StepPhase.SUCCEEDED, 1),
    ("an earlier attempt is history, not news", {"b": WAITING_B}, ("b", 1), StepPhase.WAITING, 1),
    ("an attempt out of sequence is not ours to guess", {}, ("a", 2), StepPhase.PENDING, 0),
]


@pytest.mark.parametrize(
    ("states", "job", "phase", "attempts"), [c[1:] for c in ADOPTION_CASES], ids=[c[0] for c in ADOPTION_CASES]
)
def test_adopt_launched_table(
    states: dict[str, StepState], job: tuple[str, int], phase: StepPhase, attempts: int
) -> None:
    adopted = adopt_launched(states, [(*job, "sha256:k")], NOW).get(job[0], StepState())
    assert (adopted.phase, adopted.attempts) == (phase, attempts)


def test_an_attempt_launched_but_never_recorded_is_not_replaced_by_a_cache_hit() -> None:
    """The shell created a's Job, died before recording it, and meanwhile a's cache key was stored by another
    run: the plan keeps the launched attempt (no cache hit, no second launch) and folds in its result later."""
    key = _key_of("a", {})
    entry = CacheEntry(key=key, outputs=(ArtifactRef(name="out", uri="u", digest=D2),), metrics={})
    assert kinds(planner().plan({}, NOW, cache={key: entry}))[0] == ("ReuseCached", "a")  # what used to happen
    states = adopt_launched({}, [("a", 1, key)], NOW)
    assert states["a"].phase is StepPhase.RUNNING and states["a"].cache_key == key
    plan = planner().plan(states, NOW, cache={key: entry})
    assert ("ReuseCached", "a") not in kinds(plan) and ("Launch", "a") not in kinds(plan)
    assert adopt_launched(plan.states, [("a", 1, key)], NOW) == dict(plan.states)  # adopting again changes nothing


def test_cache_disabled_step_always_runs() -> None:
    s = spec()
    s.steps[0].cache.enabled = False
    key = _key_of("a", {})
    plan = planner(s).plan({}, NOW, cache={key: CacheEntry(key, (), {})})
    assert ("Launch", "a") in kinds(plan)


def test_retry_attempts_are_not_served_from_cache() -> None:
    """A retry re-executes: a failed attempt must not be papered over by a cache entry."""
    key = _key_of("b", {"a": ok(), "d": ok()})
    waiting = StepState(phase=StepPhase.WAITING, attempts=1, next_attempt_at=NOW)
    plan = planner().plan({"a": ok(), "d": ok(), "b": waiting}, NOW, cache={key: CacheEntry(key, (), {})})
    assert kinds(plan) == [("Launch", "b")]


def test_retry_backoff_and_exhaustion() -> None:
    s = spec()
    step_b = s.steps[1]
    state = started(StepState(), NOW, D)
    fail = TaskResult(ok=False, message="exit 1")
    state = finished(state, step_b, fail, NOW)
    assert state.phase is StepPhase.WAITING and state.next_attempt_at == NOW + timedelta(seconds=10)
    state = finished(started(state, NOW, D), step_b, fail, NOW)
    assert state.next_attempt_at == NOW + timedelta(seconds=30)
    state = finished(started(state, NOW, D), step_b, fail, NOW)
    assert state.phase is StepPhase.FAILED and state.attempts == 3 and state.message == "exit 1"
    assert backoff_seconds(step_b.retries, 10) == 60  # capped


def test_step_timeout_kills_and_sets_a_wake_time() -> None:
    s = spec()
    s.steps[3].timeout_seconds = 30
    p = planner(s)
    plan = p.plan({"a": running(), "d": running(NOW - timedelta(seconds=10))}, NOW, cache={})
    assert plan.wake_at == NOW + timedelta(seconds=20)
    plan = p.plan({"a": running(), "d": running(NOW - timedelta(seconds=31))}, NOW, cache={})
    assert ("Kill", "d") in kinds(plan)


def test_cancel_kills_running_and_cancels_pending() -> None:
    plan = planner().plan({"a": running()}, NOW, cache={}, cancel=True)
    assert kinds(plan) == [("Kill", "a"), ("CancelStep", "b"), ("CancelStep", "c"), ("CancelStep", "d")]
    assert plan.phase is RunPhase.RUNNING  # until the killed step has stopped
    after = {
        "a": StepState(phase=StepPhase.FAILED),
        "b": StepState(phase=StepPhase.CANCELLED),
        "c": StepState(phase=StepPhase.CANCELLED),
        "d": StepState(phase=StepPhase.CANCELLED),
    }
    assert planner().plan(after, NOW, cache={}, cancel=True).phase is RunPhase.CANCELLED


def test_run_timeout_fails_the_run() -> None:
    p = planner(spec(timeoutSeconds=60))
    plan = p.plan({}, NOW, cache={}, run_started_at=NOW - timedelta(seconds=61))
    assert plan.phase is RunPhase.FAILED and plan.reason == "RunTimedOut"


WHEN = [
    ("true condition runs", "params.k > 0", "Launch"),
    ("false condition skips", "params.k > 5", "Skip"),
    ("upstream metric", "steps.a.metrics.auc >= 0.9", "Launch"),
    ("not a boolean fails the step", "params.k", "FailStep"),
]


@pytest.mark.parametrize(("expr", "kind"), [w[1:] for w in WHEN], ids=[w[0] for w in WHEN])
def test_when_conditions(expr: str, kind: str) -> None:
    s = spec()
    s.steps[1].when = expr
    a = StepState(phase=StepPhase.SUCCEEDED, attempts=1, outputs=ok().outputs, metrics={"auc": 0.95})
    plan = planner(s).plan({"a": a, "d": ok()}, NOW, cache={})
    assert (kind, "b") in kinds(plan)


MISSING_METRIC = [
    ("dotted", "steps.a.metrics.acc > 0.9"),
    ("bracketed", "steps['a'].metrics['acc'] > 0.9"),
]


@pytest.mark.parametrize("expr", [m[1] for m in MISSING_METRIC], ids=[m[0] for m in MISSING_METRIC])
def test_a_condition_on_a_missing_metric_names_the_step_and_its_metrics(expr: str) -> None:
    s = spec()
    s.steps[1].when = expr
    a = StepState(phase=StepPhase.SUCCEEDED, attempts=1, outputs=ok().outputs, metrics={"auc": 0.95, "f1": 0.9})
    plan = planner(s).plan({"a": a, "d": ok()}, NOW, cache={})
    assert ("FailStep", "b") in kinds(plan)
    assert plan.states["b"].message == (
        f"cannot evaluate when of step 'b' ({expr}): step 'a' has no metric 'acc' (its metrics: auc, f1)"
    )


def test_cancelling_a_run_cancels_its_running_attempts() -> None:
    plan = planner().plan({"a": running()}, NOW, cache={}, cancel=True)
    (kill,) = [x for x in plan.actions if isinstance(x, Kill)]
    assert kill.run_cancelled
    step = planner().spec.steps[0]
    assert killed(running(), step, kill, NOW).phase is StepPhase.CANCELLED
    timed_out = Kill("a", "step exceeded its timeout of 5s")
    assert killed(replace(running(), attempts=1), step, timed_out, NOW).phase is not StepPhase.CANCELLED


def test_skipped_upstream_skips_readers() -> None:
    s = spec()
    s.steps[1].when = "params.k > 5"
    plan = planner(s).plan({"a": ok(), "d": ok()}, NOW, cache={})
    assert kinds(plan) == [("Skip", "b"), ("Skip", "c")]
    assert plan.phase is RunPhase.SUCCEEDED


def _simulate(
    p: RunPlanner, fail_first: set[str] | None = None, max_passes: int = 50
) -> tuple[dict[str, StepState], int, Plan]:
    """Apply each plan to a simulated world where launched steps finish at once, until done."""
    states: dict[str, StepState] = {}
    cache: dict[str, CacheEntry] = {}
    launches = 0
    failing = set(fail_first or ())
    steps = {s.name: s for s in p.spec.steps}
    now = NOW
    for _ in range(max_passes):
        plan = p.plan(states, now, cache=cache)
        if plan.done:
            return states, launches, plan
        states = dict(plan.states)
        for action in plan.actions:
            if isinstance(action, Launch):
                launches += 1
                st = states[action.key]
                if action.step in failing:
                    failing.discard(action.step)
                    st = finished(st, steps[action.step], TaskResult(ok=False, message="x"), now)
                else:
                    outs = [ArtifactRef(name=o, uri="u", digest=D) for o in action.task.outputs]
                    st = finished(st, steps[action.step], TaskResult(ok=True, outputs=outs), now)
                    cache[action.task.cache_key] = CacheEntry(action.task.cache_key, tuple(outs), {})
                states[action.key] = st
        now += timedelta(seconds=61)  # past any backoff
    raise AssertionError("the plan did not converge")


def test_convergence_then_nothing_to_do() -> None:
    p = planner()
    states, launches, plan = _simulate(p)
    assert plan.phase is RunPhase.SUCCEEDED and launches == 4
    again = p.plan(states, NOW + timedelta(hours=1), cache={})
    assert again.actions == () and again.phase is RunPhase.SUCCEEDED  # idempotent


def test_convergence_with_a_retry() -> None:
    states, launches, plan = _simulate(planner(), fail_first={"b"})
    assert plan.phase is RunPhase.SUCCEEDED and launches == 5 and states["b"].attempts == 2


def test_planning_twice_gives_the_same_plan() -> None:
    p = planner()
    observed = {"a": ok(), "d": running()}
    assert p.plan(observed, NOW, cache={}) == p.plan(observed, NOW, cache={})


def test_cache_key_is_stable_and_sensitive() -> None:
    k = cache_key(template={"a": 1}, input_digests={"x": D}, code_version="1")
    assert k == cache_key(template={"a": 1}, input_digests={"x": D}, code_version="1")
    assert k != cache_key(template={"a": 2}, input_digests={"x": D}, code_version="1")
    assert k != cache_key(template={"a": 1}, input_digests={"x": D2}, code_version="1")
    assert k != cache_key(template={"a": 1}, input_digests={"x": D}, code_version="2")
    assert k.startswith("sha256:") and len(k) == 71


def fan_spec(**for_each: Any) -> PipelineSpec:
    """prep → train (fanned out) → pick (reads every train item's model)."""
    return PipelineSpec.model_validate(
        {
            "parameters": [{"name": "depths", "type": "list", "default": [1, 2, 3]}],
            "steps": [
                {"name": "prep", "container": {"image": "i", "command": ["p"]}, "outputs": [{"name": "data"}]},
                {
                    "name": "train",
                    "container": {"image": "i", "command": ["t", "{{ item }}"]},
                    "inputs": [{"name": "data", "step": "prep", "output": "data"}],
                    "outputs": [{"name": "model"}],
                    "forEach": for_each or {"parameter": "depths"},
                },
                {
                    "name": "pick",
                    "container": {"image": "i", "command": ["k", "{{ inputs.models }}"]},
                    "inputs": [{"name": "models", "step": "train", "output": "model"}],
                },
            ],
        }
    )


def fan_planner(s: PipelineSpec, params: Mapping[str, Any] | None = None, parallelism: int | None = None) -> RunPlanner:
    ctx = RunContext(run_id="r", name="r", namespace="ns", code_version="t", store=StoreConfig(kind="local", root="/s"))
    return RunPlanner(s, params or {"depths": [1, 2, 3]}, ctx, parallelism=parallelism)


def prep_done() -> StepState:
    return StepState(
        phase=StepPhase.SUCCEEDED, attempts=1, outputs={"data": ArtifactRef(name="data", uri="u", digest=D)}
    )


def item_done(digest: str) -> StepState:
    return StepState(
        phase=StepPhase.SUCCEEDED,
        attempts=1,
        finished_at=NOW,
        outputs={"model": ArtifactRef(name="model", uri="u", digest=digest)},
    )


def test_fan_out_launches_one_unit_per_item_with_the_item_resolved() -> None:
    plan = fan_planner(fan_spec()).plan({"prep": prep_done()}, NOW, cache={})
    launches = [a for a in plan.actions if isinstance(a, Launch)]
    assert [a.key for a in launches] == ["train[0]", "train[1]", "train[2]"]
    assert [a.task.command for a in launches] == [["t", "1"], ["t", "2"], ["t", "3"]]
    assert [a.task.item_index for a in launches] == [0, 1, 2]
    assert len({a.task.cache_key for a in launches}) == 3  # the item is part of the key
    assert plan.states["train"].phase is StepPhase.RUNNING


def test_fan_out_respects_max_concurrency_and_grid() -> None:
    plan = fan_planner(fan_spec(grid={"a": [1, 2], "b": ["x", "y"]}, maxConcurrency=2)).plan(
        {"prep": prep_done()}, NOW, cache={}
    )
    launches = [a for a in plan.actions if isinstance(a, Launch)]
    assert [a.task.item for a in launches] == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}]


def test_fan_in_hands_every_item_output_downstream_in_order() -> None:
    digests = ["sha256:" + c * 64 for c in "abc"]
    states = {"prep": prep_done(), **{f"train[{i}]": item_done(d) for i, d in enumerate(digests)}}
    plan = fan_planner(fan_spec()).plan(states, NOW, cache={})
    (launch,) = [a for a in plan.actions if isinstance(a, Launch)]
    assert launch.step == "pick"
    (models,) = launch.task.inputs
    assert models.collection and [m.digest for m in models.items or []] == digests
    assert [m.item for m in models.items or []] == [1, 2, 3]
    assert plan.states["train"].phase is StepPhase.SUCCEEDED
    assert plan.states["train"].outputs["model"].digest == models.digest
    # a different item output changes the collection digest, so the fan-in step's cache key
    other = dict(states, **{"train[2]": item_done("sha256:" + "d" * 64)})
    again = [a for a in fan_planner(fan_spec()).plan(other, NOW, cache={}).actions if isinstance(a, Launch)]
    assert again[0].task.cache_key != launch.task.cache_key


def test_a_failed_item_fails_the_step_and_the_run() -> None:
    failed = StepState(phase=StepPhase.FAILED, attempts=1, message="boom")
    states = {"prep": prep_done(), "train[0]": item_done(D), "train[1]": failed, "train[2]": item_done(D2)}
    plan = fan_planner(fan_spec()).plan(states, NOW, cache={})
    assert plan.phase is RunPhase.FAILED and "item 1 failed: boom" in plan.message


def test_fan_out_converges_with_cache_hits_on_rerun() -> None:
    p = fan_planner(fan_spec(), parallelism=2)
    _, launches, plan = _simulate(p)
    assert plan.phase is RunPhase.SUCCEEDED and launches == 5  # prep, 3 items, pick
    assert p.plan(plan.states, NOW, cache={}).actions == ()


def test_cancel_kills_running_items() -> None:
    states = {"prep": prep_done(), "train[0]": running(), "train[1]": running(), "train": running()}
    plan = fan_planner(fan_spec()).plan(states, NOW, cache={}, cancel=True)
    kills = sorted(a.key for a in plan.actions if isinstance(a, Kill))
    assert kills in (["train", "train[0]", "train[1]"], ["train[0]", "train[1]"])


def approval_spec() -> PipelineSpec:
    s = spec()
    s.steps[1].approval = Approval(required=True, message="check the metrics")
    return s


def test_approval_pauses_until_decided() -> None:
    plan = planner(approval_spec()).plan({"a": ok(), "d": ok()}, NOW, cache={})
    assert kinds(plan) == []
    assert plan.states["b"].phase is StepPhase.WAITING and plan.states["b"].next_attempt_at is None
    assert plan.phase is RunPhase.RUNNING and plan.reason == "WaitingForApproval"
    assert "check the metrics" in plan.message
    # planning again while waiting changes nothing
    again = planner(approval_spec()).plan(plan.states, NOW, cache={})
    assert kinds(again) == [] and again.reason == "WaitingForApproval"


def test_approved_step_runs_and_rejected_step_fails() -> None:
    waiting = planner(approval_spec()).plan({"a": ok(), "d": ok()}, NOW, cache={}).states
    yes = {"b": StepApproval(step="b", decision=Decision.APPROVE, by="ana")}
    assert kinds(planner(approval_spec()).plan(waiting, NOW, cache={}, approvals=yes)) == [("Launch", "b")]
    no = {"b": StepApproval(step="b", decision=Decision.REJECT, by="ana", comment="AUC too low")}
    plan = planner(approval_spec()).plan(waiting, NOW, cache={}, approvals=no)
    assert plan.phase is RunPhase.FAILED and "rejected by ana: AUC too low" in plan.message


@pytest.mark.parametrize(
    ("source", "hit"),
    [("sklearn://iris", True), ("https://example.org/data.csv", False), ("s3://bucket/data.parquet", False)],
)
def test_steps_reading_the_outside_world_are_never_cache_hits(source: str, hit: bool) -> None:
    """The same URL can serve new data under the same key; the output digest protects what follows."""
    s = PipelineSpec.model_validate({"steps": [{"name": "ingest", "uses": "ingest", "with": {"source": source}}]})
    p = planner(s)
    (launch,) = p.plan({}, NOW, cache={}).actions
    assert isinstance(launch, Launch)
    entry = CacheEntry(launch.task.cache_key, (ArtifactRef(name="dataset", uri="u", digest=D),), {})
    plan = p.plan({}, NOW, cache={launch.task.cache_key: entry})
    assert kinds(plan) == ([("ReuseCached", "ingest")] if hit else [("Launch", "ingest")])


FILE = "file:///data/train.csv"


@pytest.mark.parametrize(
    ("digests_then", "digests_now", "hit"),
    [
        ({FILE: D}, {FILE: D}, True),  # the same content: cached like any other step
        ({FILE: D}, {FILE: D2}, False),  # the file changed: a new key
        ({}, {}, False),  # a shell that cannot digest the file (the operator) never serves it from the cache
    ],
    ids=["unchanged-file-hits", "changed-file-misses", "undigested-file-never-hits"],
)
def test_a_file_ingest_is_cached_by_the_files_content(
    digests_then: dict[str, str], digests_now: dict[str, str], hit: bool
) -> None:
    s = PipelineSpec.model_validate({"steps": [{"name": "ingest", "uses": "ingest", "with": {"source": FILE}}]})
    p = planner(s)
    (launch,) = p.plan({}, NOW, cache={}, external_digests=digests_then).actions
    assert isinstance(launch, Launch)
    entry = CacheEntry(launch.task.cache_key, (ArtifactRef(name="dataset", uri="u", digest=D),), {})
    plan = p.plan({}, NOW, cache={launch.task.cache_key: entry}, external_digests=digests_now)
    assert kinds(plan) == ([("ReuseCached", "ingest")] if hit else [("Launch", "ingest")])
