"""The storage interface the daemon uses: folders, intake, deliveries, documents, events.

Job: translate between records (dataclasses) and tables; own transactions. Every method is
synchronous and may block on disk: async callers run it in a thread (see daemon/intake.py).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import peewee as pw

from storage import models, records, sql
from storage.blobs import Blobs, DatabaseBlobs, FileBlobs
from storage.db import is_postgres, open_database
from storage.documents import Documents
from storage.migrations import migrate
from storage.records import (
    DeliveryResult,
    IntakeItem,
    IntakeResult,
)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _folder(row: Any) -> records.Folder:
    return records.Folder(
        id=row.id, vat=row.vat, name=row.name, siren=row.siren, iban=row.iban, mode=row.mode,
        identify_duplicates=row.identify_duplicates, block_duplicates=row.block_duplicates,
        auto_accept_approved_senders=row.auto_accept_approved_senders,
        notify_email=row.notify_email, notify_frequency=row.notify_frequency,
        accountant_email=row.accountant_email, language=row.language,
        created_at=row.created_at,
    )


def _message(row: Any) -> records.Message:
    return records.Message(
        id=row.id, sha256=row.sha256, size=row.size, mail_from=row.mail_from,
        rcpt_tos=tuple(json.loads(row.rcpt_tos)), protocol=row.protocol, peer=row.peer,
        helo=row.helo, filename=row.filename, received_at=row.received_at,
    )


def _delivery(row: Any) -> records.Delivery:
    return records.Delivery(
        id=row.id, message_id=row.message_id, folder_id=row.folder_id, address=row.address,
        tag=row.tag, direction=row.direction, state=row.state, attempts=row.attempts,
        lease_until=row.lease_until, next_attempt_at=row.next_attempt_at,
        last_error=row.last_error, duplicate_of=row.duplicate_of_id, created_at=row.created_at,
    )


def _event(row: Any) -> records.Event:
    return records.Event(
        id=row.id, at=row.at, folder_id=row.folder_id, delivery_id=row.delivery_id,
        document_id=row.document_id, actor=row.actor, kind=row.kind, detail=row.detail,
    )


class Store:
    def __init__(self, db: pw.Database, blobs: Blobs,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.blobs = blobs
        self.clock = clock
        self.blobs_in_db = isinstance(blobs, DatabaseBlobs)
        self.documents = Documents(clock)

    # ---- life cycle -------------------------------------------------------------------
    @classmethod
    def open(cls, url: str, blob_backend: str, blob_path: Any,
             clock: Callable[[], datetime] = utcnow) -> Store:
        db = open_database(url)
        migrate(db)
        blobs: Blobs = DatabaseBlobs() if blob_backend == "database" else FileBlobs(blob_path)
        return cls(db, blobs, clock)

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    @property
    def is_postgres(self) -> bool:
        return is_postgres(self.db)

    def write_transaction(self) -> Any:
        """A transaction that takes the write lock at once (SQLite) to avoid upgrade deadlocks."""
        return self.db.atomic() if self.is_postgres else self.db.atomic("IMMEDIATE")

    # ---- folders ----------------------------------------------------------------------
    def add_folder(self, vat: str, name: str, *, mode: str = "manual", notify_email: str = "",
                   accountant_email: str = "", siren: str = "", language: str = "fr",
                   ) -> records.Folder:
        if mode not in records.MODES:
            raise ValueError(f"mode must be one of {', '.join(records.MODES)}")
        with self.write_transaction():
            row = models.Folder.create(
                vat=vat, name=name, mode=mode, notify_email=notify_email,
                accountant_email=accountant_email, siren=siren, language=language,
                created_at=self.clock(),
            )
            models.Event.create(at=self.clock(), folder=row.id, actor="cli",
                                kind="folder-created", detail=f"{vat} {name}")
        return _folder(row)

    def folder_by_vat(self, vat: str) -> records.Folder | None:
        row = models.Folder.get_or_none(models.Folder.vat == vat.upper())
        return _folder(row) if row else None

    def folder(self, folder_id: int) -> records.Folder | None:
        row = models.Folder.get_or_none(models.Folder.id == folder_id)
        return _folder(row) if row else None

    def folders(self) -> list[records.Folder]:
        return [_folder(r) for r in models.Folder.select().order_by(models.Folder.vat)]

    # ---- intake -----------------------------------------------------------------------
    def record_intake(self, items: Sequence[IntakeItem]) -> list[IntakeResult]:
        """Make a batch of received messages and their jobs durable, in one commit.

        Blob bytes first (files: fsynced before the rows that name them), then one
        transaction with a message row and one delivery per recipient. When this returns,
        everything is on disk. Re-delivery of the same bytes to the same folder is stored
        (never lost) as a ``duplicate`` delivery pointing at the first one.

        On SQLite the batch costs three statements whatever its size: ids are assigned under
        the write lock (``BEGIN IMMEDIATE``) and rows go in with multi-row INSERTs. On
        PostgreSQL (several writers) each row is inserted with RETURNING.
        """
        for item in items:
            if item.protocol not in records.PROTOCOLS:
                raise ValueError(f"unknown intake protocol {item.protocol!r}")
        if not self.blobs_in_db:
            self.blobs.put_many((i.sha256, i.raw) for i in items)
        results: list[IntakeResult] = []
        now = self.clock()
        M, D = models.Message, models.Delivery
        with self.write_transaction():
            if self.blobs_in_db:
                self.blobs.put_many((i.sha256, i.raw) for i in items)
            first = self._first_deliveries({i.sha256 for i in items})
            bulk = not self.is_postgres
            next_mid = (M.select(pw.fn.MAX(M.id)).scalar() or 0) + 1 if bulk else 0
            next_did = (D.select(pw.fn.MAX(D.id)).scalar() or 0) + 1 if bulk else 0
            messages: list[dict[str, Any]] = []
            deliveries: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            for item in items:
                cols = dict(sha256=item.sha256, size=len(item.raw),
                            mail_from=item.mail_from[:1024],
                            rcpt_tos=json.dumps([r.address for r in item.recipients]),
                            protocol=item.protocol, peer=item.peer[:255], helo=item.helo[:1024],
                            filename=item.filename[:1024], received_at=now)
                if bulk:
                    mid, next_mid = next_mid, next_mid + 1
                    messages.append({"id": mid, **cols})
                else:
                    mid = int(M.insert(**cols).execute())
                out: list[DeliveryResult] = []
                for rcpt in item.recipients:
                    dup = first.get((rcpt.folder_id, item.sha256))
                    state = records.TRANSPORT_DUPLICATE if dup else records.QUEUED
                    dcols = dict(message=mid, folder=rcpt.folder_id, address=rcpt.address[:1024],
                                 tag=rcpt.tag,
                                 direction="sales" if rcpt.tag == "sales" else "purchase",
                                 state=state, next_attempt_at=now, duplicate_of=dup,
                                 created_at=now, updated_at=now)
                    if bulk:
                        did, next_did = next_did, next_did + 1
                        deliveries.append({"id": did, **dcols})
                    else:
                        did = int(D.insert(**dcols).execute())
                    if dup is None:
                        first[(rcpt.folder_id, item.sha256)] = did
                    else:
                        events.append(dict(
                            at=now, folder=rcpt.folder_id, delivery=did, actor="intake",
                            kind="transport-duplicate",
                            detail=f"same bytes (sha256 {item.sha256[:12]}) as delivery {dup}"))
                    out.append(DeliveryResult(did, rcpt.folder_id, state, dup))
                results.append(IntakeResult(mid, tuple(out)))
            if messages:
                M.insert_many(messages).execute()
            if deliveries:
                D.insert_many(deliveries).execute()
            for event in events:  # events reference deliveries: after them
                models.Event.insert(**event).execute()
        return results

    def _first_deliveries(self, shas: set[str]) -> dict[tuple[int, str], int]:
        """(folder id, sha256) -> the first non-duplicate delivery of those bytes there."""
        D, M = models.Delivery, models.Message
        q = (D.select(M.sha256, D.folder, pw.fn.MIN(D.id).alias("first")).join(M)
             .where(M.sha256.in_(sorted(shas)) & (D.state != records.TRANSPORT_DUPLICATE))
             .group_by(M.sha256, D.folder))
        found: dict[tuple[int, str], int] = {}
        for row in q:
            r: Any = row
            found[(int(r.folder_id), str(r.message.sha256))] = int(r.first)
        return found

    def set_message_auth(self, message_id: int, verdict: dict[str, Any]) -> None:
        models.Message.update(auth=json.dumps(verdict, sort_keys=True)).where(
            models.Message.id == message_id).execute()

    # ---- reading ----------------------------------------------------------------------
    def message(self, message_id: int) -> records.Message | None:
        row = models.Message.get_or_none(models.Message.id == message_id)
        return _message(row) if row else None

    def raw_message(self, message_id: int) -> bytes:
        row = models.Message.get_by_id(message_id)
        return self.blobs.get(row.sha256)

    def delivery(self, delivery_id: int) -> records.Delivery | None:
        row = models.Delivery.get_or_none(models.Delivery.id == delivery_id)
        return _delivery(row) if row else None

    def deliveries(self, folder_id: int | None = None, state: str | None = None,
                   limit: int = 1000) -> list[records.Delivery]:
        q = models.Delivery.select().order_by(models.Delivery.id)
        if folder_id is not None:
            q = q.where(models.Delivery.folder == folder_id)
        if state is not None:
            q = q.where(models.Delivery.state == state)
        return [_delivery(r) for r in q.limit(limit)]

    # ---- installation secrets ---------------------------------------------------------
    def secret(self, key: str) -> bytes:
        """A random 32-byte secret shared by every node (the ``setting`` table, hex), created
        on first use: the web form nonces, the signed payment references."""
        S = models.Setting
        row = S.get_or_none(S.key == key)
        if row is None:
            with self.write_transaction():
                S.insert(key=key, value=secrets.token_hex(32)).on_conflict_ignore().execute()
            row = S.get(S.key == key)
        return bytes.fromhex(row.value)

    # ---- events -----------------------------------------------------------------------
    def add_event(self, kind: str, detail: str = "", *, actor: str = "facturd",
                  folder_id: int | None = None, delivery_id: int | None = None,
                  document_id: int | None = None) -> None:
        self.add_events([(kind, detail)], actor=actor, folder_id=folder_id,
                        delivery_id=delivery_id, document_id=document_id)

    def add_events(self, events: Sequence[tuple[str, str]], *, actor: str = "facturd",
                   folder_id: int | None = None, delivery_id: int | None = None,
                   document_id: int | None = None) -> None:
        """Several (kind, detail) events of the same subject, in one statement."""
        if events:
            at = self.clock()
            sql.insert(models.Event, [
                {"at": at, "folder": folder_id, "delivery": delivery_id,
                 "document": document_id, "actor": actor, "kind": kind, "detail": detail}
                for kind, detail in events])

    def events(self, *, document_id: int | None = None, delivery_id: int | None = None,
               folder_id: int | None = None) -> list[records.Event]:
        E = models.Event
        q = E.select().order_by(E.id)
        if document_id is not None:
            q = q.where(E.document == document_id)
        if delivery_id is not None:
            q = q.where(E.delivery == delivery_id)
        if folder_id is not None:
            q = q.where(E.folder == folder_id)
        return [_event(r) for r in q]
