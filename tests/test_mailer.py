"""Outgoing mail: templates, composing, DKIM, the outbox and the send role over a real relay.

The send role is driven one row at a time (``Sender.send_one``) with a controllable clock, so
retries and give-ups are deterministic; one end-to-end test runs the real ``run_sender``
loop against a relay that is down at first.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from html import unescape
from pathlib import Path
from typing import Any

import dkim
import jinja2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from daemon import mailer
from daemon.outbox import Sender, SendSettings, eml_name, run_sender
from storage import outbox as ob
from storage.outbox import OutboxStore
from storage.store import Store
from tests.conftest import Clock
from tests.mails import parse
from tests.smtpsink import SmtpSink

FROM = "facturd <facturd@invoices.test>"
OPERATOR = "ops@company.test"
APPROVER = "boss@company.test"
NBSP = ("\u202f", "\xa0")


def spaces(text: str) -> str:
    for ch in NBSP:
        text = text.replace(ch, " ")
    return text


@pytest.fixture(scope="module")
def env() -> jinja2.Environment:
    return mailer.make_environment(mailer.template_dirs())


def approval_context(**over: Any) -> dict[str, Any]:
    ctx: dict[str, Any] = dict(
        folder_name="Acme SAS", supplier="Fournitures Dupont & Fils", number="F2026-0042",
        issue_date="2026-03-05", due_date="2026-04-04", currency="EUR",
        total_net=Decimal("1028.80"), total_tax=Decimal("205.76"),
        total_gross=Decimal("1234.56"), amount_due=Decimal("1234.56"),
        reasons=["Expéditeur non authentifié (DKIM absent)", "Nouveau fournisseur"],
        approve_url="https://factures.acme.test/a/tok123?action=approve&x=1",
        reject_url="https://factures.acme.test/a/tok123?action=reject",
        expires_at=datetime(2026, 3, 12, 9, 30),
    )
    ctx.update(over)
    return ctx


# ---- templates ---------------------------------------------------------------------------

def test_approval_request_fr(env: jinja2.Environment) -> None:
    r = mailer.render(env, "approval_request", "fr", approval_context())
    assert "1 234,56 €" in spaces(r.subject)
    assert "\n" not in r.subject and "F2026-0042" in r.subject
    text = spaces(r.text)
    assert "Montant TTC     : 1 234,56 €" in text
    assert "  - Expéditeur non authentifié (DKIM absent)\n  - Nouveau fournisseur" in text
    assert "https://factures.acme.test/a/tok123?action=approve&x=1" in text  # text: unescaped
    assert "Dupont & Fils" in text
    assert "OUI" in text and "NON" in text and "5 mars 2026" in text
    html = spaces(r.html)
    assert 'href="https://factures.acme.test/a/tok123?action=approve&amp;x=1"' in html
    assert 'href="https://factures.acme.test/a/tok123?action=reject"' in html
    assert ">Approuver</a>" in html and ">Rejeter</a>" in html
    assert "<li>Nouveau fournisseur</li>" in html and "1 234,56 €" in spaces(unescape(html))
    assert "<style" not in html and 'style="' in html
    assert "background-color: #1a7f37" in html  # the .btn-approve rule, inlined
    assert "max-width: 600px" in html


def test_approval_request_en(env: jinja2.Environment) -> None:
    r = mailer.render(env, "approval_request", "en", approval_context())
    assert "€1,234.56" in r.subject and "€1,234.56" in r.text and "€1,234.56" in r.html
    assert "YES" in r.text and "NO" in r.text and "March 5, 2026" in r.text
    assert ">Approve</a>" in r.html and "<style" not in r.html


def test_language_fallback_and_locale_variants(env: jinja2.Environment) -> None:
    assert "Approve" in mailer.render(env, "approval_request", "de", approval_context()).html
    assert "Approuver" in mailer.render(env, "approval_request", "fr_FR",
                                        approval_context()).html
    assert "Approve" in mailer.render(env, "approval_request", "../../etc",
                                      approval_context()).html
    with pytest.raises(ValueError):
        mailer.render(env, "../approval_request", "fr", approval_context())


def test_html_is_escaped_and_text_is_not(env: jinja2.Environment) -> None:
    """B-OUT-03 / B-OUT-04: markup and template syntax in data are shown literally."""
    evil = '<script>alert(1)</script><a href="https://evil.test">Pay here</a>'
    r = mailer.render(env, "approval_request", "en",
                      approval_context(supplier=evil, reasons=["{{ 7*7 }}{% include '/x' %}"]))
    assert "<script>" not in r.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.html
    assert '<a href="https://evil.test"' not in r.html
    assert "{{ 7*7 }}{% include '/x' %}" in unescape(r.html) and "49" not in r.html
    assert evil in r.text and "{{ 7*7 }}" in r.text


def test_autoescape_does_not_depend_on_the_file_suffix(tmp_path: Path) -> None:
    """The select_autoescape pitfall: 'approval.html.j2' must be escaped too."""
    (tmp_path / "approval.html.j2").write_text("<p>{{ supplier }}</p>")
    env = mailer.make_environment([tmp_path])
    out = env.get_template("approval.html.j2").render(supplier="<b>x</b>")
    assert out == "<p>&lt;b&gt;x&lt;/b&gt;</p>"


def test_missing_variable_is_an_error(env: jinja2.Environment) -> None:
    ctx = approval_context()
    del ctx["reasons"]
    with pytest.raises(jinja2.UndefinedError):
        mailer.render(env, "approval_request", "fr", ctx)


def test_installation_override_comes_first(tmp_path: Path) -> None:
    (tmp_path / "approval_request" / "fr").mkdir(parents=True)
    (tmp_path / "approval_request" / "fr" / "subject.txt").write_text(
        "Validez {{ supplier }}\r\nBcc: x@y.test\n")
    env = mailer.make_environment(mailer.template_dirs(tmp_path))
    r = mailer.render(env, "approval_request", "fr", approval_context(supplier="ACME"))
    assert r.subject == "Validez ACME Bcc: x@y.test"  # one line, whatever the template does
    assert "Approuver" in r.html  # the rest from the packaged templates


def _contexts() -> dict[str, dict[str, Any]]:
    block = dict(outstanding=Decimal("15000"), overdue_amount=Decimal("2500.5"),
                 overdue_count=2, due_within_30=Decimal("7000"), due_after_30=Decimal("5499.5"))
    docs = [dict(supplier="Dupont", number="F1", issue_date="2026-03-01",
                 total_gross=Decimal("120"), currency="EUR", filename="F1.pdf")]
    return {
        "approval_request": approval_context(),
        "decision_notice": dict(folder_name="Acme", supplier="Dupont", number="F1",
                                total_gross=Decimal("120"), currency="EUR",
                                decision="rejected", decided_by=APPROVER,
                                decided_at=datetime(2026, 3, 6, 8, 0), reason_code="DOUBLON",
                                reason_label=mailer.reason_label("DOUBLON", "fr"),
                                note="Déjà payée"),
        "accountant_share": dict(folder_name="Acme", period="mars 2026", documents=docs,
                                 csv_filename="acme-2026-03.csv"),
        "digest": dict(folder_name="Acme", since=datetime(2026, 3, 1), currency="EUR",
                       pending=[dict(supplier="Dupont", number=None, total_gross="99.90",
                                     currency="EUR", due_date=None,
                                     url="https://f.test/a/t1")],
                       received_count=4, archived_count=3, blocked_count=1,
                       purchase=block, sales=block, dashboard_url=None),
        "operator_alert": dict(outbox_id=7, kind="digest", message_id="<a@b.test>",
                               recipients=["x@y.test"], attempts=5,
                               created_at=datetime(2026, 3, 1), last_error="451 4.3.0 later",
                               permanent=False),
    }


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize("name", sorted(_contexts()))
def test_every_mail_template_renders(env: jinja2.Environment, name: str, lang: str) -> None:
    r = mailer.render(env, name, lang, _contexts()[name])
    assert r.subject and "\n" not in r.subject
    assert r.text.endswith("\n") and "{{" not in r.text and "{%" not in r.text
    assert "<style" not in r.html and "http://" not in r.html
    assert "<img" not in r.html and "<link" not in r.html and "@import" not in r.html
    if name == "digest":
        text = spaces(r.text)
        assert ("2 500,50 €" if lang == "fr" else "€2,500.50") in text
        assert ("5 499,50 €" if lang == "fr" else "€5,499.50") in text
        assert "https://f.test/a/t1" in text
    if name == "decision_notice":
        assert "DOUBLON" in r.text and "Déjà payée" in r.html


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_web_pages(env: jinja2.Environment, lang: str) -> None:
    ctx = approval_context(supplier="<b>Dupont</b>", csp_nonce="n0nce", action_url="/a/tok123",
                           csrf_token="csrf-abc", reason_codes=mailer.reason_choices(lang))
    page = mailer.render_page(env, "approve", lang, ctx)
    assert page.count('<form class="card" method="post" action="/a/tok123">') == 2
    assert page.count('name="csrf" value="csrf-abc"') == 2
    for code in ("DOUBLON", "MONTANTTOTAL_ERR", "CALCUL_ERR", "CMD_ERR", "NON_CONFORME",
                 "AUTRE"):
        assert f'<option value="{code}">' in page
    assert '<style nonce="n0nce">' in page and "&lt;b&gt;Dupont&lt;/b&gt;" in page
    assert "http" not in page.replace("https://factures.acme.test", "")
    assert "<script" not in page and "<link" not in page and "@import" not in page
    for outcome in ("done", "used", "expired", "unknown"):
        res = mailer.render_page(env, "result", lang, dict(
            csp_nonce="n", outcome=outcome, decision="approved", supplier=None, number="F1"))
        assert "<h1" in res


# ---- composing ---------------------------------------------------------------------------

RENDERED = mailer.Rendered("Facture F1 à approuver", "Bonjour\n", "<p>Bonjour</p>")


def test_compose_headers_and_structure() -> None:
    mid = mailer.make_message_id("invoices.test")
    raw = mailer.compose(
        RENDERED, sender=FROM, to=["Jeanne Dupré <boss@company.test>"],
        reply_to="FR40303265045+tok@invoices.test", message_id=mid,
        in_reply_to="<orig.1@vendor.test>", references=["<orig.0@vendor.test>",
                                                        "<orig.1@vendor.test>"],
        attachments=[("../../etc/passwd\r\n.csv", "text/csv", b"a;b\r\n1;2\r\n"),
                     ("F1.pdf", "APPLICATION/PDF", b"%PDF-1.7\n")])
    assert b"\r\n" in raw and b"\n\n" not in raw.replace(b"\r\n", b"")
    msg = parse(raw)
    assert msg["Message-ID"] == mid and mid.endswith("@invoices.test>")
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["In-Reply-To"] == "<orig.1@vendor.test>"
    assert msg["References"] == "<orig.0@vendor.test> <orig.1@vendor.test>"
    assert msg["To"] == "Jeanne Dupré <boss@company.test>"
    assert msg["Subject"] == "Facture F1 à approuver"
    assert msg.get_content_type() == "multipart/mixed"
    alt = next(iter(msg.iter_parts()))
    assert alt.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in alt.iter_parts()] == ["text/plain", "text/html"]
    names = [p.get_filename() for p in msg.iter_attachments()]
    assert names == ["passwd.csv", "F1.pdf"]
    assert [p.get_content_type() for p in msg.iter_attachments()] == ["text/csv",
                                                                    "application/pdf"]


def test_subject_and_names_cannot_add_headers(env: jinja2.Environment) -> None:
    """B-OUT-01: CR/LF from invoice data never becomes a header."""
    r = mailer.render(env, "approval_request", "en",
                      approval_context(supplier="ACME\r\nBcc: victim@elsewhere.test"))
    raw = mailer.compose(r, sender=FROM, to=[APPROVER], message_id="<m1@invoices.test>")
    msg = parse(raw)
    headers = raw.split(b"\r\n\r\n", 1)[0]
    assert msg["Bcc"] is None
    assert not any(line.startswith(b"Bcc") for line in headers.split(b"\r\n"))
    assert "ACME Bcc: victim@elsewhere.test" in str(msg["Subject"])
    for bad_to in ("ACME\r\nBcc: victim@elsewhere.test <a@b.test>",  # B-OUT-02 and kin
                   "a@b.test>\r\nRCPT TO:<victim@elsewhere.test",
                   "a@b.test, victim@elsewhere.test", "<a@b.test>", "a@b.test\u2028x",
                   '"ACME\nBcc: v@e.test" <a@b.test>', "a@-b.test", "jöe@b.test"):
        with pytest.raises(ValueError):
            mailer.compose(r, sender=FROM, to=[bad_to], message_id="<m1@invoices.test>")
    for bad_id in ("<m1@x.test>\r\nBcc: v@e.test", "m1@x.test", "<m 1@x.test>"):
        with pytest.raises(ValueError):
            mailer.compose(r, sender=FROM, to=[APPROVER], message_id=bad_id)
    with pytest.raises(ValueError):
        mailer.compose(r, sender=FROM, to=[APPROVER], message_id="<m@x.test>",
                       auto_submitted="auto-generated\r\nBcc: v@e.test")


def _dkim_key() -> tuple[bytes, Callable[..., bytes]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(spki)

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"sel1._domainkey.invoices.test." else b""
    return pem, dnsfunc


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, Callable[..., bytes]]:
    return _dkim_key()


def test_dkim_signed_message_verifies(dkim_key: tuple[bytes, Callable[..., bytes]]) -> None:
    pem, dnsfunc = dkim_key
    signer = mailer.DkimSigner("invoices.test", "sel1", pem)
    assert "BEGIN" not in repr(signer)  # the key never reaches a log line
    raw = mailer.compose(RENDERED, sender=FROM, to=[APPROVER],
                         message_id="<d1@invoices.test>", dkim=signer)
    assert raw.startswith(b"DKIM-Signature:")
    assert dkim.verify(raw, dnsfunc=dnsfunc)
    assert not dkim.verify(raw.replace(b"Bonjour", b"Bonsoir"), dnsfunc=dnsfunc)


# ---- the outbox --------------------------------------------------------------------------

def message(n: int = 1, to: str = APPROVER) -> tuple[bytes, str]:
    mid = f"<m{n}.{time.monotonic_ns()}@invoices.test>"
    return mailer.compose(RENDERED, sender=FROM, to=[to], message_id=mid), mid


@pytest.mark.parametrize("blobs", ["files", "database"])
def test_outbox_store(tmp_path: Path, any_db: str, blobs: str, clock: Clock) -> None:
    store = Store.open(any_db, blobs, tmp_path / "blobs", clock=clock)
    try:
        out = OutboxStore(store)
        raw, mid = message()
        first = out.enqueue("approval_request", raw, [APPROVER], message_id=mid)
        assert out.enqueue("approval_request", raw, [APPROVER], message_id=mid) == first
        assert out.pending_count() == 1
        with pytest.raises(ValueError):
            out.enqueue("x", raw, ["a@b.test>\r\nRCPT TO:<v@e.test"], message_id="<z@x.test>")

        # inside a caller's transaction: rolled back together, committed together
        raw2, mid2 = message(2)
        with pytest.raises(RuntimeError), store.write_transaction():
            out.enqueue("decision_notice", raw2, [APPROVER], message_id=mid2)
            raise RuntimeError("decision failed")
        assert out.by_message_id(mid2) is None
        with store.write_transaction():
            out.enqueue("decision_notice", raw2, [APPROVER], message_id=mid2)
        assert out.pending_count() == 2

        a = out.claim("w1", 60)
        b = out.claim("w2", 60)
        assert a is not None and b is not None and a.id == first and a.attempts == 1
        assert out.claim("w3", 60) is None  # both leased
        assert out.raw(a) == raw
        clock.advance(61)  # w1 died: its lease expires and w3 takes the row over
        c = out.claim("w3", 60)
        assert c is not None and c.id == a.id and c.attempts == 2
        assert not out.mark_sent(a)  # the old claim can no longer write
        assert out.retry(c, 30, "451 later")
        assert out.claim("w3", 60) is not None  # b's lease expired too (same clock)
        clock.advance(31)
        d = out.claim("w1", 60)
        assert d is not None and d.id == first and d.last_error == "451 later"
        assert out.mark_sent(d) and out.get(first).state == ob.SENT  # type: ignore[union-attr]
        assert out.counts() == {ob.SENT: 1, ob.SENDING: 1}
    finally:
        store.close()


# ---- the send role -----------------------------------------------------------------------

def settings(tmp_path: Path, sink: SmtpSink | None = None, **over: Any) -> SendSettings:
    base = SendSettings(
        mode="relay" if sink else "file", outbox_dir=tmp_path / "outbox",
        relay_host="127.0.0.1", relay_port=sink.port if sink else 25, relay_security="none",
        timeout=5, backoff_seconds=10, max_age_hours=24, operator_email=OPERATOR,
        from_address=FROM, helo_hostname="invoices.test", poll_seconds=0.05, lease_seconds=60)
    return replace(base, **over)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def drive(sender: Sender, *steps: Callable[[], Any]) -> list[str | None]:
    """send_one() once per step, calling the step first; the sender is closed at the end."""
    results = []
    try:
        for step in steps:
            step()
            results.append(await sender.send_one())
    finally:
        await sender.aclose()
    return results


def nothing() -> None:
    return None


def test_relay_delivery(tmp_path: Path, store: Store) -> None:
    with SmtpSink().start() as sink:
        out = OutboxStore(store)
        raw, mid = message()
        oid = out.enqueue("approval_request", raw, [APPROVER], message_id=mid)
        assert run(drive(Sender(settings(tmp_path, sink), store), nothing, nothing)) == [
            "sent", None]
    [got] = sink.messages
    assert got.raw == raw and got.rcpt_tos == (APPROVER,)
    assert got.mail_from == "facturd@invoices.test"
    item = out.get(oid)
    assert item is not None and item.state == ob.SENT and item.sent_at == store.clock()
    assert out.pending_count() == 0


def test_relay_with_password_file_and_dkim(tmp_path: Path, store: Store,
                                           dkim_key: tuple[bytes, Callable[..., bytes]]
                                           ) -> None:
    pem, dnsfunc = dkim_key
    (tmp_path / "dkim.pem").write_bytes(pem)
    (tmp_path / "relay.pw").write_text("s3cret\n")
    (tmp_path / "relay.pw").chmod(0o600)
    with SmtpSink(credentials=("facturd", "s3cret")).start() as sink:
        raw, mid = message()
        OutboxStore(store).enqueue("digest", raw, [APPROVER], message_id=mid)
        s = settings(tmp_path, sink, relay_username="facturd",
                     relay_password_file=str(tmp_path / "relay.pw"), dkim_domain="invoices.test",
                     dkim_selector="sel1", dkim_private_key_file=str(tmp_path / "dkim.pem"))
        assert run(drive(Sender(s, store), nothing)) == ["sent"]
    [got] = sink.messages
    assert got.login == "facturd" and got.raw.endswith(raw)
    assert dkim.verify(got.raw, dnsfunc=dnsfunc)


def test_relay_down_then_up_same_message_id(tmp_path: Path, store: Store, clock: Clock) -> None:
    sink = SmtpSink()  # not started: connection refused
    out = OutboxStore(store)
    raw, mid = message()
    oid = out.enqueue("approval_request", raw, [APPROVER], message_id=mid)
    def relay_back() -> None:
        sink.start()
        clock.advance(20)

    try:
        outcomes = run(drive(Sender(settings(tmp_path, sink), store), nothing,
                             lambda: clock.advance(5), lambda: clock.advance(6), relay_back))
        assert outcomes == ["retry", None, "retry", "sent"]
    finally:
        sink.stop()
    item = out.get(oid)
    assert item is not None and item.state == ob.SENT and item.attempts == 3
    [got] = sink.messages
    assert parse(got.raw)["Message-ID"] == mid and got.raw == raw


def test_tempfail_is_retried(tmp_path: Path, store: Store, clock: Clock) -> None:
    with SmtpSink().start("tempfail") as sink:
        out = OutboxStore(store)
        raw, mid = message()
        oid = out.enqueue("digest", raw, [APPROVER], message_id=mid)
        assert run(drive(Sender(settings(tmp_path, sink), store), nothing)) == ["retry"]
        item = out.get(oid)
        assert item is not None and item.state == ob.QUEUED and "451" in item.last_error
        assert item.next_attempt_at == clock.now + timedelta(seconds=10)
        sink.set_mode("accept")
        clock.advance(10)
        assert run(drive(Sender(settings(tmp_path, sink), store), nothing)) == ["sent"]
    assert [parse(m.raw)["Message-ID"] for m in sink.messages] == [mid]


def test_permfail_gives_up_and_alerts(tmp_path: Path, store: Store) -> None:
    with SmtpSink().start("permfail") as sink:
        out = OutboxStore(store)
        raw, mid = message()
        oid = out.enqueue("approval_request", raw, [APPROVER], message_id=mid, folder_id=None)
        sender = Sender(settings(tmp_path, sink, language="en"), store)
        assert run(drive(sender, nothing)) == ["failed"]
        item = out.get(oid)
        assert item is not None and item.state == ob.FAILED and "550" in item.last_error
        [alert] = out.items(kind="operator_alert")
        assert alert.recipients == (OPERATOR,) and alert.state == ob.QUEUED
        text = parse(out.raw(alert)).get_body(("plain",))
        assert text is not None
        body = text.get_content()
        assert mid in body and "550" in body and "permanently refused" in body
        sink.set_mode("accept")  # the alert itself goes out through the relay
        assert run(drive(Sender(settings(tmp_path, sink), store), nothing)) == ["sent"]
    assert sink.messages[0].rcpt_tos == (OPERATOR,)


def test_max_age_gives_up_and_alerts(tmp_path: Path, store: Store, clock: Clock) -> None:
    out = OutboxStore(store)
    raw, mid = message()
    oid = out.enqueue("digest", raw, [APPROVER], message_id=mid)
    sink = SmtpSink()  # down the whole time
    s = settings(tmp_path, sink, max_age_hours=1, backoff_seconds=1000)
    # attempts at t=0, 1000 (next +2000), 3000 (next clamped to the 1 h deadline), 3600
    outcomes = run(drive(Sender(s, store), nothing, lambda: clock.advance(1000),
                         lambda: clock.advance(2000), lambda: clock.advance(600)))
    assert outcomes == ["retry", "retry", "retry", "failed"]
    item = out.get(oid)
    assert item is not None and item.state == ob.FAILED and "after 1 h" in item.last_error
    [alert] = out.items(kind="operator_alert")
    body = parse(out.raw(alert)).get_body(("plain",))
    assert body is not None and "délai maximal dépassé" in body.get_content()
    # an alert that fails is only logged, never alerted about
    assert run(drive(Sender(s, store), nothing, lambda: clock.advance(7200))) == [
        "retry", "failed"]
    assert len(out.items(kind="operator_alert")) == 1


def test_file_mode_writes_eml_atomically(tmp_path: Path, store: Store) -> None:
    out = OutboxStore(store)
    raw, mid = message()
    out.enqueue("approval_request", raw, [APPROVER], message_id=mid)
    assert run(drive(Sender(settings(tmp_path), store), nothing)) == ["sent"]
    files = sorted((tmp_path / "outbox").iterdir())
    assert [f.name for f in files] == [eml_name(mid)]  # no temp file left behind
    assert files[0].name == mid.strip("<>") + ".eml"
    msg = parse(files[0].read_bytes())
    assert msg["Message-ID"] == mid and msg["Auto-Submitted"] == "auto-generated"
    name = eml_name("<../../etc/x@y>")
    assert "/" not in name and not name.startswith(".") and name.endswith(".eml")


def test_file_mode_failure_leaves_no_partial_file(tmp_path: Path, store: Store,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = OutboxStore(store)
    raw, mid = message()
    oid = out.enqueue("digest", raw, [APPROVER], message_id=mid)

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("daemon.outbox.os.fsync", full_disk)
    assert run(drive(Sender(settings(tmp_path), store), nothing)) == ["retry"]
    assert list((tmp_path / "outbox").iterdir()) == []
    item = out.get(oid)
    assert item is not None and "No space left" in item.last_error


def test_starttls_required_never_falls_back_to_clear_text(tmp_path: Path, store: Store) -> None:
    with SmtpSink().start() as sink:  # offers no STARTTLS
        raw, mid = message()
        OutboxStore(store).enqueue("digest", raw, [APPROVER], message_id=mid)
        s = settings(tmp_path, sink, relay_security="starttls")
        assert run(drive(Sender(s, store), nothing)) == ["retry"]
    assert sink.messages == []


def test_run_sender_loop_retries_until_the_relay_answers(tmp_path: Path) -> None:
    """End to end with the real loop and clock: relay down at first, then up."""
    store = Store.open(f"sqlite:///{tmp_path}/db.sqlite3", "files", tmp_path / "blobs")
    sink = SmtpSink()
    raw, mid = message()
    oid = OutboxStore(store).enqueue("approval_request", raw, [APPROVER], message_id=mid)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_sender(settings(tmp_path, sink, backoff_seconds=0.2),
                                              store, stop))
        out = OutboxStore(store)
        deadline = time.monotonic() + 20
        while (item := await asyncio.to_thread(out.get, oid)) and item.attempts < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.to_thread(sink.start)
        while not sink.messages:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 10)

    try:
        run(scenario())
    finally:
        sink.stop()
        store.close()
    assert parse(sink.messages[0].raw)["Message-ID"] == mid
