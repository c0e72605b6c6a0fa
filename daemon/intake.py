"""SMTP/LMTP intake: the before-queue checks and the durable hand-off.

Job: decide cheaply at RCPT whether an address is one of ours (``<VAT>[+tag]@<domain>`` of a
known folder), refuse what must be refused with a precise code, and on DATA hand the exact
received bytes to the group-commit writer; answer 250 only once the writer says the bytes and
one job per recipient are on disk. Nothing else happens here: no parsing, no DNS, no OCR.

Replies (RFC 3463 enhanced codes):
  550 5.1.1 unknown mailbox            452 4.5.3 too many recipients
  452 4.3.1 disk space under threshold 451 4.3.0 any internal failure (no detail leaks)
  552 5.3.4 message over the size limit (rewritten from aiosmtpd's texts in listeners.py)
LMTP gets one reply per accepted recipient after DATA (RFC 2033 §4.2).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.logs import clean
from daemon.replies import is_reply_tag
from daemon.writer import IntakeWriter
from storage.records import IntakeItem, Recipient
from storage.store import Store

log = logging.getLogger(__name__)

TEMPFAIL = "451 4.3.0 Temporary failure, please retry"
_TAG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_VAT = re.compile(r"^[a-z]{2}[a-z0-9]{2,13}$")


@dataclass(frozen=True)
class Address:
    vat: str  # upper case, as stored on the folder
    tag: str  # lower case, "" when absent


def parse_address(address: str, domain: str) -> Address | None:
    """``FR40303265045+sales@invoices.example.com`` -> Address("FR40303265045", "sales")."""
    local, at, dom = address.strip().rpartition("@")
    if not at or dom.lower().rstrip(".") != domain:
        return None
    local = local.lower()
    vat, _, tag = local.partition("+")
    if not _VAT.match(vat) or (tag and not _TAG.match(tag)):
        return None
    return Address(vat.upper(), tag)


class FolderDirectory:
    """VAT -> folder id. Hits are answered from memory; a miss asks the database for that one
    VAT (in a thread), so a folder added a second ago is already reachable and a stream of
    unknown recipients costs one indexed look-up each, not a reload of every folder."""

    def __init__(self, store: Store, ttl: float = 30.0) -> None:
        self.store = store
        self.ttl = ttl
        self._known: dict[str, tuple[int, float]] = {}  # vat -> (folder id, looked up at)

    async def lookup(self, vat: str) -> int | None:
        hit = self._known.get(vat)
        if hit is not None and time.monotonic() - hit[1] < self.ttl:
            return hit[0]
        folder_id = await asyncio.to_thread(self._find, vat)
        if folder_id is None:
            self._known.pop(vat, None)
        else:
            self._known[vat] = (folder_id, time.monotonic())
        return folder_id

    def _find(self, vat: str) -> int | None:
        try:
            folder = self.store.folder_by_vat(vat)
            return folder.id if folder else None
        finally:
            self.store.db.close()  # to_thread's pool threads come and go


class ReplyTokens:
    """Is ``+r<token>`` a live reply address? Asked at RCPT so a used, expired or invented
    token is refused with 550 instead of accepted and dropped later (no backscatter)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def is_live(self, tag: str) -> bool:
        return await asyncio.to_thread(self._check, tag[1:])

    def _check(self, token: str) -> bool:
        from storage.approvals import Approvals, TokenRefused

        try:
            return Approvals(self.store).look(token).action == "reply"
        except TokenRefused:
            return False
        finally:
            self.store.db.close()


class SpaceGuard:
    """Free space on the disks that hold blobs and the database, cached for a second."""

    def __init__(self, paths: list[Path], min_free_mb: int) -> None:
        self.paths = paths
        self.min_free = min_free_mb * 1024 * 1024
        self._checked = 0.0
        self._ok = True

    def ok(self) -> bool:
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._checked = now
            self._ok = all(self.free_bytes(p) >= self.min_free for p in self.paths)
        return self._ok

    @staticmethod
    def free_bytes(path: Path) -> int:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize


class IntakeHandler:
    """aiosmtpd handler shared by the SMTP and LMTP listeners (``lmtp`` picks the reply form)."""

    def __init__(self, *, domain: str, directory: FolderDirectory, writer: IntakeWriter,
                 space: SpaceGuard, max_recipients: int, lmtp: bool,
                 replies: ReplyTokens | None = None) -> None:
        self.domain = domain
        self.replies = replies
        self.directory = directory
        self.writer = writer
        self.space = space
        self.max_recipients = max_recipients
        self.lmtp = lmtp

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        if not self.space.ok():
            log.warning("refusing mail: free space under threshold")
            return "452 4.3.1 Insufficient system storage"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.facturd_recipients = []
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        recipients: list[Recipient] = envelope.facturd_recipients
        if len(recipients) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        parsed = parse_address(address, self.domain)
        folder_id = await self.directory.lookup(parsed.vat) if parsed else None
        if parsed is None or folder_id is None:
            log.info("unknown recipient %s from %s", clean(address), clean(str(session.peer)))
            return "550 5.1.1 Mailbox unknown"
        if (self.replies is not None and is_reply_tag(parsed.tag)
                and not await self.replies.is_live(parsed.tag)):
            log.info("refused reply address (unknown, used or expired token) from %s",
                     clean(str(session.peer)))
            return "550 5.1.1 This approval address is no longer valid"
        recipients.append(Recipient(folder_id, address, parsed.tag))
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        recipients: list[Recipient] = envelope.facturd_recipients
        raw: bytes = envelope.original_content
        item = IntakeItem(
            raw=raw, sha256=hashlib.sha256(raw).hexdigest(), mail_from=envelope.mail_from or "",
            recipients=tuple(recipients), protocol="lmtp" if self.lmtp else "smtp",
            peer=_peer(session.peer), helo=session.host_name or "",
        )
        try:
            result = await self.writer.submit(item)
        except Exception as exc:
            log.error("could not store message from %s: %s: %s", clean(_peer(session.peer)),
                      type(exc).__name__, clean(str(exc)))
            return self._replies([TEMPFAIL] * len(recipients))
        mid = f"M{result.message_id}"
        log.info("received %s (%d bytes, %s) from %s for %d recipient(s)", mid, len(raw),
                 item.sha256[:12], clean(item.peer), len(recipients))
        return self._replies([f"250 2.0.0 OK queued as {mid}"] * len(recipients))

    def _replies(self, statuses: list[str]) -> str:
        # aiosmtpd pushes what we return followed by CRLF: N lines are N replies for LMTP.
        return "\r\n".join(statuses) if self.lmtp else statuses[0]

    async def handle_exception(self, error: Exception) -> str:
        log.error("intake session error: %s: %s", type(error).__name__, clean(str(error)))
        return TEMPFAIL


def _peer(peer: Any) -> str:
    if isinstance(peer, tuple) and peer:
        return f"{peer[0]}:{peer[1]}" if len(peer) > 1 else str(peer[0])
    return str(peer or "unix")
