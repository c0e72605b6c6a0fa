"""Digests (daemon/digest.py), the scheduler (daemon/scheduler.py) and ``facturd digest``.

A real Store in tmp_path with a controllable clock: documents are created "at" chosen times,
digests are sent "at" chosen times, and the enqueued raw mail is parsed back. Buckets and the
schedule are pure and tested directly, across a daylight-saving change.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from daemon import cli_digest, mailer, scheduler
from daemon.digest import (
    DigestSettings,
    Invoice,
    buckets,
    digest_due,
    last_digest_at,
    scheduled_slot,
    send_digests,
)
from daemon.sharing import ShareSettings
from storage import models, records
from storage.approvals import Approvals
from storage.outbox import OutboxStore
from storage.policy import Policy
from storage.store import Store
from tests.smtpsink import SmtpSink, send_one_through

VAT = "FR40303265045"
BOSS = "boss@acme.test"
FROM = "facturd <facturd@invoices.test>"
PUBLIC = "https://factures.acme.test"
LINK = re.compile(r"https://factures\.acme\.test/a/([A-Za-z0-9_-]+)")
SETTINGS = DigestSettings(public_url=PUBLIC + "/", from_address=FROM,
                          token_ttl=timedelta(days=8), template_dirs=mailer.template_dirs())
EUR, USD = "EUR", "USD"


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 9, 10, 0))


@pytest.fixture
def store(tmp_path: Path, any_db: str, clock: Clock) -> Iterator[Store]:
    """A real Store on SQLite and on PostgreSQL (skipped when no server answers)."""
    s = Store.open(any_db, "files", tmp_path / "blobs", clock=clock)
    yield s
    s.close()


def folder(store: Store, lang: str = "fr", **settings: Any) -> int:
    fid = store.add_folder(VAT, "Acme SAS", notify_email=BOSS, language=lang).id
    Policy(store).set_folder(fid, {"notify_frequency": "daily", "digest_time": "08:00",
                                   "timezone": "Europe/Paris", **settings})
    return fid


def add_doc(store: Store, folder_id: int, state: str = "archived",
            direction: str = "purchase", original: bytes = b"%PDF-1.4 original",
            **fields: Any) -> int:
    sha = hashlib.sha256(original).hexdigest()
    store.blobs.put_many([(sha, original)])
    doc = records.Document(id=0, folder_id=folder_id, delivery_id=None, part=0,
                           direction=direction, state=state, source="facturx",
                           original_sha256=sha, enriched_sha256="", filename="f.pdf",
                           media_type="application/pdf", **fields)
    with store.write_transaction():
        return store.documents.upsert(doc)[0]


def mark_paid(document_id: int) -> None:
    models.Document.update(payment_status="paid").where(
        models.Document.id == document_id).execute()


def digests(store: Store) -> list[EmailMessage]:
    out = OutboxStore(store)
    msgs = []
    for item in out.items(kind="digest"):
        msg = BytesParser(policy=policy.default).parsebytes(out.raw(item))
        assert isinstance(msg, EmailMessage)
        msgs.append(msg)
    return msgs


def body(msg: EmailMessage, kind: str = "plain") -> str:
    part = msg.get_body((kind,))
    assert part is not None
    text = str(part.get_content())
    return text.replace("\u202f", " ").replace("\xa0", " ")


# ---- buckets ---------------------------------------------------------------------------

def inv(n: int, due: str | None, gross: str | None = "100", **over: Any) -> Invoice:
    values: dict[str, Any] = dict(id=n, direction="purchase", state="archived", due_date=due,
                                  currency=EUR, total_gross=Decimal(gross) if gross else None)
    values.update(over)
    return Invoice(**values)


def test_buckets_boundaries_amounts_and_exclusions() -> None:
    today = date(2026, 3, 10)
    docs = [
        inv(1, "2026-03-09", "10"),  # yesterday: overdue
        inv(2, "2026-03-10", "20"),  # today: not overdue, within 30
        inv(3, "2026-04-09", "40"),  # today + 30: within 30
        inv(4, "2026-04-10", "80"),  # today + 31: after 30
        inv(5, None, "160"),  # no date at all: after 30
        inv(6, None, "320", issue_date="2026-02-01"),  # issue date stands in: overdue
        inv(7, "2026-03-01", "999", amount_due=Decimal("640")),  # amount_due wins
        inv(8, "2026-03-01", "5000", payment_status="paid"),  # paid: excluded
        inv(9, "2026-03-01", "5000", state="paid"),  # paid state: excluded
        inv(10, "2026-03-01", "5000", state="pending_approval"),  # not accepted yet
        inv(11, "2026-03-01", "5000", state="rejected"),
        inv(12, "2026-03-01", None),  # no amount: counted, flagged
        inv(13, "2026-03-01", "1000", currency=USD),  # never added to EUR
        inv(14, "2026-03-01", "7", direction="sales", state="sent"),
        inv(15, "2026-05-01", "9", direction="sales", state="archived"),
        inv(16, "2026-03-01", "5000", direction="sales", state="draft"),
        inv(17, "2026-03-20", "1", state="accepted", currency="eur "),
    ]
    b = buckets(docs, today)
    p = b.purchase[EUR]
    assert (p.overdue_amount, p.overdue_count) == (Decimal("970"), 4)  # 10 + 320 + 640 + 0
    assert p.due_within_30 == Decimal("61")  # 20 + 40 + 1
    assert p.due_after_30 == Decimal("240")  # 80 + 160
    assert p.outstanding == Decimal("1271") and p.without_amount == 1 and p.count == 9
    assert b.purchase[USD].overdue_amount == Decimal("1000")
    assert b.purchase[USD].outstanding == Decimal("1000")
    s = b.sales[EUR]
    assert (s.outstanding, s.overdue_amount, s.overdue_count, s.due_after_30) == (
        Decimal("16"), Decimal("7"), 1, Decimal("9"))
    assert b.overdue_count == 4 + 1 + 1
    assert b.currencies() == [EUR, USD]


def test_main_currency() -> None:
    today = date(2026, 3, 10)
    assert buckets([], today).main_currency() == EUR
    tie = [inv(1, None, currency=USD), inv(2, None)]
    assert buckets(tie, today).currencies() == [EUR, USD]
    usd = [inv(1, None, currency=USD), inv(2, None, currency=USD), inv(3, None, currency="CHF")]
    assert buckets(usd, today).currencies() == [USD, "CHF"]


# ---- schedule --------------------------------------------------------------------------

DAILY = {"notify_frequency": "daily", "digest_time": "08:00", "timezone": "Europe/Paris"}


def test_daily_at_8_paris_across_the_spring_dst_change() -> None:
    # Saturday 28 March 2026, 08:00 CET = 07:00 UTC; Sunday 29, 08:00 CEST = 06:00 UTC.
    sat = datetime(2026, 3, 28, 7, 0)
    assert not digest_due(DAILY, datetime(2026, 3, 28, 6, 59), datetime(2026, 3, 27, 7, 0))
    assert digest_due(DAILY, sat, datetime(2026, 3, 27, 7, 0))
    assert not digest_due(DAILY, datetime(2026, 3, 28, 22, 0), sat)  # once per day
    assert not digest_due(DAILY, datetime(2026, 3, 29, 5, 59), sat)
    assert digest_due(DAILY, datetime(2026, 3, 29, 6, 0), sat)
    assert digest_due(DAILY, datetime(2026, 3, 29, 6, 0, tzinfo=UTC), sat)  # aware is fine
    assert digest_due(DAILY, datetime(2026, 3, 20, 6, 0), None)  # first digest: at once
    # catch-up: down for two days, one digest when it comes back, then the normal rhythm
    assert digest_due(DAILY, datetime(2026, 3, 31, 15, 0), sat)
    assert not digest_due(DAILY, datetime(2026, 4, 1, 5, 59), datetime(2026, 3, 31, 15, 0))


def test_daily_across_the_autumn_dst_change_and_a_skipped_time() -> None:
    # Saturday 24 October 2026, 08:00 CEST = 06:00 UTC; Sunday 25, 08:00 CET = 07:00 UTC.
    sat = datetime(2026, 10, 24, 6, 0)
    assert not digest_due(DAILY, datetime(2026, 10, 25, 6, 30), sat)  # 07:30 CET
    assert digest_due(DAILY, datetime(2026, 10, 25, 7, 0), sat)
    # 02:30 does not exist on 29 March in Paris: that day's slot is one hour later
    assert scheduled_slot("daily", "02:30", "Europe/Paris",
                          datetime(2026, 3, 29, 12, 0)) == datetime(2026, 3, 29, 1, 30)
    with pytest.raises(ValueError):
        scheduled_slot("daily", "8h", "Europe/Paris", sat)


def test_weekly_on_mondays() -> None:
    weekly = {**DAILY, "notify_frequency": "weekly"}
    last = datetime(2026, 3, 2, 7, 0)  # Monday 2 March, 08:00 CET
    for day in range(3, 9):  # Tuesday .. Sunday
        assert not digest_due(weekly, datetime(2026, 3, day, 12, 0), last)
    assert not digest_due(weekly, datetime(2026, 3, 9, 6, 59), last)
    assert digest_due(weekly, datetime(2026, 3, 9, 7, 0), last)
    assert not digest_due(weekly, datetime(2026, 3, 10, 7, 0), datetime(2026, 3, 9, 7, 0))


def test_never_and_immediate() -> None:
    now = datetime(2026, 3, 9, 7, 0)
    never = {**DAILY, "notify_frequency": "never"}
    assert not digest_due(never, now, None)
    assert not digest_due(never, now, now - timedelta(days=365))
    immediate = {**DAILY, "notify_frequency": "immediate"}
    assert digest_due(immediate, now, None)
    assert not digest_due(immediate, now, now - timedelta(minutes=4, seconds=59))
    assert digest_due(immediate, now, now - timedelta(minutes=5))


# ---- content ---------------------------------------------------------------------------

def scenario(store: Store, lang: str) -> dict[str, int]:
    """Created on Monday 9 March 2026 10:00 UTC; digest due Tuesday 10 March 07:00 UTC."""
    fid = folder(store, lang)
    ids = {
        "fid": fid,
        "p1": add_doc(store, fid, "pending_approval", seller_name="Fournitures Dupont",
                      number="F-1", total_gross=Decimal("1200"), currency=EUR,
                      due_date="2026-04-01"),
        "p2": add_doc(store, fid, "pending_approval", seller_name="Bureau Vallée",
                      number="F-2", total_gross=Decimal("80"), currency=EUR),
        "a1": add_doc(store, fid, seller_name="Orange", number="O-7", currency=EUR,
                      total_gross=Decimal("300"), amount_due=Decimal("250"),
                      due_date="2026-03-01"),
        "a2": add_doc(store, fid, seller_name="EDF", number="E-9", currency=EUR,
                      total_gross=Decimal("100"), due_date="2026-03-20"),
        "a3": add_doc(store, fid, seller_name="Paid Ltd", total_gross=Decimal("999"),
                      currency=EUR, due_date="2026-03-01"),
        "d1": add_doc(store, fid, "duplicate", seller_name="Orange", number="O-7"),
        "s1": add_doc(store, fid, "sent", "sales", buyer_name="Client SA",
                      total_gross=Decimal("5000"), currency=EUR, due_date="2026-05-30"),
        "u1": add_doc(store, fid, seller_name="Cloud Inc", number="INV-1", currency=USD,
                      total_gross=Decimal("1000"), due_date="2026-03-05"),
    }
    mark_paid(ids["a3"])
    return ids


def links(store: Store, text: str) -> dict[tuple[str, int], str]:
    """(action, document id) -> token, every token checked with Approvals.look."""
    found = {}
    for token in LINK.findall(text):
        grant = Approvals(store).look(token)
        assert grant.approver == BOSS
        found[(grant.action, grant.document_id)] = token
    return found


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_digest_content(store: Store, clock: Clock, lang: str) -> None:
    ids = scenario(store, lang)
    now = datetime(2026, 3, 10, 7, 0)
    clock.now = now
    assert send_digests(store, SETTINGS, now) == [(VAT, "sent")]
    [msg] = digests(store)
    assert msg["To"] == BOSS and msg["Auto-Submitted"] == "auto-generated"
    text, html = body(msg), body(msg, "html")
    found = links(store, text)
    assert set(found) == {("approve", ids["p1"]), ("reject", ids["p1"]),
                          ("approve", ids["p2"]), ("reject", ids["p2"]),
                          ("paid", ids["a1"]), ("paid", ids["a2"]), ("paid", ids["u1"])}
    for token in found.values():
        assert f"{PUBLIC}/a/{token}" in html  # same links in the HTML part
    if lang == "fr":
        assert "2 factures à approuver, 7 reçues" in str(msg["Subject"])
        assert "À APPROUVER (2)" in text and "Fournitures Dupont, n° F-1 : 1 200,00 €" in text
        assert f"Approuver : {PUBLIC}/a/{found['approve', ids['p1']]}" in text
        assert f"Refuser :   {PUBLIC}/a/{found['reject', ids['p1']]}" in text
        for line in ("Reçues    : 7", "Archivées : 4", "Bloquées  : 1",
                     "Total restant dû            : 350,00 €",
                     "En retard                   : 250,00 € (1 facture)",
                     "Échéance sous 30 jours      : 100,00 €",
                     "Échéance à plus de 30 jours : 5 000,00 €",
                     "AUTRES DEVISES", "USD : à payer 1 000,00 $US",
                     "MARQUER COMME PAYÉES (3)", "Orange, n° O-7 : 250,00 €"):
            assert line in text, line
    else:
        assert "2 invoices to approve, 7 received" in str(msg["Subject"])
        assert "TO APPROVE (2)" in text and "Fournitures Dupont, no. F-1: €1,200.00" in text
        assert f"Approve: {PUBLIC}/a/{found['approve', ids['p1']]}" in text
        for line in ("Received : 7", "Archived : 4", "Blocked  : 1",
                     "Total outstanding    : €350.00", "Overdue              : €250.00 (1 ",
                     "Due within 30 days   : €100.00", "Due in over 30 days  : €5,000.00",
                     "OTHER CURRENCIES", "USD: to pay $1,000.00", "MARK AS PAID (3)"):
            assert line in text, line
    # most urgent first: Orange (1 March), Cloud Inc (5 March), EDF (20 March)
    assert text.index("Orange, n") < text.index("Cloud Inc") < text.index("EDF")
    assert "Paid Ltd" not in text
    assert last_digest_at(ids["fid"]) == now
    assert [e.kind for e in store.events(folder_id=ids["fid"])][-1] == "digest-queued"
    # the same slot again: not due; the next morning: the overdue invoice is worth a mail
    assert send_digests(store, SETTINGS, now + timedelta(hours=3)) == [(VAT, "not due")]
    assert send_digests(store, SETTINGS, now + timedelta(days=1)) == [(VAT, "sent")]
    second = digests(store)[1]
    assert ("Reçues    : 0" if lang == "fr" else "Received : 0") in body(second)


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_digest_reply_address_for_marking_paid(store: Store, clock: Clock, lang: str) -> None:
    """With the intake domain known, the digest's Reply-To is a folder token (single use,
    expiring with the links) and the text says how to answer; every token of the digest
    records its Message-ID, so what they cause threads under it."""
    ids = scenario(store, lang)
    now = datetime(2026, 3, 10, 7, 0)
    clock.now = now
    settings = DigestSettings(PUBLIC, FROM, timedelta(days=8), mailer.template_dirs(),
                              domain="invoices.test")
    assert send_digests(store, settings, now) == [(VAT, "sent")]
    [msg] = digests(store)
    local, _, domain = str(msg["Reply-To"]).partition("@")
    assert domain == "invoices.test" and local.startswith(f"{VAT}+r")
    grant = Approvals(store).look(local.partition("+")[2][1:])
    assert (grant.action, grant.document_id, grant.folder_id) == ("reply", None, ids["fid"])
    assert grant.approver == BOSS and grant.expires_at == now + timedelta(days=8)
    assert grant.request_message_id == msg["Message-ID"]
    for token in links(store, body(msg)).values():
        assert Approvals(store).look(token).request_message_id == msg["Message-ID"]
    text, html = body(msg), body(msg, "html")
    if lang == "fr":
        assert "MARQUER COMME PAYÉES PAR RÉPONSE" in text
        assert "« payé O-7 » ou « payé O-7 04/03/2026 »" in text  # the most urgent one
        assert "Marquer comme payées par réponse" in html
    else:
        assert "MARK AS PAID BY REPLY" in text and '"paid O-7"' in text
        assert "Mark as paid by reply" in html
    assert local.partition("+")[2] not in text  # the address is in the header only


def test_nothing_to_say_sends_nothing_but_advances(store: Store, clock: Clock) -> None:
    fid = folder(store)
    add_doc(store, fid, seller_name="EDF", total_gross=Decimal("10"), currency=EUR,
            due_date="2026-05-01")
    first = datetime(2026, 3, 10, 7, 0)
    assert send_digests(store, SETTINGS, first) == [(VAT, "sent")]  # it arrived: news
    nxt = first + timedelta(days=1)
    assert send_digests(store, SETTINGS, nxt) == [(VAT, "nothing to say")]
    assert len(digests(store)) == 1 and last_digest_at(fid) == nxt
    # --now ignores the schedule, not the "nothing to say" rule
    assert send_digests(store, SETTINGS, nxt, force=True) == [(VAT, "nothing to say")]
    # immediate: a standing overdue invoice is not news
    Policy(store).set_folder(fid, {"notify_frequency": "immediate"})
    clock.now = nxt + timedelta(minutes=1)
    add_doc(store, fid, seller_name="Late", total_gross=Decimal("5"), currency=EUR,
            due_date="2026-01-01")
    assert send_digests(store, SETTINGS, nxt + timedelta(minutes=2)) == [(VAT, "not due")]
    assert send_digests(store, SETTINGS, nxt + timedelta(minutes=5)) == [(VAT, "sent")]
    assert send_digests(store, SETTINGS, nxt + timedelta(minutes=10)) == [
        (VAT, "nothing to say")]
    assert len(digests(store)) == 2


def test_no_address_never_and_bad_settings(store: Store) -> None:
    fid = folder(store, notify_frequency="never")
    add_doc(store, fid, "pending_approval", seller_name="X", total_gross=Decimal("1"))
    now = datetime(2026, 3, 10, 7, 0)
    assert send_digests(store, SETTINGS, now) == [(VAT, "not due")]
    Policy(store).set_folder(fid, {"notify_frequency": "daily", "timezone": "Mars/Olympus"})
    [(_, outcome)] = send_digests(store, SETTINGS, now)
    assert outcome.startswith("error:") and "Mars/Olympus" in outcome
    Policy(store).set_folder(fid, {"timezone": "Europe/Paris", "notify_email": ""})
    assert send_digests(store, SETTINGS, now) == [(VAT, "no notification address")]
    assert digests(store) == [] and last_digest_at(fid) is None


def test_links_are_bounded(store: Store) -> None:
    fid = folder(store)
    for n in range(53):
        add_doc(store, fid, "pending_approval", seller_name=f"S{n}", total_gross=Decimal("1"))
    assert send_digests(store, SETTINGS, datetime(2026, 3, 10, 7, 0), force=True) == [
        (VAT, "sent")]
    [msg] = digests(store)
    text = body(msg)
    assert len(links(store, text)) == 100  # 50 approve + 50 reject
    assert "À APPROUVER (53)" in text and "… et 3 de plus" in text
    assert "53 factures à approuver" in str(msg["Subject"])
    assert "S0," in text and "S49," in text and "S50," not in text  # oldest first


def test_concurrent_digests_send_one(store: Store) -> None:
    fid = folder(store)
    add_doc(store, fid, "pending_approval", seller_name="X", total_gross=Decimal("1"))
    now = datetime(2026, 3, 10, 7, 0)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def go() -> None:
        barrier.wait()
        outcomes.extend(o for _, o in send_digests(store, SETTINGS, now))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # SQLite: the losers wait for the write lock, then see the new last_digest_at;
    # PostgreSQL: they may fail the compare-and-set instead (and roll back)
    assert outcomes.count("sent") == 1 and set(outcomes) <= {"sent", "not due", "raced"}
    assert len(digests(store)) == 1
    assert models.Approval.select().count() == 2  # no tokens from the losers
    del fid


def test_digest_reaches_the_relay(tmp_path: Path, store: Store) -> None:
    """End to end: send_digests enqueues, the real send role delivers to an SMTP sink."""
    folder(store)
    add_doc(store, folder_id=1, state="pending_approval", seller_name="Dupont",
            total_gross=Decimal("12"), currency=EUR)
    assert send_digests(store, SETTINGS, datetime(2026, 3, 10, 7, 0)) == [(VAT, "sent")]
    with SmtpSink().start() as sink:
        assert send_one_through(sink, store, FROM) == "sent"
    [got] = sink.messages
    assert got.rcpt_tos == (BOSS,) and got.mail_from == "facturd@invoices.test"
    assert len(links(store, body(got.message))) == 2


# ---- scheduler and CLI -------------------------------------------------------------------

SHARE = ShareSettings(from_address=FROM, template_dirs=mailer.template_dirs())


def test_scheduler_one_tick_does_both(store: Store) -> None:
    fid = folder(store, accountant_email="compta@cabinet.test")
    add_doc(store, fid, "pending_approval", seller_name="X", total_gross=Decimal("1"))
    add_doc(store, fid, seller_name="Y", total_gross=Decimal("2"))
    when = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)

    async def main() -> None:
        stop = asyncio.Event()

        def clock() -> datetime:
            stop.set()  # exactly one tick
            return when

        await scheduler.run_scheduler(store, SETTINGS, SHARE, stop, clock=clock, interval=5)

    asyncio.run(main())
    kinds = [i.kind for i in OutboxStore(store).items()]
    assert sorted(kinds) == ["accountant_share", "digest"]


def test_scheduler_retries_after_an_error_off_the_loop(store: Store,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def main() -> None:
        stop = asyncio.Event()

        def fake_digests(*args: Any) -> list[tuple[str, str]]:
            calls.append(threading.current_thread().name)
            if len(calls) == 1:
                raise RuntimeError("boom")
            stop.set()
            return [(VAT, "error: bad timezone")]

        monkeypatch.setattr(scheduler, "send_digests", fake_digests)
        monkeypatch.setattr(scheduler, "share_due", lambda *a: [])
        await asyncio.wait_for(scheduler.run_scheduler(
            store, SETTINGS, SHARE, stop, interval=0.01), 10)

    asyncio.run(main())
    assert len(calls) == 2
    assert all(name.startswith("scheduler") for name in calls)


def test_cli_digest(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    fid = folder(store, notify_frequency="never")
    add_doc(store, fid, "pending_approval", seller_name="X", total_gross=Decimal("1"))
    parser = argparse.ArgumentParser()
    cli_digest.add_parsers(parser.add_subparsers(dest="command"))
    now = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)
    args = parser.parse_args(["digest", "--folder", VAT])
    assert cli_digest.run(args, store, fid, SETTINGS, SHARE, now=now) == 0
    assert "not due" in capsys.readouterr().out
    args = parser.parse_args(["digest", "--folder", VAT, "--now"])
    assert cli_digest.run(args, store, fid, SETTINGS, SHARE, now=now) == 0
    assert f"{VAT:<16} sent" in capsys.readouterr().out
    args = parser.parse_args(["share"])
    assert cli_digest.run(args, store, None, SETTINGS, SHARE, now=now) == 0
    assert "nothing to share" in capsys.readouterr().out


def test_settings_are_checked() -> None:
    for url in ("ftp://x.test", "https://", "https://x.test/?a=1"):
        with pytest.raises(ValueError):
            DigestSettings(url, FROM, timedelta(days=1), ())
    with pytest.raises(ValueError):
        DigestSettings(PUBLIC, FROM, timedelta(0), ())
    with pytest.raises(ValueError):
        DigestSettings(PUBLIC, "not an address", timedelta(days=1), ())
    with pytest.raises(ValueError):
        ShareSettings("facturd <bad>", ())


def test_cli_settings_from_the_configuration() -> None:
    from daemon.config import Config

    cfg = Config(domain="invoices.test")
    ds = cli_digest.digest_settings(cfg, PUBLIC)
    assert ds.from_address == "facturd@invoices.test" and ds.token_ttl == timedelta(days=8)
    assert ds.domain == "invoices.test"  # the digest's reply address is at the intake
    assert ds.template_dirs == mailer.template_dirs()
    assert cli_digest.share_settings(cfg).from_address == "facturd@invoices.test"
    with pytest.raises(ValueError):
        cli_digest.digest_settings(cfg, "")
