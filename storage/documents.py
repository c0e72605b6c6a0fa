"""Documents: one invoice each, created by the worker, read by the CLI and web.

Job: row <-> records.Document, with the idempotency key (delivery, part): saving the same
part of the same delivery twice updates the one document instead of creating a second.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from storage import models, records, sql

AMOUNT_FIELDS = ("total_net", "total_tax", "total_gross", "amount_due")
TEXT_FIELDS = ("number", "issue_date", "due_date", "seller_name", "seller_vat", "seller_siren",
               "seller_iban", "buyer_name", "buyer_vat", "currency", "payment_reference")
JSON_FIELDS = ("vat_breakdown", "confidence", "reasons", "trace", "extra")
REDECIDABLE = ("received", "pending_approval")  # states a pipeline re-run may change


def to_record(row: Any) -> records.Document:
    values: dict[str, Any] = {name: getattr(row, name) for name in TEXT_FIELDS}
    for name in AMOUNT_FIELDS:
        raw = getattr(row, name)
        values[name] = Decimal(raw) if raw is not None else None
    for name in JSON_FIELDS:
        values[name] = json.loads(getattr(row, name))
    return records.Document(
        id=row.id, folder_id=row.folder_id, delivery_id=row.delivery_id, part=row.part,
        direction=row.direction, state=row.state, source=row.source,
        original_sha256=row.original_sha256, enriched_sha256=row.enriched_sha256,
        filename=row.filename, media_type=row.media_type, duplicate_of=row.duplicate_of_id,
        created_at=row.created_at, updated_at=row.updated_at,
        payment_status=row.payment_status, paid_on=row.paid_on,
        conformance=json.loads(row.conformance) if row.conformance else None, **values,
    )


def to_columns(doc: records.Document) -> dict[str, Any]:
    cols: dict[str, Any] = {name: getattr(doc, name) for name in TEXT_FIELDS}
    for name in AMOUNT_FIELDS:
        value = getattr(doc, name)
        cols[name] = str(value) if value is not None else None
    for name in JSON_FIELDS:
        cols[name] = json.dumps(getattr(doc, name), sort_keys=True, default=str)
    cols.update(
        folder=doc.folder_id, delivery=doc.delivery_id, part=doc.part, direction=doc.direction,
        state=doc.state, source=doc.source, original_sha256=doc.original_sha256,
        enriched_sha256=doc.enriched_sha256, filename=doc.filename[:1024],
        media_type=doc.media_type, duplicate_of=doc.duplicate_of,
        xml_sha256=str(doc.extra.get("xml_sha256") or ""),
    )
    return cols


@dataclass(frozen=True)
class Snapshot:
    """What a decision checks: a document's state, version and ``extra`` right now."""

    id: int
    folder_id: int
    state: str
    version: int
    extra: dict[str, Any]


