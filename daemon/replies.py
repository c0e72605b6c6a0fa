"""Approval by reply: read a person's answer to an approval request (or to a digest) and act
on it once.

Job: for a delivery to ``<VAT>+r<token>@<domain>`` decide whether the mail is a genuine
answer from a person the token allows, read the command on its first own line, and make the
decision through daemon.decisions (which redeems the token in the decision's transaction, so
a reply acts exactly once and races with a link click have one winner). A digest's reply
address carries a folder token: its reply marks invoices paid (daemon.paid_replies). Returns
a readable outcome for the delivery's record; a disposition is never an exception.

Acts only when all hold: the tag carries a known, unused, unexpired ``reply`` token (of a
document that has not changed, for an approval request); the mail is not automatic (RFC 3834
``Auto-Submitted`` other than ``no``, ``Precedence: bulk/junk/list``,
``X-Autoreply``/``X-Autorespond``, list headers), not a bounce (null return path,
MAILER-DAEMON/postmaster sender, ``multipart/report``); its From is authenticated
(``verdict.result == "pass"``) and is the token's approver (for a digest: the folder's
notification address or one of its approvers, as configured now); the first non-quoted,
non-empty line of the text starts with an approve or reject word (for a digest:
``payé``/``paid`` lines).

B-APPR-11: a reply refused because its From is not authenticated, or is another person,
makes an event on the document (on the folder for a digest) and sends the token's approver,
never the sender, an ``approval_attempt`` notice (Auto-Submitted: auto-generated), at most
one per token per ``ATTEMPT_NOTICE_EVERY`` (a compare-and-set on the token's row), so the
reply address cannot be used to flood the approver.

May touch: approvals, documents, events, outbox (through daemon.decisions, storage APIs and
daemon.paid_replies). No mail is ever sent to an unauthenticated or automatic sender.

A DNS temperror on an allowed person's own reply raises AuthPending (a TimeoutError, which
the worker retries with backoff) instead of refusing a genuine answer.

Known limits: only the text/plain part (or the HTML part stripped of tags) is read; an
attribution line that the mail client wraps onto two lines is read as "no command" when it
comes first; the attempt notice names the claimed From address (unauthenticated, shown as
such), never the reply's text.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterator
from datetime import timedelta
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser

from daemon import decisions, mailer, paid_replies
from daemon.approval import request_recipients
from daemon.auth import AuthVerdict
from daemon.decisions import ApprovalSettings, DecisionError
from daemon.mailparse import ParsedMail
from rules.lifecycle import REASONS
from storage.approvals import Approvals, Grant, TokenRefused
from storage.outbox import OutboxStore
from storage.store import Store

REPLY_TAG = re.compile(r"^r([a-z2-7]{32})$")
APPROVE_WORDS = frozenset({"oui", "ok", "okay", "accepter", "accepte", "accepté", "approuver",
                           "approuve", "approuvé", "approuvée", "approve", "approved", "yes"})
REJECT_WORDS = frozenset({"non", "refuser", "refuse", "refusé", "rejeter", "rejette", "rejeté",
                          "reject", "rejected", "no"})
DEFAULT_REJECT_CODE = "AUTRE"
ATTEMPT_NOTICE_EVERY = timedelta(hours=1)
MAX_SCAN_LINES = 200
_ATTRIBUTION = (
    re.compile(r"^on\b.*\bwrote\s*:?\s*$", re.IGNORECASE),
    re.compile(r"^le\b.*\ba\s+écrit\s*:?\s*$", re.IGNORECASE),
    re.compile(r"^-{2,}\s*(original message|message d'origine)\s*-{2,}$", re.IGNORECASE),
    re.compile(r"^_{8,}$"),
    re.compile(r"^(from|de)\s*:\s*.+@", re.IGNORECASE),
)
_WORD_EDGES = ".,;:!?()[]\"'«»"
_TAGS = re.compile(r"<[^>]*>")
_BLOCKS = re.compile(r"<(br|/p|/div|/li|/tr|/h[1-6])\b[^>]*>", re.IGNORECASE)
_QUOTE_BLOCK = re.compile(r"<blockquote\b.*?</blockquote>", re.IGNORECASE | re.DOTALL)


class AuthPending(TimeoutError):
    """The approver's DKIM key lookup failed for now (temperror): a transient error, so the
    worker retries the delivery later instead of refusing a genuine reply."""


def is_reply_tag(tag: str) -> bool:
    """Does this +tag carry a reply token (``r`` + 32 base32 characters)?"""
    return REPLY_TAG.match(tag.lower()) is not None


def handle_reply(store: Store, settings: ApprovalSettings, *, tag: str, raw: bytes,
                 verdict: AuthVerdict, parsed: ParsedMail | None = None,
                 mail_from: str | None = None) -> str:
    """Act on one reply; returns what happened, for people (never raises for a disposition).

    ``mail_from`` is the envelope sender when known ("" or "<>" is a bounce). Raises
    AuthPending (a TimeoutError: transient for the worker) when the approver's reply could not
    be authenticated for now."""
    header = BytesParser(policy=policy.default).parsebytes(raw)
    automatic = automatic_reason(header, mail_from, parsed)
    if automatic:
        return f"ignored: {automatic}"
    match = REPLY_TAG.match(tag.lower())
    if match is None:
        return "refused: not a reply token address"
    token = match.group(1)
    try:
        grant = Approvals(store).look(token)
    except TokenRefused as exc:
        decided = (decisions.already_decided(store, exc.grant.document_id, exc.grant.action)
                   if exc.reason == "stale" and exc.grant is not None
                   and exc.grant.document_id is not None else None)
        return decided or f"refused: reply token {_refusal_text(exc.reason)}"
    if grant.action != "reply":
        return "refused: reply token unknown"
    sender = (verdict.from_address or "").lower()
    allowed = allowed_senders(store, grant)
    if verdict.result == "temperror" and sender in allowed:
        raise AuthPending(f"DKIM key of {sender} could not be fetched for now")
    if verdict.result != "pass" or sender not in allowed:
        return _refuse(store, settings, grant, sender, verdict.result)
    if grant.document_id is None:  # a digest's reply address: "payé <number>" lines
        try:
            return paid_replies.handle(
                store, settings, grant, token, own_lines=own_lines(header), sender=sender,
                reply_message_id=str(header.get("Message-ID") or ""))
        except TokenRefused as exc:
            return f"refused: reply token {_refusal_text(exc.reason)}"
    command = read_command(first_line(header))
    if command is None:
        _note(store, grant, "reply-ignored", "no command on the first line of the reply")
        return "no command"
    verb, code, note = command
    try:
        if verb == "approve":
            decisions.approve(store, settings, grant.document_id, by=grant.approver,
                              version=grant.document_version, note=note, token=token,
                              via="reply")
            return f"approved document {grant.document_id} by {grant.approver}"
        decisions.reject(store, settings, grant.document_id, by=grant.approver,
                         version=grant.document_version, code=code or DEFAULT_REJECT_CODE,
                         note=note, token=token, via="reply")
        return (f"rejected document {grant.document_id} by {grant.approver} "
                f"({code or DEFAULT_REJECT_CODE})")
    except TokenRefused as exc:
        return f"refused: reply token {_refusal_text(exc.reason)}"
    except DecisionError as exc:
        return str(exc)


def _refusal_text(reason: str) -> str:
    return {"used": "already used", "expired": "expired", "stale": "stale (the invoice "
            "changed since the request)"}.get(reason, "unknown")


def allowed_senders(store: Store, grant: Grant) -> frozenset[str]:
    """Who may answer with this token, lower case: its approver; for a digest's (folder)
    token, the folder's notification address and approvers as they are now (someone removed
    since the digest went out no longer may)."""
    if grant.document_id is None:
        return frozenset(p.lower() for p in request_recipients(store, grant.folder_id))
    return frozenset({grant.approver.lower()})


def _refuse(store: Store, settings: ApprovalSettings, grant: Grant, sender: str,
            result: str) -> str:
    if result != "pass":
        why = f"From {sender or '(unreadable)'} not authenticated ({result})"
    elif grant.document_id is None:
        why = (f"From {sender} is neither the notification address nor an approver of "
               "this folder")
    else:
        why = f"From {sender} is not the approver this request was sent to"
    with store.write_transaction():
        warned = warn_approver(store, settings, grant, sender, result)
        _note(store, grant, "reply-refused", why + (
            "; the approver was warned" if warned
            else "; no new notice to the approver (one an hour at most)"))
    return f"refused: {why}"


def warn_approver(store: Store, settings: ApprovalSettings, grant: Grant, claimed: str,
                  result: str) -> bool:
    """Queue an ``approval_attempt`` notice to the token's approver unless one went out in
    the last ATTEMPT_NOTICE_EVERY; True when queued. Call inside a write transaction."""
    try:
        to = mailer.addr_spec(grant.approver)
    except ValueError:
        return False
    if not Approvals(store).claim_attempt_notice(grant, ATTEMPT_NOTICE_EVERY):
        return False
    folder = store.folder(grant.folder_id)
    doc = store.documents.get(grant.document_id) if grant.document_id is not None else None
    lang = (folder.language if folder else "") or "fr"
    context: dict[str, object] = {
        "folder_name": folder.name if folder else "—",
        "digest": grant.document_id is None,
        "supplier": decisions.supplier_of(doc) if doc else None,
        "number": doc.number if doc else None,
        "total_gross": doc.total_gross if doc else None,
        "currency": doc.currency if doc else None,
        "claimed_from": mailer.one_line(claimed, 120) or None,
        "authenticated": result == "pass", "result": result, "at": store.clock(),
    }
    rendered = mailer.render(settings.environment(), "approval_attempt", lang, context)
    message_id = mailer.make_message_id(settings.domain)
    thread = mailer.thread_ids(grant.request_message_id)
    raw = mailer.compose(rendered, sender=settings.from_address, to=[to],
                         message_id=message_id, in_reply_to=thread[-1] if thread else None,
                         references=thread)
    OutboxStore(store).enqueue("approval_attempt", raw, [to], folder_id=grant.folder_id,
                               document_id=grant.document_id, message_id=message_id)
    return True


def _note(store: Store, grant: Grant, kind: str, detail: str) -> None:
    with store.write_transaction():
        store.add_event(kind, detail, actor="reply", document_id=grant.document_id,
                        folder_id=grant.folder_id)


# ---- automatic mail and bounces -----------------------------------------------------------

def automatic_reason(msg: Message, mail_from: str | None = None,
                     parsed: ParsedMail | None = None) -> str | None:
    """Why this mail is automatic (auto-reply, bounce, list), or None for a person's mail."""
    auto = str(msg.get("Auto-Submitted") or "").split(";")[0].strip().lower()
    if auto and auto != "no":
        return f"automatic reply (Auto-Submitted: {auto[:40]})"
    precedence = str(msg.get("Precedence") or "").strip().lower()
    if precedence in ("bulk", "junk", "list"):
        return f"automatic mail (Precedence: {precedence})"
    for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Reply", "List-Id"):
        if msg.get(name) is not None:
            return f"automatic mail ({name} header)"
    if msg.get_content_type() == "multipart/report":
        return "bounce or receipt (multipart/report)"
    if mail_from is not None and mail_from.strip() in ("", "<>"):
        return "bounce (null return path)"
    return_path = msg.get("Return-Path")
    if return_path is not None and str(return_path).strip() in ("", "<>"):
        return "bounce (null Return-Path)"
    senders = list(parsed.from_addresses) if parsed else []
    senders.append(str(msg.get("From") or ""))
    if mail_from:
        senders.append(mail_from)
    for sender in senders:
        local = sender.lower().rpartition("@")[0].rpartition("<")[2].strip().strip('"')
        if local in ("mailer-daemon", "postmaster"):
            return f"bounce ({local} sender)"
    return None


