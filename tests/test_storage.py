"""Storage: migrations, blobs, the job queue, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from storage import migrations, models
from storage.blobs import BlobCorrupt, FileBlobs, sha256_hex
from storage.db import StorageError
from storage.queue import LeaseLost, Queue
from storage.records import IntakeItem, Recipient
from storage.store import Store


def open_store(url: str, tmp_path: Path, clock: object = None) -> Store:
    backend = "files" if url.startswith("sqlite") else "database"
    store = Store.open(url, backend, tmp_path / "blobs")
    if clock is not None:
        store.clock = clock  # type: ignore[assignment]
    return store


def intake(store: Store, folder_id: int, raw: bytes) -> int:
    item = IntakeItem(raw=raw, sha256=sha256_hex(raw), mail_from="a@b.test",
                      recipients=(Recipient(folder_id, "x", ""),), protocol="smtp",
                      peer="127.0.0.1:1", helo="h")
    return store.record_intake([item])[0].deliveries[0].delivery_id


def test_migrations_bring_an_old_database_forward(tmp_path: Path) -> None:
    """GIVEN a database at schema version 1 (before later columns existed) WHEN facturd opens
    it THEN the missing migrations are applied once and the data stays."""
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    store = open_store(url, tmp_path)
    store.add_folder("FR40303265045", "Acme")
    db = store.db
    db.execute_sql("DROP INDEX document_xml_sha256")
    for table, column in (("folder", "amount_limit"), ("document", "xml_sha256"),
                          ("approval", "request_message_id")):
        db.execute_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.execute_sql("DROP TABLE setting")
    db.execute_sql("DELETE FROM schema_version WHERE version > 1")
    store.close()
    store = open_store(url, tmp_path)
    assert migrations.current_version(store.db) == migrations.MIGRATIONS[-1][0]
    assert {c.name for c in store.db.get_columns("folder")} >= {"amount_limit"}
    assert "document_xml_sha256" in {i.name for i in store.db.get_indexes("document")}
    assert store.folder_by_vat("FR40303265045") is not None
    assert migrations.migrate(store.db) == []  # idempotent
    store.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.sqlite3'}"
    store = open_store(url, tmp_path)
    models.SchemaVersion.create(version=999, name="future", applied_at=datetime(2030, 1, 1))
    store.close()
    with pytest.raises(StorageError, match="newer than this facturd knows"):
        open_store(url, tmp_path)


def test_file_blobs_are_write_once_private_and_verified(tmp_path: Path) -> None:
    blobs = FileBlobs(tmp_path / "b")
    sha = blobs.put(b"invoice bytes")
    path = blobs.path_of(sha)
    assert path.read_bytes() == b"invoice bytes"
    assert oct(os.stat(tmp_path / "b").st_mode & 0o777) == "0o700"
    assert blobs.put(b"invoice bytes") == sha  # same name, same bytes, no rewrite
    path.write_bytes(b"tampered")
    with pytest.raises(BlobCorrupt):
        blobs.get(sha)
    with pytest.raises(ValueError):
        blobs.path_of("../../etc/passwd")


def test_sqlite_pragmas(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'p.sqlite3'}", tmp_path)
    pragma = {name: store.db.execute_sql(f"PRAGMA {name}").fetchone()[0]
              for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")}
    assert pragma == {"journal_mode": "wal", "synchronous": 2, "busy_timeout": 5000,
                      "foreign_keys": 1}
    store.close()


def test_queue_lease_expiry_and_lost_lease(any_db: str, tmp_path: Path) -> None:
    now = [datetime(2026, 11, 29, 12, 0, 0)]
    store = open_store(any_db, tmp_path, clock=lambda: now[0])
    folder = store.add_folder("FR40303265045", "Acme")
    did = intake(store, folder.id, b"Subject: x\r\n\r\nhello\r\n")
    q = Queue(store)
    a = q.claim("worker-a", lease_seconds=60)
    assert a is not None and a.delivery.id == did and a.delivery.attempts == 1
    assert q.claim("worker-b", lease_seconds=60) is None  # leased
    now[0] += timedelta(seconds=61)  # worker-a died: its lease expires
    b = q.claim("worker-b", lease_seconds=60)
    assert b is not None and b.delivery.attempts == 2
    with pytest.raises(LeaseLost), store.write_transaction():
        q.finish(a, "done")  # the dead worker's late commit is refused
    with store.write_transaction():
        q.finish(b, "done")
    assert store.delivery(did).state == "done"  # type: ignore[union-attr]
    store.close()


def test_database_blobs_on_postgres_visible_to_every_node(tmp_path: Path, pg_url: str) -> None:
    node1 = open_store(pg_url, tmp_path / "n1")
    folder = node1.add_folder("FR40303265045", "Acme")
    did = intake(node1, folder.id, b"Subject: y\r\n\r\nbody\r\n")
    node2 = open_store(pg_url, tmp_path / "n2")  # another node: no shared files at all
    msg = node2.delivery(did)
    assert msg is not None
    assert node2.raw_message(msg.message_id) == b"Subject: y\r\n\r\nbody\r\n"
    node1.close()
    node2.close()


def test_duplicate_layers_and_yearly_numbering(tmp_path: Path) -> None:
    """Business key = seller + number + date + gross; same seller and number in the same year
    with another amount is a *near* duplicate; the same number next year is not one."""
    from decimal import Decimal

    from storage.lookups import find_duplicate
    from storage.records import Document

    store = open_store(f"sqlite:///{tmp_path / 'd.sqlite3'}", tmp_path)
    folder = store.add_folder("FR40303265045", "Acme")
    first = intake(store, folder.id, b"Subject: 1\r\n\r\nx\r\n")
    with store.write_transaction():
        store.documents.upsert(Document(
            id=0, folder_id=folder.id, delivery_id=first, part=0, direction="purchase",
            state="archived", source="text", original_sha256="a" * 64, enriched_sha256="",
            filename="f.pdf", media_type="application/pdf", number="F-001",
            issue_date="2026-01-15", seller_vat="FR23334175221",
            total_gross=Decimal("120.00")))
    later = intake(store, folder.id, b"Subject: 2\r\n\r\ny\r\n")

    def check(**kw: object) -> str | None:
        args: dict[str, object] = dict(
            delivery_id=later, message_sha="0" * 64, attachment_sha="b" * 64, xml_sha="",
            seller_vat="FR23334175221", seller_siren=None, number="F-001",
            issue_date="2026-01-15", total_gross="120.00")
        args.update(kw)
        match = find_duplicate(folder.id, **args)  # type: ignore[arg-type]
        return match.kind if match else None

    assert check() == "business"
    assert check(attachment_sha="a" * 64) == "attachment"
    assert check(total_gross="130.00") == "near"
    assert check(issue_date="2026-03-01") == "near"
    assert check(issue_date="2027-01-15") is None  # numbering restarted with the year
    assert check(seller_vat="FR40303265045") is None  # another supplier's F-001
    store.close()
