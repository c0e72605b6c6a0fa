"""Sales invoices sent to customers (daemon/sales.py, storage/sales.py): who may have an invoice
sent, where it goes, the pay button, never twice, "archived when sent".

Most tests run on a real Store (SQLite, and PostgreSQL when a server answers) with the
test's clock: drafts are stored as the worker
stores them (a delivery, its message's auth verdict, the Factur-X PDF as the original), the
scheduler's ``send_ready`` runs for real and the send role delivers to a real aiosmtpd relay.
The last test does it all through ``facturd serve``: DKIM-signed and forged mail to
``<VAT>+sales@``, a relay that is down then up, a customer hosted on the same facturd, and
``facturd documents send``.
"""

from __future__ import annotations

import functools
import hashlib
import html
import io
import re
import smtplib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
import segno.helpers

from daemon import mailer, payment, sales, scheduler
from daemon.auth import AuthSettings, AuthVerdict, authenticate_delivery
from daemon.cli_policy import PolicyError, parse_setting
from daemon.digest import DigestSettings, buckets, open_invoices
from daemon.sales import NotSendable, SalesSettings, UnknownDocument, send_document, send_ready
from daemon.sharing import ShareSettings, share_due
from rules.lifecycle import lifecycle_of
from storage import records
from storage.outbox import OutboxStore
from storage.policy import Policy
from storage.queue import Queue
from storage.sales import SalesStore
from storage.store import Store
from tests.conftest import DOMAIN, VAT, VAT2, Clock, Facturd, wait_for
from tests.dkimkeys import Key, make_key
from tests.dnsstub import StubDNS
from tests.factories import make_facturx_pdf
from tests.mails import body, crlf, invoice_mail, parse
from tests.smtpsink import Captured, SmtpSink, send_one_through

CUSTOMER_VAT = "FR44732829320"  # a partner with an e-mail address, not hosted here
STRANGER_VAT = "FR64443061841"  # no partner record, not hosted
CUSTOMER_EMAIL = "ap@client.test"
BOSS = "boss@acme.test"
COMPANY = "billing@acme.test"  # an approved sender of the folder
IBAN = "FR7630006000011234567890189"
EVIL_URL = "https://evil.test/pay"
TEMPLATE = ("https://pay.example.test/checkout"
            "?inv={number}&amt={amount}&cur={currency}&ref={reference}")
FROM = "facturd <facturd@invoices.test>"
SETTINGS = SalesSettings(domain=DOMAIN)
NOW = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path, any_db: str, clock: Clock) -> Iterator[Store]:
    s = Store.open(any_db, "files", tmp_path / "blobs", clock=clock)
    yield s
    s.close()


def verdict(result: str = "pass", sender: str = COMPANY) -> dict[str, object]:
    domain = sender.rpartition("@")[2]
    return AuthVerdict(result, "dkim" if result == "pass" else "", sender, domain,
                       domain if result == "pass" else None, (), ()).to_json()


@functools.cache
def invoice_pdf(number: str, buyer_vat: str, buyer_name: str = "Client SA") -> bytes:
    """The company's own Factur-X invoice; its XML carries a payment URL facturd must ignore."""
    return make_facturx_pdf(number=number, seller_name="Acme SAS", seller_vat=VAT,
                            buyer_name=buyer_name, buyer_vat=buyer_vat, iban=IBAN,
                            payment_reference=EVIL_URL)


def company(store: Store, *, notify: str = BOSS, accountant: str = "") -> int:
    """The seller folder: approved sender, pay link, IBAN; one customer partner (English,
    pay button)."""
    fid = store.add_folder(VAT, "Acme SAS", notify_email=notify, accountant_email=accountant).id
    policy = Policy(store)
    policy.set_folder(fid, {"pay_link_template": TEMPLATE, "iban": IBAN})
    policy.approve_sender(fid, COMPANY)
    policy.add_partner(fid, "Client SA", vat=CUSTOMER_VAT, email=CUSTOMER_EMAIL,
                       language="en", pay_button=True)
    return fid


