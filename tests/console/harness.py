"""The web console's browser-test harness: real local runs, a real `conveyor ui`, Debian's Chromium.

Test harness code (tests/console/conftest.py registers the fixtures). A missing Chromium or Playwright fails the tests with the command that installs it;
it never skips them. The state is made once per module by the local runner itself (`conveyor run`):
a small pipeline twice (with a fan-out, metrics, an output, plots, and values that look like HTML
and like secrets), one that fails, one whose pipeline name is an HTML tag, and one record written by
hand whose step name is HTML, since the runner itself only accepts DNS labels.
Screenshots of every page go to pytest's temporary directory, never into the repository.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

PY = sys.executable
CHROMIUM = os.environ.get("CONVEYOR_CHROMIUM", "/usr/bin/chromium")
# As root on a closed network: no sandbox, and none of Chromium's own connections out (they are refused).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

SECRETS = ("hunter2", "s3cr3t-value", "abcdEFGH1234")  # put into the state; must never reach the browser
HTML_PIPELINE = "<img src=x onerror=window.__xss=1>"
HTML_STEP = '<img src=x onerror="window.__xss=2">'

# A container step that writes a `plots` output the way evaluate does: a zip with index.json and PNGs.
PLOTS_SCRIPT = r"""
import json, os, struct, zipfile, zlib
def png(w, h):
    raw = b"".join(b"\x00" + b"\x1e\x6b\x1e" * w for _ in range(h))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
with zipfile.ZipFile(os.path.join(os.environ["CONVEYOR_OUTPUTS_DIR"], "plots"), "w") as z:
    z.writestr("index.json", json.dumps({"plots": [{"file": "roc.png", "title": "ROC <curve>"}]}))
    z.writestr("roc.png", png(40, 30))
