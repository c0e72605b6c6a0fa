"""SMTP and LMTP listeners on the daemon's own event loop (no threaded Controller).

Job: aiosmtpd protocol classes with facturd's limits (RFC 5321 §4.5.3 line and command
sizes, per-session command budgets, idle timeout, concurrent sessions in total and per
peer) and enhanced status codes where aiosmtpd's fixed texts lack them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from daemon.config import IntakeConfig, Listen
from daemon.intake import IntakeHandler

log = logging.getLogger(__name__)

# aiosmtpd's hard-coded replies -> the same meaning with RFC 3463 codes.
_REWRITES = {
    b"552 Error: Too much mail data": b"552 5.3.4 Message too big for system",
    b"552 Error: message size exceeds fixed maximum message size":
        b"552 5.3.4 Message too big for system",
    b"500 Line too long (see RFC5321 4.5.3.1.6)": b"500 5.5.2 Line too long",
    b"500 Command line too long": b"500 5.5.2 Command line too long",
}


class SessionLimits:
    def __init__(self, total: int, per_peer: int) -> None:
        self.total = total
        self.per_peer = per_peer
        self.active: Counter[str] = Counter()

    def admit(self, peer: str) -> bool:
        if sum(self.active.values()) >= self.total or self.active[peer] >= self.per_peer:
            return False
        self.active[peer] += 1
        return True

    def release(self, peer: str) -> None:
        self.active[peer] -= 1
        if self.active[peer] <= 0:
            del self.active[peer]


class _Limited:
    """Mixin for SMTP/LMTP: refuse sessions over the limits with 421, rewrite replies."""

    line_length_limit = 1001  # RFC 5321 §4.5.3.1.6: 998 + CRLF + transparency dot
    command_size_limit = 512  # RFC 5321 §4.5.3.1.4
    limits: SessionLimits
    _facturd_peer: str | None = None

    def connection_made(self, transport: Any) -> None:
        peername = transport.get_extra_info("peername")
        peer = peername[0] if isinstance(peername, tuple) and peername else "unix"
        if not self.limits.admit(peer):
            log.warning("refusing session from %s: too many concurrent sessions", peer)
            transport.write(b"421 4.7.0 Too many connections, try again later\r\n")
            transport.close()
            return
        self._facturd_peer = peer
        super().connection_made(transport)  # type: ignore[misc]

    def connection_lost(self, error: Exception | None) -> None:
        if self._facturd_peer is None:
            return  # refused in connection_made: aiosmtpd never saw this connection
        self.limits.release(self._facturd_peer)
        self._facturd_peer = None
        super().connection_lost(error)  # type: ignore[misc]

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = status.encode("utf-8")
        status = _REWRITES.get(status, status)
        await super().push(status)  # type: ignore[misc]


class FacturdSMTP(_Limited, SMTP):
    pass


class FacturdLMTP(_Limited, LMTP):
    pass


async def start_listener(listen: Listen, handler: IntakeHandler, cfg: IntakeConfig,
                         hostname: str, limits: SessionLimits) -> asyncio.AbstractServer:
    cls = FacturdLMTP if handler.lmtp else FacturdSMTP
    call_limit = {"NOOP": 5, "RSET": 10, "*": cfg.command_limit}

    def factory() -> Any:
        proto = cls(
            handler, data_size_limit=cfg.max_message_bytes, enable_SMTPUTF8=True,
            decode_data=False, hostname=hostname, ident="ESMTP", timeout=cfg.timeout_seconds,
            command_call_limit=call_limit, auth_require_tls=True,
        )
        proto.limits = limits
        return proto

    loop = asyncio.get_running_loop()
    if listen.is_unix:
        path = Path(listen.path)
        if path.is_socket():
            path.unlink()  # stale socket from a previous run (we hold the role lock)
        path.parent.mkdir(parents=True, exist_ok=True)
        server = await loop.create_unix_server(factory, str(path))
        os.chmod(path, 0o660)
    else:
        server = await loop.create_server(factory, listen.host, listen.port,
                                          reuse_address=True)
    log.info("%s listening on %s", "LMTP" if handler.lmtp else "SMTP", listen)
    return server
