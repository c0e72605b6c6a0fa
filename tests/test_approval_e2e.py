"""Approval end to end through ``facturd serve``: a held invoice -> the request mail at a real
SMTP relay on 127.0.0.1 -> the link page (GET changes nothing; a browser-like client keeps
the form cookie) -> POST approves once; approval by an authenticated reply sent back to the
daemon over SMTP; and "payé <number>" replies to a digest."""

from __future__ import annotations

import http.cookiejar
import json
import re
import smtplib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import dkim
import pytest

from tests.conftest import DOMAIN, VAT, Facturd, free_port, wait_for
from tests.dkimkeys import Key, make_key
from tests.dnsstub import StubDNS
from tests.factories import make_facturx_pdf
from tests.mails import crlf, invoice_mail
from tests.smtpsink import Captured, SmtpSink
from tests.test_worker import documents, settled

BOSS = "boss@acme.test"


@pytest.fixture(scope="module")
def key() -> Key:
    return make_key(2048)


@pytest.fixture
def world(tmp_path: Path, db_url: str, key: Key) -> Iterator[tuple[Facturd, SmtpSink, int]]:
    sink = SmtpSink().start()
    web_port = free_port()
    with StubDNS({"sel._domainkey.acme.test": key.record}) as dns:
        f = Facturd(tmp_path, db_url, extra=(
            f'[outgoing]\nmode = "relay"\nrelay_host = "127.0.0.1"\n'
            f'relay_port = {sink.port}\nrelay_security = "none"\npoll_seconds = 0.1\n'
            f'backoff_seconds = 0.2\n'
            f'[web]\nlisten = "127.0.0.1:{web_port}"\n'
            f'public_url = "http://127.0.0.1:{web_port}"\n'
            f'[auth]\nnameservers = ["{dns.address}"]\ndns_timeout_seconds = 0.5\n'))
        f.add_folder(VAT, "Acme SAS", "--notify", BOSS)
        f.start()
        try:
            yield f, sink, web_port
        finally:
            f.stop()
            sink.stop()


def send_invoice(f: Facturd, number: str, headers: dict[str, str] | None = None) -> None:
    msg = invoice_mail(to=f"{VAT}@{DOMAIN}", attachments=[
        (f"{number}.pdf", "application/pdf", make_facturx_pdf(number=number))])
    for name, value in (headers or {}).items():
        msg[name] = value
    with smtplib.SMTP("127.0.0.1", f.smtp_port, timeout=30) as smtp:
        smtp.sendmail("billing@vendor.test", [f"{VAT}@{DOMAIN}"], crlf(msg.as_bytes()))


def request_for(sink: SmtpSink, number: str) -> Captured:
    def find() -> Captured | None:
        with sink.lock:
            return next((m for m in sink.messages if number in m.raw.decode(errors="replace")
                         and str(m.message["Subject"]).startswith("À approuver")), None)
    found = wait_for(find, what=f"approval request for {number}")
    assert isinstance(found, Captured)
    return found


