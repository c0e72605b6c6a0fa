"""Approval tokens bound to a folder (a digest's reply address), migration 4, and the
per-token "attempt notice" compare-and-set, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

import peewee as pw
import pytest

from storage import migrations, models, records
from storage.approvals import Approvals, TokenRefused, hash_token
from storage.store import Store
from tests.conftest import Clock

VAT = "FR40303265045"
TTL = timedelta(days=14)


def open_store(url: str, tmp_path: Path, clock: Clock) -> Store:
    backend = "files" if url.startswith("sqlite") else "database"
    return Store.open(url, backend, tmp_path / "blobs", clock=clock)


def add_document(store: Store, folder_id: int, part: int = 0) -> int:
    doc = records.Document(
        id=0, folder_id=folder_id, delivery_id=None, part=part, direction="purchase",
        state="pending_approval", source="facturx", original_sha256="", enriched_sha256="",
        filename="f.pdf", media_type="application/pdf", number=f"F-{part}")
    with store.write_transaction():
        return store.documents.upsert(doc)[0]


class ApprovalV3(models.Base):
    """The approval table as schema version 3 knew it (document required, no folder)."""

    id = pw.AutoField()
    document = pw.ForeignKeyField(models.Document, backref="+", on_delete="CASCADE")
    token_hash = pw.CharField(unique=True, max_length=64)
    approver = pw.CharField(default="")
    action = pw.CharField(default="")
    document_version = pw.IntegerField(default=1)
    expires_at = pw.DateTimeField()
    used_at = pw.DateTimeField(null=True)
    request_message_id = pw.CharField(default="", max_length=512)
    created_at = pw.DateTimeField()

    class Meta:
        table_name = "approval"


def test_migration_4_binds_old_tokens_to_their_folder(any_db: str, tmp_path: Path,
                                                      clock: Clock) -> None:
    """GIVEN a database at schema version 3 with a document token WHEN facturd opens it THEN
    the token gets its folder, still works, and folder tokens (no document) can be issued."""
    store = open_store(any_db, tmp_path, clock)
    folder = store.add_folder(VAT, "Acme")
    doc_id = add_document(store, folder.id)
    db = store.db
    db.drop_tables([models.Approval])
    db.create_tables([ApprovalV3])
    ApprovalV3.create(document=doc_id, token_hash=hash_token("old-token"), approver="a@x.test",
                      action="approve", document_version=1, expires_at=clock.now + TTL,
                      created_at=clock.now)
    db.execute_sql("DELETE FROM schema_version WHERE version > 3")
    assert not next(c for c in db.get_columns("approval") if c.name == "document_id").null
    store.close()

    store = open_store(any_db, tmp_path, clock)
    assert migrations.current_version(store.db) == migrations.MIGRATIONS[-1][0]
    columns = {c.name: c for c in store.db.get_columns("approval")}
    assert columns["document_id"].null and "attempt_noticed_at" in columns
    indexes = {i.name: i.unique for i in store.db.get_indexes("approval")}
    assert indexes["approval_token_hash"] and "approval_folder_id" in indexes
    with pytest.raises(pw.IntegrityError), store.write_transaction():  # still unique
        ApprovalV3.create(document=doc_id, token_hash=hash_token("old-token"),
                          expires_at=clock.now, created_at=clock.now)
    grant = Approvals(store).look("old-token")
    assert (grant.document_id, grant.folder_id, grant.for_folder) == (doc_id, folder.id, False)
    with store.write_transaction():
        token = Approvals(store).issue_for_folder(folder.id, "a@x.test", ttl=TTL)
    assert Approvals(store).look(token).for_folder
    assert migrations.migrate(store.db) == []  # idempotent
    store.close()


def test_folder_tokens_single_use_expiring_and_unaffected_by_documents(
        store: Store, clock: Clock) -> None:
    folder = store.add_folder(VAT, "Acme")
    approvals = Approvals(store)
    with store.write_transaction():
        token = approvals.issue_for_folder(folder.id, "boss@acme.test", ttl=TTL,
                                           request_message_id="<digest.1@x.test>")
        doc_token = approvals.issue(add_document(store, folder.id), "boss@acme.test", "reply",
                                    ttl=TTL)
    assert len(token) == 32 and token != doc_token
    grant = approvals.look(token)
    assert (grant.action, grant.document_id, grant.folder_id) == ("reply", None, folder.id)
    assert grant.request_message_id == "<digest.1@x.test>"
    row = models.Approval.get(models.Approval.token_hash == hash_token(token))
    assert row.token_hash != token  # stored hashed
    add_document(store, folder.id, part=1)  # documents come and go: no "stale" for a folder
    with store.write_transaction():
        assert approvals.redeem(token).id == grant.id
    with pytest.raises(TokenRefused) as refused:
        approvals.look(token)
    assert refused.value.reason == "used"
    with store.write_transaction():
        later = approvals.issue_for_folder(folder.id, "boss@acme.test", ttl=TTL)
    clock.advance(days=14)
    with pytest.raises(TokenRefused) as refused:
        approvals.look(later)
    assert refused.value.reason == "expired"


def test_attempt_notice_at_most_once_per_interval(store: Store, clock: Clock) -> None:
    folder = store.add_folder(VAT, "Acme")
    approvals = Approvals(store)
    with store.write_transaction():
        token = approvals.issue_for_folder(folder.id, "boss@acme.test", ttl=TTL)
    grant = approvals.look(token)
    hour = timedelta(hours=1)
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        barrier.wait()
        try:
            with store.write_transaction():
                results.append(approvals.claim_attempt_notice(grant, hour))
        finally:
            store.db.close()

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False, False, False, True]
    clock.advance(minutes=59)
    assert not approvals.claim_attempt_notice(grant, hour)
    clock.advance(minutes=1)
    assert approvals.claim_attempt_notice(grant, hour)


def test_issued_since(store: Store, clock: Clock) -> None:
    folder = store.add_folder(VAT, "Acme")
    doc_id = add_document(store, folder.id)
    approvals = Approvals(store)
    start: datetime = clock.now
    with store.write_transaction():
        approvals.issue(doc_id, "boss@acme.test", "approve", ttl=TTL)
    assert approvals.issued_since(doc_id, "boss@acme.test", start - timedelta(seconds=1))
    assert not approvals.issued_since(doc_id, "other@acme.test", start - timedelta(seconds=1))
    assert not approvals.issued_since(doc_id, "boss@acme.test", start)
