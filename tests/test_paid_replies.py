"""Mark as paid by replying to a digest (daemon/paid_replies.py through daemon/replies.py).

A real SQLite Store on the test clock; the digest is made by ``send_digests`` and read back
from the outbox, its Reply-To answered with really DKIM-signed replies authenticated by
``daemon.auth.authenticate`` against a stub DNS server on 127.0.0.1 — the same calls the
worker makes for a delivery to ``<VAT>+r<token>@<domain>``.
"""

from __future__ import annotations

import threading
from datetime import date, timedelta
from decimal import Decimal
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import pytest

from daemon import mailer
from daemon.auth import AuthSettings, authenticate
from daemon.digest import DigestSettings, send_digests
from daemon.mailparse import parse_mail
from daemon.paid_replies import PaidLine, parse_day, read_paid
from daemon.replies import handle_reply
from storage import records
from storage.approvals import Approvals
from storage.outbox import OutboxStore
from storage.policy import Policy
from storage.store import Store
from tests.conftest import Clock
from tests.dkimkeys import Key
from tests.test_approval import (
    DOMAIN,
    FROM,
    PUBLIC,
    SETTINGS,
    VAT,
    parse,
    signed,
    text_of,
)

NOTIFY = "compta@company.test"  # receives the digest
BOSS = "boss@company.test"  # an approver of the folder
DIGESTS = DigestSettings(public_url=PUBLIC, from_address=FROM, token_ttl=timedelta(days=14),
                         template_dirs=mailer.template_dirs(), domain=DOMAIN)


def add(store: Store, folder_id: int, number: str, *, state: str = "archived",
        direction: str = "purchase", party: str = "Orange", gross: str = "100") -> int:
    doc = records.Document(
        id=0, folder_id=folder_id, delivery_id=None, part=0, direction=direction, state=state,
        source="facturx", original_sha256="", enriched_sha256="", filename="f.pdf",
        media_type="application/pdf", number=number, currency="EUR",
        total_gross=Decimal(gross), due_date="2026-03-31",
        **({"buyer_name": party} if direction == "sales" else {"seller_name": party}))
    with store.write_transaction():
        return store.documents.upsert(doc)[0]


@pytest.fixture
def folder(store: Store) -> int:
    folder_id = store.add_folder(VAT, "Acme SAS", notify_email=NOTIFY).id
    Policy(store).set_folder(folder_id, {"approvers": [BOSS]})
    return folder_id


def digest(store: Store, clock: Clock) -> EmailMessage:
    """Send the folder's digest now and return the newest one."""
    assert send_digests(store, DIGESTS, clock.now, force=True) == [(VAT, "sent")]
    out = OutboxStore(store)
    return parse(out.raw(out.items(kind="digest")[-1]))


def tag_of(msg: EmailMessage) -> str:
    return str(msg["Reply-To"]).partition("@")[0].partition("+")[2].lower()


def reply(msg: EmailMessage, body: str, *, sender: str = BOSS,
          headers: dict[str, str] | None = None) -> bytes:
    out = EmailMessage()
    out["From"] = sender
    out["To"] = str(msg["Reply-To"])
    out["Subject"] = "Re: " + str(msg["Subject"])
    out["Date"] = formatdate()
    out["Message-ID"] = make_msgid(domain="company.test")
    out["In-Reply-To"] = str(msg["Message-ID"])
    for name, value in (headers or {}).items():
        out[name] = value
    out.set_content(body)
    return out.as_bytes().replace(b"\n", b"\r\n")


def answer(store: Store, msg: EmailMessage, raw: bytes, auth: AuthSettings,
           mail_from: str | None = BOSS) -> str:
    return handle_reply(store, SETTINGS, tag=tag_of(msg), raw=raw,
                        verdict=authenticate(raw, auth), parsed=parse_mail(raw),
                        mail_from=mail_from)


def outbox(store: Store, kind: str) -> list[Any]:
    return OutboxStore(store).items(kind=kind)


def state(store: Store, doc_id: int) -> tuple[str, str | None]:
    doc = store.documents.get(doc_id)
    assert doc is not None
    return doc.state, doc.extra.get("payment", {}).get("on")


QUOTE = ("\n\nLe jeu. 5 mars 2026 à 08:00, facturd <facturd@invoices.test> a écrit :\n"
         "> MARQUER COMME PAYÉES\n> payé O-7\n")