def text_part(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


class Browser:
    """urllib with a cookie jar: keeps the approval page's form cookie as a browser does."""

    def __init__(self) -> None:
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def __call__(self, url: str, data: dict[str, str] | None = None) -> tuple[int, str]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        try:
            with self.opener.open(urllib.request.Request(url, data=body), timeout=30) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()


def doc_state(f: Facturd, number: str) -> str:
    return str(next(d for d in documents(f) if d["number"] == number)["state"])


def test_the_vendor_and_its_cc_never_see_the_request(world: tuple[Facturd, SmtpSink, int]
                                                      ) -> None:
    """B-APPR-16: an invoice from a vendor with Cc and Reply-To addresses is held; the
    request (and its tokens) goes to the folder's approver only, never to the vendor, the
    Cc list or the Reply-To."""
    f, sink, _ = world
    outsiders = {"billing@vendor.test", "cc-person@elsewhere.test", "ar@vendor.test"}
    send_invoice(f, "AP-16", {"Cc": "Someone <cc-person@elsewhere.test>",
                              "Reply-To": "ar@vendor.test"})
    settled(f, 1)
    request = request_for(sink, "AP-16")
    assert request.rcpt_tos == (BOSS,)
    token = re.search(r"/a/([A-Za-z0-9_-]+)", text_part(request.message))
    assert token is not None
    time.sleep(1)  # anything else the daemon would send has been sent by now
    with sink.lock:
        for mail in sink.messages:
            assert not outsiders & {r.lower() for r in mail.rcpt_tos}, mail.rcpt_tos
            if token.group(1) in mail.raw.decode(errors="replace"):
                assert mail.rcpt_tos == (BOSS,)


def test_link_approval_get_changes_nothing_post_acts_once(
        world: tuple[Facturd, SmtpSink, int]) -> None:
    f, sink, _ = world
    send_invoice(f, "AP-1")
    settled(f, 1)
    assert doc_state(f, "AP-1") == "pending_approval"
    request = request_for(sink, "AP-1")
    assert request.rcpt_tos == (BOSS,)
    msg = request.message
    assert msg["Auto-Submitted"] == "auto-generated"
    text = text_part(msg)
    assert "AP-1" in text and "mode manual" in text
    approve_url = re.search(r"http://127\.0\.0\.1:\d+/a/[A-Za-z0-9_-]+", text)
    assert approve_url is not None
    url = approve_url.group(0)
    http = Browser()
    for _ in range(3):  # a mail scanner opening the link, then the person
        status, page = http(url)
        assert status == 200
    assert doc_state(f, "AP-1") == "pending_approval"  # GET changed nothing
    assert [c.name for c in http.jar] == ["facturd_form"]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    assert http(url, {"csrf": "forged", "action": "approve", "note": ""})[0] == 403
    # B-APPR-02: the page's nonce without the page's cookie (another browser, a scanner)
    assert Browser()(url, {"csrf": csrf.group(1), "action": "approve", "note": ""})[0] == 403
    assert doc_state(f, "AP-1") == "pending_approval"
    status, page = http(url, {"csrf": csrf.group(1), "action": "approve", "note": "ok"})
    assert status == 200
    assert doc_state(f, "AP-1") == "archived"
    assert http(url, {"csrf": csrf.group(1), "action": "approve", "note": ""})[0] == 410
    assert http(url)[0] == 410  # used: a clear page, no second decision
    request_id = str(msg["Message-ID"])
    notices = wait_for(lambda: [m for m in sink.messages
                                if str(m.message["In-Reply-To"]) == request_id],
                       what="decision notice")
    time.sleep(1)
    assert len(notices) == 1
    assert "AP-1" in text_part(notices[0].message)


def reply(key: Key, to: str, in_reply_to: str, first_line: str, *, sender: str = BOSS,
          sign: bool = True, headers: dict[str, str] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = "Re: approval"
    msg["Date"] = formatdate()
    msg["Message-ID"] = make_msgid(domain="acme.test")
    msg["In-Reply-To"] = in_reply_to
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(f"{first_line}\n\nLe lundi, facturd a écrit :\n> OUI / NON ?\n> approve\n")
    raw = crlf(msg.as_bytes())
    if sign:
        raw = bytes(dkim.sign(raw, b"sel", b"acme.test", key.pem)) + raw
    return raw


def test_reply_approval_acts_once_and_ignores_others(world: tuple[Facturd, SmtpSink, int],
                                                     key: Key) -> None:
    f, sink, _ = world
    for number in ("RP-1", "RP-2", "RP-3"):
        send_invoice(f, number)
    settled(f, 3)
    requests = {n: request_for(sink, n).message for n in ("RP-1", "RP-2", "RP-3")}
    reply_to = {n: str(m["Reply-To"]) for n, m in requests.items()}
    assert all(r.startswith(f"{VAT.lower()}+r") or r.startswith(f"{VAT}+r")
               for r in reply_to.values())

    def deliver(raw: bytes, to: str, envelope_from: str = BOSS) -> None:
        with smtplib.SMTP("127.0.0.1", f.smtp_port, timeout=30) as smtp:
            smtp.sendmail(envelope_from, [to], raw)

    # forged approver: same From, no valid signature
    deliver(reply(key, reply_to["RP-1"], str(requests["RP-1"]["Message-ID"]), "OUI",
                  sign=False), reply_to["RP-1"])
    # out-of-office from the real approver
    deliver(reply(key, reply_to["RP-2"], str(requests["RP-2"]["Message-ID"]),
                  "Je suis absent jusqu'au 3 décembre.",
                  headers={"Auto-Submitted": "auto-replied"}), reply_to["RP-2"])
    # the genuine approver says yes above the quoted request, twice
    good = reply(key, reply_to["RP-3"], str(requests["RP-3"]["Message-ID"]), "Oui, merci")
    deliver(good, reply_to["RP-3"])
    settled(f, 3 + 3)
    time.sleep(0.5)
    assert doc_state(f, "RP-1") == "pending_approval"
    assert doc_state(f, "RP-2") == "pending_approval"
    assert doc_state(f, "RP-3") == "archived"
    events: list[dict[str, Any]] = json.loads(f.cli("messages", "list", "--json").stdout)
    assert sum(1 for e in events if e["state"] == "done") >= 6
    replies = [line for line in f.logs().splitlines() if "(reply):" in line]
    assert any("ignored" in line or "refused" in line for line in replies)
    assert sum("approved document" in line for line in replies) == 1
    # B-APPR-17: the used reply address, and an invented one, are refused at RCPT (no
    # backscatter)
    invented = f"{VAT}+r{'a' * 32}@{DOMAIN}"
    for address in (reply_to["RP-3"], invented):
        with smtplib.SMTP("127.0.0.1", f.smtp_port, timeout=30) as smtp:
            smtp.ehlo("mx.acme.test")
            smtp.mail(BOSS)
            code, text = smtp.rcpt(address)
        assert (code, text[:5]) == (550, b"5.1.1")


def sent_mail(sink: SmtpSink, what: str, match: Any) -> Captured:
    def find() -> Captured | None:
        with sink.lock:
            return next((m for m in sink.messages if match(m.message)), None)
    found = wait_for(find, what=what)
    assert isinstance(found, Captured)
    return found


def test_digest_reply_marks_paid(world: tuple[Facturd, SmtpSink, int], key: Key) -> None:
    """An approved invoice, a digest from ``facturd digest --now`` through the relay, a forged
    "payé" reply (the addressee is warned, nothing changes), the genuine one (marked paid,
    confirmed under the reply), and the used reply address refused at RCPT."""
    f, sink, _ = world
    send_invoice(f, "PY-1")
    settled(f, 1)
    text = text_part(request_for(sink, "PY-1").message)
    found = re.search(r"http://127\.0\.0\.1:\d+/a/[A-Za-z0-9_-]+", text)
    assert found is not None
    browser = Browser()
    page = browser(found.group(0))[1]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    assert browser(found.group(0), {"csrf": csrf.group(1), "action": "approve"})[0] == 200
    assert doc_state(f, "PY-1") == "archived"

    f.cli("digest", "--folder", VAT, "--now")
    digest = sent_mail(sink, "the digest",
                       lambda m: str(m["Message-ID"]).startswith("<digest.")).message
    reply_to = str(digest["Reply-To"])
    assert reply_to.lower().startswith(f"{VAT.lower()}+r") and reply_to.endswith(f"@{DOMAIN}")
    assert "payé PY-1" in text_part(digest)

    def deliver(raw: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", f.smtp_port, timeout=30) as smtp:
            smtp.sendmail(BOSS, [reply_to], raw)

    digest_id = str(digest["Message-ID"])
    deliver(reply(key, reply_to, digest_id, "payé PY-1", sign=False))
    warning = sent_mail(sink, "the unauthenticated-attempt notice",
                        lambda m: str(m["Subject"]).startswith("Réponse non authentifiée"))
    assert warning.rcpt_tos == (BOSS,) and warning.message["In-Reply-To"] == digest_id
    assert doc_state(f, "PY-1") == "archived"

    genuine = reply(key, reply_to, digest_id, "payé PY-1")
    reply_id = str(BytesParser(policy=policy.default).parsebytes(genuine)["Message-ID"])
    deliver(genuine)
    confirm = sent_mail(sink, "the confirmation",
                        lambda m: str(m["In-Reply-To"]) == reply_id).message
    assert confirm["Auto-Submitted"] == "auto-replied" and confirm["To"] == BOSS
    assert "PY-1" in text_part(confirm) and "MARQUÉES COMME PAYÉES (1)" in text_part(confirm)
    assert doc_state(f, "PY-1") == "paid"
    with smtplib.SMTP("127.0.0.1", f.smtp_port, timeout=30) as smtp:
        smtp.ehlo("mx.acme.test")
        smtp.mail(BOSS)
        code, answer = smtp.rcpt(reply_to)
    assert (code, answer[:5]) == (550, b"5.1.1")
