"""Approval tokens: random, stored hashed, single use, expiring, bound to a document version
or to a folder.

Job: issue tokens for approval links, "mark as paid" links and reply addresses, and redeem
one exactly once. The clear token exists only in the mail we send; the database holds its
sha256. A document token is refused when unknown, used, expired, or when the document changed
(another decision, a newer version) since it was issued. A folder token (the reply address of
a digest, ``document_id`` None) is refused when unknown, used or expired. Redeeming happens in
the caller's transaction together with the decision, under a compare-and-set on ``used_at``
so two concurrent clicks (or a click and a reply) produce exactly one decision.

Also: ``claim_attempt_notice`` (a compare-and-set on ``attempt_noticed_at``: at most one
"unauthenticated attempt" notice per token and interval) and ``issued_since`` (when the
last request to a person about a document went out, to rate-limit "send me a new link").

May touch: the approval table; documents are read (version check).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from storage import models
from storage.store import Store

LINK_BYTES = 32  # 256 bits, URL-safe base64
REPLY_BYTES = 20  # 160 bits, base32 lower case: survives case-folding MTAs, fits a local part
REPLY = "reply"  # the action of every reply-address token (document or folder)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def new_link_token() -> str:
    return secrets.token_urlsafe(LINK_BYTES)


def new_reply_token() -> str:
    return base64.b32encode(secrets.token_bytes(REPLY_BYTES)).decode().lower().rstrip("=")


@dataclass(frozen=True)
class Grant:
    id: int
    document_id: int | None  # None: a folder token (the reply address of a digest)
    folder_id: int
    approver: str
    action: str
    document_version: int
    expires_at: datetime
    used_at: datetime | None
    request_message_id: str

    @property
    def for_folder(self) -> bool:
        return self.document_id is None


def _grant(row: Any) -> Grant:
    folder_id = row.folder_id
    if folder_id is None:  # not expected after migration 4; read it from the document
        doc: Any = models.Document.get_by_id(row.document_id)
        folder_id = doc.folder_id
    return Grant(id=row.id, document_id=row.document_id, folder_id=int(folder_id),
                 approver=row.approver, action=row.action,
                 document_version=row.document_version, expires_at=row.expires_at,
                 used_at=row.used_at, request_message_id=row.request_message_id)


class TokenRefused(Exception):
    """reason: unknown | used | expired | stale (the document changed or was decided)."""

    def __init__(self, reason: str, grant: Grant | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.grant = grant


class Approvals:
    def __init__(self, store: Store) -> None:
        self.store = store

    def issue(self, document_id: int, approver: str, action: str, *, ttl: timedelta,
              request_message_id: str = "", token: str | None = None) -> str:
        """Create a document token (call inside the transaction that enqueues the mail
        carrying it)."""
        token = token or (new_reply_token() if action == REPLY else new_link_token())
        doc: Any = models.Document.get_by_id(document_id)
        now = self.store.clock()
        models.Approval.create(document=document_id, folder=doc.folder_id,
                               token_hash=hash_token(token), approver=approver, action=action,
                               document_version=doc.version, expires_at=now + ttl,
                               request_message_id=request_message_id, created_at=now)
        return token

    def issue_for_folder(self, folder_id: int, approver: str, *, ttl: timedelta,
                         request_message_id: str = "") -> str:
        """Create a folder reply token (``<VAT>+r<token>@<domain>``), e.g. for a digest."""
        token = new_reply_token()
        now = self.store.clock()
        models.Approval.create(document=None, folder=folder_id, token_hash=hash_token(token),
                               approver=approver, action=REPLY, document_version=0,
                               expires_at=now + ttl, request_message_id=request_message_id,
                               created_at=now)
        return token

    def look(self, token: str) -> Grant:
        """Check a token without using it (GET pages). Raises TokenRefused.

        The hash is computed and looked up whatever the token looks like, so an unknown
        token costs the same as a known one."""
        row = models.Approval.get_or_none(models.Approval.token_hash == hash_token(token))
        if row is None:
            raise TokenRefused("unknown")
        grant = _grant(row)
        if grant.used_at is not None:
            raise TokenRefused("used", grant)
        if grant.expires_at <= self.store.clock():
            raise TokenRefused("expired", grant)
        if grant.document_id is not None:
            doc = models.Document.get_by_id(grant.document_id)
            if doc.version != grant.document_version:
                raise TokenRefused("stale", grant)
        return grant

    def redeem(self, token: str) -> Grant:
        """Use a token once; call inside the transaction that records the decision."""
        grant = self.look(token)
        A = models.Approval
        changed = A.update(used_at=self.store.clock()).where(
            (A.id == grant.id) & (A.used_at.is_null())).execute()
        if not changed:
            raise TokenRefused("used", grant)
        return grant

    def claim_attempt_notice(self, grant: Grant, every: timedelta) -> bool:
        """True (and the time recorded) when no attempt notice about this token went out in
        the last ``every``; False otherwise. A compare-and-set: two refused replies at once
        claim it once."""
        A = models.Approval
        now = self.store.clock()
        changed = A.update(attempt_noticed_at=now).where(
            (A.id == grant.id) & (A.attempt_noticed_at.is_null()
                                  | (A.attempt_noticed_at <= now - every))).execute()
        return bool(changed)

    def issued_since(self, document_id: int, approver: str, since: datetime) -> bool:
        """Was any token for this document and person issued after ``since``?"""
        A = models.Approval
        return A.select().where((A.document == document_id) & (A.approver == approver)
                                & (A.created_at > since)).exists()
