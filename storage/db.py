"""Open the database named by a URL, with the durability settings facturd relies on.

SQLite: WAL, synchronous=FULL (a commit is on disk when it returns), busy_timeout,
foreign keys. PostgreSQL: the server's defaults (synchronous_commit=on) plus a statement
timeout so a stuck query cannot hold a worker forever.

Known limits: SQLite is for one host; several nodes need PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import peewee as pw
from playhouse.db_url import connect

from storage import models

SQLITE_PRAGMAS = (
    ("journal_mode", "wal"),
    ("synchronous", 2),  # FULL
    ("busy_timeout", 5000),
    ("foreign_keys", 1),
)


# Database errors worth retrying (busy/locked, connection lost): callers outside storage/
# catch these without importing peewee.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (pw.OperationalError, pw.InterfaceError)


class StorageError(Exception):
    """A storage problem a person must fix (bad URL, newer schema, unreachable server)."""


def open_database(url: str) -> Any:
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = parsed.path
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db: Any = pw.SqliteDatabase(path, pragmas=SQLITE_PRAGMAS,
                                            check_same_thread=False)
    elif parsed.scheme in ("postgres", "postgresql"):
        db = connect(url, options="-c statement_timeout=60000")
        db.autorollback = True
    else:
        raise StorageError(f"unsupported database URL scheme {parsed.scheme!r}")
    models.proxy.initialize(db)
    try:
        db.connect(reuse_if_open=True)
    except pw.OperationalError as exc:
        raise StorageError(f"cannot open database {redact(url)}: {exc}") from exc
    return db


def is_postgres(db: Any) -> bool:
    return isinstance(db, pw.PostgresqlDatabase)


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url