# ---- the command ----------------------------------------------------------------------------

def body_text(msg: Message) -> str:
    """The first text/plain part that is not an attachment, else the first HTML part as text
    (quoted blocks removed)."""
    html_part: str | None = None
    for part in msg.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        kind = part.get_content_type()
        if kind not in ("text/plain", "text/html"):
            continue
        try:
            content = part.get_content() if isinstance(part, EmailMessage) else ""
        except (LookupError, ValueError):  # unknown charset, broken encoding
            continue
        if not isinstance(content, str):
            continue
        if kind == "text/plain":
            return content
        if html_part is None:
            html_part = content
    if html_part is None:
        return ""
    text = _QUOTE_BLOCK.sub("\n", html_part)
    return html.unescape(_TAGS.sub("", _BLOCKS.sub("\n", text)))


def own_lines(msg: Message) -> Iterator[str]:
    """The reply's own lines, stripped: skips empty and quoted (``>``) lines, stops at an
    attribution (``On … wrote:``, ``Le … a écrit :``) and at the signature separator."""
    for count, line in enumerate(body_text(msg).splitlines()):
        if count >= MAX_SCAN_LINES:
            break
        if line.rstrip("\r") in ("-- ", "--"):
            break
        stripped = unicodedata.normalize("NFC", line).strip()
        if not stripped or stripped.startswith(">"):
            continue
        if any(p.match(stripped) for p in _ATTRIBUTION):
            break
        yield stripped


def first_line(msg: Message) -> str:
    """The first own line of the reply (see own_lines), "" when there is none."""
    return next(own_lines(msg), "")


def read_command(line: str) -> tuple[str, str | None, str] | None:
    """``("approve"|"reject", reason code or None, note)`` or None when the line is no command.
    ``non DOUBLON montant faux`` -> ("reject", "DOUBLON", "montant faux")."""
    words = line.split()
    if not words:
        return None
    verb = words[0].strip(_WORD_EDGES).casefold()
    rest = words[1:]
    if verb in APPROVE_WORDS:
        return "approve", None, " ".join(rest)[: decisions.MAX_NOTE]
    if verb not in REJECT_WORDS:
        return None
    code = None
    if rest and rest[0].strip(_WORD_EDGES).upper() in REASONS:
        code = rest[0].strip(_WORD_EDGES).upper()
        rest = rest[1:]
    return "reject", code, " ".join(rest)[: decisions.MAX_NOTE]