def add_draft(store: Store, folder_id: int, number: str, buyer_vat: str = CUSTOMER_VAT, *,
              protocol: str = "smtp", auth: dict[str, object] | None = None,
              direction: str = "sales", **fields: Any) -> int:
    """A sales draft as the worker leaves it: a delivery, its verdict, the original PDF."""
    pdf = invoice_pdf(number, buyer_vat)
    sha = hashlib.sha256(pdf).hexdigest()
    tag = "sales" if direction == "sales" else ""
    item = records.IntakeItem(raw=pdf, sha256=sha, mail_from=COMPANY,
                              recipients=(records.Recipient(folder_id, "x", tag),),
                              protocol=protocol, peer="test", helo="test",
                              filename=f"{number}.pdf")
    result = store.record_intake([item])[0]
    if protocol != "import":
        store.set_message_auth(result.message_id, auth if auth is not None else verdict())
    values: dict[str, Any] = dict(
        number=number, issue_date="2026-03-01", due_date="2026-03-31", seller_name="Acme SAS",
        seller_vat=VAT, buyer_name="Client SA", buyer_vat=buyer_vat, currency="EUR",
        total_net=Decimal("100.00"), total_tax=Decimal("20.00"),
        total_gross=Decimal("120.00"), amount_due=Decimal("120.00"),
        payment_reference=EVIL_URL)
    values.update(fields)
    doc = records.Document(
        id=0, folder_id=folder_id, delivery_id=result.deliveries[0].delivery_id, part=0,
        direction=direction, state="draft" if direction == "sales" else "archived",
        source="facturx", original_sha256=sha, enriched_sha256="", filename=f"{number}.pdf",
        media_type="application/pdf", **values)
    with store.write_transaction():
        return store.documents.upsert(doc)[0]


def state(store: Store, doc_id: int) -> str:
    doc = store.documents.get(doc_id)
    assert doc is not None
    return doc.state


def events(store: Store, doc_id: int, kind: str) -> list[str]:
    return [e.detail for e in store.events(document_id=doc_id) if e.kind == kind]


def pay_href(msg: EmailMessage) -> str:
    found = re.findall(r'href="([^"]+)"', body(msg, "html"))
    assert len(found) == 1, found
    return html.unescape(found[0])


def epc_png(name: str, iban: str, amount: Decimal, text: str) -> bytes:
    out = io.BytesIO()
    segno.helpers.make_epc_qr(name=name, iban=iban, amount=amount, text=text).save(
        out, kind="png", scale=4, border=4)
    return out.getvalue()


@pytest.mark.parametrize(("iban", "amount", "currency"), [
    (IBAN, Decimal("120.00"), "USD"),                    # EPC codes are for euros only
    ("US64SVBKUS6S3300958879", Decimal("1"), "EUR"),    # not an IBAN
    ("SA0380000000608010167519", Decimal("1"), "EUR"),  # valid IBAN outside SEPA
    (IBAN, Decimal("0"), "EUR"), (IBAN, Decimal("1000000000"), "EUR"),
    ("FR7630006000011234567890188", Decimal("1"), "EUR"),  # check digits wrong
])
def test_no_epc_code_when_it_does_not_apply(iban: str, amount: Decimal, currency: str
                                            ) -> None:
    assert payment.epc_qr_png("Acme SAS", iban, amount, currency, "S-1") is None


def test_epc_code_for_a_sepa_euro_invoice() -> None:
    png = payment.epc_qr_png("Acme SAS", "fr76 3000 6000 0112 3456 7890 189", Decimal("99.5"),
                           "eur", "S-1")
    assert png is not None and png.startswith(b"\x89PNG")
    assert png == epc_png("Acme SAS", IBAN, Decimal("99.5"), "S-1")
    assert png != epc_png("Acme SAS", IBAN, Decimal("99.6"), "S-1")