print("wrote the plots")
"""


def py_step(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "container": {"image": "local", "command": [PY, "-c", code]}, **extra}


def small_pipeline(plots_script: Path) -> dict[str, Any]:
    make = (
        "import json, os\n"
        "open(os.path.join(os.environ['CONVEYOR_OUTPUTS_DIR'], 'data'), 'w').write('x' * 100)\n"
        "print('<script>alert(1)</script> made data')\n"
        "print('the password is', os.environ['PASSWORD'] == 'hunter2')\n"
        "json.dump({'rows': 100, '<i>odd</i>': 1}, open(os.environ['CONVEYOR_METRICS_FILE'], 'w'))\n"
    )
    use = "import json, os; json.dump({'score': {{ params.rate }}}, open(os.environ['CONVEYOR_METRICS_FILE'], 'w'))"
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "small"},
        "spec": {
            "parameters": [
                {"name": "rate", "type": "number", "default": 0.5},
                {"name": "note", "type": "string", "default": "<b>bold</b>"},
                {"name": "api_token", "type": "string", "default": "s3cr3t-value"},
            ],
            "steps": [
                {
                    "name": "make",
                    "container": {
                        "image": "local",
                        "command": [PY, "-c", make],
                        "env": [{"name": "PASSWORD", "value": "hunter2"}],
                    },
                    "outputs": [{"name": "data"}],
                },
                py_step(
                    "fan",
                    "print('item {{ item }} at rate {{ params.rate }}')",
                    forEach={"items": [1, 2, 3]},
                    dependsOn=["make"],
                ),
                py_step("use", use, inputs=[{"name": "data", "step": "make", "output": "data"}]),
                {
                    "name": "plot",
                    "container": {"image": "local", "command": [PY, str(plots_script)]},
                    "outputs": [{"name": "plots"}],
                    "dependsOn": ["use"],
                },
            ],
        },
    }


def broken_pipeline() -> dict[str, Any]:
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "broken"},
        "spec": {
            "steps": [
                py_step("prepare", "print('AWS_SECRET_ACCESS_KEY=abcdEFGH1234 printed by mistake'); print('prepared')"),
                py_step(
                    "explode",
                    "import sys; print('<b>about to fail</b>'); sys.exit(3)",
                    dependsOn=["prepare"],
                    retries={"limit": 1, "backoff": {"initialSeconds": 0.1}},
                ),
                py_step("never", "print(1)", dependsOn=["explode"]),
            ]
        },
    }


def slow_pipeline(gate: Path) -> dict[str, Any]:
    """A run whose second step runs until the test creates `gate` (at most a minute), however busy the machine."""
    wait = (
        "import pathlib, time\n"
        "print('waiting now', flush=True)\n"
        f"gate, t0 = pathlib.Path({str(gate)!r}), time.monotonic()\n"
        "while not gate.exists() and time.monotonic() - t0 < 60:\n"
        "    time.sleep(0.05)\n"
        "print('done waiting')\n"
    )
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "slow"},
        "spec": {"steps": [py_step("first", "print('first done')"), py_step("wait", wait, dependsOn=["first"])]},
    }


def ml_pipeline() -> dict[str, Any]:
    """Real built-in components: ingest scikit-learn's iris, split, fit the preprocessing, train a small tree;
    then a container step that reads the model with a password in its environment (never to be shown)."""
    publish = (
        "import os; print('published', os.path.getsize(os.path.join(os.environ['CONVEYOR_INPUTS_DIR'], 'model')) > 0)"
    )
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "iris"},
        "spec": {
            "description": "Iris <species> from the measurements",
            "parameters": [
                {"name": "depth", "type": "integer", "default": 2, "description": "the tree's max_depth"},
                {"name": "api_token", "type": "string", "default": "s3cr3t-value"},
            ],
            "steps": [
                {"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://iris"}},
                {
                    "name": "split",
                    "uses": "split",
                    "inputs": [{"name": "dataset", "step": "ingest", "output": "dataset"}],
                    "with": {"label": "target", "test_size": 0.3, "seed": 1},
                },
                {
                    "name": "preprocess",
                    "uses": "preprocess",
                    "inputs": [{"name": "train", "step": "split", "output": "train"}],
                    "with": {"label": "target"},
                },
                {
                    "name": "train",
                    "uses": "train",
                    "inputs": [
                        {"name": "train", "step": "split", "output": "train"},
                        {"name": "transformer", "step": "preprocess", "output": "transformer"},
                    ],
                    "with": {
                        "label": "target",
                        "estimator": "sklearn.tree.DecisionTreeClassifier",
                        "params": {"max_depth": "{{ params.depth }}"},
                    },
                },
                {
                    "name": "publish",
                    "container": {
                        "image": "local",
                        "command": [PY, "-c", publish],
                        "env": [{"name": "PASSWORD", "value": "hunter2"}],
                    },
                    "inputs": [{"name": "model", "step": "train", "output": "model"}],
                },
            ],
        },
    }


def conveyor(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-m", "conveyor.cli.main", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def run_pipeline(doc: dict[str, Any], work: Path, *params: str) -> subprocess.Popen[str]:
    """`conveyor run FILE --json` started in `work` (state in work/.conveyor); finish it with `record_of`."""
    name = f"{doc['metadata']['name'].strip('<>').split()[0]}-{len(list(work.glob('*.yaml')))}.yaml"
    path = work / name
    path.write_text(yaml.safe_dump(doc))
    return conveyor("run", str(path), "--no-progress", "--json", *[a for p in params for a in ("-p", p)], cwd=work)


def record_of(proc: subprocess.Popen[str], expect_ok: bool = True) -> dict[str, Any]:
    out, err = proc.communicate(timeout=120)
    assert (proc.returncode == 0) == expect_ok, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-2000:]}"
    record: dict[str, Any] = json.loads(out[out.index("{\n") :])
    return record


@dataclass
class State:
    work: Path
    state_dir: Path
    first: dict[str, Any]  # small, defaults
    second: dict[str, Any]  # small, rate=0.7
    failed: dict[str, Any]
    html: dict[str, Any]  # pipeline named HTML_PIPELINE
    forged: dict[str, Any]  # written by hand: a step named HTML_STEP

    def records(self) -> list[dict[str, Any]]:
        return [self.first, self.second, self.failed, self.html, self.forged]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> State:
    work = tmp_path_factory.mktemp("console")
    plots = work / "make_plots.py"
    plots.write_text(PLOTS_SCRIPT)
    first = record_of(run_pipeline(small_pipeline(plots), work))
    later = [
        run_pipeline(small_pipeline(plots), work, "rate=0.7"),
        run_pipeline(broken_pipeline(), work),
        run_pipeline({**small_pipeline(plots), "metadata": {"name": HTML_PIPELINE}}, work),
    ]
    second, failed, html = record_of(later[0]), record_of(later[1], expect_ok=False), record_of(later[2])
    state_dir = work / ".conveyor"
    forged = json.loads(json.dumps(first).replace('"make"', json.dumps(HTML_STEP)))
    forged.update(runId="forged-20200101-000000-abcdef", name="forged-20200101-000000-abcdef", pipeline="forged")
    forged["startedAt"] = "2020-01-01T00:00:00+00:00"
    forged_dir = state_dir / "runs" / forged["runId"]
    forged_dir.mkdir(parents=True)
    (forged_dir / "record.json").write_text(json.dumps(forged))
    return State(work, state_dir, first, second, failed, html, forged)


@dataclass
class Console:
    url: str
    process: subprocess.Popen[str]


@pytest.fixture(scope="module")
def console(state: State) -> Iterator[Console]:
    """`conveyor ui` as a real HTTP server on a free loopback port (its log in the work directory)."""
    with serving(state.work, state.state_dir) as running:
        yield running


@contextlib.contextmanager
def serving(work: Path, state_dir: Path) -> Iterator[Console]:
    """`conveyor ui --state-dir STATE_DIR` until the block ends, then Ctrl-C; its log must hold no error."""
    with serving_with(work, ["--state-dir", str(state_dir)]) as running:
        yield running


@contextlib.contextmanager
def serving_with(work: Path, args: list[str], env: dict[str, str] | None = None) -> Iterator[Console]:
    """`conveyor ui ARGS...` on a free loopback port until the block ends, then Ctrl-C (as `serving`)."""
    log_path = work / "ui.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [PY, "-m", "conveyor.cli.main", "ui", *args, "--host", "127.0.0.1", "--port", "0"],
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
    assert proc.stdout is not None
    with proc.stdout:
        line = proc.stdout.readline()  # the address, then nothing more on stdout
        if " on http://" not in line:
            proc.kill()
            proc.wait()
            pytest.fail(f"conveyor ui did not start: {line}{log_path.read_text()[-3000:]}")
        yield Console(line.rsplit(" on ", 1)[1].strip(), proc)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert code == 0, f"conveyor ui exited {code} on Ctrl-C"
    errors = [ln for ln in log_path.read_text().splitlines() if " ERROR " in ln or "Traceback" in ln]
    assert errors == [], log_path.read_text()[-3000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright: never a browser Playwright would download.

    Module scope, not session: Playwright's sync API keeps an asyncio loop marked running on the
    main thread until it stops, and every later test calling asyncio.run() would be refused.
    """
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        found = shutil.which("chromium")
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM} ({'found ' + found if found else 'not on PATH either'}): "
            "run hack/install-chromium.sh (or set CONVEYOR_CHROMIUM)",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[dev]'", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@dataclass
