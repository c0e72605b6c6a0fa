"""The outbox: composed messages waiting for the send role, under an expiring lease.

Job: store each outgoing message (its exact bytes as a blob, its envelope recipients) in the
same transaction as the state change that causes it; hand each queued row to one sender at
a time; record how a send ended (sent, retried later, failed for good). The bytes never
change after ``enqueue``, so every resend carries the same Message-ID.

May touch: the ``outbox`` and ``event`` tables and the blob store; for a ``sales_invoice``
row, its document's state, in the same transaction (storage/sales.py: ``sending`` -> ``sent``
when the mail is handed over, -> ``draft`` when the send role gives up).

Transactions: ``enqueue`` opens ``store.write_transaction()``; inside a caller's open
transaction that becomes a savepoint, so "no decision without its notifications" is simply::

    with store.write_transaction():
        ...decision rows...
        OutboxStore(store).enqueue("decision_notice", raw, [to], message_id=mid)

(with file blobs the bytes are written and fsynced before the row, as in intake; a blob left
behind by a rolled-back transaction is harmless: blobs are write-once and content-addressed).

Lease without lease columns: a claimed row is ``sending`` and its ``next_attempt_at`` holds
the lease expiry; an expired ``sending`` row is claimable again (its sender died). ``attempts``
is the fencing token: every claim increments it, and ``mark_sent``/``retry``/``give_up`` only
change the row if it is still ``sending`` with the attempts count this claim saw, so a sender
whose lease was taken over cannot overwrite the new owner's result (the message may then go
out twice with one Message-ID: at-least-once, by design).

PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: ``BEGIN IMMEDIATE`` and a compare-and-set.

Known limits: no per-recipient state (a partial refusal is recorded, not retried); the
``worker`` name passed to ``claim`` is not stored (no ``leased_by`` column yet).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import peewee as pw

from storage import models
from storage.blobs import sha256_hex
from storage.sales import SALES_KIND, SalesStore
from storage.store import Store

QUEUED = "queued"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
STATES = (QUEUED, SENDING, SENT, FAILED)

# Envelope recipients: one bare addr-spec each, nothing an SMTP command could be smuggled in.
_RECIPIENT = re.compile(r"^[^\s<>@\x00-\x1f\x7f]+@[A-Za-z0-9.-]+$")


@dataclass(frozen=True)
class OutboxItem:
    id: int
    kind: str
    message_id: str
    recipients: tuple[str, ...]
    blob_sha256: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str
    created_at: datetime
    sent_at: datetime | None
    folder_id: int | None
    document_id: int | None


def _item(row: Any) -> OutboxItem:
    return OutboxItem(
        id=row.id, kind=row.kind, message_id=row.message_id,
        recipients=tuple(json.loads(row.recipients)), blob_sha256=row.blob_sha256,
        state=row.state, attempts=row.attempts, next_attempt_at=row.next_attempt_at,
        last_error=row.last_error, created_at=row.created_at, sent_at=row.sent_at,
        folder_id=row.folder_id, document_id=row.document_id,
    )


def check_recipients(recipients: Sequence[str]) -> list[str]:
    """Bare ``local@domain`` addresses only; ValueError otherwise (or when empty)."""
    if isinstance(recipients, str) or not recipients:
        raise ValueError("recipients: expected a non-empty list of addresses")
    for rcpt in recipients:
        if not isinstance(rcpt, str) or len(rcpt) > 254 or not _RECIPIENT.match(rcpt):
            raise ValueError(f"recipients: invalid envelope address {rcpt!r}")
    return list(recipients)


class OutboxStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- writing --------------------------------------------------------------------------
    def enqueue(self, kind: str, raw: bytes, recipients: Sequence[str], *,
                folder_id: int | None = None, document_id: int | None = None,
                message_id: str) -> int:
        """Queue ``raw`` for ``recipients``; returns the outbox id.

        Idempotent on ``message_id``: a second call returns the first row's id and stores
        nothing new. Joins the caller's open transaction (savepoint) if there is one.
        """
        rcpts = check_recipients(recipients)
        if not message_id or len(message_id) > 512:
            raise ValueError(f"invalid message id {message_id!r}")
        sha = sha256_hex(raw)
        store = self.store
        if not store.blobs_in_db:
            store.blobs.put_many([(sha, raw)])
        OB = models.Outbox
        now = store.clock()
        with store.write_transaction():
            if store.blobs_in_db:
                store.blobs.put_many([(sha, raw)])
            existing = OB.get_or_none(OB.message_id == message_id)
            if existing is not None:
                return int(existing.id)
            (OB.insert(folder=folder_id, document=document_id, kind=kind[:255],
                      message_id=message_id, recipients=json.dumps(rcpts), blob_sha256=sha,
                      state=QUEUED, attempts=0, next_attempt_at=now, created_at=now)
             .on_conflict_ignore().execute())
            row = OB.get(OB.message_id == message_id)
            return int(row.id)

    # ---- the send role --------------------------------------------------------------------
    def _claimable(self) -> pw.Expression:
        OB = models.Outbox
        now = self.store.clock()
        return (((OB.state == QUEUED) & (OB.next_attempt_at <= now))
                | ((OB.state == SENDING) & (OB.next_attempt_at < now)))

    def claim(self, worker: str, lease_seconds: float) -> OutboxItem | None:
        """The oldest due row, now ``sending`` until ``lease_seconds`` from now (or None)."""
        del worker  # stored once the table has a leased_by column
        OB = models.Outbox
        with self.store.write_transaction():
            q = (OB.select(OB.id).where(self._claimable())
                 .order_by(OB.next_attempt_at, OB.id).limit(1))
            if self.store.is_postgres:
                q = q.for_update(skip_locked=True)
            row = q.first()
            if row is None:
                return None
            lease_until = self.store.clock() + timedelta(seconds=lease_seconds)
            changed = (OB.update(state=SENDING, next_attempt_at=lease_until,
                                attempts=OB.attempts + 1)
                       .where((OB.id == row.id) & self._claimable()).execute())
            if not changed:
                return None
            return _item(OB.get_by_id(row.id))

    def raw(self, item: OutboxItem) -> bytes:
        """The message bytes (BlobMissing / BlobCorrupt if the blob is gone or damaged)."""
        return self.store.blobs.get(item.blob_sha256)

    def _finish(self, item: OutboxItem, **values: Any) -> bool:
        OB = models.Outbox
        return bool(OB.update(**values).where(
            (OB.id == item.id) & (OB.state == SENDING) & (OB.attempts == item.attempts)).execute())

    def mark_sent(self, item: OutboxItem, note: str = "") -> bool:
        """The relay answered 250 (or the file is durable). False if the claim was lost."""
        with self.store.write_transaction():
            done = self._finish(item, state=SENT, sent_at=self.store.clock(),
                                last_error=note[:4000])
            if done and (item.folder_id or item.document_id):
                self.store.add_event("mail-sent", _describe(item, note), actor="sender",
                                     folder_id=item.folder_id, document_id=item.document_id)
            if done and item.kind == SALES_KIND and item.document_id:
                SalesStore(self.store).on_mail_sent(item.document_id, item.recipients,
                                                    item.message_id)
            return done

    def retry(self, item: OutboxItem, delay: float, error: str) -> bool:
        """Back to ``queued``, due in ``delay`` seconds. False if the claim was lost."""
        with self.store.write_transaction():
            return self._finish(item, state=QUEUED, last_error=error[:4000],
                                next_attempt_at=self.store.clock() + timedelta(seconds=delay))

    def give_up(self, item: OutboxItem, error: str) -> bool:
        """``failed`` for good, with an event. False if the claim was lost."""
        with self.store.write_transaction():
            done = self._finish(item, state=FAILED, last_error=error[:4000])
            if done:
                self.store.add_event("mail-failed", _describe(item, error), actor="sender",
                                     folder_id=item.folder_id, document_id=item.document_id)
            if done and item.kind == SALES_KIND and item.document_id:
                SalesStore(self.store).on_mail_failed(item.document_id, error)
            return done

    def requeue(self, outbox_id: int) -> bool:
        """An operator asks for a failed message to be sent again (same bytes, same id)."""
        OB = models.Outbox
        with self.store.write_transaction():
            return bool(OB.update(state=QUEUED, next_attempt_at=self.store.clock(),
                                 last_error="").where(
                (OB.id == outbox_id) & (OB.state == FAILED)).execute())

    # ---- reading --------------------------------------------------------------------------
    def get(self, outbox_id: int) -> OutboxItem | None:
        row = models.Outbox.get_or_none(models.Outbox.id == outbox_id)
        return _item(row) if row else None

    def by_message_id(self, message_id: str) -> OutboxItem | None:
        row = models.Outbox.get_or_none(models.Outbox.message_id == message_id)
        return _item(row) if row else None

    def items(self, state: str | None = None, kind: str | None = None,
              limit: int = 1000) -> list[OutboxItem]:
        OB = models.Outbox
        q = OB.select().order_by(OB.id)
        if state is not None:
            q = q.where(OB.state == state)
        if kind is not None:
            q = q.where(OB.kind == kind)
        return [_item(r) for r in q.limit(limit)]

    def pending_count(self) -> int:
        """Rows not yet sent nor given up (queued or sending)."""
        OB = models.Outbox
        return int(OB.select().where(OB.state.in_((QUEUED, SENDING))).count())

    def counts(self) -> dict[str, int]:
        OB = models.Outbox
        q = OB.select(OB.state, pw.fn.COUNT(OB.id).alias("n")).group_by(OB.state)
        return {r.state: int(getattr(r, "n")) for r in q}  # noqa: B009 - alias column


def _describe(item: OutboxItem, detail: str) -> str:
    text = f"{item.kind} {item.message_id} to {', '.join(item.recipients)}"
    return f"{text}: {detail}" if detail else text
