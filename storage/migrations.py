"""Versioned schema migrations, applied at start.

Job: bring any database to the newest schema, exactly once even when several nodes start
together (PostgreSQL advisory lock; SQLite write lock). A database newer than this code is
refused with a clear message rather than used.

Each migration is (version, name, function). Add new ones at the end; never edit one that
has shipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import peewee as pw

from storage import models
from storage.db import StorageError, is_postgres

log = logging.getLogger(__name__)

_LOCK_KEY = 0x66616374  # "fact"


def _initial(db: pw.Database) -> None:
    db.create_tables(models.ALL_MODELS, safe=True)


def _add_missing_columns(db: pw.Database, model: type[models.Base], names: list[str]) -> None:
    """Add columns a newer model has; skip those a fresh database already got from v1."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

    table = model._meta.table_name
    have = {c.name for c in db.get_columns(table)}
    migrator = PostgresqlMigrator(db) if is_postgres(db) else SqliteMigrator(db)
    ops = []
    for name in names:
        field = model._meta.fields[name]
        if field.column_name not in have:
            ops.append(migrator.add_column(table, field.column_name, field))
    if ops:
        migrate(*ops)


def _policy_and_sharing(db: pw.Database) -> None:
    _add_missing_columns(db, models.Folder, ["amount_limit", "approvers", "digest_time",
                                             "timezone", "last_digest_at",
                                             "accountant_frequency"])
    _add_missing_columns(db, models.Document, ["xml_sha256", "shared_at"])
    _add_missing_columns(db, models.Outbox, ["lease_until", "leased_by"])


def _settings_and_reply_threading(db: pw.Database) -> None:
    db.create_tables([models.Setting], safe=True)
    _add_missing_columns(db, models.Approval, ["request_message_id"])


def _folder_tokens(db: pw.Database) -> None:
    """Approval rows get their folder (filled in from the document) and a nullable document,
    so a token can be bound to a folder (a digest's reply address); and the time of the last
    "unauthenticated attempt" notice sent about each token."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

    _add_missing_columns(db, models.Approval, ["folder", "attempt_noticed_at"])
    sql: Any = db
    sql.execute_sql("UPDATE approval SET folder_id = (SELECT document.folder_id FROM document "
                   "WHERE document.id = approval.document_id) "
                   "WHERE folder_id IS NULL AND document_id IS NOT NULL")
    document = next(c for c in db.get_columns("approval") if c.name == "document_id")
    if not document.null:
        migrator = PostgresqlMigrator(db) if is_postgres(db) else SqliteMigrator(db)
        migrate(migrator.drop_not_null("approval", "document_id"))


def _operators(db: pw.Database) -> None:
    db.create_tables([models.Operator, models.OperatorSession], safe=True)


def _document_conformance(db: pw.Database) -> None:
    _add_missing_columns(db, models.Document, ["conformance"])


MIGRATIONS: tuple[tuple[int, str, Callable[[pw.Database], None]], ...] = (
    (1, "initial schema: folders, partners, senders, messages, deliveries, documents, "
        "events, approvals, outbox, blobs", _initial),
    (2, "folder policy (amount limit, approvers, digest time), document xml hash and "
        "accountant sharing, outbox lease", _policy_and_sharing),
    (3, "installation settings; approval request threading", _settings_and_reply_threading),
    (4, "approval tokens bound to a folder (digest reply address); attempt notices",
        _folder_tokens),
    (5, "operator accounts and status-page sessions", _operators),
    (6, "Schematron verdict of received e-invoices", _document_conformance),
)


def current_version(db: pw.Database) -> int:
    if not db.table_exists("schema_version"):
        return 0
    row = models.SchemaVersion.select(pw.fn.MAX(models.SchemaVersion.version)).scalar()
    return int(row or 0)


def migrate(db: Any) -> list[int]:
    """Apply missing migrations; return the versions applied now."""
    newest = MIGRATIONS[-1][0]
    applied: list[int] = []
    with db.atomic("IMMEDIATE") if not is_postgres(db) else db.atomic():
        if is_postgres(db):
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        db.create_tables([models.SchemaVersion], safe=True)
        have = current_version(db)
        if have > newest:
            raise StorageError(
                f"database schema version {have} is newer than this facturd knows ({newest}); "
                "upgrade facturd or point it at another database"
            )
        for version, name, apply in MIGRATIONS:
            if version <= have:
                continue
            log.info("applying migration %d: %s", version, name)
            apply(db)
            models.SchemaVersion.create(version=version, name=name,
                                        applied_at=datetime.now(UTC).replace(tzinfo=None))
            applied.append(version)
    return applied