# ---- reading the lines ------------------------------------------------------------------

@pytest.mark.parametrize(("line", "expected"), [
    ("payé F-1042", PaidLine("payé F-1042", "F-1042")),
    ("Payé : F-1042.", PaidLine("Payé : F-1042.", "F-1042")),
    ("paid #1042 on 2026-03-04", PaidLine("paid #1042 on 2026-03-04", "1042",
                                          date(2026, 3, 4))),
    ("réglé la facture n° FA 2026 12 le 04/03/2026",
     PaidLine("réglé la facture n° FA 2026 12 le 04/03/2026", "FA 2026 12", date(2026, 3, 4))),
    ("paye F-1 4.3.26", PaidLine("paye F-1 4.3.26", "F-1", date(2026, 3, 4))),
    ("PAYEE 01.02.03", PaidLine("PAYEE 01.02.03", "01.02.03")),  # alone: a number, not a date
    ("payé F-1 31/02/2026", PaidLine("payé F-1 31/02/2026", "", problem="bad-date")),
    ("payé", PaidLine("payé", "", problem="no-number")),
    ("Payé, merci !", PaidLine("Payé, merci !", "merci")),  # a number that will not be found
    ("Merci, payé F-1", None),
    ("OUI", None),
])
def test_reading_a_paid_line(line: str, expected: PaidLine | None) -> None:
    assert read_paid(line) == expected


def test_parse_day() -> None:
    assert parse_day("2026-03-04") == date(2026, 3, 4)
    assert parse_day("04/03/2026,") == date(2026, 3, 4)
    assert parse_day("29/02/2026") is None and parse_day("F-1") is None


# ---- the reply --------------------------------------------------------------------------

def test_paid_reply_marks_purchase_and_sales_invoices_once(
        store: Store, clock: Clock, folder: int, keys: dict[str, Key],
        auth: AuthSettings) -> None:
    ids = {
        "o7": add(store, folder, "O-7"),
        "e9": add(store, folder, "E-9", state="accepted", party="EDF"),
        "v100": add(store, folder, "V-100", state="sent", direction="sales",
                    party="Client SA", gross="5000"),
        "dup_p": add(store, folder, "DUP-1", party="Dupont"),
        "dup_s": add(store, folder, "DUP-1", state="sent", direction="sales"),
        "x2a": add(store, folder, "X-2", party="A"),
        "x2b": add(store, folder, "X-2", party="B"),
        "held": add(store, folder, "H-1", state="pending_approval"),
    }
    msg = digest(store, clock)
    body = ("Payé O-7\n"
            "paid e 9?? \n"  # spaces and case do not matter; '?' is not a digit: not found
            "paid e-9 04/03/2026\n"
            "réglé V-100 le 2026-03-01\n"
            "payé DUP-1\n"
            "payé X-2\n"
            "payé H-1\n"  # held for approval: not open, not payable
            "payé O-7\n"
            "payé Z-1 31/02/2026\n"
            "Merci !\n"
            "payé X-2 ignored: after the first line that is no command\n" + QUOTE)
    outcome = answer(store, msg, signed(reply(msg, body), keys["company"]), auth)
    assert outcome.startswith(f"marked paid by reply from {BOSS}: O-7 (document {ids['o7']})")
    assert outcome.endswith("; 6 line(s) not used")
    assert state(store, ids["o7"]) == ("paid", "2026-03-05")  # no date: today (Paris)
    assert state(store, ids["e9"]) == ("paid", "2026-03-04")
    assert state(store, ids["v100"]) == ("paid", "2026-03-01")
    for key in ("dup_p", "x2a", "x2b"):
        assert state(store, ids[key]) == ("archived", None), key
    assert state(store, ids["dup_s"]) == ("sent", None)
    assert state(store, ids["held"]) == ("pending_approval", None)
    doc = store.documents.get(ids["o7"])
    assert doc is not None and doc.extra["payment"]["via"] == "reply"
    assert doc.extra["payment"]["by"] == BOSS
    assert [e.kind for e in store.events(document_id=ids["o7"])][-1] == "paid"
    assert outbox(store, "decision_notice") == []  # one confirmation instead of 3 notices
    # the confirmation: to the sender, an auto-reply threaded under the reply and the digest
    [confirm] = [parse(OutboxStore(store).raw(i)) for i in outbox(store, "payment_reply")]
    assert confirm["To"] == BOSS and confirm["Auto-Submitted"] == "auto-replied"
    assert str(confirm["References"]).startswith(str(msg["Message-ID"]))
    assert confirm["Subject"] == ("Acme SAS : 3 factures marquées comme payées, "
                                  "6 lignes non utilisées")
    text = text_of(confirm, "plain")
    for line in ("MARQUÉES COMME PAYÉES (3)", "O-7 de Orange : 100,00 €, payée le 5 mars 2026",
                 "V-100 à Client SA : 5 000,00 €, encaissée le 1 mars 2026",
                 "NON MARQUÉES (6)",
                 "« paid e 9?? » : aucune facture ouverte ne porte ce numéro",
                 "« payé DUP-1 » : 2 factures ouvertes portent ce numéro (une facture "
                 "fournisseur et une facture client) : aucune n'a été marquée",
                 "« payé X-2 » : 2 factures ouvertes portent ce numéro : aucune",
                 "« payé H-1 » : aucune facture ouverte",
                 "« payé O-7 » : déjà marquée par une ligne précédente",
                 "« payé Z-1 31/02/2026 » : date illisible"):
        assert line in text, line
    assert "ignored" not in text
    events = [e for e in store.events(folder_id=folder) if e.kind == "paid-by-reply"]
    assert len(events) == 1 and events[0].actor == BOSS
    # the same reply again: the address worked once
    again = answer(store, msg, signed(reply(msg, "payé X-2"), keys["company"]), auth)
    assert again == "refused: reply token already used"
    assert len(outbox(store, "payment_reply")) == 1 and outbox(store, "decision_notice") == []


