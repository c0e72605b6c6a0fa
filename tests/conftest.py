"""Test harness: real facturd processes on real sockets, on SQLite and PostgreSQL.

``daemon`` starts ``facturd serve`` as a child process with a config written into the test's
own tmp folder (SMTP on a free loopback port, LMTP on a unix socket), and talks to it with
smtplib. ``any_db`` runs a test on SQLite and on a fresh PostgreSQL database; PostgreSQL
tests skip with a visible reason only when no server answers on 127.0.0.1:5432.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from storage.store import Store
from tests.dkimkeys import auth, keys  # noqa: F401 (fixtures shared by the DKIM tests)

ROOT = Path(__file__).resolve().parent.parent
PG_HOST, PG_PORT = "127.0.0.1", 5432
VAT = "FR40303265045"
VAT2 = "FR23334175221"
DOMAIN = "invoices.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_available() -> bool:
    try:
        import psycopg2

        psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres",
                         connect_timeout=3).close()
        return True
    except Exception:
        return False


def _pg_admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def _pg_database() -> Iterator[str]:
    if not postgres_available():
        pytest.skip(f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT}")
    name = f"facturd_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL: SQLite in tmp_path, or a fresh PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'facturd.sqlite3'}"
        return
    yield from _pg_database()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database (skips, with the reason shown, when no server answers)."""
    yield from _pg_database()


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    """The database of the ``facturd`` fixture: SQLite, or a fresh PostgreSQL database when
    $FACTURD_TEST_DB=postgresql (.ci/run runs the daemon-level tests a second time so)."""
    if os.environ.get("FACTURD_TEST_DB") == "postgresql":
        yield from _pg_database()
    else:
        yield f"sqlite:///{tmp_path / 'state' / 'facturd.sqlite3'}"


@pytest.fixture
def facturd_sqlite(tmp_path: Path) -> Iterator[Facturd]:
    """For tests about SQLite itself (its file lock, its pragmas)."""
    inst = Facturd(tmp_path, f"sqlite:///{tmp_path / 'state' / 'facturd.sqlite3'}")
    yield inst
    inst.stop()


class Facturd:
    """One facturd installation in a tmp folder: its config, its CLI, its daemon process."""

    def __init__(self, tmp: Path, db_url: str, extra: str = "") -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.smtp_port = free_port()
        self.web_port = free_port()
        self.lmtp_socket = tmp / "lmtp.sock"
        self.config = tmp / "facturd.toml"
        self.log = tmp / "facturd.log"
        self.db_url = db_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config(extra)

    def write_config(self, extra: str = "") -> None:
        if "[web]" not in extra:  # never the default port: tests and daemons run side by side
            extra += f'[web]\nlisten = "127.0.0.1:{self.web_port}"\n'
        self.config.write_text(
            f'state_dir = "{self.state}"\n'
            f'domain = "{DOMAIN}"\n'
            'log_level = "debug"\n'
            f'[database]\nurl = "{self.db_url}"\n'
            f'[smtp]\nlisten = "127.0.0.1:{self.smtp_port}"\n'
            f'[lmtp]\nlisten = "{self.lmtp_socket}"\n'
            f'[worker]\npoll_seconds = 0.1\nbackoff_seconds = 0.2\n'
            + extra
        )

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("FACTURD_CONFIG", None)
        env.pop("FACTURD_STATE", None)
        return env

    def cli(self, *args: str, check: bool = True, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([sys.executable, "-m", "daemon", "--config", str(self.config),
                              *args], capture_output=True, text=True, cwd=self.tmp,
                             env=self.env(), timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"facturd {' '.join(args)} exited {res.returncode}:\n"
                                 f"{res.stdout}\n{res.stderr}")
        return res

    def add_folder(self, vat: str = VAT, name: str = "Acme SAS", *extra: str) -> None:
        self.cli("folder", "add", vat, "--name", name, *extra)

    def start(self, *roles: str, env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "daemon", "--config", str(self.config), *(roles or ("serve",))]
        full_env = self.env() | (env or {})
        self.log_handle = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log_handle, stderr=subprocess.STDOUT,
                                     cwd=self.tmp, env=full_env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"facturd exited {self.proc.returncode}:\n{self.logs()}")
            if "facturd ready" in self.logs():
                return
            time.sleep(0.05)
        raise AssertionError(f"facturd did not become ready:\n{self.logs()}")

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        self.log_handle.close()
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        self.log_handle.close()


@dataclass
class Clock:
    """A clock the test moves: ``Store(clock=...)`` reads it instead of the wall clock."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0, **delta: float) -> None:
        self.now += timedelta(seconds=seconds, **delta)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 5, 12, 0))


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[Store]:
    """A real SQLite store in tmp_path, on the test's clock."""
    s = Store.open(f"sqlite:///{tmp_path}/db.sqlite3", "files", tmp_path / "blobs", clock=clock)
    yield s
    s.close()


@pytest.fixture
def facturd(tmp_path: Path, db_url: str) -> Iterator[Facturd]:
    inst = Facturd(tmp_path, db_url)
    yield inst
    inst.stop()


@pytest.fixture
def facturd_any(tmp_path: Path, any_db: str) -> Iterator[Facturd]:
    inst = Facturd(tmp_path, any_db)
    yield inst
    inst.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Summary lines that tests publish (e.g. ``spoof_auto_accepted=0/10``)."""
    from tests import test_spoofing

    for line in getattr(test_spoofing, "SUMMARY", []):
        terminalreporter.write_line(line)


def wait_for(check: Callable[[], Any], what: str = "", timeout: float = 60) -> Any:
    """Poll ``check`` until it returns something true (returned), else fail after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or check}")
