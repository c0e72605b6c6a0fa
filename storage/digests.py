"""What the digests read: open invoices, activity since the last digest, what waits.

Job: the queries behind daemon/digest.py (and daemon/paid_replies.py, which matches reply
lines against the same open invoices), and the compare-and-set that claims a folder's digest.
Read-only except ``advance``; call inside the caller's transaction where it says so.

May touch: documents (read), folders (``last_digest_at``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from storage import models, records
from storage.documents import to_record


def open_documents(folder_id: int, states: Iterable[str]) -> list[records.Document]:
    """The folder's documents in ``states`` not marked paid, oldest first."""
    D = models.Document
    q = D.select().where((D.folder == folder_id) & (D.payment_status != "paid")
                         & D.state.in_(sorted(states)))
    return [to_record(r) for r in q.order_by(D.id)]


def last_digest_at(folder_id: int) -> datetime | None:
    value: datetime | None = models.Folder.get_by_id(folder_id).last_digest_at
    return value


def advance(folder_id: int, seen: datetime | None, now: datetime) -> bool:
    """Compare-and-set of ``last_digest_at`` from ``seen`` to ``now``: True for the one
    caller (node, timer) that claims this digest."""
    F = models.Folder
    cond = F.last_digest_at.is_null() if seen is None else F.last_digest_at == seen
    return bool(F.update(last_digest_at=now).where((F.id == folder_id) & cond).execute())


def activity_counts(folder_id: int, since: datetime | None, until: datetime
                    ) -> tuple[int, int, int, int]:
    """(received, archived, blocked as duplicates, newly held) in (since, until]: documents
    created (purchase) or moved to that state in the window."""
    D = models.Document

    def count(cond: Any, column: Any) -> int:
        window = column <= until if since is None else (column > since) & (column <= until)
        return int(D.select().where((D.folder == folder_id) & cond & window).count())

    return (count(D.direction == "purchase", D.created_at),
            count(D.state == "archived", D.updated_at),
            count(D.state == "duplicate", D.updated_at),
            count(D.state == "pending_approval", D.updated_at))


def pending_documents(folder_id: int, limit: int) -> tuple[list[records.Document], int]:
    """The oldest ``limit`` documents waiting for a person, and how many wait in all."""
    D = models.Document
    q = D.select().where((D.folder == folder_id) & (D.state == "pending_approval"))
    rows = q.order_by(D.created_at, D.id).limit(limit)
    return [to_record(r) for r in rows], int(q.count())
