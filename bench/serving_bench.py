"""The serving benchmark: Conveyor's model server against MLServer, KServe and BentoML, side by side, with wrk.

KServe (0.21.0, bench/peers/kserve_sklearn.py: sklearnserver's model class on kserve.ModelServer) and
BentoML (1.4.40, bench/peers/bentoml_sklearn.py: a @bentoml.service taking the v2 body) get venvs of
their own in the cache dir like MLServer, and the same joblib file and the same `columns` body
(`--peers` picks which). The table gives each cell's ratio to the best peer and the issue-21 goals.

Both servers serve the same fitted objects: a LogisticRegression and a RandomForestClassifier (100
trees) trained by our components (ingest, preprocess, train) on scikit-learn's breast_cancer (30
float features), so each is a Pipeline with the fitted ColumnTransformer in front. Ours loads the
conveyor.model/v1 artifact (skops); MLServer loads the same object dumped with joblib into
mlserver-sklearn, installed by this script into a venv of its own in the cache dir (pinned:
MLServer 1.7.1, uvloop 0.21.0, and the scikit-learn/numpy/pandas versions of our venv so that the
same object loads). MLServer runs in its best configuration on two cores (parallel_workers=0, one
process) with its access log off (debug=false); ours runs with its defaults.

Requests (Open Inference Protocol v2, `POST /v2/models/{name}/infer`, FP32):
  columns   one [N] tensor per feature plus `"parameters": {"content_type": "pd"}`: the one form in
            which MLServer can feed a DataFrame to a ColumnTransformer pipeline; sent to both servers
  tensor    one [N, 30] tensor (ours only: MLServer would pass a bare ndarray to the pipeline)
  binary    one [N, 30] tensor and the output in the binary tensor extension (ours only)
N is 1 or 1,000. Load: wrk (a Lua script POSTs a fixed body), 1, 8 and 64 connections, each cell
DURATION seconds, REPEATS times with the two servers alternating, median reported. Before any load
every server's answer is checked against the model in-process.

Usage: .venv/bin/python bench/serving_bench.py [--duration 8] [--repeats 3] [--connections 1,8,64]
Writes bench/results/serving-<UTC date>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "conveyor-bench"
MLSERVER_PINS = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"]
# kserve 0.21.0 requires pandas<3 (ours is 3.x): its venv gets the newest 2.x; every 0.15.1+ release says so.
KSERVE_PINS = ["kserve==0.21.0", "pandas==2.3.3"]
BENTOML_PINS = ["bentoml==1.4.40"]
PEERS = ("mlserver", "kserve", "bentoml")
PEER_DIR = Path(__file__).resolve().parent / "peers"
MODELS = {
    "lr": ("sklearn.linear_model.LogisticRegression", {"max_iter": 5000}),
    "rf": ("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 100}),
}
WRK_SCRIPT = r"""
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = f:read("*all")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE")
local hl = os.getenv("HEADER_LENGTH")
if hl and hl ~= "" then wrk.headers["Inference-Header-Content-Length"] = hl end
function done(summary, latency, requests)
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read(), reply.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers
    except OSError:
        return 0, b"", {}


