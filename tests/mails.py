"""Build test mails with the standard library (fixtures are made here, never copied)."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formatdate, make_msgid


def parse(raw: bytes) -> EmailMessage:
    """Bytes -> EmailMessage (modern policy), as a mail client would read them."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def body(msg: EmailMessage, kind: str = "plain") -> str:
    """The text of the ``plain`` or ``html`` body part."""
    part = msg.get_body((kind,))
    assert part is not None
    return str(part.get_content())


def invoice_mail(sender: str = "billing@vendor.test", to: str = "x@invoices.test",
                 subject: str = "Invoice", attachments: list[tuple[str, str, bytes]] | None = None,
                 body: str = "Please find our invoice attached.\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="vendor.test")
    msg.set_content(body)
    for filename, mime, data in attachments or []:
        maintype, _, subtype = mime.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def fake_pdf(size: int = 2048, seed: str = "x") -> bytes:
    """Bytes that look like a PDF to intake (which never parses): enough for transport tests."""
    head = b"%PDF-1.7\n% facturd test " + seed.encode() + b"\n"
    return head + b"0" * max(0, size - len(head) - 6) + b"\n%%EOF"


def crlf(raw: bytes) -> bytes:
    """Wire form: smtplib sends bytes as given, and SMTP lines end in CRLF."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def depth_bomb(to: str = "x@invoices.test", levels: int = 30) -> EmailMessage:
    """An invoice mail nested ``levels`` deep in message/rfc822 parts: deeper than the
    parser's limit, so the worker quarantines it (too-deep)."""
    inner = invoice_mail(to=to)
    for _ in range(levels):
        outer = EmailMessage()
        outer["From"] = "billing@vendor.test"
        outer.add_attachment(inner)
        inner = outer
    return inner
