"""End-to-end spoofing matrix: real SMTP into ``facturd serve``, DKIM keys on a stub DNS
server on 127.0.0.1. No forged or replayed invoice may be auto-accepted; a genuine aligned
approved sender and a trusted supplier are. Prints ``spoof_auto_accepted=<n>/<N>``."""

from __future__ import annotations

import json
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import dkim
import pytest

from tests.conftest import DOMAIN, VAT, VAT2, Facturd
from tests.dkimkeys import Key, make_key
from tests.dnsstub import StubDNS
from tests.factories import make_facturx_pdf
from tests.test_worker import settled

SUMMARY: list[str] = []
OUR_ID = "mx.invoices.test"


def invoice(number: str, sender: str = "Billing <billing@vendor.test>", iban: str | None = None,
            extra_from: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = f"{VAT}@{DOMAIN}"
    msg["Subject"] = f"Invoice {number}"
    msg["Date"] = formatdate()
    msg["Message-ID"] = f"<{number}@vendor.test>"
    msg.set_content(f"Invoice {number} attached.\n")
    kwargs: dict[str, Any] = {"number": number}
    if iban:
        kwargs["iban"] = iban
    msg.add_attachment(make_facturx_pdf(**kwargs), maintype="application", subtype="pdf",
                       filename=f"{number}.pdf")
    raw = msg.as_bytes().replace(b"\n", b"\r\n")
    if extra_from:  # a second From header: the email package refuses to build one
        raw = raw.replace(b"\r\nTo: ", f"\r\nFrom: {extra_from}\r\nTo: ".encode(), 1)
    return raw


def sign(raw: bytes, key: Key, domain: str, **options: Any) -> bytes:
    return bytes(dkim.sign(raw, b"sel", domain.encode(), key.pem, **options)) + raw


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {"vendor": make_key(2048), "evil": make_key(1024)}


@pytest.fixture
def dns(keys: dict[str, Key]) -> Iterator[StubDNS]:
    with StubDNS({"sel._domainkey.vendor.test": keys["vendor"].record,
                  "sel._domainkey.evil.test": keys["evil"].record,
                  "slow._domainkey.vendor.test": keys["vendor"].record},
                 timeout={"slow._domainkey.vendor.test"}) as server:
        yield server


def send(f: Facturd, raw: bytes, rcpt: str) -> None:
    with smtplib.SMTP("127.0.0.1", f.smtp_port, timeout=30) as smtp:
        smtp.sendmail("bounce@vendor.test", [rcpt], raw)


def state_of(f: Facturd, number: str, folder: str) -> dict[str, Any]:
    docs = json.loads(f.cli("documents", "list", "--folder", folder, "--json").stdout)
    return next(d for d in docs if d["number"] == number)


def test_spoofing_matrix(tmp_path: Path, keys: dict[str, Key], dns: StubDNS,
                         db_url: str) -> None:
    f = Facturd(tmp_path, db_url, extra=(
        f'[auth]\nnameservers = ["{dns.address}"]\ndns_timeout_seconds = 0.5\n'
        f'authserv_ids = ["{OUR_ID}"]\nreverify_seconds = 3600\n'))
    try:
        run_matrix(f, keys)
    finally:
        f.stop()


def run_matrix(f: Facturd, keys: dict[str, Key]) -> None:
    vendor, evil = keys["vendor"], keys["evil"]
    # Folder A: manual mode, auto-accept of the approved address billing@vendor.test.
    f.add_folder(VAT, "Acme SAS")
    f.cli("folder", "set", VAT, "auto_accept_approved_senders=true")
    f.cli("sender", "approve", VAT, "billing@vendor.test")
    # Folder B: everything but trusted suppliers waits; Dupont (the seller) is trusted for
    # mail authenticated by vendor.test.
    f.add_folder(VAT2, "Beta SARL")
    f.cli("folder", "set", VAT2, "mode=except_trusted")
    f.cli("partner", "add", VAT2, "--name", "Dupont", "--partner-vat", "FR23334175221",
          "--domain", "vendor.test", "--trusted")
    f.start()
    to_a, to_b = f"{VAT}@{DOMAIN}", f"{VAT2}@{DOMAIN}"

    genuine = sign(invoice("G-1"), vendor, "vendor.test")
    send(f, genuine, to_a)
    settled(f, 1)
    assert state_of(f, "G-1", VAT)["state"] == "archived", "genuine approved sender"
    send(f, sign(invoice("T-1"), vendor, "vendor.test"), to_b)
    settled(f, 2)
    assert state_of(f, "T-1", VAT2)["state"] == "archived", "trusted supplier"

    ours = (f"Received: from mail.vendor.test by {OUR_ID}; {formatdate()}\r\n"
            f"Authentication-Results: {OUR_ID}; dkim=none\r\n").encode()
    signed_l = sign(invoice("L-1"), vendor, "vendor.test", length=True)
    attacks: dict[str, tuple[bytes, str]] = {
        "plain From spoof": (invoice("S-1"), to_a),
        "display-name spoof": (sign(invoice(
            "S-2", sender='"billing@vendor.test" <attacker@evil.test>'), evil, "evil.test"),
            to_a),
        "two From headers": (sign(invoice("S-3", sender="attacker@evil.test",
                                          extra_from="billing@vendor.test"), evil, "evil.test"),
                             to_a),
        "unaligned valid DKIM": (sign(invoice("S-4"), evil, "evil.test"), to_a),
        "l= append": (signed_l.replace(b"\r\n\r\nInvoice L-1 attached.",
                                       b"\r\n\r\nInvoice L-1 attached. PAY TO NEW IBAN."), to_a),
        "DNS down": (bytes(dkim.sign(invoice("S-6"), b"slow", b"vendor.test", vendor.pem))
                     + invoice("S-6"), to_a),
        "forged Authentication-Results": (
            ours + f"Authentication-Results: {OUR_ID}; dkim=pass header.d=vendor.test\r\n"
            .encode() + invoice("S-7"), to_a),
        "replay of a genuine old invoice": (
            f"Received: from relay.evil.test; {formatdate()}\r\n".encode() + genuine, to_a),
        "bank details changed by an approved sender": (
            sign(invoice("S-9", iban="DE89370400440532013000"), vendor, "vendor.test"), to_a),
        "trusted supplier spoofed": (invoice("T-2"), to_b),
    }
    for raw, rcpt in attacks.values():
        send(f, raw, rcpt)
    settled(f, 2 + len(attacks))
    docs = {(d["folder"], d["number"], d["id"]): d for vat in (VAT, VAT2) for d in json.loads(
        f.cli("documents", "list", "--folder", vat, "--json").stdout)}
    accepted = []
    report = []
    for name, (raw, rcpt) in attacks.items():
        number = raw.split(b"Subject: Invoice ", 1)[1].split(b"\r\n", 1)[0].decode()
        folder = VAT if rcpt == to_a else VAT2
        found = [d for (fv, n, _), d in docs.items() if fv == folder and n == number]
        # the replay re-sends G-1: its second document is the one under test
        doc = max(found, key=lambda d: d["id"])
        report.append(f"{name:<45} {doc['state']:<17} {'; '.join(doc['reasons'])[:90]}")
        if doc["state"] in ("archived", "accepted"):
            accepted.append(name)
    SUMMARY.append(f"spoof_auto_accepted={len(accepted)}/{len(attacks)}")
    print("\n".join(report))
    assert accepted == [], f"auto-accepted: {accepted}\n" + "\n".join(report)
    by_name = dict(zip(attacks, report, strict=True))
    assert "auth-pending" in by_name["DNS down"]
    assert "iban-changed" in by_name["bank details changed by an approved sender"]
    assert "duplicate" in by_name["replay of a genuine old invoice"].lower()
