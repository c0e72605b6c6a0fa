"""Operator accounts and their status-page login sessions.

Job: keep who may sign in to the status page and the sessions they opened. A password is
kept only as a salted scrypt hash (``scrypt$16384$8$1$<salt b64>$<hash b64>``) and checked in
constant time; an unknown name costs one scrypt too, so timing does not tell which names
exist. A session token (the cookie) exists only on the operator's side: the database keeps
its sha256, like approval tokens (storage/approvals.py). Replacing a password or removing an
operator closes that operator's sessions. Passwords and tokens never reach the event log.

May touch: the operator and operator_session tables; events.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from storage import models
from storage.approvals import hash_token
from storage.store import Store

NAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}")
MIN_PASSWORD = 12
SESSION_BYTES = 32  # secrets.token_urlsafe(32): 43 characters
MAX_TOKEN = 128  # longer "tokens" are refused without a query

SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN, SALT_BYTES = 2**14, 8, 1, 32, 16
_MAXMEM = 64 * 1024 * 1024  # scrypt needs 128 * r * n bytes: 16 MiB with the values above
# What an unknown name is checked against: same cost as a real hash, never matches.
_DUMMY_HASH = ("scrypt$16384$8$1$ZmFjdHVyZC1kdW1teS1zYQ==$"
               "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")


@dataclass(frozen=True)
class OperatorSession:
    name: str  # operator name
    token_hash: str  # sha256 hex of the session token (what the database keeps)
    expires_at: datetime  # naive UTC


def check_name(name: str) -> str:
    """The name, or ValueError: 1 to 64 characters among A-Z a-z 0-9 . _ @ -."""
    if not NAME_RE.fullmatch(name):
        raise ValueError(f"operator name {name!r}: expected 1 to 64 characters among "
                         "A-Z a-z 0-9 . _ @ -")
    return name


def check_password(password: str) -> str:
    """The password, or ValueError when shorter than MIN_PASSWORD characters."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"password too short: at least {MIN_PASSWORD} characters")
    return password


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen,
                          maxmem=_MAXMEM)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _parse(stored: str) -> tuple[bytes, int, int, int, bytes] | None:
    """(salt, n, r, p, hash) of a stored hash; None when it is not one this code wrote."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except ValueError:
        return None
    if (n, r, p) != (SCRYPT_N, SCRYPT_R, SCRYPT_P) or not salt or len(digest) != SCRYPT_DKLEN:
        return None  # refuse parameters this code never writes (cost, memory)
    return salt, n, r, p, digest


def password_matches(stored: str, password: str) -> bool:
    """One scrypt and a constant-time compare; a malformed stored hash never matches (and
    costs the same, against the dummy hash)."""
    parsed = _parse(stored)
    ok = parsed is not None
    salt, n, r, p, digest = parsed or _DUMMY
    computed = _scrypt(password, salt, n, r, p, len(digest))
    return hmac.compare_digest(computed, digest) and ok


_DUMMY = _parse(_DUMMY_HASH) or (b"", 0, 0, 0, b"")  # parses: tests/test_operators.py


class Operators:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- accounts ---------------------------------------------------------------------
    def add(self, name: str, password: str, actor: str = "cli") -> None:
        """Create the operator, or replace its password (which closes its sessions).
        ValueError for a bad name or a password shorter than MIN_PASSWORD."""
        check_name(name)
        password_hash = hash_password(check_password(password))  # slow: outside the lock
        Op, S = models.Operator, models.OperatorSession
        with self.store.write_transaction():
            row = Op.get_or_none(Op.name == name)
            if row is None:
                Op.create(name=name, password_hash=password_hash, created_at=self.store.clock())
                detail = name
            else:
                Op.update(password_hash=password_hash).where(Op.id == row.id).execute()
                closed = S.delete().where(S.operator == row.id).execute()
                detail = f"{name}: password replaced, {closed} session(s) closed"
            self.store.add_event("operator-added", detail, actor=actor)

    def remove(self, name: str, actor: str = "cli") -> bool:
        """Delete the operator and its sessions; False when there is no such operator."""
        Op, S = models.Operator, models.OperatorSession
        with self.store.write_transaction():
            row = Op.get_or_none(Op.name == name) if NAME_RE.fullmatch(name) else None
            if row is None:
                return False
            S.delete().where(S.operator == row.id).execute()
            Op.delete().where(Op.id == row.id).execute()
            self.store.add_event("operator-removed", name, actor=actor)
        return True

    def names(self) -> list[str]:
        """Every operator name, sorted (in Python: the same order on SQLite and PostgreSQL)."""
        return sorted(str(row.name) for row in models.Operator.select(models.Operator.name))

    def verify(self, name: str, password: str) -> bool:
        """Is this the operator's password? One scrypt whether or not the name exists."""
        row = (models.Operator.get_or_none(models.Operator.name == name)
               if NAME_RE.fullmatch(name) else None)
        stored = row.password_hash if row is not None else _DUMMY_HASH
        return password_matches(stored, password) and row is not None

    # ---- sessions ---------------------------------------------------------------------
    def open_session(self, name: str, ttl: timedelta) -> str:
        """A new session token for the operator (ValueError when there is no such operator
        or ttl is not positive). Only its sha256 is stored; the operator's expired sessions
        are deleted on the way."""
        if ttl <= timedelta(0):
            raise ValueError("session ttl must be positive")
        token = secrets.token_urlsafe(SESSION_BYTES)
        Op, S = models.Operator, models.OperatorSession
        now = self.store.clock()
        with self.store.write_transaction():
            row = Op.get_or_none(Op.name == name) if NAME_RE.fullmatch(name) else None
            if row is None:
                raise ValueError(f"no operator {name!r}")
            S.delete().where((S.operator == row.id) & (S.expires_at <= now)).execute()
            S.create(token_hash=hash_token(token), operator=row.id, created_at=now,
                     expires_at=now + ttl)
            self.store.add_event("operator-login", f"{name}: session until "
                                 f"{now + ttl:%Y-%m-%d %H:%M} UTC", actor=name)
        return token

    def session(self, token: str) -> OperatorSession | None:
        """The live session this token opens; None when unknown, too long to be one,
        expired, or when its operator was removed."""
        row = self._session_row(token)
        if row is None or row.expires_at <= self.store.clock():
            return None
        return OperatorSession(name=row.operator.name, token_hash=row.token_hash,
                               expires_at=row.expires_at)

    def close_session(self, token: str) -> bool:
        """Log out: delete the session (even an expired one); False when there was none."""
        S = models.OperatorSession
        with self.store.write_transaction():
            row = self._session_row(token)
            if row is None:
                return False
            if not S.delete().where(S.id == row.id).execute():
                return False
            self.store.add_event("operator-logout", row.operator.name, actor=row.operator.name)
        return True

    def _session_row(self, token: str) -> Any:
        if len(token) > MAX_TOKEN:
            return None
        Op, S = models.Operator, models.OperatorSession
        return (S.select(S, Op).join(Op).where(S.token_hash == hash_token(token)).first())
