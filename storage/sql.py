"""Hand-written SQL for the worker's hot path, in the database's placeholder style.

Job: run the few statements every processed invoice needs (duplicate look-ups, supplier
memory, the document insert, its events, the job's end state) without peewee composing the
query each time. Measured here: peewee spends ~0.2 ms building a statement that SQLite runs
in ~0.01 ms, which made the database most of the worker's time per Factur-X invoice
(bench/pipeline.py). Statements are written with ``?`` and turned into the driver's
placeholder (``%s`` for psycopg) once; values go through the model fields' ``db_value``, as
peewee does, so rows read the same whichever way they were written. Everything else stays on
peewee, which is clearer where a statement is not run per invoice.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import peewee as pw

from storage import models
from storage.db import is_postgres


def database() -> Any:
    return models.proxy.obj


@functools.lru_cache(maxsize=256)
def _dialect(sql: str, param: str) -> str:
    return sql if param == "?" else sql.replace("?", param)


def execute(sql: str, params: Sequence[Any] = ()) -> Any:
    """Run ``sql`` (``?`` placeholders, no other question mark) in the current
    connection and transaction; returns the DB-API cursor."""
    db = database()
    return db.execute_sql(_dialect(sql, db.param), tuple(params))


def marks(n: int) -> str:
    """``?, ?, ?`` for an IN list or a VALUES row of n values."""
    return ", ".join("?" * n)


@functools.lru_cache(maxsize=16)
def _columns(model: type[pw.Model]) -> tuple[Any, ...]:  # peewee fields (untyped)
    return tuple(f for f in model._meta.sorted_fields if not isinstance(f, pw.AutoField))


def insert(model: type[pw.Model], rows: Sequence[Mapping[str, Any]]) -> int | None:
    """Insert ``rows`` (field name -> value; missing fields take their defaults) in one
    statement. Returns the id of the last row on SQLite and of the only row on PostgreSQL
    (None when several rows went in there: callers that need ids insert one at a time)."""
    fields = _columns(model)
    values: list[Any] = []
    for row in rows:
        for f in fields:
            value = row[f.name] if f.name in row else (
                f.default() if callable(f.default) else f.default)
            values.append(f.db_value(value))
    columns = ", ".join(f'"{f.column_name}"' for f in fields)
    tuples = ", ".join([f"({marks(len(fields))})"] * len(rows))
    sql = f'INSERT INTO "{model._meta.table_name}" ({columns}) VALUES {tuples}'
    db = database()
    if is_postgres(db):
        cursor = execute(sql + ' RETURNING "id"', values)
        return int(cursor.fetchone()[0]) if len(rows) == 1 else None
    return int(execute(sql, values).lastrowid)