def test_confirmation_threads_under_the_reply(store: Store, clock: Clock, folder: int,
                                              keys: dict[str, Key], auth: AuthSettings) -> None:
    add(store, folder, "O-7")
    msg = digest(store, clock)
    raw = signed(reply(msg, "paid O-7", sender=NOTIFY), keys["company"])
    reply_id = str(parse(raw)["Message-ID"])
    assert answer(store, msg, raw, auth, mail_from=NOTIFY).startswith("marked paid")
    [confirm] = [parse(OutboxStore(store).raw(i)) for i in outbox(store, "payment_reply")]
    assert confirm["In-Reply-To"] == reply_id and confirm["To"] == NOTIFY
    assert str(confirm["References"]).split() == [str(msg["Message-ID"]), reply_id]


def test_a_reply_without_a_paid_line_gets_the_usage_and_keeps_the_address(
        store: Store, clock: Clock, folder: int, keys: dict[str, Key],
        auth: AuthSettings) -> None:
    doc_id = add(store, folder, "O-7")
    Policy(store).set_folder(folder, {"language": "en"})
    msg = digest(store, clock)
    first = answer(store, msg, signed(reply(msg, "Thanks, who is Orange?" + QUOTE),
                                      keys["company"]), auth)
    assert first == "no command"
    [usage] = [parse(OutboxStore(store).raw(i)) for i in outbox(store, "payment_reply")]
    text = text_of(usage, "plain")
    assert "does not start with a \"paid\" line: nothing was marked" in text
    assert "paid <invoice number> [date]" in text
    Approvals(store).look(tag_of(msg)[1:])  # still usable
    assert state(store, doc_id) == ("archived", None)
    # lines that mark nothing (a typo) do not use the address up either
    typo = answer(store, msg, signed(reply(msg, "paid 0-7"), keys["company"]), auth)
    assert typo == f"marked paid by reply from {BOSS}: none; 1 line(s) not used"
    text = text_of(parse(OutboxStore(store).raw(outbox(store, "payment_reply")[-1])), "plain")
    assert "Nothing was marked: you may reply to the summary again" in text
    assert '"paid 0-7": no open invoice has this number' in text
    Approvals(store).look(tag_of(msg)[1:])
    second = answer(store, msg, signed(reply(msg, "paid O-7"), keys["company"]), auth)
    assert second.startswith("marked paid") and state(store, doc_id)[0] == "paid"
    again = answer(store, msg, signed(reply(msg, "paid O-7"), keys["company"]), auth)
    assert again == "refused: reply token already used"


