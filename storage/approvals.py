"""Approval tokens: random, stored hashed, single use, expiring, bound to a document version.

Job: issue tokens for approval links and reply addresses, and redeem one exactly once. The
clear token exists only in the mail we send; the database holds its sha256. A token is
refused when unknown, used, expired, or when the document changed (another decision, a newer
version) since it was issued. Redeeming happens in the caller's transaction together with
the decision, under a compare-and-set on ``used_at`` so two concurrent clicks (or a click and
a reply) produce exactly one decision.
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


def hash_token(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def new_link_token() -> str:
    return secrets.token_urlsafe(LINK_BYTES)


def new_reply_token() -> str:
    return base64.b32encode(secrets.token_bytes(REPLY_BYTES)).decode().lower().rstrip("=")


@dataclass(frozen=True)
class Grant:
    id: int
    document_id: int
    approver: str
    action: str
    document_version: int
    expires_at: datetime
    used_at: datetime | None
    request_message_id: str


def _grant(row: Any) -> Grant:
    return Grant(id=row.id, document_id=row.document_id, approver=row.approver,
                 action=row.action, document_version=row.document_version,
                 expires_at=row.expires_at, used_at=row.used_at,
                 request_message_id=row.request_message_id)


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
        """Create a token (call inside the transaction that enqueues the mail carrying it)."""
        token = token or (new_reply_token() if action == "reply" else new_link_token())
        version = models.Document.get_by_id(document_id).version
        now = self.store.clock()
        models.Approval.create(document=document_id, token_hash=hash_token(token),
                               approver=approver, action=action, document_version=version,
                               expires_at=now + ttl, request_message_id=request_message_id,
                               created_at=now)
        return token

    def look(self, token: str) -> Grant:
        """Check a token without using it (GET pages). Raises TokenRefused."""
        row = models.Approval.get_or_none(models.Approval.token_hash == hash_token(token))
        if row is None:
            raise TokenRefused("unknown")
        grant = _grant(row)
        if grant.used_at is not None:
            raise TokenRefused("used", grant)
        if grant.expires_at <= self.store.clock():
            raise TokenRefused("expired", grant)
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
