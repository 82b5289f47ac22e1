"""The local runner's terminal view: a live table of steps, then a one-screen summary."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from conveyor.api.pipeline import PipelineSpec
from conveyor.api.run import RunPhase, StepPhase
from conveyor.core.planner import StepState
from conveyor.local.runner import LocalRunner, RunOutcome

_STYLE = {
    StepPhase.PENDING: "dim",
    StepPhase.WAITING: "yellow",
    StepPhase.RUNNING: "cyan",
    StepPhase.SUCCEEDED: "green",
    StepPhase.FAILED: "bold red",
    StepPhase.SKIPPED: "dim",
    StepPhase.CANCELLED: "magenta",
}


def _duration(s: StepState) -> str:
    if s.started_at is None:
        return ""
    end = s.finished_at or datetime.now(UTC)
    return f"{(end - s.started_at).total_seconds():.1f}s"


def _metrics(m: Mapping[str, float], limit: int = 4) -> str:
    return "  ".join(f"{k}={v:.4g}" for k, v in list(m.items())[:limit])


def steps_table(order: list[str], states: Mapping[str, StepState], title: str) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for col in ("step", "phase", "attempts", "time", "cache", "metrics"):
        table.add_column(col)
    for name in order:
        s = states.get(name, StepState())
        table.add_row(
            name,
            Text(s.phase.value, style=_STYLE[s.phase]),
            str(s.attempts or ""),
            _duration(s),
            "hit" if s.cache_hit else "",
            _metrics(s.metrics),
        )
    return table


def summary(outcome: RunOutcome, console: Console) -> None:
    style = {"Succeeded": "bold green", "Failed": "bold red", "Cancelled": "magenta"}.get(outcome.phase.value, "")
    console.print(steps_table(outcome.order, outcome.states, f"run {outcome.run_id}"))
    hits = sum(1 for name in outcome.order if outcome.states.get(name, StepState()).cache_hit)  # steps, not items
    console.print(
        Text(f"{outcome.phase.value}", style=style),
        f"in {outcome.seconds:.1f}s;",
        f"{hits}/{len(outcome.order)} steps from cache",
        highlight=False,
    )
    if outcome.phase is not RunPhase.SUCCEEDED and outcome.message:
        console.print(Text(outcome.message, style="red"))
    elif outcome.exit_reason and outcome.exit_reason != "AllSucceeded":
        console.print(Text(outcome.exit_message, style="red"))  # the steps succeeded, a cleanup did not
    metrics = {f"{n}.{k}": v for n in outcome.order for k, v in outcome.states.get(n, StepState()).metrics.items()}
    if metrics:
        console.print("metrics:")
        for k, v in metrics.items():
            console.print(f"  {k} = {v:.6g}", highlight=False)
    console.print(f"record: {outcome.record_path}", highlight=False)
    for name, log in outcome.logs.items():
        if outcome.states[name].phase is StepPhase.FAILED:
            console.print(f"log of {name}: {log}", highlight=False)


def run_with_progress(
    spec: PipelineSpec,
    params: Mapping[str, Any],
    *,
    pipeline_name: str,
    state_dir: Path,
    parallelism: int | None,
    console: Console,
    live: bool,
    env_file: Mapping[str, str] | None = None,
) -> RunOutcome:
    if any(s.resources for s in spec.steps):
        console.print("note: step resources are not enforced by the local runner", style="yellow")
    runner = LocalRunner(
        spec, params, pipeline_name=pipeline_name, state_dir=state_dir, parallelism=parallelism, env_file=env_file
    )
    if live and console.is_terminal:
        with Live(console=console, refresh_per_second=4, transient=True) as view:

            def update(r: LocalRunner) -> None:
                view.update(Group(steps_table(r.order, r.states, f"run {r.run_id}")))

            runner.on_update = update
            outcome = runner.run()
    else:
        seen: dict[str, StepPhase] = {}

        def report(r: LocalRunner) -> None:
            for name in r.order:
                phase = r.states.get(name, StepState()).phase
                if seen.get(name) != phase and phase is not StepPhase.PENDING:
                    seen[name] = phase
                    console.print(
                        f"{datetime.now(UTC):%H:%M:%S} {name}: {phase.value}"
                        f"{' (cache hit)' if r.states[name].cache_hit else ''}",
                        highlight=False,
                    )

        runner.on_update = report
        outcome = runner.run()
    summary(outcome, console)
    return outcome
