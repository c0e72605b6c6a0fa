"""Sales invoices on their way to the customer: the reads and compare-and-set writes of
daemon/sales.py, and the hooks the outbox calls when such a mail leaves or fails for good.

Job: list the drafts the scheduler has not looked at yet, with what their message proved
(protocol, stored auth verdict); move a draft to ``sending`` (mail queued) or straight to
``sent`` (delivered into a hosted customer's folder) under a compare-and-set on
(id, version, state), so two schedulers (two nodes) or a scheduler and ``facturd documents
send`` never send one invoice twice; record once why a draft was not sent automatically;
and, called by storage/outbox.py, finish ``sending`` -> ``sent`` when the send role handed
the mail over, or ``sending`` -> ``draft`` when it gave up.

May touch: ``document`` (state, version, updated_at, extra["sales_send"]) and ``event``;
``message`` is read. Every write joins the caller's transaction (savepoint) when there is one.

Marker: ``extra["sales_send"]`` is set on the first decision about a draft (declined, queued,
delivered) and never removed, so the scheduler examines each draft once; a draft that went
back to ``draft`` (the relay refused it for good) keeps it and waits for a person.

Errors: none of its own; database errors propagate and the caller's transaction rolls back
(nothing half-moved: the state change and the mail or delivery commit together).

Known limits: the drafts query filters on the document's state and direction and on the JSON
text of ``extra`` (no index: a scan of the document table per scheduler tick).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import peewee as pw

from storage import models, records
from storage.documents import to_record
from storage.store import Store

SALES_KIND = "sales_invoice"  # outbox kind of an invoice mailed to a customer
DRAFT, SENDING, SENT = "draft", "sending", "sent"
# A +sales mail whose DKIM key could not be fetched (DNS temperror) is verified again (the
# worker re-runs its delivery) for this long before the draft is left to a person.
AUTH_PATIENCE = timedelta(hours=24)
TEMPERROR_TEXT = '"result": "temperror"'  # in Message.auth (JSON, sorted keys)
MARKER = "sales_send"
_MARKER_TEXT = f'"{MARKER}":'


@dataclass(frozen=True)
class Draft:
    """A sales document with its version (the compare-and-set token) and its origin."""

    document: records.Document
    version: int
    protocol: str  # smtp | lmtp | import | internal; "" when it has no delivery
    auth: dict[str, Any]  # the message's stored auth verdict; {} when none was recorded


def _with_origin(where: Any) -> Any:
    """Documents matching ``where`` with their message's protocol and verdict, in one query
    (``m_protocol``/``m_auth`` are None for a document without a delivery)."""
    D, Dl, M = models.Document, models.Delivery, models.Message
    return (D.select(D, M.protocol.alias("m_protocol"), M.auth.alias("m_auth"))
            .join(Dl, pw.JOIN.LEFT_OUTER, on=(D.delivery == Dl.id))
            .join(M, pw.JOIN.LEFT_OUTER, on=(Dl.message == M.id))
            .where(where).objects())


def _draft(row: Any) -> Draft:
    return Draft(to_record(row), int(row.version), str(row.m_protocol or ""),
                 json.loads(row.m_auth or "{}"))


class SalesStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- reading --------------------------------------------------------------------------
    def get(self, document_id: int) -> Draft | None:
        row = _with_origin(models.Document.id == document_id).first()
        return _draft(row) if row is not None else None

    def unexamined_drafts(self, limit: int = 100) -> list[Draft]:
        """Sales drafts no one decided about yet (no marker), oldest first."""
        D = models.Document
        q = _with_origin((D.direction == "sales") & (D.state == DRAFT)
                         & ~D.extra.contains(_MARKER_TEXT)).order_by(D.id).limit(limit)
        return [_draft(r) for r in q]

    # ---- compare-and-set writes -----------------------------------------------------------
    def claim(self, draft: Draft, state: str, marker: dict[str, Any]) -> bool:
        """``draft`` -> ``state`` (``sending`` or ``sent``) if nobody changed the document
        since ``draft`` was read. Call inside the transaction that queues or delivers the
        mail: False means another scheduler or person got there first; send nothing."""
        if state not in (SENDING, SENT):
            raise ValueError(f"a draft is claimed as sending or sent, not {state!r}")
        return self.store.documents.decide(draft.document.id, version=draft.version,
                                           allowed=(DRAFT,), state=state,
                                           extra={**draft.document.extra, MARKER: marker})

    def decline(self, draft: Draft, reason: str, actor: str = "scheduler") -> bool:
        """Record once why ``draft`` is not sent automatically (event ``not-sent``); it stays
        a draft. False when it was already decided (by another scheduler) or changed."""
        with self.store.write_transaction():
            D = models.Document
            extra = dict(draft.document.extra)
            extra[MARKER] = {"declined": reason, "at": self.store.clock().isoformat()}
            done = bool(D.update(extra=json.dumps(extra, sort_keys=True, default=str))
                        .where((D.id == draft.document.id) & (D.version == draft.version)
                               & (D.state == DRAFT) & ~D.extra.contains(_MARKER_TEXT))
                        .execute())
            if done:
                self.store.add_event("not-sent", reason, actor=actor,
                                     folder_id=draft.document.folder_id,
                                     document_id=draft.document.id)
            return done

    # ---- outbox hooks (storage/outbox.py, in its transaction) -----------------------------
    def on_mail_sent(self, document_id: int, recipients: tuple[str, ...],
                     message_id: str) -> bool:
        """The relay accepted the invoice mail (or the file is durable): ``sending`` (or a
        ``draft`` whose failed mail an operator re-queued) -> ``sent``."""
        D = models.Document
        done = bool(D.update(state=SENT, version=D.version + 1, updated_at=self.store.clock())
                    .where((D.id == document_id) & (D.direction == "sales")
                           & D.state.in_((SENDING, DRAFT))).execute())
        if done:
            row: Any = D.get_by_id(document_id)
            self.store.add_event("sent", f"to {', '.join(recipients)} ({message_id})",
                                 actor="sender", folder_id=row.folder_id,
                                 document_id=document_id)
        return done

    def on_mail_failed(self, document_id: int, error: str) -> bool:
        """The send role gave up on the invoice mail: ``sending`` -> ``draft``, so a person
        can send it again (``facturd documents send``); the scheduler will not."""
        D = models.Document
        done = bool(D.update(state=DRAFT, version=D.version + 1, updated_at=self.store.clock())
                    .where((D.id == document_id) & (D.state == SENDING)).execute())
        if done:
            row: Any = D.get_by_id(document_id)
            self.store.add_event("not-sent", f"the mail could not be delivered ({error[:500]}); "
                                 "back to draft: send it again with facturd documents send",
                                 actor="sender", folder_id=row.folder_id,
                                 document_id=document_id)
        return done