def wait_for(url: str, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered 200")
        if http(url)[0] == 200:
            return
        time.sleep(0.25)
    raise RuntimeError(f"{url} not 200 after {timeout} s")


# ---------------------------------------------------------------- setup


def peer_venv(cache: Path, peer: str) -> Path:
    """A peer's venv (created once per set of pins): the pinned server, and our scikit-learn/numpy/pandas
    versions so that the same fitted object loads (pandas excepted where the peer refuses ours)."""
    import numpy
    import pandas
    import sklearn

    venv = cache / f"{peer}-venv"
    server_pins = {"mlserver": MLSERVER_PINS, "kserve": KSERVE_PINS, "bentoml": BENTOML_PINS}[peer]
    pins = [*server_pins, f"scikit-learn=={sklearn.__version__}", f"numpy=={numpy.__version__}"]
    if not any(p.startswith("pandas==") for p in pins):
        pins.append(f"pandas=={pandas.__version__}")
    stamp = venv / "conveyor-pins.txt"
    if stamp.exists() and stamp.read_text() == "\n".join(pins):
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", *pins], check=True)
    stamp.write_text("\n".join(pins))
    return venv


def train(workdir: Path) -> dict[str, dict[str, Any]]:
    """Both models through our components; the same fitted object dumped with joblib for MLServer."""
    import joblib

    from conveyor.components.modelio import load_artifact
    from conveyor.components.registry import get_component
    from conveyor.storage.digest import sha256_file

    def run(name: str, config: dict[str, Any], inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
        component = get_component(name)
        component.run(component.config.model_validate(config), inputs, outputs)

    run("ingest", {"source": "sklearn://breast_cancer"}, {}, {"dataset": workdir / "dataset"})
    run("preprocess", {"label": "target"}, {"train": workdir / "dataset"}, {"transformer": workdir / "transformer"})
    models: dict[str, dict[str, Any]] = {}
    for key, (estimator, params) in MODELS.items():
        artifact = workdir / f"{key}.conveyor"
        run(
            "train",
            {"label": "target", "estimator": estimator, "params": params},
            {"train": workdir / "dataset", "transformer": workdir / "transformer"},
            {"model": artifact},
        )
        loaded = load_artifact(artifact)
        model_dir = workdir / "mlserver" / f"bc-{key}"
        model_dir.mkdir(parents=True)
        joblib.dump(loaded.obj, model_dir / "model.joblib")
        (model_dir / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": f"bc-{key}",
                    "implementation": "mlserver_sklearn.SKLearnModel",
                    "parameters": {"uri": "./model.joblib", "version": "v1"},
                }
            )
        )
        models[key] = {
            "artifact": artifact,
            "digest": sha256_file(artifact),
            "object": loaded.obj,
            "features": [f.name for f in loaded.metadata.inputs],
        }
    return models


