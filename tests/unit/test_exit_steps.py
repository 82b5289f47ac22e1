"""onExit steps in the planner, on plain data: when they start, what they read, and what the Run's outcome is."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor.api.base import ConditionStatus
from conveyor.api.pipeline import Pipeline, PipelineSpec
from conveyor.api.run import ArtifactRef, RunPhase, StepPhase
from conveyor.core.planner import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_RUNNING,
    EXIT_SUCCEEDED,
    EXIT_WAITING,
    CacheEntry,
    Kill,
    Launch,
    Plan,
    RunContext,
    RunPlanner,
    Skip,
    StepState,
    exit_steps_ready,
    finished,
    step_order,
)
from conveyor.core.status import EXIT_CONDITION, exit_condition
from conveyor.core.support import LOCAL, unsupported
from conveyor.core.task import StoreConfig, TaskResult
from conveyor.core.validation import InvalidSpec, parse_document

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
D = "sha256:" + "1" * 64


def container(name: str, *command: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "container": {"image": "i", "command": [name, *command]}, **extra}


def spec(on_exit: list[dict[str, Any]] | None = None, **extra: Any) -> PipelineSpec:
    """prep → train, and an independent `side`; by default one onExit step reporting the outcome."""
    steps = [
        container("prep", outputs=[{"name": "data"}]),
        container("train", inputs=[{"name": "d", "step": "prep", "output": "data"}], outputs=[{"name": "model"}]),
        container("side"),
    ]
    exits = (
        on_exit
        if on_exit is not None
        else [container("notify", "{{ run.phase }}", "{{ run.failedSteps }}", "{{ run.name }}")]
    )
    return PipelineSpec.model_validate({"steps": steps, "onExit": exits, **extra})


def planner(s: PipelineSpec, parallelism: int | None = None) -> RunPlanner:
    ctx = RunContext(
        run_id="r1", name="r1", namespace="ns", code_version="t", store=StoreConfig(kind="local", root="/s")
    )
    return RunPlanner(s, {}, ctx, parallelism=parallelism)


def ok(*outputs: str) -> StepState:
    refs = {o: ArtifactRef(name=o, uri=f"u/{o}", digest=D) for o in outputs}
    return StepState(phase=StepPhase.SUCCEEDED, attempts=1, outputs=refs, started_at=NOW, finished_at=NOW)


def failed(message: str = "boom") -> StepState:
    return StepState(phase=StepPhase.FAILED, attempts=1, message=message, started_at=NOW, finished_at=NOW)


def running() -> StepState:
    return StepState(phase=StepPhase.RUNNING, attempts=1, started_at=NOW)


def kinds(plan: Plan) -> list[tuple[str, str]]:
    return [(type(a).__name__, a.step) for a in plan.actions]


def plan(s: PipelineSpec, states: Mapping[str, StepState], **kw: Any) -> Plan:
    return planner(s).plan(states, NOW, cache={}, **kw)


def launched(p: Plan, step: str) -> Launch:
    (action,) = [a for a in p.actions if isinstance(a, Launch) and a.step == step]
    return action


# ---------------------------------------------------------------- when they start

WHEN: list[tuple[str, dict[str, StepState], dict[str, Any], list[tuple[str, str]], RunPhase, str]] = [
    (
        "a fresh run launches the steps, not the onExit steps",
        {},
        {},
        [("Launch", "prep"), ("Launch", "side")],
        RunPhase.RUNNING,
        EXIT_WAITING,
    ),
    (
        "one step still running: the onExit steps wait",
        {"prep": ok("data"), "train": ok("model"), "side": running()},
        {},
        [],
        RunPhase.RUNNING,
        EXIT_WAITING,
    ),
    (
        "a failed step with another still running: they wait for it",
        {"prep": failed(), "side": running()},
        {},
        [],
        RunPhase.RUNNING,
        EXIT_WAITING,
    ),
    (
        "every step succeeded: the onExit step launches in the same pass",
        {"prep": ok("data"), "train": ok("model"), "side": ok()},
        {},
        [("Launch", "notify")],
        RunPhase.RUNNING,
        EXIT_RUNNING,
    ),
    (
        "a step failed and nothing runs: the rest is cancelled and the onExit step launches",
        {"prep": failed(), "side": ok()},
        {},
        [("CancelStep", "train"), ("Launch", "notify")],
        RunPhase.RUNNING,
        EXIT_RUNNING,
    ),
    (
        "cancelled while a step runs: kill it, the onExit step waits for the kill",
        {"prep": running()},
        {"cancel": True},
        [("Kill", "prep"), ("CancelStep", "train"), ("CancelStep", "side")],
        RunPhase.RUNNING,
        EXIT_WAITING,
    ),
    (
        "cancelled with every step stopped: the onExit step runs although cancel stays set",
        {"prep": StepState(phase=StepPhase.CANCELLED), "train": StepState(phase=StepPhase.CANCELLED), "side": ok()},
        {"cancel": True},
        [("Launch", "notify")],
        RunPhase.RUNNING,
        EXIT_RUNNING,
    ),
    (
        "the Run's timeout ends the steps, then the onExit step runs",
        {"prep": running()},
        {"run_started_at": NOW - timedelta(seconds=61)},
        [("Kill", "prep"), ("CancelStep", "train"), ("CancelStep", "side")],
        RunPhase.RUNNING,
        EXIT_WAITING,
    ),
]


@pytest.mark.parametrize(
    ("states", "options", "expected", "phase", "exit_reason"), [c[1:] for c in WHEN], ids=[c[0] for c in WHEN]
)
def test_when_exit_steps_start(
    states: dict[str, StepState],
    options: dict[str, Any],
    expected: list[tuple[str, str]],
    phase: RunPhase,
    exit_reason: str,
) -> None:
    p = plan(spec(timeoutSeconds=60), states, **options)
    assert kinds(p) == expected
    assert p.phase is phase
    assert p.exit_reason == exit_reason
    assert p.states["notify"].phase is (StepPhase.RUNNING if ("Launch", "notify") in expected else StepPhase.PENDING)


def test_after_a_timeout_the_exit_step_is_not_killed_by_the_runs_timeout() -> None:
    s = spec(timeoutSeconds=60)
    states = {"prep": StepState(phase=StepPhase.FAILED), "train": StepState(phase=StepPhase.CANCELLED), "side": ok()}
    p = plan(s, {**states, "notify": running()}, run_started_at=NOW - timedelta(seconds=600))
    assert kinds(p) == []
    assert p.phase is RunPhase.RUNNING and p.reason == "RunningExitSteps"


READY: list[tuple[str, Plan, tuple[RunPhase, tuple[str, ...]] | None]] = [
    ("running", Plan((), RunPhase.RUNNING, states={"a": running()}), None),
    ("pending", Plan((), RunPhase.PENDING), None),
    ("succeeded", Plan((), RunPhase.SUCCEEDED, states={"a": ok(), "b": ok()}), (RunPhase.SUCCEEDED, ())),
    (
        "failed, in step order, items and cancelled steps left out",
        Plan(
            (),
            RunPhase.FAILED,
            states={"b": failed(), "a": failed(), "a[0]": failed(), "c": StepState(phase=StepPhase.CANCELLED)},
        ),
        (RunPhase.FAILED, ("a", "b")),
    ),
    (
        "cancelled",
        Plan((), RunPhase.CANCELLED, states={"a": StepState(phase=StepPhase.CANCELLED)}),
        (RunPhase.CANCELLED, ()),
    ),
]


@pytest.mark.parametrize(("main", "expected"), [c[1:] for c in READY], ids=[c[0] for c in READY])
def test_exit_steps_ready_decides_on_the_steps_plan(
    main: Plan, expected: tuple[RunPhase, tuple[str, ...]] | None
) -> None:
    outcome = exit_steps_ready(main, ["a", "b", "c"])
    if expected is None:
        assert outcome is None
    else:
        assert outcome is not None and (outcome.phase, outcome.failed_steps) == expected


# ---------------------------------------------------------------- what they read


def test_the_exit_step_reads_the_outcome_in_its_command() -> None:
    p = plan(spec(), {"prep": ok("data"), "train": failed("out of memory"), "side": failed()})
    assert launched(p, "notify").task.command == ["notify", "Failed", "train,side", "r1"]
    p = plan(spec(), {"prep": ok("data"), "train": ok("model"), "side": ok()})
    assert launched(p, "notify").task.command == ["notify", "Succeeded", "", "r1"]


def test_run_message_is_the_steps_failure() -> None:
    s = spec([container("notify", "{{ run.message }}")])
    p = plan(s, {"prep": failed("disk full"), "side": ok()})
    assert launched(p, "notify").task.command == ["notify", "step 'prep' failed: disk full"]


def test_an_exit_step_reading_a_succeeded_steps_output_gets_it() -> None:
    s = spec([container("archive", inputs=[{"name": "m", "step": "train", "output": "model"}])])
    p = plan(s, {"prep": ok("data"), "train": ok("model"), "side": failed()})
    (inp,) = launched(p, "archive").task.inputs
    assert (inp.name, inp.digest) == ("m", D)


@pytest.mark.parametrize(
    ("train", "phase"),
    [(failed(), "Failed"), (StepState(phase=StepPhase.SKIPPED), "Skipped"), (None, "Cancelled")],
    ids=["failed", "skipped", "cancelled"],
)
def test_an_exit_step_reading_an_output_of_a_step_that_did_not_succeed_is_skipped(
    train: StepState | None, phase: str
) -> None:
    s = spec(
        [
            container("archive", inputs=[{"name": "m", "step": "train", "output": "model"}]),
            container("notify", "{{ run.phase }}"),
        ]
    )
    states = {"prep": ok("data") if train is not None else failed(), "side": ok()}
    if train is not None:
        states["train"] = train
    p = plan(s, states)
    skip = next(a for a in p.actions if isinstance(a, Skip))
    assert skip.step == "archive"
    assert skip.reason == f"input 'm' reads output 'model' of step 'train', which did not succeed ({phase})"
    assert ("Launch", "notify") in kinds(p)  # the other onExit step is not held back


def test_when_reads_the_runs_phase_and_failed_steps() -> None:
    s = spec(
        [
            container("on-failure", when="run.phase == 'Failed'"),
            container("on-success", when="run.phase == 'Succeeded'"),
            container("train-failed", when="'train' in run.failedSteps && steps.train.phase == 'Failed'"),
        ]
    )
    p = plan(s, {"prep": ok("data"), "train": failed(), "side": ok()})
    assert kinds(p) == [("Launch", "on-failure"), ("Skip", "on-success"), ("Launch", "train-failed")]


def test_exit_steps_are_never_cache_hits() -> None:
    s = spec()
    done = {"prep": ok("data"), "train": ok("model"), "side": ok()}
    key = launched(plan(s, done), "notify").task.cache_key
    cache = {key: CacheEntry(key=key, outputs=(), metrics={})}
    assert kinds(planner(s).plan(done, NOW, cache=cache)) == [("Launch", "notify")]
    # a step with the same kind of entry is a hit: the cache is consulted, only not for onExit steps
    prep_key = launched(plan(s, {}), "prep").task.cache_key
    hit = planner(s).plan({}, NOW, cache={prep_key: CacheEntry(key=prep_key, outputs=(), metrics={})})
    assert ("ReuseCached", "prep") in kinds(hit)


# ---------------------------------------------------------------- what the Run's outcome is

OUTCOME: list[tuple[str, dict[str, StepState], RunPhase, str, str, ConditionStatus]] = [
    (
        "steps failed, exit succeeded: Failed, the exit steps' success aside",
        {"prep": failed("boom"), "train": StepState(phase=StepPhase.CANCELLED), "side": ok(), "notify": ok()},
        RunPhase.FAILED,
        "StepFailed",
        EXIT_SUCCEEDED,
        ConditionStatus.TRUE,
    ),
    (
        "steps succeeded, exit failed: Succeeded, the failure recorded",
        {"prep": ok("data"), "train": ok("model"), "side": ok(), "notify": failed("smtp down")},
        RunPhase.SUCCEEDED,
        "AllStepsSucceeded",
        EXIT_FAILED,
        ConditionStatus.FALSE,
    ),
    (
        "steps failed, exit failed: Failed",
        {"prep": failed("boom"), "train": StepState(phase=StepPhase.CANCELLED), "side": ok(), "notify": failed("x")},
        RunPhase.FAILED,
        "StepFailed",
        EXIT_FAILED,
        ConditionStatus.FALSE,
    ),
    (
        "cancelled, exit succeeded: Cancelled",
        {k: StepState(phase=StepPhase.CANCELLED) for k in ("prep", "train", "side")} | {"notify": ok()},
        RunPhase.CANCELLED,
        "Cancelled",
        EXIT_SUCCEEDED,
        ConditionStatus.TRUE,
    ),
]


@pytest.mark.parametrize(
    ("states", "phase", "reason", "exit_reason", "condition"), [c[1:] for c in OUTCOME], ids=[c[0] for c in OUTCOME]
)
def test_the_runs_phase_is_the_steps_outcome(
    states: dict[str, StepState], phase: RunPhase, reason: str, exit_reason: str, condition: ConditionStatus
) -> None:
    p = plan(spec(), states, cancel=phase is RunPhase.CANCELLED)
    assert p.done and p.actions == ()
    assert (p.phase, p.reason, p.exit_reason) == (phase, reason, exit_reason)
    c = exit_condition(p, NOW, 3)
    assert c is not None and c.type == EXIT_CONDITION and (c.status, c.reason) == (condition, exit_reason)
    assert c.observed_generation == 3
    if exit_reason == EXIT_FAILED:
        assert "onExit step 'notify' failed" in p.message and "onExit step 'notify' failed" in c.message


def test_a_failing_exit_step_retries_under_its_own_policy_before_the_run_ends() -> None:
    s = spec([container("notify", retries={"limit": 1, "backoff": {"initialSeconds": 5}})])
    states: dict[str, StepState] = {"prep": ok("data"), "train": ok("model"), "side": ok()}
    p = plan(s, states)
    states = dict(p.states)
    states["notify"] = finished(states["notify"], s.on_exit[0], TaskResult(ok=False, message="503"), NOW)  # type: ignore[index]
    p = plan(s, states)
    assert p.phase is RunPhase.RUNNING and p.states["notify"].phase is StepPhase.WAITING
    assert p.wake_at == NOW + timedelta(seconds=5)
    assert exit_condition(p, NOW, None).status is ConditionStatus.UNKNOWN  # type: ignore[union-attr]


def test_one_failed_exit_step_does_not_stop_the_independent_ones_but_cancels_its_dependents() -> None:
    s = spec([container("first"), container("after-first", dependsOn=["first"]), container("other")])
    done = {"prep": ok("data"), "train": ok("model"), "side": ok()}
    p = plan(s, {**done, "first": failed(), "other": StepState()})  # fail-fast is on, yet `other` launches
    assert kinds(p) == [("Launch", "other")]
    p = plan(s, {**done, "first": failed(), "other": ok()})
    assert kinds(p) == [("CancelStep", "after-first")]
    assert p.states["after-first"].phase is StepPhase.CANCELLED
    assert p.phase is RunPhase.SUCCEEDED and p.exit_reason == EXIT_FAILED


def test_exit_steps_wait_for_earlier_exit_steps_and_respect_parallelism() -> None:
    s = spec([container("a"), container("b", dependsOn=["a"]), container("c"), container("d")])
    done = {"prep": ok("data"), "train": ok("model"), "side": ok()}
    p = planner(s, parallelism=2).plan(done, NOW, cache={})
    assert kinds(p) == [("Launch", "a"), ("Launch", "c")]
    p = planner(s, parallelism=2).plan({**dict(p.states), "a": ok()}, NOW, cache={})
    assert kinds(p) == [("Launch", "b")]  # c still runs: one slot


def test_cancel_exit_kills_running_exit_steps_and_cancels_the_rest() -> None:
    s = spec([container("slow"), container("later", dependsOn=["slow"])])
    states = {k: StepState(phase=StepPhase.CANCELLED) for k in ("prep", "train", "side")} | {"slow": running()}
    p = plan(s, states, cancel=True, cancel_exit=True)
    assert kinds(p) == [("Kill", "slow"), ("CancelStep", "later")]
    kill = p.actions[0]
    assert isinstance(kill, Kill) and kill.run_cancelled
    assert p.phase is RunPhase.RUNNING
    stopped = {**dict(p.states), "slow": StepState(phase=StepPhase.CANCELLED)}
    p = plan(s, stopped, cancel=True, cancel_exit=True)
    assert p.done and p.phase is RunPhase.CANCELLED and p.exit_reason == EXIT_CANCELLED
    assert exit_condition(p, NOW, None).status is ConditionStatus.FALSE  # type: ignore[union-attr]


def test_a_pipeline_without_exit_steps_plans_as_before() -> None:
    s = PipelineSpec.model_validate({"steps": [container("a")]})
    p = planner(s).plan({"a": ok()}, NOW, cache={})
    assert p.phase is RunPhase.SUCCEEDED and p.exit_reason == "" and exit_condition(p, NOW, None) is None
    assert "onExit" not in s.to_wire()  # the stored spec (and its digest) is unchanged for such pipelines


def test_convergence_every_plan_replayed_changes_nothing() -> None:
    """Apply each plan to a simulated world (launched attempts succeed), plan again: it ends, and a finished
    plan planned again has nothing to do."""
    s = spec([container("notify", "{{ run.phase }}"), container("after", dependsOn=["notify"])])
    states: dict[str, StepState] = {}
    steps = {x.name: x for x in s.all_steps()}
    for _ in range(10):
        p = plan(s, states)
        states = dict(p.states)
        if p.done:
            break
        for a in p.actions:
            if isinstance(a, Launch):
                result = TaskResult(ok=a.step != "train", message="no", outputs=[])
                if a.step == "prep":
                    result = TaskResult(ok=True, outputs=[ArtifactRef(name="data", uri="u", digest=D)])
                states[a.key] = finished(states[a.key], steps[a.step], result, NOW)
    assert p.done and p.phase is RunPhase.FAILED and p.exit_reason == EXIT_SUCCEEDED
    assert states["notify"].phase is StepPhase.SUCCEEDED and states["after"].phase is StepPhase.SUCCEEDED
    again = plan(s, states)
    assert again.actions == () and again.phase is RunPhase.FAILED and dict(again.states) == states


def test_step_order_lists_the_steps_then_the_exit_steps() -> None:
    s = spec([container("z", dependsOn=["y"]), container("y")])
    assert step_order(s) == ["prep", "train", "side", "y", "z"]


# ---------------------------------------------------------------- validation


def document(steps: list[dict[str, Any]] | None = None, on_exit: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": {
            "steps": steps
            if steps is not None
            else [container("prep", outputs=[{"name": "data"}]), container("train", dependsOn=["prep"])],
            "onExit": on_exit if on_exit is not None else [container("notify")],
        },
    }


INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "a name used by a step and an onExit step",
        document(on_exit=[container("train")]),
        "spec.onExit[0].name",
        "duplicate step name 'train' (names are unique across steps and onExit)",
    ),
    (
        "two onExit steps of one name",
        document(on_exit=[container("n"), container("n")]),
        "spec.onExit[1].name",
        "duplicate step name 'n'",
    ),
    (
        "a step reading an onExit step's output",
        document(
            steps=[container("a", inputs=[{"name": "x", "step": "notify", "output": "o"}])],
            on_exit=[container("notify", outputs=[{"name": "o"}])],
        ),
        "spec.steps[0].inputs[0].step",
        "'notify' is an onExit step: a step cannot read an output of one",
    ),
    (
        "a step depending on an onExit step",
        document(steps=[container("a", dependsOn=["notify"])]),
        "spec.steps[0].dependsOn[0]",
        "'notify' is an onExit step: a step cannot depend on one",
    ),
    (
        "onExit steps in a cycle",
        document(on_exit=[container("x", dependsOn=["y"]), container("y", dependsOn=["x"])]),
        "spec.onExit",
        "the onExit steps form a cycle",
    ),
    (
        "an onExit step depending on a step that does not exist",
        document(on_exit=[container("n", dependsOn=["nope"])]),
        "spec.onExit[0].dependsOn[0]",
        "unknown step 'nope'",
    ),
    (
        "an onExit step reading an output a step does not have",
        document(on_exit=[container("n", inputs=[{"name": "x", "step": "prep", "output": "model"}])]),
        "spec.onExit[0].inputs[0].output",
        "step 'prep' has no output 'model' (outputs: data)",
    ),
    (
        "the outcome read by a step, which runs before it is known",
        document(steps=[container("a", "{{ run.phase }}")]),
        "spec.steps[0].container.command[1]",
        "{{ run.phase }} is only defined in an onExit step",
    ),
    (
        "an unknown run field in an onExit step",
        document(on_exit=[container("n", "{{ run.status }}")]),
        "spec.onExit[0].container.command[1]",
        "unknown template variable 'run.status'",
    ),
    (
        "a step's condition reading run",
        document(steps=[container("a", when="run.phase == 'Failed'")]),
        "spec.steps[0].when",
        "unknown variable 'run'",
    ),
    (
        "an onExit condition reading an unknown run field",
        document(on_exit=[container("n", when="run.status == 'Failed'")]),
        "spec.onExit[0].when",
        "unknown run field 'status'",
    ),
    (
        "an onExit condition reading an onExit step that is not upstream (a cycle waiting to happen)",
        document(on_exit=[container("x", when="steps.y.phase == 'Failed'"), container("y")]),
        "spec.onExit[0].when",
        "reads step 'y', which is not upstream of 'x': add it to dependsOn",
    ),
    (
        "an onExit step waiting for approval",
        document(on_exit=[container("n", approval={"message": "ok?"})]),
        "spec.onExit[0].approval",
        "an onExit step cannot wait for approval",
    ),
    (
        "an onExit step mounting a volume nobody declares",
        document(on_exit=[container("n", pod={"volumeMounts": [{"name": "v", "mountPath": "/data"}]})]),
        "spec.onExit[0].pod.volumeMounts[0].name",
        "mounts volume 'v', which is not declared",
    ),
]


@pytest.mark.parametrize(("doc", "path", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_exit_steps_are_named_by_field(doc: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(InvalidSpec) as e:
        parse_document(doc)
    found = [i for i in e.value.issues if i.path == path]
    assert found, f"no issue at {path}: {e.value}"
    assert any(message in i.message for i in found), str(e.value)


VALID: list[tuple[str, dict[str, Any]]] = [
    (
        "an onExit step reading a step's output, the outcome and the run's name",
        document(
            on_exit=[
                container(
                    "n",
                    "{{ run.phase }}",
                    "{{ run.failedSteps }}",
                    "{{ run.message }}",
                    "{{ run.name }}",
                    "{{ inputs.x }}",
                    inputs=[{"name": "x", "step": "prep", "output": "data"}],
                )
            ]
        ),
    ),
    (
        "an onExit step after another, reading its output and, in its condition, any step",
        document(
            on_exit=[
                container(
                    "m", inputs=[{"name": "x", "step": "n", "output": "o"}], when="steps.train.phase == 'Failed'"
                ),
                container("n", outputs=[{"name": "o"}], when="run.phase != 'Succeeded' && 'train' in run.failedSteps"),
            ]
        ),
    ),
    (
        "an onExit step depending on a step (an order that always holds)",
        document(on_exit=[container("n", dependsOn=["train"])]),
    ),
]


@pytest.mark.parametrize("doc", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_exit_steps(doc: dict[str, Any]) -> None:
    parsed = parse_document(doc)
    assert isinstance(parsed, Pipeline) and parsed.spec.on_exit


def test_the_local_runner_rejects_pod_settings_of_an_exit_step_by_its_path() -> None:
    doc = document(on_exit=[container("n", pod={"nodeSelector": {"disk": "ssd"}})])
    parsed = parse_document(doc)
    assert isinstance(parsed, Pipeline)
    issues = unsupported(parsed.spec, LOCAL)
    assert [i.path for i in issues] == ["spec.onExit[0].pod.nodeSelector"]