def test_only_authenticated_folder_people_may_mark_paid(
        store: Store, clock: Clock, folder: int, keys: dict[str, Key],
        auth: AuthSettings) -> None:
    """Forged From (no DKIM), another domain's DKIM, a colleague who is neither the
    notification address nor an approver, automatic mail: nothing marked; the digest's
    addressee (never the sender) is warned once an hour."""
    doc_id = add(store, folder, "O-7")
    msg = digest(store, clock)
    unsigned = answer(store, msg, reply(msg, "payé O-7", sender=NOTIFY), auth)
    assert unsigned == f"refused: From {NOTIFY} not authenticated (none)"
    forged = answer(store, msg, signed(reply(msg, "payé O-7"), keys["evil"], "evil.test"), auth)
    assert forged == f"refused: From {BOSS} not authenticated (fail)"
    colleague = answer(store, msg, signed(reply(msg, "payé O-7", sender="x@company.test"),
                                          keys["company"]), auth)
    assert colleague == ("refused: From x@company.test is neither the notification address "
                         "nor an approver of this folder")
    auto = answer(store, msg, signed(reply(msg, "payé O-7",
                                           headers={"Auto-Submitted": "auto-replied"}),
                                     keys["company"]), auth)
    assert auto.startswith("ignored: automatic reply")
    assert state(store, doc_id) == ("archived", None)
    assert outbox(store, "payment_reply") == [] and outbox(store, "decision_notice") == []
    [warning] = outbox(store, "approval_attempt")
    assert warning.recipients == (NOTIFY,) and warning.document_id is None
    notice = parse(OutboxStore(store).raw(warning))
    assert notice["Subject"] == "Réponse non authentifiée au résumé de Acme SAS"
    assert notice["In-Reply-To"] == msg["Message-ID"]
    refused = [e for e in store.events(folder_id=folder) if e.kind == "reply-refused"]
    assert len(refused) == 3
    Approvals(store).look(tag_of(msg)[1:])  # nothing used the address
    # an approver removed since the digest went out no longer may
    Policy(store).set_folder(folder, {"approvers": []})
    removed = answer(store, msg, signed(reply(msg, "payé O-7"), keys["company"]), auth)
    assert removed.startswith(f"refused: From {BOSS} is neither")
    assert state(store, doc_id) == ("archived", None)


def test_two_replies_at_once_act_once(store: Store, clock: Clock, folder: int,
                                      keys: dict[str, Key], auth: AuthSettings) -> None:
    first, second = add(store, folder, "A-1"), add(store, folder, "B-2", party="EDF")
    msg = digest(store, clock)
    raws = [signed(reply(msg, f"payé {n}"), keys["company"]) for n in ("A-1", "B-2")]
    verdicts = [authenticate(raw, auth) for raw in raws]
    barrier = threading.Barrier(2)
    results: list[str] = []

    def run(raw: bytes, verdict: Any) -> None:
        barrier.wait()
        try:
            results.append(handle_reply(store, SETTINGS, tag=tag_of(msg), raw=raw,
                                        verdict=verdict))
        finally:
            store.db.close()

    threads = [threading.Thread(target=run, args=pair) for pair in zip(raws, verdicts,
                                                                         strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.split(":")[0] for r in results) == [
        "marked paid by reply from boss@company.test", "refused"], results
    assert sorted(state(store, d)[0] for d in (first, second)) == ["archived", "paid"]
    assert len(outbox(store, "payment_reply")) == 1


def test_digest_reply_address_only_with_open_invoices_and_a_domain(
        store: Store, clock: Clock, folder: int) -> None:
    add(store, folder, "H-1", state="pending_approval")
    msg = digest(store, clock)
    assert msg["Reply-To"] is None and "PAR RÉPONSE" not in text_of(msg, "plain")
    add(store, folder, "O-7")
    clock.advance(days=1)
    assert send_digests(store, DigestSettings(PUBLIC, FROM, timedelta(days=1), (
        mailer.template_dirs())), clock.now, force=True) == [(VAT, "sent")]
    out = OutboxStore(store)
    no_domain = parse(out.raw(out.items(kind="digest")[-1]))
    assert no_domain["Reply-To"] is None
