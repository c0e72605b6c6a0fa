"""Accountant sharing (daemon/sharing.py): one mail with the files and a CSV, never twice.

A real Store in tmp_path with a controllable clock; the enqueued mail is parsed back (its
attachments and the CSV), concurrency is real (threads, each with its own SQLite
connection, racing on the same documents), and one test delivers through the send role.
"""

from __future__ import annotations

import csv
import hashlib
import io
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from daemon import mailer, sharing
from daemon.sharing import ShareSettings, share_documents, share_due, summary_csv
from storage import records
from storage.outbox import OutboxStore
from storage.policy import Policy
from storage.store import Store
from tests.smtpsink import SmtpSink, send_one_through
from tests.test_digest import Clock

VAT = "FR40303265045"
ACCOUNTANT = "compta@cabinet.test"
FROM = "facturd <facturd@invoices.test>"
SETTINGS = ShareSettings(from_address=FROM, template_dirs=mailer.template_dirs())
T0 = datetime(2026, 3, 10, 6, 0)  # 07:00 in Paris


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def store(tmp_path: Path, any_db: str, clock: Clock) -> Iterator[Store]:
    """A real Store on SQLite and on PostgreSQL (skipped when no server answers)."""
    s = Store.open(any_db, "files", tmp_path / "blobs", clock=clock)
    yield s
    s.close()


def folder(store: Store, lang: str = "fr", frequency: str = "immediate") -> int:
    fid = store.add_folder(VAT, "Acme SAS", accountant_email=ACCOUNTANT, language=lang).id
    Policy(store).set_folder(fid, {"accountant_frequency": frequency, "digest_time": "08:00",
                                   "timezone": "Europe/Paris"})
    return fid


def put(store: Store, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    store.blobs.put_many([(sha, data)])
    return sha


def add_doc(store: Store, folder_id: int, state: str = "archived", *,
            original: bytes | None = None, enriched: bytes | None = None,
            direction: str = "purchase", filename: str = "facture.pdf",
            media_type: str = "application/pdf", **fields: Any) -> int:
    original = original if original is not None else f"%PDF-1.4 {fields}".encode()
    doc = records.Document(
        id=0, folder_id=folder_id, delivery_id=None, part=0, direction=direction, state=state,
        source="facturx", original_sha256=put(store, original),
        enriched_sha256=put(store, enriched) if enriched is not None else "",
        filename=filename, media_type=media_type, **fields)
    with store.write_transaction():
        return store.documents.upsert(doc)[0]


def mails(store: Store) -> list[EmailMessage]:
    out = OutboxStore(store)
    found = []
    for item in out.items(kind="accountant_share"):
        assert item.recipients == (ACCOUNTANT,)
        msg = BytesParser(policy=policy.default).parsebytes(out.raw(item))
        assert isinstance(msg, EmailMessage)
        found.append(msg)
    return found


def attachments(msg: EmailMessage) -> dict[str, bytes]:
    out = {}
    for part in msg.iter_attachments():
        name = part.get_filename()
        data = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(data, bytes)
        out[name] = data
    return out


def csv_rows(msg: EmailMessage, delimiter: str = ";") -> list[list[str]]:
    [data] = [v for k, v in attachments(msg).items() if k.endswith(".csv")]
    assert data.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM, for Excel
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""),
                           delimiter=delimiter))


def shared_ids(store: Store) -> list[int]:
    return sorted(e.document_id for e in store.events() if e.kind == "shared-with-accountant"
                  and e.document_id is not None)


# ---- tests -----------------------------------------------------------------------------