class Documents:
    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock

    def get(self, document_id: int) -> records.Document | None:
        row = models.Document.get_or_none(models.Document.id == document_id)
        return to_record(row) if row else None

    def find(self, folder_id: int | None = None, state: str | None = None,
             limit: int = 1000) -> list[records.Document]:
        D = models.Document
        q = D.select().order_by(D.id.desc())
        if folder_id is not None:
            q = q.where(D.folder == folder_id)
        if state is not None:
            q = q.where(D.state == state)
        return [to_record(r) for r in q.limit(limit)]

    def upsert(self, doc: records.Document) -> tuple[int, bool, bool]:
        """Insert, or update the document with the same (delivery, part); call inside a
        transaction. Returns (id, created, changed): ``changed`` when the state moved (the
        version moves only then, so outstanding approval links stay valid across a re-run
        that decides the same). A document a person (or a later step) already moved past
        ``pending_approval`` is left as it is: a re-run never undoes a decision."""
        D = models.Document
        cols = to_columns(doc)
        now = self.clock()
        existing = None
        if doc.delivery_id is not None:  # hot path: hand-written SQL (storage/sql.py)
            existing = sql.execute('SELECT "id", "state" FROM "document" WHERE "delivery_id" = ?'
                                   ' AND "part" = ?', (doc.delivery_id, doc.part)).fetchone()
        if existing is None:
            new_id = sql.insert(D, [{"created_at": now, "updated_at": now, **cols}])
            assert new_id is not None
            return new_id, True, True
        existing_id, existing_state = int(existing[0]), str(existing[1])
        if existing_state not in REDECIDABLE:
            return existing_id, False, False
        changed = existing_state != doc.state
        D.update(updated_at=now, version=D.version + (1 if changed else 0), **cols).where(
            (D.id == existing_id) & D.state.in_(REDECIDABLE)).execute()
        return existing_id, False, changed

    # ---- Schematron verdicts (daemon/conformance.py) ------------------------------------------
    def unchecked(self, sources: Sequence[str], limit: int) -> list[tuple[int, str, str]]:
        """(id, source, original sha256) of documents from ``sources`` whose conformance was
        never checked, newest first."""
        D = models.Document
        rows: Any = (D.select(D.id, D.source, D.original_sha256)
                     .where(D.conformance.is_null() & D.source.in_(list(sources))
                            & (D.original_sha256 != ""))
                     .order_by(D.id.desc()).limit(limit))
        return [(int(i), str(src), str(sha)) for i, src, sha in rows.tuples()]

    def set_conformance(self, document_id: int, verdict: dict[str, Any]) -> bool:
        """Record a verdict once: True for the one caller that recorded it."""
        D = models.Document
        return bool(D.update(conformance=json.dumps(verdict, sort_keys=True)).where(
            (D.id == document_id) & D.conformance.is_null()).execute())

    def set_state(self, document_id: int, state: str) -> None:
        D = models.Document
        D.update(state=state, updated_at=self.clock(), version=D.version + 1).where(
            D.id == document_id).execute()

    # ---- accountant sharing (daemon/sharing.py) -------------------------------------------
    def unshared(self, folder_id: int, states: Sequence[str],
                 document_ids: Sequence[int] | None = None) -> list[records.Document]:
        """The folder's documents in ``states`` not shared with the accountant yet."""
        D = models.Document
        q = D.select().where((D.folder == folder_id) & D.shared_at.is_null()
                             & D.state.in_(list(states)))
        if document_ids is not None:
            q = q.where(D.id.in_(list(document_ids)))
        return [to_record(r) for r in q.order_by(D.id)]

    def mark_shared(self, document_id: int, now: datetime) -> bool:
        """Compare-and-set: True for the one caller that marks it shared first."""
        D = models.Document
        return bool(D.update(shared_at=now).where(
            (D.id == document_id) & D.shared_at.is_null()).execute())

    def last_shared_at(self, folder_id: int) -> datetime | None:
        D = models.Document
        value: datetime | None = (D.select(D.shared_at)
                                  .where((D.folder == folder_id) & D.shared_at.is_null(False))
                                  .order_by(D.shared_at.desc()).limit(1).scalar())
        return value

    # ---- decisions (daemon/decisions.py) ---------------------------------------------------
    def snapshot(self, document_id: int) -> Snapshot | None:
        D = models.Document
        row: Any = D.select(D.id, D.folder, D.state, D.version, D.extra).where(
            D.id == document_id).first()
        if row is None:
            return None
        return Snapshot(int(row.id), int(row.folder_id), str(row.state), int(row.version),
                        json.loads(row.extra or "{}"))

    def decide(self, document_id: int, *, version: int, allowed: Sequence[str],
               state: str, extra: dict[str, Any], paid_on: str | None = None) -> bool:
        """Compare-and-set: move the document to ``state`` (version + 1) only if it is still
        at ``version`` and in one of ``allowed``; ``paid_on`` also marks it paid. True for
        the one caller that made the change; call inside the decision's transaction."""
        D = models.Document
        values: dict[str, Any] = {"state": state, "updated_at": self.clock(),
                                  "version": D.version + 1,
                                  "extra": json.dumps(extra, sort_keys=True, default=str)}
        if paid_on is not None:
            values.update(payment_status="paid", paid_on=paid_on)
        return bool(D.update(**values).where(
            (D.id == document_id) & (D.version == version)
            & D.state.in_(list(allowed))).execute())