def expected_pay_url(store: Store, doc_id: int, number: str) -> str:
    reference = payment.pay_reference(store.secret(payment.REFERENCE_SECRET), doc_id)
    assert re.fullmatch(rf"{doc_id}-[0-9a-f]{{16}}", reference)
    return (f"https://pay.example.test/checkout?inv={number}&amt=120.00&cur=EUR"
            f"&ref={reference}")


# ---- the pay link (B-OUT-05) and who speaks for the company: pure --------------------------

@pytest.mark.parametrize(("template", "error"), [
    ("http://pay.example.test/{reference}", "https"),
    ("https://pay.example.test/{number.__class__}", "unknown placeholder"),
    ("https://pay.example.test/{iban}", "unknown placeholder"),
    ("https://pay.example.test/{reference", "unbalanced"),
    ("https://{reference}.example.test/", "host"),
    ("https://user@pay.example.test/{reference}", "host"),
    ("https://pay.example.test/a b", "spaces"),
    ("javascript:alert(1)//{reference}", "https"),
])
def test_pay_link_templates_are_checked_when_set(template: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        payment.check_pay_link_template(template)
    with pytest.raises(PolicyError, match=error):  # facturd folder set VAT pay_link_template=
        parse_setting(f"pay_link_template={template}")
    assert parse_setting(f"pay_link_template= {TEMPLATE} ") == ("pay_link_template", TEMPLATE)
    assert parse_setting("pay_link_template=") == ("pay_link_template", "")


def test_pay_link_is_filled_with_our_values_quoted() -> None:
    url = payment.pay_link(TEMPLATE, number="F 1/2&x=y", amount=Decimal("1234.5"),
                         currency="EUR", reference="7-abc")
    assert url == ("https://pay.example.test/checkout?inv=F%201%2F2%26x%3Dy&amt=1234.50"
                   "&cur=EUR&ref=7-abc")
    assert payment.pay_reference(b"k" * 32, 7) != payment.pay_reference(b"j" * 32, 7)
    assert payment.pay_reference(b"k" * 32, 7) != payment.pay_reference(b"k" * 32, 8)


def test_only_the_authenticated_company_or_the_operator_sends_without_a_person() -> None:
    company = sales.company_addresses(frozenset({COMPANY}), "Jeanne <Boss@ACME.test>")
    assert company == {COMPANY, BOSS}
    refusal = sales.sender_refusal
    assert refusal("import", {}, company) is None
    assert refusal("smtp", verdict(), company) is None
    assert refusal("lmtp", verdict(sender=BOSS), company) is None
    assert "not authenticated" in str(refusal("smtp", verdict("none"), company))
    assert "not authenticated" in str(refusal("smtp", verdict("fail"), company))
    assert "not authenticated" in str(refusal("smtp", verdict("temperror"), company))
    assert "not authenticated" in str(refusal("smtp", {}, company))
    assert "neither an approved sender" in str(
        refusal("smtp", verdict(sender="intern@acme.test"), company))
    assert refusal("internal", verdict(), company) is not None  # never forwarded onwards


def test_internal_deliveries_pass_only_for_the_address_facturd_recorded() -> None:
    msg = invoice_mail(sender=f'"Acme SAS" <{VAT}@{DOMAIN}>', to=f"{VAT2}@{DOMAIN}")
    raw = crlf(msg.as_bytes())
    settings = AuthSettings(nameservers=("127.0.0.1:9",), dns_timeout=0.2)
    v = authenticate_delivery(raw, settings, protocol="internal",
                              envelope_from=f"{VAT}@{DOMAIN}")
    assert (v.result, v.method, v.from_address, v.aligned_domain) == (
        "pass", "internal", f"{VAT.lower()}@{DOMAIN}", DOMAIN)
    assert AuthVerdict.from_json(v.to_json()) == v
    other = authenticate_delivery(raw, settings, protocol="internal",
                                  envelope_from=f"{VAT2}@{DOMAIN}")
    assert other.result == "fail"
    smtp = authenticate_delivery(raw, settings, protocol="smtp",
                                 envelope_from=f"{VAT}@{DOMAIN}")
    assert smtp.result == "none"  # the same bytes over SMTP: no signature, no pass


def test_only_our_code_stores_the_internal_protocol(store: Store) -> None:
    fid = store.add_folder(VAT, "Acme SAS").id
    bogus = records.IntakeItem(raw=b"x", sha256=hashlib.sha256(b"x").hexdigest(),
                               mail_from="", recipients=(records.Recipient(fid, "x", ""),),
                               protocol="bogus", peer="", helo="")
    with pytest.raises(ValueError, match="protocol"):
        store.record_intake([bogus])
    assert lifecycle_of("sales", "sending") == (None, None)


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_the_invoice_mail_escapes_invoice_data(lang: str) -> None:
    env = mailer.make_environment(mailer.template_dirs())
    evil = '<a href="https://evil.test">Pay here</a>{{ 7*7 }}'
    r = mailer.render(env, "sales_invoice", lang, dict(
        seller_name="Acme SAS", customer_name=evil, number="F1", issue_date="2026-03-01",
        due_date=None, currency="EUR", total_net=Decimal("100"), total_tax=Decimal("20"),
        total_gross=Decimal("120"), amount=Decimal("120"), filename="F1.pdf",
        pay_url="https://pay.example.test/?a=1&b=2", iban="FR76 3000", transfer_reference="F1",
        qr_cid=None))
    assert '<a href="https://evil.test"' not in r.html and "&lt;a href=" in r.html
    assert 'href="https://pay.example.test/?a=1&amp;b=2"' in r.html
    assert "https://pay.example.test/?a=1&b=2" in r.text and evil in r.text
    assert "49" not in r.html and "\n" not in r.subject and "F1" in r.subject
    assert "FR76 3000" in r.text and "FR76 3000" in r.html


# ---- sending through the outbox --------------------------------------------------------------

def test_authenticated_draft_is_queued_once_and_sent_only_when_the_relay_accepts(
        store: Store, clock: Clock) -> None:
    fid = company(store)
    doc_id = add_draft(store, fid, "S-1")
    [queued] = send_ready(store, SETTINGS, NOW)
    assert queued.result == "queued" and CUSTOMER_EMAIL in queued.detail
    assert state(store, doc_id) == "sending"
    assert send_ready(store, SETTINGS, NOW) == []  # a second tick: nothing new
    [item] = OutboxStore(store).items()
    assert (item.kind, item.recipients, item.document_id) == (
        "sales_invoice", (CUSTOMER_EMAIL,), doc_id)

    with SmtpSink() as sink:  # not started: the relay is down
        assert send_one_through(sink, store, FROM) == "retry"
        assert state(store, doc_id) == "sending"
        sink.start()
        clock.advance(minutes=5)
        assert send_one_through(sink, store, FROM) == "sent"
        assert send_one_through(sink, store, FROM) is None
        [mail] = sink.messages
    assert state(store, doc_id) == "sent"
    assert events(store, doc_id, "sent") == [f"to {CUSTOMER_EMAIL} ({item.message_id})"]
    assert mail.rcpt_tos == (CUSTOMER_EMAIL,)
    msg = mail.message
    assert msg["From"] == f"Acme SAS <{VAT}@{DOMAIN}>"
    assert msg["Reply-To"] == BOSS and msg["Auto-Submitted"] == "no"
    assert "S-1" in str(msg["Subject"]) and "Invoice" in str(msg["Subject"])  # partner: en
    [pdf] = list(msg.iter_attachments())
    assert pdf.get_content_type() == "application/pdf"
    assert pdf.get_content() == invoice_pdf("S-1", CUSTOMER_VAT)
    url = expected_pay_url(store, doc_id, "S-1")
    assert pay_href(msg) == url and url in body(msg, "plain")
    assert EVIL_URL not in mail.raw.decode()
    assert "FR76 3000 6000 0112 3456 7890 189" in body(msg, "plain")
    # the EPC ("SEPA QR") image: inline, shown by the HTML part, carrying our values
    cid = f"epc.{doc_id}@{DOMAIN.lower()}"
    assert f'src="cid:{cid}"' in body(msg, "html")
    [image] = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert image["Content-ID"] == f"<{cid}>" and image.get_content_disposition() == "inline"
    assert image.get_content() == epc_png("Acme SAS", IBAN, Decimal("120.00"), "S-1")


def test_without_a_notification_address_replies_go_to_the_company_s_sender(
        store: Store) -> None:
    """No notify_email: the customer's reply goes to the authenticated person who sent the
    invoice to +sales, not back into the folder's purchase intake."""
    fid = company(store, notify="")
    add_draft(store, fid, "S-9")
    [queued] = send_ready(store, SETTINGS, NOW)
    assert queued.result == "queued"
    [item] = OutboxStore(store).items()
    msg = parse(OutboxStore(store).raw(item))
    assert msg["Reply-To"] == COMPANY and msg["From"] == f"Acme SAS <{VAT}@{DOMAIN}>"


def test_dns_trouble_on_the_company_s_mail_waits_and_is_verified_again(
        store: Store, clock: Clock) -> None:
    """The company's +sales mail could not be verified (DNS temperror): the draft is neither
    sent nor declined; the worker re-runs its delivery to verify again; once the verdict
    passes it is sent. After AUTH_PATIENCE without a verdict it is left to a person."""
    fid = company(store)
    doc_id = add_draft(store, fid, "S-T", auth=verdict("temperror"))
    queue = Queue(store)
    job = queue.claim("w", 60)
    assert job is not None
    with store.write_transaction():
        queue.finish(job, records.DONE)  # the worker processed it (verdict temperror)
    [waiting] = send_ready(store, SETTINGS, NOW)
    assert waiting.result == "waiting" and OutboxStore(store).items() == []
    assert events(store, doc_id, "not-sent") == []
    assert queue.requeue_auth_pending(600) == []  # not before reverify_seconds
    clock.advance(601)
    assert queue.requeue_auth_pending(600) == [job.delivery.id]
    assert store.deliveries()[0].state == "queued"
    store.set_message_auth(job.message.id, verdict("pass"))  # the re-run's verdict
    [sent] = send_ready(store, SETTINGS, NOW + timedelta(seconds=601))
    assert sent.result == "queued" and len(OutboxStore(store).items()) == 1

    other = add_draft(store, fid, "S-U", auth=verdict("temperror"))
    clock.advance(hours=25)
    [declined] = send_ready(store, SETTINGS, NOW + timedelta(hours=25, seconds=601))
    assert declined.document_id == other and declined.result == "declined"
    assert "temperror" in events(store, other, "not-sent")[0]


def test_schedulers_racing_on_the_same_drafts_send_each_once(store: Store) -> None:
    fid = company(store)
    ids = [add_draft(store, fid, f"R-{n}") for n in range(4)]
    stale = SalesStore(store).get(ids[0])  # read by a second node before the first acts
    assert stale is not None
    errors: list[BaseException] = []

    def node() -> None:
        try:
            send_ready(store, SETTINGS, NOW)
        except BaseException as exc:  # pragma: no cover - shown by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=node) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = OutboxStore(store).items(kind="sales_invoice")
    assert sorted(r.document_id or 0 for r in rows) == ids
    assert not SalesStore(store).claim(stale, "sending", {})
    assert not SalesStore(store).decline(stale, "not sent: too late")
    assert all(len(events(store, i, "sending")) == 1 for i in ids)


def test_a_relay_refusal_returns_the_invoice_to_draft_for_a_person(store: Store) -> None:
    fid = company(store)
    doc_id = add_draft(store, fid, "S-9")
    send_ready(store, SETTINGS, NOW)
    with SmtpSink().start("permfail") as sink:
        assert send_one_through(sink, store, FROM) == "failed"
    assert state(store, doc_id) == "draft"
    assert "back to draft" in events(store, doc_id, "not-sent")[0]
    assert send_ready(store, SETTINGS, NOW) == []  # not retried behind the person's back
    assert send_document(store, SETTINGS, doc_id, to="other@client.test").result == "queued"
    assert state(store, doc_id) == "sending"


# ---- declined drafts and facturd documents send --------------------------------------------

def test_a_forged_or_unapproved_sender_gets_nothing_sent(store: Store) -> None:
    fid = company(store)
    forged = add_draft(store, fid, "F-1", auth=verdict("none"))
    stranger = add_draft(store, fid, "F-2", auth=verdict(sender="someone@acme.test"))
    for _ in range(2):  # two ticks: one event each, not one per tick
        send_ready(store, SETTINGS, NOW)
    assert OutboxStore(store).items() == []
    assert state(store, forged) == state(store, stranger) == "draft"
    [why] = events(store, forged, "not-sent")
    assert why.startswith("not sent: sender not authenticated as the company")
    assert f"facturd documents send {forged}" in why
    [why] = events(store, stranger, "not-sent")
    assert "someone@acme.test" in why and "neither an approved sender" in why


def test_the_operator_s_import_is_sent_and_missing_fields_are_not(store: Store) -> None:
    fid = company(store)
    imported = add_draft(store, fid, "I-1", protocol="import")
    incomplete = add_draft(store, fid, "I-2", currency=None)
    outcomes = {o.document_id: o.result for o in send_ready(store, SETTINGS, NOW)}
    assert outcomes == {imported: "queued", incomplete: "declined"}
    assert "required fields missing: currency" in events(store, incomplete, "not-sent")[0]
    with pytest.raises(NotSendable, match="currency"):
        send_document(store, SETTINGS, incomplete)


def test_no_customer_address_waits_then_a_person_sends_it(store: Store, clock: Clock) -> None:
    fid = company(store)
    doc_id = add_draft(store, fid, "N-1", STRANGER_VAT)
    [declined] = send_ready(store, SETTINGS, NOW)
    assert declined.result == "declined" and state(store, doc_id) == "draft"
    assert f"no address for customer Client SA (no partner with VAT {STRANGER_VAT})" in (
        events(store, doc_id, "not-sent")[0])
    with pytest.raises(NotSendable, match="give one with --to"):
        send_document(store, SETTINGS, doc_id)
    with pytest.raises(ValueError):
        send_document(store, SETTINGS, doc_id, to="a@b.test>\r\nRCPT TO:<victim@x.test")
    outcome = send_document(store, SETTINGS, doc_id, to="compta@stranger.test")
    assert outcome.result == "queued" and "by cli" in outcome.detail
    with pytest.raises(NotSendable, match="sent already"):
        send_document(store, SETTINGS, doc_id, to="compta@stranger.test")
    with SmtpSink().start() as sink:
        assert send_one_through(sink, store, FROM) == "sent"
        [mail] = sink.messages
    assert mail.rcpt_tos == ("compta@stranger.test",) and state(store, doc_id) == "sent"
    msg = mail.message
    assert "Facture N-1" in str(msg["Subject"])  # no partner: the folder's language (fr)
    assert pay_href(msg) == expected_pay_url(store, doc_id, "N-1")  # no partner: shown
    purchase = add_draft(store, fid, "P-1", direction="purchase")
    with pytest.raises(NotSendable, match="purchase invoice"):
        send_document(store, SETTINGS, purchase, to="x@y.test")
    with pytest.raises(UnknownDocument):
        send_document(store, SETTINGS, 999)


def test_a_partner_without_pay_button_gets_no_button(store: Store) -> None:
    fid = company(store)
    Policy(store).add_partner(fid, "Sans Bouton", vat=STRANGER_VAT, email="x@sans.test")
    add_draft(store, fid, "B-1", STRANGER_VAT)
    send_ready(store, SETTINGS, NOW)
    [item] = OutboxStore(store).items()
    msg = parse(OutboxStore(store).raw(item))
    assert "href=" not in body(msg, "html") and "pay.example.test" not in body(msg, "plain")
    assert "FR76 3000" in body(msg, "plain")  # bank details still shown


# ---- a customer hosted here, "archived when sent" ------------------------------------------

def test_hosted_customer_gets_it_in_its_folder_and_the_accountant_once(store: Store) -> None:
    fid = company(store, accountant="compta@cabinet.test")
    customer = store.add_folder(VAT2, "Dupont SARL", language="en").id
    doc_id = add_draft(store, fid, "H-1", VAT2)
    digest = DigestSettings(public_url="https://f.test", from_address=FROM,
                            token_ttl=timedelta(days=8), template_dirs=mailer.template_dirs())
    share = ShareSettings(from_address=FROM, template_dirs=mailer.template_dirs())
    scheduler.tick(store, digest, share, NOW, SETTINGS)  # sales first, then shares
    scheduler.tick(store, digest, share, NOW, SETTINGS)
    assert state(store, doc_id) == "sent"
    assert [i.kind for i in OutboxStore(store).items()] == ["accountant_share"]  # no mail out
    [delivery] = store.deliveries(customer)
    message = store.message(delivery.message_id)
    assert message is not None and message.protocol == "internal"
    assert (delivery.direction, delivery.state) == ("purchase", "queued")
    raw = store.raw_message(delivery.message_id)
    v = authenticate_delivery(raw, AuthSettings(), protocol=message.protocol,
                              envelope_from=message.mail_from)
    assert (v.result, v.from_address) == ("pass", f"{VAT.lower()}@{DOMAIN}")
    msg = parse(raw)
    assert msg["To"] == f"{VAT2}@{DOMAIN}" and "Invoice H-1" in str(msg["Subject"])
    assert [p.get_content() for p in msg.iter_attachments()] == [invoice_pdf("H-1", VAT2)]
    assert len(events(store, doc_id, "shared-with-accountant")) == 1
    assert share_due(store, share, NOW) == []  # never twice
    [open_sale] = [i for i in open_invoices(fid) if i.id == doc_id]
    assert buckets([open_sale], NOW.date()).sales["EUR"].outstanding == Decimal("120.00")


# ---- everything through facturd serve -------------------------------------------------------

@pytest.fixture(scope="module")
def key() -> Key:
    return make_key(1024)


def sales_mail(number: str, buyer_vat: str, key: Key | None) -> bytes:
    msg = invoice_mail(sender=f"Acme Billing <{COMPANY}>", to=f"{VAT}+sales@{DOMAIN}",
                       subject=f"Facture {number}",
                       attachments=[(f"{number}.pdf", "application/pdf",
                                     invoice_pdf(number, buyer_vat))])
    raw = crlf(msg.as_bytes())
    return raw if key is None else bytes(dkim.sign(raw, b"sel", b"acme.test", key.pem)) + raw


@pytest.fixture
def served(tmp_path: Path, db_url: str, key: Key) -> Iterator[tuple[Facturd, SmtpSink, Store]]:
    sink = SmtpSink()  # down until the test starts it
    with StubDNS({"sel._domainkey.acme.test": key.record}) as dns:
        f = Facturd(tmp_path, db_url, extra=(
            "schedule_seconds = 0.3\n"  # continues the harness's [worker] table
            f'[outgoing]\nmode = "relay"\nrelay_host = "127.0.0.1"\nrelay_port = {sink.port}\n'
            'relay_security = "none"\npoll_seconds = 0.1\nbackoff_seconds = 0.2\n'
            'max_backoff_seconds = 1\n'
            f'[auth]\nnameservers = ["{dns.address}"]\ndns_timeout_seconds = 0.5\n'))
        backend = "files" if db_url.startswith("sqlite") else "database"
        store = Store.open(db_url, backend, f.state / "blobs")
        try:
            company(store)
            store.add_folder(VAT2, "Dupont SARL")
            f.start()
            yield f, sink, store
        finally:
            f.stop()
            sink.stop()
            store.close()


def test_sales_invoices_through_facturd_serve(
        served: tuple[Facturd, SmtpSink, Store], key: Key) -> None:
    f, sink, store = served
    seller = store.folder_by_vat(VAT)
    hosted = store.folder_by_vat(VAT2)
    assert seller is not None and hosted is not None
    for number, buyer, signed in (("S-1", CUSTOMER_VAT, True), ("S-2", CUSTOMER_VAT, False),
                                  ("S-3", STRANGER_VAT, True), ("S-4", VAT2, True)):
        with smtplib.SMTP("127.0.0.1", f.smtp_port, timeout=30) as smtp:
            smtp.sendmail(COMPANY, [f"{VAT}+sales@{DOMAIN}"],
                          sales_mail(number, buyer, key if signed else None))

    def docs() -> dict[str, records.Document]:
        return {d.number or "": d for d in store.documents.find(seller.id)}

    def settled() -> bool:
        found = docs()
        return len(found) == 4 and all(
            d.state != "draft" or events(store, d.id, "not-sent") for d in found.values())

    wait_for(settled, "four sales documents decided")
    d = docs()
    # authenticated, partner e-mail: queued, NOT sent while the relay is down
    assert d["S-1"].state == "sending"
    # forged From of the company: nothing sent, the reason recorded
    assert d["S-2"].state == "draft"
    assert "not authenticated" in events(store, d["S-2"].id, "not-sent")[0]
    # no address for this customer
    assert d["S-3"].state == "draft"
    assert "no address for customer" in events(store, d["S-3"].id, "not-sent")[0]
    # hosted customer: sent at once, a purchase invoice appears in its folder
    assert d["S-4"].state == "sent"
    [received] = wait_for(lambda: [x for x in store.documents.find(hosted.id)
                               if x.state != "received"], "the customer's purchase invoice")
    assert (received.direction, received.number, received.seller_vat) == (
        "purchase", "S-4", VAT)
    auth_step = next(s for s in received.trace if s["stage"] == "authenticate")
    assert auth_step["outcome"] == f"pass (internal d={DOMAIN})"
    time.sleep(1)  # several scheduler ticks and send attempts against the dead relay
    assert state(store, d["S-1"].id) == "sending" and sink.messages == []

    sink.start()  # the relay comes back: S-1 goes, once
    wait_for(lambda: state(store, d["S-1"].id) == "sent", "S-1 sent")
    [first] = sink.messages
    assert first.rcpt_tos == (CUSTOMER_EMAIL,)
    assert pay_href(first.message) == expected_pay_url(store, d["S-1"].id, "S-1")

    sent = f.cli("documents", "send", str(d["S-3"].id), "--to", "compta@stranger.test")
    assert "queued for compta@stranger.test" in sent.stdout
    again = f.cli("documents", "send", str(d["S-1"].id), check=False)
    assert again.returncode == 1 and "sent already" in again.stderr
    wait_for(lambda: state(store, d["S-3"].id) == "sent", "S-3 sent")
    time.sleep(1)
    with sink.lock:
        assert [m.rcpt_tos for m in sink.messages] == [(CUSTOMER_EMAIL,),
                                                       ("compta@stranger.test",)]
    assert all(len(events(store, d[n].id, "not-sent")) == 1 for n in ("S-2", "S-3"))
    assert state(store, d["S-2"].id) == "draft"
    first_mail: Captured = first
    assert EVIL_URL not in first_mail.raw.decode()