def test_one_mail_with_files_and_csv_then_nothing(store: Store, clock: Clock) -> None:
    fid = folder(store)
    enriched = add_doc(store, fid, original=b"%PDF original 1", enriched=b"%PDF factur-x 1",
                       number="F-1", issue_date="2026-03-01", due_date="2026-03-31",
                       seller_name="Société Générale; \"Paris\"", seller_vat="FR123",
                       total_net=Decimal("1000"), total_tax=Decimal("200"),
                       total_gross=Decimal("1200"), currency="EUR")
    plain = add_doc(store, fid, "paid", original=b"<Invoice/>", filename="ubl.xml",
                    media_type="application/xml", number="=HYPERLINK(\"http://x\")",
                    seller_name="+cmd|' /C calc'!A0", total_gross=Decimal("12.5"))
    sale = add_doc(store, fid, direction="sales", buyer_name="Client SA", number="V-9",
                   total_gross=Decimal("-30.00"), currency="EUR")
    add_doc(store, fid, "pending_approval", number="P-1")
    add_doc(store, fid, "rejected", number="R-1")
    add_doc(store, fid, "duplicate", number="D-1")

    [shared] = share_due(store, SETTINGS, T0)
    assert (shared.vat, shared.documents, shared.error) == (VAT, 3, "")
    [msg] = mails(store)
    assert msg["To"] == ACCOUNTANT and "3 factures pour la comptabilité" in str(msg["Subject"])
    files = attachments(msg)
    assert files[f"{enriched}-facture.pdf"] == b"%PDF factur-x 1"  # the enriched copy
    assert files[f"{plain}-ubl.xml"] == b"<Invoice/>"  # no enriched copy: the original
    assert f"{sale}-facture.pdf" in files and len(files) == 4
    header, *rows = csv_rows(msg)
    assert header[:3] == ["id", "sens", "numéro"] and header[-1] == "sha256 original"
    by_id = {int(r[0]): r for r in rows}
    assert sorted(by_id) == [enriched, plain, sale]
    first = by_id[enriched]
    assert first[2:8] == ["F-1", "2026-03-01", "2026-03-31", "Société Générale; \"Paris\"",
                          "FR123", ""]
    assert first[8:12] == ["1000,00", "200,00", "1200,00", "EUR"]
    assert first[13] == f"{enriched}-facture.pdf"
    assert first[14] == hashlib.sha256(b"%PDF original 1").hexdigest()
    assert by_id[plain][2] == "'=HYPERLINK(\"http://x\")"  # formula neutralised
    assert by_id[plain][5] == "'+cmd|' /C calc'!A0"
    assert by_id[plain][10] == "12,50" and by_id[plain][12] == "paid"
    assert by_id[sale][1] == "sales" and by_id[sale][7] == "Client SA"
    assert by_id[sale][10] == "-30,00"  # our own number: not treated as a formula
    assert "Client SA" in str(msg.get_body(("plain",)))  # the counterparty of a sale
    assert shared_ids(store) == sorted([enriched, plain, sale])

    clock.now = T0 + timedelta(minutes=1)
    assert share_due(store, SETTINGS, clock.now) == []
    assert share_documents(store, SETTINGS, fid, [enriched, plain, sale], clock.now) is None
    assert len(mails(store)) == 1


def test_english_csv_dialect() -> None:
    doc = records.Document(id=7, folder_id=1, delivery_id=None, part=0, direction="purchase",
                           state="archived", source="ocr", original_sha256="ab",
                           enriched_sha256="", filename="x.pdf", media_type="application/pdf",
                           seller_name="Dupont, fils", total_gross=Decimal("1234.5"),
                           total_net=Decimal("0.125"))
    data = summary_csv([(doc, "7-x.pdf")], "en")
    header, row = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert header[:4] == ["id", "direction", "number", "issue date"]
    assert row[5] == "Dupont, fils" and row[10] == "1234.50" and row[8] == "0.125"
    assert data.endswith(b"\r\n")


def test_daily_batching_waits_for_the_time(store: Store, clock: Clock) -> None:
    fid = folder(store, frequency="daily")  # 08:00 Paris = 07:00 UTC in March
    first = add_doc(store, fid, number="A")
    assert share_due(store, SETTINGS, T0 + timedelta(minutes=30)) == []  # 07:30 in Paris
    [shared] = share_due(store, SETTINGS, T0 + timedelta(hours=1))  # 08:00 in Paris
    assert shared.documents == 1 and shared_ids(store) == [first]
    clock.now = T0 + timedelta(hours=3)
    second = add_doc(store, fid, number="B")
    assert share_due(store, SETTINGS, T0 + timedelta(hours=4)) == []  # one mail a day
    assert share_due(store, SETTINGS, T0 + timedelta(hours=24, minutes=59)) == []
    [shared] = share_due(store, SETTINGS, T0 + timedelta(hours=25))  # next day 08:00
    assert shared.documents == 1 and shared_ids(store) == [first, second]
    # force (facturd share --now) ignores the time of day
    third = add_doc(store, fid, number="C")
    assert share_due(store, SETTINGS, T0 + timedelta(hours=26)) == []
    [shared] = share_due(store, SETTINGS, T0 + timedelta(hours=26), force=True)
    assert shared_ids(store) == [first, second, third]


