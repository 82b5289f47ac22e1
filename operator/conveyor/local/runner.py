"""The local runner: the run planner driving subprocesses and a directory store (no cluster needed).

Each step runs through the same step runtime a cluster Job uses (`python -m conveyor.runtime`),
independent steps in parallel, outputs content-addressed in .conveyor/store, so an unchanged
re-run is all cache hits. Everything it decides comes from conveyor.core; this module only
starts processes, waits for them, and shows progress.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conveyor import __version__
from conveyor.api.pipeline import PipelineSpec
from conveyor.api.run import RunPhase, StepPhase
from conveyor.core.envfile import local_step_env
from conveyor.core.planner import (
    Kill,
    Launch,
    Plan,
    RunContext,
    RunPlanner,
    StepState,
    finished,
    killed,
    step_order,
)
from conveyor.core.record import LOG_LIMIT_BYTES, log_document, record_document, run_record
from conveyor.core.task import StoreConfig, TaskResult, TaskSpec, step_of
from conveyor.core.validation import InvalidSpec
from conveyor.storage.cache import StoreCache
from conveyor.storage.digest import sha256_file
from conveyor.storage.local import LocalStore


@dataclass
class _Attempt:
    process: subprocess.Popen[bytes]
    log_path: Path
    killed_by: Kill | None = None


@dataclass
class RunOutcome:
    run_id: str
    phase: RunPhase
    reason: str
    message: str
    record_path: Path
    states: dict[str, StepState]
    order: list[str]
    seconds: float
    logs: dict[str, Path] = field(default_factory=dict)
    exit_reason: str = ""
    """Where the onExit steps ended ("" without any): AllSucceeded, StepFailed or Cancelled."""
    exit_message: str = ""


def _now() -> datetime:
    return datetime.now(UTC)


def _external_digests(spec: PipelineSpec) -> dict[str, str]:
    """Digests of local external inputs and of the local files components read (an ingest's `file://`
    source, when not templated), so a changed file changes the cache key."""
    from conveyor.components.registry import UnknownComponentError, get_component  # noqa: PLC0415

    uris = []
    for step in spec.all_steps():
        uris += [i.uri for i in step.inputs if i.uri and not i.digest]
        if step.uses is not None:
            with contextlib.suppress(UnknownComponentError):
                uris += get_component(step.uses).content_uris(step.with_ or {})
    out = {}
    for uri in uris:
        if uri.startswith("file://") and "{{" not in uri:
            path = Path(urllib.request.url2pathname(uri.removeprefix("file://")))
            if path.is_file():
                out[uri] = sha256_file(path)
    return out


class LocalRunner:
    """Runs one pipeline to completion on this machine."""

    def __init__(
        self,
        spec: PipelineSpec,
        params: Mapping[str, Any],
        *,
        pipeline_name: str,
        state_dir: Path,
        parallelism: int | None = None,
        on_update: Any = None,
        env_file: Mapping[str, str] | None = None,
    ) -> None:
        """`env_file`: the values of `conveyor run --env-file` (None: no file), which fill the steps' `pod.env`
        valueFrom variables by name. They reach the step processes' environment only: not the task files, the
        record, the cache keys or any log line of the runner's."""
        step_env, issues = local_step_env(spec, env_file)
        if issues:
            raise InvalidSpec(issues, "pod env")
        self._step_env = step_env
        self.spec = spec
        self.params = dict(params)
        self.pipeline_name = pipeline_name
        self.state_dir = state_dir.resolve()
        self.store = LocalStore(self.state_dir / "store")
        self.cache = StoreCache(self.store)
        self.run_id = f"{pipeline_name}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        self.run_dir = self.state_dir / "runs" / self.run_id
        self.order = step_order(spec)
        self.planner = RunPlanner(
            spec,
            self.params,
            RunContext(
                run_id=self.run_id,
                name=self.run_id,
                namespace="local",
                code_version=__version__,
                store=StoreConfig(kind="local", root=str(self.store.root)),
            ),
            parallelism=parallelism or spec.parallelism or os.cpu_count() or 2,
        )
        self.states: dict[str, StepState] = {}
        self.logs: dict[str, Path] = {}
        self._attempts: dict[str, _Attempt] = {}
        self._events: queue.Queue[tuple[str, TaskResult | Kill]] = queue.Queue()
        self.on_update = on_update
        self._cancel = False
        self._cancel_exit = False

    # ------------------------------------------------------------ carrying out actions

    def _launch(self, action: Launch) -> None:
        task, key = action.task, action.key
        attempt_dir = self.run_dir / "steps" / f"{key}-{task.attempt}"
        attempt_dir.mkdir(parents=True, exist_ok=True)
        task_file, result_file = attempt_dir / "task.json", attempt_dir / "result.json"
        task_file.write_text(task.model_dump_json(indent=2))
        log_path = self.run_dir / "logs" / f"{key}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        offset = log.tell()
        log.write(f"--- attempt {task.attempt} at {_now().isoformat()}\n".encode())
        log.flush()
        env = {**os.environ, **self._step_env.get(action.step, {}), "PYTHONUNBUFFERED": "1"}
        env.pop("CONVEYOR_TERMINATION_LOG", None)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "conveyor.runtime",
                str(task_file),
                "--result",
                str(result_file),
                "--workdir",
                str(attempt_dir / "work"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the runner, which stops the children itself
        )
        log.close()
        self._attempts[key] = _Attempt(proc, log_path)
        self.logs[key] = log_path

        def wait() -> None:
            code = proc.wait()
            attempt = self._attempts.get(key)
            result: TaskResult | Kill
            if attempt is not None and attempt.killed_by is not None:
                result = attempt.killed_by
            elif result_file.exists():
                result = TaskResult.model_validate_json(result_file.read_text())
            else:
                result = TaskResult(ok=False, message=f"the step process exited with code {code} without a result")
            if isinstance(result, TaskResult) and not result.ok and not result_file.exists():  # the runtime died
                result = result.model_copy(update={"message": _with_log_tail(result.message, log_path)})
            self._archive_log(task, log_path, offset)
            self._events.put((key, result))

        threading.Thread(target=wait, name=f"wait-{key}", daemon=True).start()

    def _archive_log(self, task: TaskSpec, log_path: Path, offset: int) -> None:
        """Store this attempt's part of the step's log under the same name a cluster step uses, so one CLI reads
        both (the runtime stored what it printed; this copy also has whatever it could not, like a crash)."""
        try:
            with log_path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            if len(data) > LOG_LIMIT_BYTES:
                dropped = len(data) - LOG_LIMIT_BYTES
                data = f"[... {dropped} earlier bytes dropped ...]\n".encode() + data[-LOG_LIMIT_BYTES:]
            self.store.put_text(log_document(self.run_id, task.key, task.attempt), data.decode(errors="replace"))
        except OSError:
            pass  # the log stays on disk; the archive is a copy

    def _kill(self, kill: Kill) -> None:
        attempt = self._attempts.get(kill.key)
        if attempt is None or attempt.process.poll() is not None:
            return
        if attempt.killed_by is None:
            attempt.killed_by = kill
            with contextlib.suppress(ProcessLookupError):
                os.killpg(attempt.process.pid, signal.SIGTERM)
            hard = threading.Timer(10, self._kill_hard, args=(attempt,))
            hard.daemon = True  # never keeps `conveyor run` alive after the run has finished
            hard.start()

    @staticmethod
    def _kill_hard(attempt: _Attempt) -> None:
        if attempt.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(attempt.process.pid, signal.SIGKILL)

    def _apply(self, plan: Plan) -> None:
        """Keep the plan's states, then carry out what needs a process."""
        self.states = dict(plan.states)
        for action in plan.actions:
            if isinstance(action, Launch):
                self._launch(action)
            elif isinstance(action, Kill):
                self._kill(action)

    def _on_result(self, key: str, result: TaskResult | Kill) -> None:
        step = next(s for s in self.spec.all_steps() if s.name == step_of(key))
        if isinstance(result, Kill):
            state = killed(self.states[key], step, result, _now())
        else:
            state = finished(self.states[key], step, result, _now())
        self.states[key] = state
        self._attempts.pop(key, None)
        if state.phase is StepPhase.SUCCEEDED and state.cache_key and step.cache.enabled:
            self.cache.record(state.cache_key, self.run_id, key, state.outputs, state.metrics)

    # ------------------------------------------------------------ the loop

    def cancel(self) -> None:
        self._cancel = True

    def run(self) -> RunOutcome:
        started_at = _now()
        t0 = time.monotonic()
        external = _external_digests(self.spec)
        plan = Plan((), RunPhase.RUNNING)
        interrupts = 0
        while True:
            try:
                plan = self.planner.plan(
                    self.states,
                    _now(),
                    cache=self.cache,
                    external_digests=external,
                    cancel=self._cancel,
                    run_started_at=started_at,
                    cancel_exit=self._cancel_exit,
                )
                self._apply(plan)
                self._notify()
                if plan.done:
                    break
                self._wait(plan)
            except KeyboardInterrupt:
                interrupts += 1
                self._cancel = True
                if interrupts > 1:  # a second Ctrl-C: stop waiting politely, and skip the onExit steps too
                    self._cancel_exit = True
                    for attempt in list(self._attempts.values()):
                        self._kill_hard(attempt)
        seconds = time.monotonic() - t0
        record_path = self._write_record(plan, started_at, seconds, external)
        return RunOutcome(
            self.run_id,
            plan.phase,
            plan.reason,
            plan.message,
            record_path,
            dict(self.states),
            self.order,
            seconds,
            dict(self.logs),
            plan.exit_reason,
            plan.exit_message,
        )

    def _wait(self, plan: Plan) -> None:
        timeout = 0.25
        if plan.wake_at is not None:
            timeout = max(0.0, min(timeout, (plan.wake_at - _now()).total_seconds()))
        try:
            step, result = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        self._on_result(step, result)
        while True:  # drain whatever else finished meanwhile
            try:
                step, result = self._events.get_nowait()
            except queue.Empty:
                return
            self._on_result(step, result)

    def _notify(self) -> None:
        if self.on_update is not None:
            self.on_update(self)

    def _write_record(self, plan: Plan, started_at: datetime, seconds: float, external: Mapping[str, str]) -> Path:
        record = run_record(
            run_id=self.run_id,
            run_name=self.run_id,
            namespace="local",
            pipeline=self.pipeline_name,
            spec=self.spec,
            parameters=self.params,
            code_version=__version__,
            states=self.states,
            phase=plan.phase,
            reason=plan.reason,
            message=plan.message,
            started_at=started_at,
            finished_at=_now(),
            external_digests=external,
            exit_steps=(plan.exit_reason, plan.exit_message) if plan.exit_reason else None,
            environment={
                "conveyor": __version__,
                "python": platform.python_version(),
                "scikit-learn": _version_of("scikit-learn"),
                "platform": platform.platform(),
            },
        )
        record["seconds"] = round(seconds, 3)
        for step in record["steps"]:
            step["log"] = str(self.logs[step["name"]]) if step["name"] in self.logs else None
        for items in (record.get("items") or {}).values():
            for u in items:
                u["log"] = str(self.logs[str(u["key"])]) if u["key"] in self.logs else None
        path = self.run_dir / "record.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2, default=str))
        self.store.put_document(record_document(self.run_id), record)
        return path


def _version_of(distribution: str) -> str | None:
    """A package's version from its metadata (importing scikit-learn just to ask would cost a second)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _with_log_tail(message: str | None, log_path: Path, lines: int = 15) -> str:
    """A failure message plus the last lines of the step's log, trimmed."""
    try:
        tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        tail = []
    text = message or "the step failed"
    if tail:
        text += "\n--- last log lines:\n" + "\n".join(line[:300] for line in tail)
    return text[-3500:]
