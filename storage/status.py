"""What the status page shows: counts, the quarantine, recent events. Read-only.

Job: answer "is facturd keeping up, and what needs a person?" in a handful of grouped
queries, whatever the number of documents: deliveries by state and the oldest one waiting,
documents per folder and state, mail waiting or given up in the outbox, the quarantined
deliveries with their reasons, the documents waiting for approval, and the latest events.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import peewee as pw

from storage import models, records
from storage.documents import to_record
from storage.store import _event


@dataclass(frozen=True)
class FolderCounts:
    id: int
    vat: str
    name: str
    mode: str
    states: dict[str, int]  # document state -> count


@dataclass(frozen=True)
class Quarantined:
    delivery_id: int
    folder_vat: str
    received_at: datetime
    mail_from: str
    attempts: int
    reason: str


@dataclass(frozen=True)
class Overview:
    deliveries: dict[str, int]  # delivery (job) state -> count
    oldest_waiting: datetime | None  # the oldest delivery still queued or running
    folders: list[FolderCounts]
    outbox: dict[str, int]  # outgoing mail state -> count
    quarantined: list[Quarantined]
    waiting: list[records.Document]  # pending approval, newest first
    events: list[records.Event]  # newest first


def _counts(query: pw.Query) -> dict[str, int]:
    return {str(state): int(n) for state, n in query.tuples()}


def overview(*, events: int = 50, quarantined: int = 50, waiting: int = 50) -> Overview:
    Dl, D, F, M, Ob, E = (models.Delivery, models.Document, models.Folder, models.Message,
                         models.Outbox, models.Event)
    deliveries = _counts(Dl.select(Dl.state, pw.fn.COUNT(Dl.id)).group_by(Dl.state))
    oldest = (Dl.select(pw.fn.MIN(Dl.created_at))
              .where(Dl.state.in_((records.QUEUED, records.RUNNING))).scalar())
    per_folder: dict[int, dict[str, int]] = defaultdict(dict)
    rows: Any = D.select(D.folder, D.state, pw.fn.COUNT(D.id)).group_by(D.folder, D.state)
    for folder_id, state, n in rows.tuples():
        per_folder[int(folder_id)][str(state)] = int(n)
    folders = [FolderCounts(f.id, f.vat, f.name, f.mode, per_folder.get(f.id, {}))
               for f in F.select(F.id, F.vat, F.name, F.mode).order_by(F.vat)]
    outbox = _counts(Ob.select(Ob.state, pw.fn.COUNT(Ob.id)).group_by(Ob.state))
    stuck = [Quarantined(r.id, r.folder.vat, r.message.received_at, r.message.mail_from,
                         r.attempts, r.last_error)
             for r in (Dl.select(Dl, F.vat, M.received_at, M.mail_from).join(F)
                       .switch(Dl).join(M)
                       .where(Dl.state == records.QUARANTINED)
                       .order_by(Dl.id.desc()).limit(quarantined))]
    pending = [to_record(r) for r in D.select().where(D.state == "pending_approval")
               .order_by(D.id.desc()).limit(waiting)]
    latest = [_event(r) for r in E.select().order_by(E.id.desc()).limit(events)]
    return Overview(deliveries, oldest, folders, outbox, stuck, pending, latest)