def test_concurrent_shares_send_one_mail(store: Store, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """GIVEN two callers that both composed a mail for the same documents (a barrier holds
    each one between composing and its transaction) WHEN both commit THEN one mail."""
    fid = folder(store)
    ids = [add_doc(store, fid, number=f"N{n}") for n in range(3)]
    barrier = threading.Barrier(2, timeout=10)
    real = sharing._compose

    def compose_then_wait(*args: Any) -> tuple[bytes, str]:
        out = real(*args)
        if threading.current_thread().name.startswith("racer"):
            barrier.wait()
        return out

    monkeypatch.setattr(sharing, "_compose", compose_then_wait)
    results: list[int | None] = []

    def racer() -> None:
        results.append(share_documents(store, SETTINGS, fid, ids, T0))

    threads = [threading.Thread(target=racer, name=f"racer{n}") for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results.count(None) == 1
    assert len(mails(store)) == 1 and shared_ids(store) == ids


def test_documents_taken_meanwhile_are_left_out(store: Store,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """WHEN another call shares one of the documents between composing and the transaction
    THEN the mail is recomposed without it."""
    fid = folder(store)
    a, b = add_doc(store, fid, number="A"), add_doc(store, fid, number="B")
    real = sharing._compose
    calls: list[int] = []

    def compose(*args: Any) -> tuple[bytes, str]:
        calls.append(len(args[4]))
        out = real(*args)
        if len(calls) == 1:
            assert share_documents(store, SETTINGS, fid, [b], T0) is not None
        return out

    monkeypatch.setattr(sharing, "_compose", compose)
    assert share_documents(store, SETTINGS, fid, [a, b], T0) is not None
    assert calls == [2, 1, 1]  # first attempt, the interloper, the recomposed mail
    first, second = mails(store)
    assert [r[2] for r in csv_rows(first)[1:]] == ["B"]
    assert [r[2] for r in csv_rows(second)[1:]] == ["A"]
    assert shared_ids(store) == [a, b]


def test_size_limits_split_into_several_mails(store: Store) -> None:
    fid = folder(store)
    ids = [add_doc(store, fid, number=f"N{n}", original=bytes(100) + bytes([n]))
           for n in range(5)]
    small = ShareSettings(from_address=FROM, template_dirs=mailer.template_dirs(),
                          max_documents=2, max_attachment_bytes=250)
    assert [s.documents for s in share_due(store, small, T0)] == [2, 2, 1]
    assert shared_ids(store) == ids
    huge = add_doc(store, fid, number="big", original=bytes(1000))  # alone, still sent
    assert [s.documents for s in share_due(store, small, T0)] == [1]
    assert shared_ids(store) == [*ids, huge]


def test_missing_file_is_skipped_until_restored(store: Store) -> None:
    fid = folder(store)
    ok = add_doc(store, fid, number="ok")
    lost = add_doc(store, fid, number="lost", original=b"%PDF lost")
    path = store.blobs.path_of(hashlib.sha256(b"%PDF lost").hexdigest())  # type: ignore[attr-defined]
    Path(path).unlink()
    assert [s.documents for s in share_due(store, SETTINGS, T0)] == [1]
    assert share_due(store, SETTINGS, T0) == []
    assert shared_ids(store) == [ok]
    put(store, b"%PDF lost")
    assert [s.documents for s in share_due(store, SETTINGS, T0)] == [1]
    assert shared_ids(store) == [ok, lost]


def test_no_accountant_no_mail(store: Store) -> None:
    fid = store.add_folder(VAT, "Acme SAS").id
    add_doc(store, fid)
    assert share_due(store, SETTINGS, T0) == []
    assert share_documents(store, SETTINGS, fid, None, T0) is None
    assert mails(store) == [] and shared_ids(store) == []


def test_share_reaches_the_relay(store: Store) -> None:
    """End to end: share_due enqueues, the real send role hands it to an SMTP sink."""
    fid = folder(store, lang="en")
    doc = add_doc(store, fid, original=b"%PDF-1.7 real bytes", number="F-9")
    assert [s.documents for s in share_due(store, SETTINGS, T0)] == [1]
    with SmtpSink().start() as sink:
        assert send_one_through(sink, store, FROM) == "sent"
    [got] = sink.messages
    assert got.rcpt_tos == (ACCOUNTANT,)
    files = attachments(got.message)
    assert files[f"{doc}-facture.pdf"] == b"%PDF-1.7 real bytes"
    header, row = csv_rows(got.message, ",")
    assert header[0] == "id" and row[2] == "F-9"