class Watched:
    """A page plus everything it received and every script error or dialog it had."""

    page: Any
    bodies: list[tuple[str, bytes]]
    errors: list[str]


@pytest.fixture
def page(
    browser: Any, console: Console, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Watched]:
    context = browser.new_context(timezone_id="UTC", viewport={"width": 1280, "height": 900}, base_url=console.url)
    context.set_default_timeout(10_000)
    pg = context.new_page()
    watched = Watched(pg, [], [])

    def on_response(response: Any) -> None:
        with contextlib.suppress(Exception):  # a redirect or an aborted request has no body
            watched.bodies.append((response.url, response.body()))

    pg.on("response", on_response)
    pg.on("pageerror", lambda e: watched.errors.append(f"page error: {e}"))
    # a Content-Security-Policy violation, a failed request or a script error is reported on the console
    pg.on("console", lambda m: watched.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("dialog", lambda d: (watched.errors.append(f"dialog: {d.message}"), d.dismiss()))
    yield watched
    shots = tmp_path_factory.getbasetemp() / "screenshots"
    shots.mkdir(exist_ok=True)
    pg.screenshot(path=str(shots / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert watched.errors == []
    assert all(s.encode() not in body for s in SECRETS for _, body in watched.bodies)


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def call(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request through the ASGI interface, no server."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raw, _, query = path.partition("?")
    scope = {
        "type": "http",
        "method": method,
        "path": raw,
        "raw_path": raw.encode(),
        "query_string": query.encode(),
        "headers": headers or [],
    }
    # in a thread of its own: the browser tests' Playwright keeps an event loop running in this one
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, app(scope, receive, send)).result()
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]
