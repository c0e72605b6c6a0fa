"""Operator accounts and status-page sessions (storage/operators.py), migration 5, and the
``facturd operator`` command, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from daemon import cli_operator
from storage import migrations, models, operators
from storage.operators import Operators
from storage.store import Store
from tests.conftest import Clock, Facturd

PASSWORD = "correct horse battery"
HOUR = timedelta(hours=1)


def open_store(url: str, tmp_path: Path, clock: Clock) -> Store:
    backend = "files" if url.startswith("sqlite") else "database"
    return Store.open(url, backend, tmp_path / "blobs", clock=clock)


@pytest.fixture
def db_store(any_db: str, tmp_path: Path, clock: Clock) -> Iterator[Store]:
    store = open_store(any_db, tmp_path, clock)
    yield store
    store.close()


def session_rows(store: Store) -> list[tuple[object, ...]]:
    return list(store.db.execute_sql("SELECT * FROM operator_session").fetchall())


def test_add_and_verify(db_store: Store) -> None:
    ops = Operators(db_store)
    ops.add("alice@acme.test", PASSWORD)
    assert ops.verify("alice@acme.test", PASSWORD)
    assert not ops.verify("alice@acme.test", PASSWORD + "x")
    assert not ops.verify("alice@acme.test", "")
    assert not ops.verify("bob", PASSWORD)  # unknown name
    assert not ops.verify("no such/name", PASSWORD)  # not even a valid name
    assert ops.names() == ["alice@acme.test"]
    stored = models.Operator.get(models.Operator.name == "alice@acme.test").password_hash
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(digest)) == 32
    assert PASSWORD not in stored
    ops.add("bob", "another password")
    other = models.Operator.get(models.Operator.name == "bob").password_hash
    assert other.split("$")[4] != salt  # a fresh salt each time
    assert ops.names() == ["alice@acme.test", "bob"]
    kinds = [(e.kind, e.actor, e.detail) for e in db_store.events()]
    assert kinds == [("operator-added", "cli", "alice@acme.test"),
                     ("operator-added", "cli", "bob")]


def test_the_dummy_hash_used_for_unknown_names_is_a_real_scrypt_hash() -> None:
    assert operators._DUMMY[1:4] == (2**14, 8, 1) and len(operators._DUMMY[4]) == 32
    assert not operators.password_matches(operators._DUMMY_HASH, PASSWORD)
    assert not operators.password_matches("scrypt$1$1$1$AA==$AA==", PASSWORD)
    assert not operators.password_matches("plain text", PASSWORD)


def test_bad_names_and_short_passwords_are_refused(db_store: Store) -> None:
    ops = Operators(db_store)
    for name in ("", "a" * 65, "alice smith", "alice/..", "élodie", "bob\n"):
        with pytest.raises(ValueError, match="operator name"):
            ops.add(name, PASSWORD)
    with pytest.raises(ValueError, match="at least 12"):
        ops.add("alice", "x" * 11)
    ops.add("a" * 64, "x" * 12)  # the limits themselves are fine
    assert ops.names() == ["a" * 64]


def test_replacing_a_password_closes_the_sessions(db_store: Store) -> None:
    ops = Operators(db_store)
    ops.add("alice", PASSWORD)
    ops.add("bob", PASSWORD)
    token = ops.open_session("alice", HOUR)
    kept = ops.open_session("bob", HOUR)
    ops.add("alice", "a new password!")
    assert not ops.verify("alice", PASSWORD) and ops.verify("alice", "a new password!")
    assert ops.session(token) is None
    assert ops.session(kept) is not None  # another operator's session stays
    assert ops.names() == ["alice", "bob"]
    assert db_store.events()[-1].detail == "alice: password replaced, 1 session(s) closed"


def test_session_open_lookup_expiry_and_logout(db_store: Store, clock: Clock) -> None:
    ops = Operators(db_store)
    ops.add("alice", PASSWORD)
    token = ops.open_session("alice", HOUR)
    assert len(token) == 43 and token != ops.open_session("alice", HOUR)
    session = ops.session(token)
    assert session == operators.OperatorSession(
        name="alice", token_hash=hashlib.sha256(token.encode()).hexdigest(),
        expires_at=clock.now + HOUR)
    assert ops.session("") is None and ops.session("not-a-token-at-all") is None
    assert ops.session(token + "x") is None and ops.session("x" * 129) is None
    clock.advance(minutes=59)
    assert ops.session(token) is not None
    clock.advance(minutes=1)
    assert ops.session(token) is None  # expired
    assert len(session_rows(db_store)) == 2
    fresh = ops.open_session("alice", HOUR)  # deletes alice's expired sessions
    assert len(session_rows(db_store)) == 1 and ops.session(fresh) is not None
    assert ops.close_session(fresh)
    assert ops.session(fresh) is None and not ops.close_session(fresh)
    assert not ops.close_session("x" * 129)
    kinds = [e.kind for e in db_store.events()]
    assert kinds == ["operator-added"] + ["operator-login"] * 3 + ["operator-logout"]
    with pytest.raises(ValueError, match="no operator"):
        ops.open_session("nobody", HOUR)
    with pytest.raises(ValueError, match="positive"):
        ops.open_session("alice", timedelta(0))


def test_removing_an_operator_ends_its_sessions(db_store: Store) -> None:
    ops = Operators(db_store)
    ops.add("alice", PASSWORD)
    token = ops.open_session("alice", HOUR)
    assert ops.remove("alice")
    assert ops.session(token) is None and not ops.verify("alice", PASSWORD)
    assert session_rows(db_store) == [] and ops.names() == []
    assert not ops.remove("alice") and not ops.remove("not a name")
    assert [e.kind for e in db_store.events()][-1] == "operator-removed"


def test_tokens_and_passwords_are_never_stored_in_clear(db_store: Store) -> None:
    ops = Operators(db_store)
    ops.add("alice", PASSWORD)
    token = ops.open_session("alice", HOUR)
    ops.close_session(ops.open_session("alice", HOUR))
    [row] = session_rows(db_store)
    assert hashlib.sha256(token.encode()).hexdigest() in row
    assert not any(token in str(value) for value in row)
    every_value = [str(v) for table in ("operator", "operator_session", "event")
                   for r in db_store.db.execute_sql(f"SELECT * FROM {table}").fetchall()
                   for v in r]
    assert not any(token in v or PASSWORD in v for v in every_value)


def test_migration_5_creates_the_operator_tables(any_db: str, tmp_path: Path,
                                                 clock: Clock) -> None:
    """GIVEN a database at schema version 4 WHEN facturd opens it THEN migration 5 creates
    the operator tables (unique name, unique token hash, indexed expiry) once."""
    store = open_store(any_db, tmp_path, clock)
    store.add_folder("FR40303265045", "Acme")
    store.db.drop_tables([models.OperatorSession, models.Operator])
    store.db.execute_sql("DELETE FROM schema_version WHERE version > 4")
    assert migrations.current_version(store.db) == 4
    assert not store.db.table_exists("operator")
    store.close()

    store = open_store(any_db, tmp_path, clock)
    try:
        assert migrations.current_version(store.db) == migrations.MIGRATIONS[-1][0]
        indexes = {i.name: i.unique for i in store.db.get_indexes("operator_session")}
        assert indexes["operator_session_token_hash"]
        assert indexes["operator_session_expires_at"] is False
        assert {i.name: i.unique for i in store.db.get_indexes("operator")}["operator_name"]
        ops = Operators(store)
        ops.add("alice", PASSWORD)
        assert ops.session(ops.open_session("alice", HOUR)) is not None
        assert store.folder_by_vat("FR40303265045") is not None
        assert migrations.migrate(store.db) == []  # idempotent
    finally:
        store.close()


# ---- the command ----------------------------------------------------------------------
def cli_with_stdin(facturd: Facturd, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "--config", str(facturd.config),
                           *args], input=stdin, capture_output=True, text=True,
                          cwd=facturd.tmp, env=facturd.env(), timeout=120)


def test_operator_commands(facturd: Facturd, tmp_path: Path) -> None:
    secret = tmp_path / "password.txt"
    secret.write_text(PASSWORD + "\nignored second line\n")
    res = facturd.cli("operator", "add", "alice", "--password-file", str(secret))
    assert res.stdout.strip() == "operator alice added"
    res = cli_with_stdin(facturd, "piped password 1\nmore\n", "operator", "add", "bob@acme.test")
    assert res.returncode == 0, res.stderr
    assert facturd.cli("operator", "list").stdout.splitlines() == ["alice", "bob@acme.test"]
    res = cli_with_stdin(facturd, "another one!\n", "operator", "add", "alice")
    assert "password replaced" in res.stdout
    assert "another one!" not in res.stderr + res.stdout  # the test config logs at debug
    assert "scrypt$" not in res.stderr  # nor the hash: peewee never logs SQL parameters

    store = Store.open(facturd.db_url, "files", facturd.state / "blobs")
    try:
        ops = Operators(store)
        assert ops.verify("bob@acme.test", "piped password 1")
        assert ops.verify("alice", "another one!") and not ops.verify("alice", PASSWORD)
        assert not any(PASSWORD in e.detail or "another one!" in e.detail
                       for e in store.events())
    finally:
        store.close()

    short = cli_with_stdin(facturd, "too short\n", "operator", "add", "carol")
    assert short.returncode == 2 and "at least 12" in short.stderr
    assert short.stderr.strip().splitlines()[-1] == (  # debug logs come before it
        "facturd: password too short: at least 12 characters")
    bad = facturd.cli("operator", "add", "carol smith", "--password-file", str(secret),
                      check=False)
    assert bad.returncode == 2 and "operator name" in bad.stderr
    missing = facturd.cli("operator", "add", "carol", "--password-file",
                          str(tmp_path / "nope"), check=False)
    assert missing.returncode == 4 and "--password-file" in missing.stderr

    assert facturd.cli("operator", "remove", "alice").returncode == 0
    gone = facturd.cli("operator", "remove", "alice", check=False)
    assert gone.returncode == 4 and "no operator alice" in gone.stderr
    assert facturd.cli("operator", "list").stdout.splitlines() == ["bob@acme.test"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_password_is_asked_twice_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([PASSWORD, PASSWORD, PASSWORD, "something else!"])
    monkeypatch.setattr(cli_operator.getpass, "getpass", lambda prompt="": next(answers))
    assert cli_operator.read_password(None, Terminal()) == PASSWORD
    with pytest.raises(cli_operator.OperatorError, match="differ") as differ:
        cli_operator.read_password(None, Terminal())
    assert differ.value.code == 2
    monkeypatch.setattr(cli_operator.getpass, "getpass", lambda prompt="": "short")
    with pytest.raises(cli_operator.OperatorError, match="at least 12"):
        cli_operator.read_password(None, Terminal())
    assert cli_operator.read_password(None, io.StringIO("piped\r\n")) == "piped"
