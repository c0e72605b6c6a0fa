"""A real SMTP relay for tests: aiosmtpd on 127.0.0.1, its own event loop in a thread.

``SmtpSink(port)`` listens once started; ``mode`` switches what it answers:
  accept    250, the message is captured in ``messages``
  tempfail  451 4.3.0 at DATA (the sender must retry)
  permfail  550 5.1.1 at RCPT (the sender must give up)
  down      not listening at all (``stop()``; ``start()`` brings it back on the same port)
Optional AUTH (``credentials=("user", "secret")``; accepted without TLS on loopback only).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

MODES = ("accept", "tempfail", "permfail", "down")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Captured:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    login: str | None = None

    @property
    def message(self) -> EmailMessage:
        msg = BytesParser(policy=policy.default).parsebytes(self.raw)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class _Handler:
    sink: SmtpSink
    seen: list[str] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        self.sink.attempts += 1
        if self.sink.mode == "permfail":
            return "550 5.1.1 <" + address + ">: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.sink.mode == "tempfail":
            return "451 4.3.0 Temporary failure, try again later"
        login = session.auth_data.login.decode() if session.auth_data else None
        with self.sink.lock:
            self.sink.messages.append(Captured(envelope.mail_from, tuple(envelope.rcpt_tos),
                                               bytes(envelope.original_content), login))
        return "250 2.0.0 OK queued"


class SmtpSink:
    def __init__(self, port: int | None = None,
                 credentials: tuple[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.credentials = credentials
        self.mode = "down"
        self.messages: list[Captured] = []
        self.attempts = 0
        self.lock = threading.Lock()
        self._controller: Controller | None = None

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and self.credentials is not None
              and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials)
        return AuthResult(success=ok, auth_data=auth_data if ok else None)

    def start(self, mode: str = "accept") -> SmtpSink:
        assert mode != "down"
        if self._controller is None:
            kwargs: dict[str, Any] = {}
            if self.credentials is not None:
                kwargs = {"authenticator": self._authenticate, "auth_require_tls": False}
            self._controller = Controller(_Handler(self), hostname="127.0.0.1",
                                          port=self.port, ready_timeout=10, **kwargs)
            self._controller.start()
        self.mode = mode
        return self

    def stop(self) -> None:
        self.mode = "down"
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def set_mode(self, mode: str) -> None:
        assert mode in MODES
        if mode == "down":
            self.stop()
        else:
            self.start(mode)

    def __enter__(self) -> SmtpSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def send_one_through(sink: SmtpSink, store: Any, from_address: str) -> str | None:
    """Run the real send role once against ``sink``: the next queued outbox mail."""
    import asyncio

    from daemon.outbox import Sender, SendSettings

    sender = Sender(SendSettings(mode="relay", relay_host="127.0.0.1", relay_port=sink.port,
                                 relay_security="none", timeout=5, from_address=from_address,
                                 helo_hostname="invoices.test"), store)

    async def once() -> str | None:
        try:
            return await sender.send_one()
        finally:
            await sender.aclose()

    return asyncio.run(once())
