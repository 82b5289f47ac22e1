"""A throwaway PostgreSQL server for integration tests (test harness code).

hack/install-postgres.sh installs the server from the distribution's packages; this module never
uses the packaged cluster. It runs `initdb` into a fresh temp dir (password authentication, a
per-session password, UTF-8, no locale), then `postgres` in the foreground on a free loopback port
with its socket in the data dir, and stops it with `pg_ctl stop -m fast`. The server runs as the
`postgres` system user when the tests run as root (PostgreSQL refuses to run as root); it is
started through `setpriv` with a parent-death signal, so a killed pytest leaves no server behind.
A missing installation fails with the command that installs it: the tests never skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testenv.binaries import REPO_ROOT
from testenv.processes import ServerProcess, free_port, owned_temp_dir, wait_until

INSTALL_SCRIPT = REPO_ROOT / "hack" / "install-postgres.sh"
SERVER_USER = "postgres"


class PostgresMissingError(RuntimeError):
    """initdb / pg_ctl are not installed; the message says how to install them."""


def postgres_bin_dir() -> Path:
    """The installed server's bin directory, as the install script finds it."""
    done = subprocess.run([str(INSTALL_SCRIPT), "--print"], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise PostgresMissingError(f"PostgreSQL server binaries not found: run {INSTALL_SCRIPT.relative_to(REPO_ROOT)}")
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class PostgresEndpoint:
    """What a client needs: host, port, a superuser with a password, and a database."""

    host: str
    port: int
    user: str
    password: str
    database: str

    def url(self, driver: str = "psycopg", with_password: bool = False) -> str:
        """An SQLAlchemy URL; without the password unless asked (configs must not hold it)."""
        secret = f":{self.password}" if with_password else ""
        return f"postgresql+{driver}://{self.user}{secret}@{self.host}:{self.port}/{self.database}"


class PostgresServer:
    """One PostgreSQL cluster in a temp dir."""

    def __init__(self, log_dir: Path | None = None, host: str = "127.0.0.1") -> None:
        self.bin_dir = postgres_bin_dir()
        self.host = host
        self.port = free_port(host)
        self.work_dir = owned_temp_dir("conveyor-postgres-")
        self.data_dir = self.work_dir / "data"
        self.log_path = (log_dir or self.work_dir) / "postgres.log"
        self.user = "conveyor"
        self.password = secrets.token_urlsafe(18)
        self.database = "conveyor"
        self.process: ServerProcess | None = None
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)  # created by the postgresql package
            self._as_user = [
                "setpriv",
                f"--reuid={entry.pw_uid}",
                f"--regid={entry.pw_gid}",
                "--init-groups",
                "--pdeathsig=SIGKILL",
                "--",
            ]
            os.chown(self.work_dir, entry.pw_uid, entry.pw_gid)

    @property
    def endpoint(self) -> PostgresEndpoint:
        return PostgresEndpoint(self.host, self.port, self.user, self.password, self.database)

    def _tool(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [*self._as_user, str(self.bin_dir / name), *args]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120, cwd=self.work_dir)
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def start(self) -> PostgresServer:
        """initdb, start in the foreground, wait until it accepts connections, create the database."""
        pwfile = self.work_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_user:
            shutil.chown(pwfile, SERVER_USER)
        pwfile.chmod(0o600)
        try:
            self._tool(
                "initdb",
                f"--pgdata={self.data_dir}",
                f"--username={self.user}",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        argv = [
            *self._as_user,
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            f"unix_socket_directories={self.data_dir}",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=20",
        ]
        self.process = ServerProcess("postgres", argv, self.log_path, env={"PATH": os.environ.get("PATH", "")})
        if self._as_user:
            self.log_path.touch()
            shutil.chown(self.log_path, SERVER_USER)
        self.process.start()
        try:
            wait_until(self._ready, timeout=60, what="PostgreSQL accepting connections", process=self.process)
            self.createdb()
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        args = ["-h", self.host, "-p", str(self.port), "-U", self.user, "-d", "postgres", "-q"]
        done = subprocess.run([str(self.bin_dir / "pg_isready"), *args], check=False, timeout=10)
        return done.returncode == 0

    def createdb(self) -> None:
        """The test database (initdb made only `postgres`)."""
        env = {**os.environ, "PGPASSWORD": self.password}
        argv = [str(self.bin_dir / "psql"), "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", "postgres"]
        subprocess.run(
            [*argv, "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {self.database}"],
            check=True,
            capture_output=True,
            env=env,
            timeout=60,
        )

    def stop(self) -> None:
        """Fast shutdown (disconnects clients), then make sure the process group is gone; delete the data."""
        if self.process is not None and self.process.exit_code() is None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):  # the group is killed below anyway
                self._tool("pg_ctl", "stop", f"--pgdata={self.data_dir}", "--mode=fast", "--wait")
            self.process.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)
