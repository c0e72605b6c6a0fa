"""Decisions by a person on an invoice: approve, reject, mark paid — each exactly once.

Job: change one document's state under a compare-and-set on (id, version, state), and in the
same write transaction redeem the approval token that allowed it (when there is one), append
the audit event (actor = the person) and enqueue the ``decision_notice`` mail to the folder's
notification address and to the person who decided. "No decision without its notifications,
no notification without a decision": they commit or roll back together. Two concurrent
decisions on one document (a link click and a reply) produce one change; the other caller gets
``AlreadyDecided`` (or ``TokenRefused("used")`` when it presented the same token again).

Also home of ``ApprovalSettings``, shared by approval.py, replies.py and web.py.

May touch: the document, approval, event, outbox and setting tables (through storage/:
``Documents.decide`` is the compare-and-set), the blob store (notice bytes).
Synchronous and blocking: async callers run these functions in a thread.

Known limits: the notice is one message to every recipient (one Message-ID); a ``by`` that is
not an address (``cli``) gets no copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2

from daemon import faults, mailer
from rules.lifecycle import REASONS
from storage.approvals import Approvals, Grant, TokenRefused
from storage.documents import Snapshot
from storage.outbox import OutboxStore
from storage.policy import Policy
from storage.store import Store

PENDING = "pending_approval"
APPROVED_STATE = "archived"
REJECTED_STATE = "rejected"
PAID_STATE = "paid"
PAYABLE = ("archived", "accepted", "sent")  # approved purchase, or sent sales invoice
MAX_NOTE = 1000


@dataclass(frozen=True)
class ApprovalSettings:
    """What approval mail, replies and the web role need from the configuration."""

    domain: str  # intake domain: Reply-To <VAT>+r<token>@domain, Message-ID domain
    public_url: str  # https://factures.example.com (links are {public_url}/a/{token})
    from_address: str  # From of requests and notices
    token_ttl: timedelta = timedelta(days=14)
    template_dirs: tuple[Path, ...] = field(default_factory=mailer.template_dirs)

    def __post_init__(self) -> None:
        parts = urlsplit(self.public_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"public_url: expected https://host[/path], got {self.public_url!r}")
        if parts.query or parts.fragment:
            raise ValueError("public_url: no query or fragment allowed")
        if self.token_ttl <= timedelta(0):
            raise ValueError("token_ttl must be positive")
        mailer.check_address(self.from_address)

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/")

    @property
    def public_host(self) -> str:
        return (urlsplit(self.public_url).hostname or "").lower()

    def environment(self) -> jinja2.Environment:
        return mailer.shared_environment(self.template_dirs)


class DecisionError(Exception):
    """A decision that cannot be made; the message says why, for a person."""


class AlreadyDecided(DecisionError):
    """The document is no longer waiting for this decision (decided, or changed since)."""


class NotPayable(DecisionError):
    """Only an approved (archived or accepted) invoice can be marked paid."""


class NotAllowed(DecisionError):
    """The token does not grant this decision, or a value (reason code) is invalid."""


class UnknownDocument(DecisionError):
    pass


@dataclass(frozen=True)
class _Change:
    decision: str  # approved | rejected | paid (event kind and notice wording)
    allowed_states: tuple[str, ...]
    token_actions: tuple[str, ...]
    new_state: str
    code: str | None = None
    paid_on: date | None = None
    notify: bool = True


def approve(store: Store, settings: ApprovalSettings, document_id: int, *, by: str,
            version: int | None, note: str = "", token: str | None = None,
            via: str | None = None) -> str:
    """pending_approval -> archived. Returns the new state; raises DecisionError/TokenRefused."""
    change = _Change("approved", (PENDING,), ("approve", "reply"), APPROVED_STATE)
    return _decide(store, settings, document_id, change, by, version, note, token, via)


def reject(store: Store, settings: ApprovalSettings, document_id: int, *, by: str,
           version: int | None, code: str, note: str = "", token: str | None = None,
           via: str | None = None) -> str:
    """pending_approval -> rejected with a lifecycle reason code (rules.lifecycle.REASONS)."""
    code = code.strip().upper()
    if code not in REASONS:
        raise NotAllowed(f"unknown reason code {code!r}")
    change = _Change("rejected", (PENDING,), ("reject", "reply"), REJECTED_STATE, code=code)
    return _decide(store, settings, document_id, change, by, version, note, token, via)


def mark_paid(store: Store, settings: ApprovalSettings, document_id: int, *, by: str, on: date,
              version: int | None = None, note: str = "", token: str | None = None,
              via: str | None = None, notify: bool = True) -> str:
    """archived/accepted (or a sent sales invoice) -> paid (payment_status paid, paid_on),
    confirmed by mail unless ``notify`` is False (a reply marking several invoices gets one
    confirmation listing them all: daemon/paid_replies.py)."""
    change = _Change("paid", PAYABLE, ("paid",), PAID_STATE, paid_on=on, notify=notify)
    return _decide(store, settings, document_id, change, by, version, note, token, via)


def _decide(store: Store, settings: ApprovalSettings, document_id: int, change: _Change,
            by: str, version: int | None, note: str, token: str | None,
            via: str | None) -> str:
    by = by.strip()
    if not by:
        raise ValueError("by: who decides must be named")
    note = mailer.one_line(note, MAX_NOTE) if note else ""
    with store.write_transaction():
        row = store.documents.snapshot(document_id)
        if row is None:
            raise UnknownDocument(f"no document {document_id}")
        grant = _redeem(store, token, row, change, by) if token else None
        via = via or (("reply" if grant.action == "reply" else "link") if grant else "cli")
        expected = version if version is not None else row.version
        now = store.clock()
        record: dict[str, Any] = {"decision": change.decision, "by": by, "via": via,
                                  "at": now.isoformat(timespec="seconds")}
        if note:
            record["note"] = note
        if change.code:
            record["code"] = change.code
        extra = dict(row.extra)
        if change.paid_on is not None:
            record["on"] = change.paid_on.isoformat()
            extra["payment"] = record
        else:
            extra["decision"] = record
            if change.code:
                extra["reason_code"] = change.code
        if not store.documents.decide(
                document_id, version=expected, allowed=change.allowed_states,
                state=change.new_state, extra=extra,
                paid_on=change.paid_on.isoformat() if change.paid_on is not None else None):
            raise _refusal(store, row.id, expected, change)
        detail = f"by {by} via {via}"
        if change.code:
            detail += f": {change.code}"
        if change.paid_on is not None:
            detail += f", paid on {change.paid_on.isoformat()}"
        if note:
            detail += f" — {note}"
        store.add_event(change.decision, detail, actor=by, folder_id=row.folder_id,
                        document_id=document_id)
        if change.notify:
            _enqueue_notice(store, settings, document_id, change, by, now, note, grant)
    faults.hit("decision.committed")  # F-20: a crash here must lose no notice
    return change.new_state


def _redeem(store: Store, token: str, row: Snapshot, change: _Change, by: str) -> Grant:
    """Use the token in this transaction; a token made stale by another decision becomes
    AlreadyDecided (the loser of a race is told so)."""
    try:
        grant = Approvals(store).redeem(token)
    except TokenRefused as exc:
        current = store.documents.snapshot(row.id)  # PostgreSQL: may have moved on
        if (exc.reason == "stale" and current is not None
                and current.state not in change.allowed_states):
            raise _refusal(store, row.id, -1, change) from exc
        raise
    if (grant.document_id != row.id or grant.action not in change.token_actions
            or grant.approver.lower() != by.lower()):
        raise NotAllowed("this link or reply does not allow that decision")
    return grant


def already_decided(store: Store, document_id: int, action: str) -> str | None:
    """For a token refused as stale: "already decided: …" when the document no longer waits
    for the token's action (``approve``/``reject``/``reply``/``paid``), else None."""
    row = store.documents.snapshot(document_id)
    waiting = PAYABLE if action == "paid" else (PENDING,)
    if row is None or row.state in waiting:
        return None
    change = _Change("paid" if action == "paid" else "decided", waiting, (), "")
    return str(_refusal(store, row.id, -1, change))


