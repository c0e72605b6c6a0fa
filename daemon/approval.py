"""Approval requests: ask the folder's people to decide on a held invoice, by link or reply.

Job: for a document that ends ``pending_approval``, send each person (the folder's
notification address, then its approvers) one ``approval_request`` mail in the folder's
language, carrying their own approve link, reject link (``{public_url}/a/{token}``, the page
behind it changes nothing on GET) and reply address (``Reply-To: <VAT>+r<token>@<domain>``),
with the original document attached. Tokens and outbox rows are written in the caller's
transaction (the one that stores the document), so a request exists exactly when the held
document does, and every token knows the Message-ID of the mail that carries it. With
``only``, one person is asked again (the "send me a new link" button of an expired link,
daemon/web.py).

May touch: approvals and outbox (through storage APIs), the blob store (read the original,
write the mail). Synchronous; call it inside ``store.write_transaction()``.

Known limits: nothing is sent when the folder has no notification address (approvers alone
are not asked). A re-run of the delivery bumps the document version, which makes earlier
tokens stale; call this again then. The vendor is never a recipient (B-APPR-16): only the
folder's own configured addresses are.
"""

from __future__ import annotations

import logging

from daemon import mailer
from daemon.decisions import PENDING, ApprovalSettings, supplier_of
from storage.approvals import Approvals
from storage.blobs import BlobCorrupt, BlobMissing
from storage.outbox import OutboxStore
from storage.policy import Policy
from storage.records import Document
from storage.store import Store

log = logging.getLogger(__name__)

MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1
REPLY_TAG_PREFIX = "r"


def reply_address(vat: str, reply_token: str, domain: str) -> str:
    """``<VAT>+r<token>@<domain>``; ValueError if the local part would exceed 64 octets."""
    local = f"{vat.upper()}+{REPLY_TAG_PREFIX}{reply_token}"
    if len(local) > MAX_LOCAL_PART:
        raise ValueError(f"reply address local part too long ({len(local)} > 64)")
    return f"{local}@{domain}"


def request_recipients(store: Store, folder_id: int) -> list[str]:
    """The notification address then each approver, bare and deduplicated (case-insensitive);
    [] when the folder has no (valid) notification address."""
    settings = Policy(store).folder_settings(folder_id)
    notify = str(settings.get("notify_email") or "").strip()
    if not notify:
        return []
    out: list[str] = []
    for candidate in [notify, *(settings.get("approvers") or [])]:
        try:
            spec = mailer.addr_spec(str(candidate).strip())
        except ValueError:
            log.warning("folder %d: ignoring invalid approval address %r", folder_id, candidate)
            continue
        if spec.lower() not in (o.lower() for o in out):
            out.append(spec)
    return out


def request_approval(store: Store, settings: ApprovalSettings, document_id: int, *,
                     only: str | None = None) -> list[str]:
    """Issue tokens and enqueue one approval request per person; returns the recipients.

    Call inside the transaction that holds the document. Returns [] (sends nothing) when the
    document is not pending approval or the folder has no notification address. ``only``:
    ask this one person again (a new link asked from an expired one), if they are still
    one of the folder's people."""
    doc = store.documents.get(document_id)
    if doc is None:
        raise LookupError(f"no document {document_id}")
    if doc.state != PENDING:
        return []
    recipients = request_recipients(store, doc.folder_id)
    if only is not None:
        recipients = [p for p in recipients if p.lower() == only.strip().lower()]
    if not recipients:
        return []
    folder = store.folder(doc.folder_id)
    assert folder is not None, "documents reference folders (foreign key)"
    lang = folder.language or "fr"
    attachments = _original(store, doc)
    approvals = Approvals(store)
    outbox = OutboxStore(store)
    env = settings.environment()
    expires_at = store.clock() + settings.token_ttl
    with store.write_transaction():
        for person in recipients:
            message_id = mailer.make_message_id(settings.domain)
            tokens = {action: approvals.issue(document_id, person, action,
                                              ttl=settings.token_ttl,
                                              request_message_id=message_id)
                      for action in ("approve", "reject", "reply")}
            context: dict[str, object] = {
                "folder_name": folder.name, "supplier": supplier_of(doc),
                "number": doc.number, "issue_date": doc.issue_date, "due_date": doc.due_date,
                "currency": doc.currency, "total_net": doc.total_net,
                "total_tax": doc.total_tax, "total_gross": doc.total_gross,
                "amount_due": doc.amount_due, "reasons": list(doc.reasons),
                "approve_url": f"{settings.base_url}/a/{tokens['approve']}",
                "reject_url": f"{settings.base_url}/a/{tokens['reject']}",
                "expires_at": expires_at,
            }
            rendered = mailer.render(env, "approval_request", lang, context)
            raw = mailer.compose(
                rendered, sender=settings.from_address, to=[person], message_id=message_id,
                reply_to=reply_address(folder.vat, tokens["reply"], settings.domain),
                attachments=attachments)
            outbox.enqueue("approval_request", raw, [person], folder_id=doc.folder_id,
                           document_id=document_id, message_id=message_id)
        store.add_event("approval-requested", "to " + ", ".join(recipients),
                        folder_id=doc.folder_id, document_id=document_id)
    return recipients


def _original(store: Store, doc: Document) -> list[tuple[str, str, bytes]]:
    if not doc.original_sha256:
        return []
    try:
        data = store.blobs.get(doc.original_sha256)
    except (BlobMissing, BlobCorrupt) as exc:
        log.error("document %d: original unreadable, request sent without it: %s", doc.id, exc)
        return []
    name = doc.filename or f"invoice-{doc.id}"
    return [(name, doc.media_type or "application/octet-stream", data)]
