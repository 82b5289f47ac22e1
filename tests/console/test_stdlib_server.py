"""`conveyor ui` without uvicorn (as in the operator image, which the chart runs the console from): the
standard library's threading HTTP server serves the same application, headers and refusals included."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = (
    "import sys; sys.modules['uvicorn'] = None\n"  # an import of uvicorn now fails, as where it is not installed
    "from conveyor.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def request(port: int, method: str, path: str, host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers={"Host": f"{host}:{port}"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_the_console_is_served_by_the_standard_library_without_uvicorn(tmp_path: Path) -> None:
    (tmp_path / "state" / "runs").mkdir(parents=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "ui", "--state-dir", str(tmp_path / "state"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert " on http://127.0.0.1:" in line, line + (proc.stderr.read() if proc.stderr else "")
        port = int(line.rsplit(":", 1)[1].strip().rstrip("/"))

        status, headers, body = request(port, "GET", "/healthz")
        assert (status, json.loads(body)) == (200, {"ok": True})
        assert headers["content-type"] == "application/json" and headers["x-content-type-options"] == "nosniff"
        status, headers, body = request(port, "GET", "/")
        assert (
            status == 200 and b'data-page="runs"' in body and "script-src 'self'" in headers["content-security-policy"]
        )
        status, _, body = request(port, "GET", "/api/runs?per=5")
        assert status == 200 and json.loads(body)["total"] == 0
        status, _, body = request(port, "GET", "/api/runs/no%20such")
        assert status == 404 and "no such" in json.loads(body)["error"]
        status, headers, _ = request(port, "POST", "/api/runs")
        assert status == 405 and headers["allow"] == "GET, HEAD"
        status, _, _ = request(port, "GET", "/", host="rebound.example")  # DNS rebinding: refused
        assert status == 421
        status, headers, body = request(port, "HEAD", "/healthz")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
