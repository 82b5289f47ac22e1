"""Starting and stopping the test environment's server processes (test harness code).

Every server runs in a process group of its own with stdout and stderr in a log file, so teardown
can kill the whole group (no orphans) and a failing test can show the tail of each log.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_handed_out_ports: set[int] = set()


def die_with_parent(argv: Sequence[str], sig: signal.Signals) -> list[str]:
    """Prefix ``argv`` so the kernel sends ``sig`` to it when the process that started it dies.

    This keeps a killed pytest (SIGKILL, OOM) from leaving servers behind. util-linux's setpriv
    sets the flag before exec (no preexec_fn, which is unsafe in a threaded process). The signal
    fires when the spawning *thread* exits, so only use it from long-lived threads.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return list(argv)
    return [setpriv, f"--pdeathsig={sig.name}", "--", *argv]


_OWNER_FILE = "conveyor-owner.pid"


def owned_temp_dir(prefix: str, base: Path | None = None) -> Path:
    """A new temp dir that records this process as its owner, after sweeping dead owners' dirs.

    A session killed with SIGKILL cannot clean up; the next session removes what it left
    (etcd's tmpfs data holds RAM). Dirs whose owner is still alive are never touched.
    """
    root = base or Path(tempfile.gettempdir())
    for old in root.glob(f"{prefix}*"):
        owner = old / _OWNER_FILE
        with contextlib.suppress(OSError, ValueError):
            if old.is_dir() and not pid_alive(int(owner.read_text())):
                shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    (path / _OWNER_FILE).write_text(str(os.getpid()))
    return path


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now; never the same one twice in this process."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out_ports:
            _handed_out_ports.add(port)
            return port
    raise RuntimeError("no free TCP port found")


def http_ok(url: str, context: ssl.SSLContext | None = None, timeout: float = 5) -> bool:
    """GET ``url`` and report whether it answered 200; the connection is always closed.

    (urllib's HTTPError keeps its socket open, which is a ResourceWarning under
    ``filterwarnings = error`` while servers answer 500 during start-up.)
    """
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    finally:
        conn.close()


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, or a note that it does not exist."""
    if not path.exists():
        return f"<{path} does not exist>"
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 64 * 1024))
        data = fh.read().decode("utf-8", "replace")
    return "\n".join(data.splitlines()[-lines:])


class ServerProcess:
    """One long-running server: own process group, output in a log file, clean stop."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        parent_death_signal: signal.Signals = signal.SIGKILL,
    ) -> None:
        self.name = name
        self.parent_death_signal = parent_death_signal
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        """Launch the process in a new session so its whole group can be signalled."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                die_with_parent(self.argv, self.parent_death_signal),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        """Process id (also the process group id)."""
        if self._popen is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._popen.pid

    def exit_code(self) -> int | None:
        """None while running, else the exit status."""
        return None if self._popen is None else self._popen.poll()

    def check_running(self) -> None:
        """Raise with the log tail if the process has exited."""
        code = self.exit_code()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with {code}; last log lines:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of this process's log."""
        return tail(self.log_path, lines)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds, reap the child."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGTERM)
            try:
                popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(10)
        # Children that outlived the leader still carry its process group id.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)


def wait_until(
    predicate: Callable[[], object],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    process: ServerProcess | None = None,
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``.

    Exceptions from the predicate count as "not yet" (servers refuse connections while
    starting) and the last one is reported on timeout; AssertionError ends the wait at once.
    A dead ``process`` fails at once with its log.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if process is not None:
            process.check_running()
        try:
            result = predicate()
        except AssertionError:
            raise  # a definite "this will never happen", not a "not yet"
        except Exception as exc:
            last_error = exc
        else:
            if result:
                return result
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            log = f"\n{process.name} log:\n{process.log_tail()}" if process else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{log}")
        time.sleep(interval)