def _refusal(store: Store, document_id: int, expected: int, change: _Change) -> DecisionError:
    current = store.documents.snapshot(document_id)
    if current is None:
        return UnknownDocument(f"no document {document_id}")
    state = current.state
    last = current.extra.get("payment" if state == PAID_STATE else "decision") or {}
    who = f" by {last['by']}" if last.get("by") else ""
    when = f" on {last['at'][:10]}" if last.get("at") else ""
    if change.decision == "paid" and state not in (PAID_STATE, *PAYABLE):
        return NotPayable(f"document {document_id} is {state}: only an approved invoice can be "
                          "marked paid")
    if state not in change.allowed_states:
        return AlreadyDecided(f"already decided: document {document_id} is {state}{who}{when}")
    return AlreadyDecided(f"already decided: document {document_id} changed since (version "
                          f"{current.version}, expected {expected})")


# ---- the notice -----------------------------------------------------------------------------

def notice_recipients(store: Store, folder_id: int, by: str) -> list[str]:
    """The folder's notification address and the person who decided (if an address)."""
    notify = str(Policy(store).folder_settings(folder_id).get("notify_email") or "")
    out: list[str] = []
    for candidate in (notify, by):
        try:
            spec = mailer.addr_spec(candidate.strip())
        except ValueError:
            continue
        if spec.lower() not in (o.lower() for o in out):
            out.append(spec)
    return out


def reason_text(code: str, lang: str) -> str:
    if code in mailer.REASON_CODES:
        return mailer.reason_label(code, lang)
    reason = REASONS.get(code)
    if reason is None:
        return code
    return reason.fr if lang.startswith("fr") else reason.en


def _enqueue_notice(store: Store, settings: ApprovalSettings, document_id: int,
                    change: _Change, by: str, now: datetime, note: str,
                    grant: Grant | None) -> None:
    doc = store.documents.get(document_id)
    assert doc is not None
    recipients = notice_recipients(store, doc.folder_id, by)
    if not recipients:
        store.add_event("notice-skipped", "no notification address and the decider is not "
                        "an address", folder_id=doc.folder_id, document_id=document_id)
        return
    folder_settings = Policy(store).folder_settings(doc.folder_id)
    lang = str(folder_settings.get("language") or "fr")
    context: dict[str, object] = {
        "folder_name": folder_settings["name"], "supplier": supplier_of(doc),
        "number": doc.number, "total_gross": doc.total_gross, "currency": doc.currency,
        "decision": change.decision, "decided_by": by, "decided_at": now,
        "reason_code": change.code, "note": note or None,
        "reason_label": reason_text(change.code, lang) if change.code else None,
        "paid_on": change.paid_on,
    }
    rendered = mailer.render(settings.environment(), "decision_notice", lang, context)
    message_id = mailer.make_message_id(settings.domain)
    thread = mailer.thread_ids(grant.request_message_id) if grant else []
    raw = mailer.compose(rendered, sender=settings.from_address, to=recipients,
                         message_id=message_id, in_reply_to=thread[-1] if thread else None,
                         references=thread)
    OutboxStore(store).enqueue("decision_notice", raw, recipients, folder_id=doc.folder_id,
                               document_id=document_id, message_id=message_id)


def supplier_of(doc: Any) -> str:
    return str(doc.seller_name or doc.seller_vat or "—")