def bodies(workdir: Path, features: list[str]) -> dict[tuple[str, int], tuple[Path, str, str]]:
    """(form, rows) -> (body file, content type, Inference-Header-Content-Length or '')."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer().data.astype(np.float32)
    out: dict[tuple[str, int], tuple[Path, str, str]] = {}
    for rows in (1, 1000):
        x = np.resize(data, (rows, data.shape[1]))
        columns = {
            "parameters": {"content_type": "pd"},
            "inputs": [
                {"name": name, "shape": [rows], "datatype": "FP32", "data": x[:, i].tolist()}
                for i, name in enumerate(features)
            ],
        }
        tensor = {"inputs": [{"name": "input-0", "shape": [rows, 30], "datatype": "FP32", "data": x.ravel().tolist()}]}
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": [rows, 30],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": x.nbytes},
                    }
                ],
                "outputs": [{"name": "predict", "parameters": {"binary_data": True}}],
            }
        ).encode()
        for form, payload, kind, length in (
            ("columns", json.dumps(columns).encode(), "application/json", ""),
            ("tensor", json.dumps(tensor).encode(), "application/json", ""),
            ("binary", header + x.astype("<f4").tobytes(), "application/octet-stream", str(len(header))),
        ):
            path = workdir / f"{form}-{rows}.body"
            path.write_bytes(payload)
            out[(form, rows)] = (path, kind, length)
    return out


@contextlib.contextmanager
def process(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _family(pid: int) -> list[int]:
    """A process and all its descendants (BentoML's server is a supervisor with a worker under it)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        with contextlib.suppress(OSError):
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a server process and its children: steadier than wall time on a shared machine."""
    ticks = 0
    for p in _family(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (MLServer may fork workers)."""
    total = 0
    for p in _family(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


# ---------------------------------------------------------------- load


def wrk(url: str, body: tuple[Path, str, str], connections: int, duration: int, script: Path) -> dict[str, Any]:
    path, kind, length = body
    env = dict(os.environ, BODY_FILE=str(path), CONTENT_TYPE=kind, HEADER_LENGTH=length)
    threads = 1 if connections == 1 else 2
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    match = re.search(r"^RESULT (\{.*\})$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    result: dict[str, Any] = json.loads(match.group(1))
    seconds = result["duration_us"] / 1e6
    result["rps"] = round(result["requests"] / seconds, 1)
    result["errors"] = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    return result


def check_answers(url: str, body: tuple[Path, str, str], expected: list[int], binary: bool) -> None:
    path, kind, length = body
    headers = {"Content-Type": kind} | ({"Inference-Header-Content-Length": length} if length else {})
    status, raw, reply_headers = http(url, path.read_bytes(), headers)
    if status != 200:
        raise RuntimeError(f"{url} answered {status}: {raw[:300]!r}")
    if binary:
        import numpy as np

        header_length = int(reply_headers["Inference-Header-Content-Length"])
        got = np.frombuffer(raw[header_length:], "<i8").tolist()
    else:
        got = [int(v) for v in json.loads(raw)["outputs"][0]["data"]]
    if got != expected:
        raise RuntimeError(f"{url} answered differently from the model in-process")


def versions(venvs: dict[str, Path]) -> dict[str, Any]:
    from importlib.metadata import version

    ours = {p: version(p) for p in ("scikit-learn", "numpy", "pandas", "uvicorn", "uvloop", "httptools", "orjson")}
    report: dict[str, Any] = {"python": platform.python_version(), "conveyor_server": ours}
    for peer, venv in venvs.items():
        names = {"mlserver": ("mlserver", "mlserver-sklearn"), "kserve": ("kserve",), "bentoml": ("bentoml",)}[peer]
        packages = (*names, "scikit-learn", "numpy", "pandas", "uvicorn", "uvloop", "fastapi", "starlette", "orjson")
        code = (
            "import json, sys; from importlib.metadata import version, PackageNotFoundError\n"
            "def v(p):\n try: return version(p)\n except PackageNotFoundError: return None\n"
            "print(json.dumps({p: v(p) for p in sys.argv[1:]}))"
        )
        argv = [str(venv / "bin" / "python"), "-c", code, *packages]
        report[f"{peer}_venv"] = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    report["wrk"] = subprocess.run(["wrk", "-v"], check=False, capture_output=True, text=True).stdout.splitlines()[0]
    return report


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "loadavg_start": os.getloadavg()}


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", default="1,8,64")
    parser.add_argument("--models", default="lr,rf")
    parser.add_argument("--rows", default="1,1000", help="rows per request (comma list; bodies exist for 1 and 1000)")
    parser.add_argument("--peers", default=",".join(PEERS), help="peer servers (comma list of mlserver,kserve,bentoml)")
    parser.add_argument("--cache-dir", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    connections = [int(c) for c in args.connections.split(",")]
    row_counts = [int(r) for r in args.rows.split(",")]
    if not set(row_counts) <= {1, 1000}:
        parser.error("--rows: 1 and/or 1000")
    keys = args.models.split(",")
    peers = [p for p in args.peers.split(",") if p]
    if not set(peers) <= set(PEERS):
        parser.error(f"--peers: a comma list of {','.join(PEERS)}")
    venvs = {peer: peer_venv(args.cache_dir, peer) for peer in peers}
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "benchmark": "serving",
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/serving_bench.py", *sys.argv[1:]]),
        "machine": machine(),
        "versions": versions(venvs),
        "settings": {"duration_s": args.duration, "repeats": args.repeats, "connections": connections, "peers": peers},
        "cells": [],
    }
    with tempfile.TemporaryDirectory(prefix="conveyor-serving-bench-") as tmp:
        workdir = Path(tmp)
        script = workdir / "post.lua"
        script.write_text(WRK_SCRIPT)
        models = train(workdir)
        features = models["lr"]["features"]
        body_files = bodies(workdir, features)
        ml_http = free_port()
        (workdir / "mlserver" / "settings.json").write_text(
            json.dumps(
                {
                    "debug": False,
                    "parallel_workers": 0,
                    "http_port": ml_http,
                    "grpc_port": free_port(),
                    "metrics_port": free_port(),
                    "host": "127.0.0.1",
                }
            )
        )
        with contextlib.ExitStack() as stack:
            ours: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
            for key in keys:
                port = free_port()
                argv = [
                    sys.executable, "-m", "conveyor.serving", "--model-name", f"bc-{key}",
                    "--model-uri", models[key]["artifact"].as_uri(), "--model-digest", models[key]["digest"],
                    "--model-version", "v1", "--host", "127.0.0.1", "--port", str(port), "--work-dir", tmp,
                ]  # fmt: skip
                proc = stack.enter_context(process(argv, workdir / f"ours-{key}.log"))
                ours[key] = (f"http://127.0.0.1:{port}", proc)

            def peer_env(peer: str, **extra: str) -> dict[str, str]:
                env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
                env["PATH"] = f"{venvs[peer] / 'bin'}:{env.get('PATH', '')}"
                return env | extra

            def joblib_file(key: str) -> Path:
                return workdir / "mlserver" / f"bc-{key}" / "model.joblib"

            # Each peer: {model key: (base URL, server process)}, and the URL that says the model is ready.
            peer_servers: dict[str, dict[str, tuple[str, subprocess.Popen[bytes]]]] = {}
            ready_path: dict[str, str] = {}
            if "mlserver" in peers:
                # One process for both models, as MLServer is meant to be run.
                ml_proc = stack.enter_context(
                    process(
                        [str(venvs["mlserver"] / "bin" / "mlserver"), "start", str(workdir / "mlserver")],
                        workdir / "mlserver.log",
                        env=peer_env("mlserver"),
                    )
                )
                peer_servers["mlserver"] = dict.fromkeys(keys, (f"http://127.0.0.1:{ml_http}", ml_proc))
                ready_path["mlserver"] = "/v2/models/bc-{key}/ready"
            if "kserve" in peers:
                # One kserve.ModelServer for both models, like MLServer (a v2 server of many models).
                ks_port = free_port()
                argv = [
                    str(venvs["kserve"] / "bin" / "python"), str(PEER_DIR / "kserve_sklearn.py"),
                    "--http-port", str(ks_port), "--grpc-port", str(free_port()), "--workers", "1",
                    *[f"--model=bc-{key}={joblib_file(key)}" for key in keys], "--configure_logging", "false",
                ]  # fmt: skip
                ks_proc = stack.enter_context(process(argv, workdir / "kserve.log", env=peer_env("kserve")))
                peer_servers["kserve"] = dict.fromkeys(keys, (f"http://127.0.0.1:{ks_port}", ks_proc))
                ready_path["kserve"] = "/v2/models/bc-{key}/ready"
            if "bentoml" in peers:
                # A BentoML service serves one model: one server per model, like ours.
                peer_servers["bentoml"] = {}
                for key in keys:
                    port = free_port()
                    argv = [
                        str(venvs["bentoml"] / "bin" / "bentoml"), "serve", "bentoml_sklearn:SklearnV2",
                        "--working-dir", str(PEER_DIR), "--host", "127.0.0.1", "--port", str(port),
                    ]  # fmt: skip
                    env = peer_env(
                        "bentoml",
                        BENTO_SKLEARN_NAME=f"bc-{key}",
                        BENTO_SKLEARN_MODEL=str(joblib_file(key)),
                        BENTOML_HOME=str(workdir / "bentoml-home"),
                        BENTOML_DO_NOT_TRACK="true",
                    )
                    proc = stack.enter_context(process(argv, workdir / f"bentoml-{key}.log", env=env))
                    peer_servers["bentoml"][key] = (f"http://127.0.0.1:{port}", proc)
                ready_path["bentoml"] = "/readyz"
            for key in keys:
                wait_for(f"{ours[key][0]}/v2/health/ready", 300, ours[key][1])
                for peer in peers:
                    url, proc = peer_servers[peer][key]
                    wait_for(url + ready_path[peer].format(key=key), 300, proc)
            # Every server must give the in-process answers before any load (MLServer's ready can lie).
            import numpy as np
            import pandas as pd
            from sklearn.datasets import load_breast_cancer

            data = load_breast_cancer().data.astype(np.float32)
            for key in keys:
                for rows in (1, 1000):
                    frame = pd.DataFrame(np.resize(data, (rows, 30)).astype(np.float64), columns=features)
                    expected = [int(v) for v in models[key]["object"].predict(frame)]
                    infer = f"/v2/models/bc-{key}/infer"
                    for peer in peers:
                        check_answers(
                            peer_servers[peer][key][0] + infer, body_files[("columns", rows)], expected, False
                        )
                    for form in ("columns", "tensor", "binary"):
                        check_answers(ours[key][0] + infer, body_files[(form, rows)], expected, form == "binary")
            ours_pid = {k: ours[k][1].pid for k in keys}
            variants = [
                ("conveyor", "columns", ours_pid),
                *[(peer, "columns", {k: peer_servers[peer][k][1].pid for k in keys}) for peer in peers],
                ("conveyor", "tensor", ours_pid),
                ("conveyor", "binary", ours_pid),
            ]
            urls = {"conveyor": {k: ours[k][0] for k in keys}}
            urls |= {peer: {k: peer_servers[peer][k][0] for k in keys} for peer in peers}
            for key in keys:
                for rows in row_counts:
                    for c in connections:
                        # Every variant of a cell within the same minute, in alternating order: the machine is
                        # shared, so only figures measured side by side are compared.
                        runs: dict[tuple[str, str], list[dict[str, Any]]] = {(n, f): [] for n, f, _ in variants}
                        for repeat in range(args.repeats):
                            for name, form, pids in variants if repeat % 2 == 0 else list(reversed(variants)):
                                url = f"{urls[name][key]}/v2/models/bc-{key}/infer"
                                before, load = cpu_seconds(pids[key]), os.getloadavg()[0]
                                result = wrk(url, body_files[(form, rows)], c, args.duration, script)
                                used = cpu_seconds(pids[key]) - before
                                result["server_cpu_ms_per_request"] = round(1000 * used / max(1, result["requests"]), 4)
                                result["loadavg_1m"] = load
                                runs[(name, form)].append(result)
                        for name, form, pids in variants:
                            ordered = sorted(runs[(name, form)], key=lambda r: r["rps"])
                            median = ordered[len(ordered) // 2]
                            cpu = sorted(r["server_cpu_ms_per_request"] for r in runs[(name, form)])
                            cell = {
                                "server": name, "model": key, "rows": rows, "form": form, "connections": c,
                                "rps": median["rps"], "p50_ms": median["p50_us"] / 1000,
                                "p99_ms": median["p99_us"] / 1000, "rows_per_s": round(median["rps"] * rows),
                                "cpu_ms_per_request": cpu[len(cpu) // 2],
                                "errors": sum(r["errors"] for r in runs[(name, form)]),
                                "repeats_rps": [r["rps"] for r in runs[(name, form)]], "rss_mib": rss_mib(pids[key]),
                                "runs": runs[(name, form)],
                            }  # fmt: skip
                            report["cells"].append(cell)
                            print(
                                f"{name:9} {key} rows={rows:<5} {form:8} c={c:<3} {cell['rps']:>8} req/s "
                                f"p50 {cell['p50_ms']:.2f} ms p99 {cell['p99_ms']:.2f} ms "
                                f"cpu {cell['cpu_ms_per_request']:.3f} ms/req errors {cell['errors']} "
                                f"spread {min(cell['repeats_rps'])}-{max(cell['repeats_rps'])}",
                                flush=True,
                            )
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["machine"]["loadavg_end"] = os.getloadavg()
    out = args.out or ROOT / "bench" / "results" / f"serving-{started:%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    print(f"\nwritten to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


PEER_TITLES = {"mlserver": "MLServer", "kserve": "KServe", "bentoml": "BentoML"}


def markdown(report: dict[str, Any]) -> str:
    """Every peer and ours on the same body, ours on tensor and binary bodies; ratios to the best peer."""
    cells = {(c["server"], c["model"], c["rows"], c["form"], c["connections"]): c for c in report["cells"]}
    peers = [p for p in report["settings"].get("peers", ["mlserver"]) if p in PEER_TITLES]
    lines = [
        "| model | rows | conns | "
        + " | ".join(PEER_TITLES[p] for p in peers)
        + " | ours, same body | ours, `[N,30]` tensor | ours, binary | same body ÷ best peer | "
        "best JSON ÷ best peer | binary ÷ best peer | p99 ours (same body) vs lowest peer p99 |",
        "|---|---:|---:|" + "---|" * (len(peers) + 3) + "---:|---:|---:|---|",
    ]

    def fmt(cell: dict[str, Any] | None) -> str:
        if cell is None:
            return "—"
        return f"{cell['rps']:,.0f} ({cell['p50_ms']:.1f} / {cell['p99_ms']:,.1f}; {cell['cpu_ms_per_request']:.2f})"

    goals: dict[str, list[float]] = {"single": [], "json": [], "binary": [], "p99": []}
    for key, rows, c in sorted({(k[1], k[2], k[4]) for k in cells}):
        theirs = [cells[(p, key, rows, "columns", c)] for p in peers if (p, key, rows, "columns", c) in cells]
        same = cells.get(("conveyor", key, rows, "columns", c))
        tensor = cells.get(("conveyor", key, rows, "tensor", c))
        binary = cells.get(("conveyor", key, rows, "binary", c))
        if not theirs or same is None:
            continue
        best = max(theirs, key=lambda x: x["rps"])
        best_name = PEER_TITLES[best["server"]]
        low_p99 = min(x["p99_ms"] for x in theirs)
        json_best = max(x["rps"] for x in (same, tensor) if x is not None)

        def ratio(value: float | None, best_rps: float = best["rps"]) -> str:
            return "—" if value is None else f"{value / best_rps:.1f}x"

        if rows == 1:
            goals["single"].append(same["rps"] / best["rps"])
        else:
            goals["json"].append(json_best / best["rps"])
            if binary is not None:
                goals["binary"].append(binary["rps"] / best["rps"])
        goals["p99"].append(same["p99_ms"] / low_p99)
        lines.append(
            f"| {key.upper()} | {rows:,} | {c} | "
            + " | ".join(fmt(cells.get((p, key, rows, "columns", c))) for p in peers)
            + f" | {fmt(same)} | {fmt(tensor)} | {fmt(binary)} | {ratio(same['rps'])} ({best_name}) | "
            f"{ratio(json_best)} | {ratio(binary['rps'] if binary else None)} | "
            f"{same['p99_ms']:,.1f} vs {low_p99:,.1f} ms ({same['p99_ms'] / low_p99:.2f}x) |"
        )

    def verdict(name: str, values: list[float], goal: float, higher: bool = True) -> str:
        if not values:
            return f"* {name}: not measured"
        met = all(v >= goal for v in values) if higher else all(v <= goal for v in values)
        return f"* {name}: {'met' if met else 'NOT met'} (range {min(values):.2f}-{max(values):.2f}x)"

    lines += [
        "",
        verdict("single row ≥ 10x the best peer (same body), every cell", goals["single"], 10),
        verdict("1,000-row JSON ≥ 5x the best peer (ours' faster JSON form)", goals["json"], 5),
        verdict("1,000-row binary ≥ 8x the best peer (its best form, JSON)", goals["binary"], 8),
        verdict("p99 no worse than the lowest peer p99 (ours, same body ÷ theirs)", goals["p99"], 1.0, False),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
