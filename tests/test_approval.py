"""Approval requests, reply approval and decisions on a real SQLite Store (B-APPR, F-19).

The request mails are read back from the outbox bytes; replies are really DKIM-signed and
authenticated by ``daemon.auth.authenticate`` against a stub DNS server on 127.0.0.1, so the
genuine/forged cases go through the same code as in the daemon. The worker and service are
not involved (the lead wires them): request_approval, handle_reply and decisions are called
as the worker will call them.
"""

from __future__ import annotations

import html
import re
import threading
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from email import policy
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import dkim
import pytest

from daemon import decisions
from daemon.approval import request_approval
from daemon.auth import AuthSettings, AuthVerdict, authenticate
from daemon.decisions import AlreadyDecided, ApprovalSettings, NotAllowed, NotPayable
from daemon.mailparse import parse_mail
from daemon.replies import first_line, handle_reply, is_reply_tag, read_command
from storage import records
from storage.approvals import Approvals, TokenRefused
from storage.blobs import sha256_hex
from storage.outbox import OutboxStore
from storage.policy import Policy
from storage.store import Store
from tests.conftest import Clock
from tests.dkimkeys import Key
from tests.mails import parse

PUBLIC = "https://factures.acme.test"
DOMAIN = "invoices.test"
FROM = "facturd <facturd@invoices.test>"
VAT = "FR40303265045"
NOTIFY = "compta@company.test"
BOSS = "boss@company.test"
PDF = b"%PDF-1.7\n% facture F2026-0042\n%%EOF\n"
SETTINGS = ApprovalSettings(domain=DOMAIN, public_url=PUBLIC, from_address=FROM)
NBSP = ("\u202f", "\xa0")


def make_folder(store: Store, language: str = "fr", notify: str = NOTIFY,
                approvers: tuple[str, ...] = (BOSS,)) -> int:
    folder = store.add_folder(VAT, "Acme SAS", notify_email=notify, language=language)
    Policy(store).set_folder(folder.id, {"approvers": list(approvers)})
    return folder.id


def make_document(store: Store, folder_id: int, state: str = "pending_approval",
                  part: int = 0) -> int:
    sha = sha256_hex(PDF)
    store.blobs.put_many([(sha, PDF)])
    doc = records.Document(
        id=0, folder_id=folder_id, delivery_id=None, part=part, direction="purchase",
        state=state, source="facturx", original_sha256=sha, enriched_sha256="",
        filename="F2026-0042.pdf", media_type="application/pdf", number="F2026-0042",
        issue_date="2026-03-01", due_date="2026-03-31", seller_name="Fournitures Dupont",
        currency="EUR", total_net=Decimal("1028.80"), total_tax=Decimal("205.76"),
        total_gross=Decimal("1234.56"), amount_due=Decimal("1234.56"),
        reasons=["Nouveau fournisseur", "Expéditeur non authentifié"])
    with store.write_transaction():
        doc_id, _, _ = store.documents.upsert(doc)
    return doc_id


@dataclass
class Request:
    person: str
    message: EmailMessage
    approve: str
    reject: str
    reply_tag: str


def text_of(msg: EmailMessage, kind: str) -> str:
    part = msg.get_body(preferencelist=(kind,))
    assert part is not None
    text = html.unescape(str(part.get_content()))
    for ch in NBSP:
        text = text.replace(ch, " ")
    return text


def request(store: Store, doc_id: int) -> dict[str, Request]:
    """Run request_approval as the worker will (inside its transaction) and read the mails."""
    with store.write_transaction():
        recipients = request_approval(store, SETTINGS, doc_id)
    out = OutboxStore(store)
    found: dict[str, Request] = {}
    for item in out.items(kind="approval_request"):
        if item.document_id != doc_id:
            continue
        msg = parse(out.raw(item))
        urls = re.findall(re.escape(PUBLIC) + r"/a/([A-Za-z0-9_-]+)", text_of(msg, "plain"))
        reply_to = str(msg["Reply-To"])
        tag = reply_to.partition("@")[0].partition("+")[2].lower()
        found[item.recipients[0]] = Request(item.recipients[0], msg, urls[0], urls[1], tag)
    assert sorted(found) == sorted(recipients)
    return found


def state_of(store: Store, doc_id: int) -> str:
    doc = store.documents.get(doc_id)
    assert doc is not None
    return doc.state


def notices(store: Store) -> list[Any]:
    return OutboxStore(store).items(kind="decision_notice")


# ---- the request ------------------------------------------------------------------------------

def test_request_in_french_to_notify_and_approvers(store: Store) -> None:
    folder_id = make_folder(store, approvers=(BOSS, "COMPTA@company.test"))  # dedup, any case
    doc_id = make_document(store, folder_id)
    reqs = request(store, doc_id)
    assert list(reqs) == [NOTIFY, BOSS]
    msg = reqs[BOSS].message
    assert msg["To"] == BOSS and msg["From"] == FROM
    assert msg["Subject"].startswith("À approuver : facture F2026-0042 de Fournitures Dupont")
    assert msg["Auto-Submitted"] == "auto-generated"
    text, page = text_of(msg, "plain"), text_of(msg, "html")
    for expected in ("Fournitures Dupont", "F2026-0042", "1 234,56 €", "1 028,80 €",
                     "Nouveau fournisseur", "Expéditeur non authentifié", "1 mars 2026"):
        assert expected in text and expected in page, expected
    assert f"{PUBLIC}/a/{reqs[BOSS].approve}" in page
    # Reply-To: <VAT>+r<token>@domain, a valid 160-bit reply token under 64 octets
    local = str(msg["Reply-To"]).partition("@")[0]
    assert local.startswith(f"{VAT}+r") and len(local) <= 64
    assert str(msg["Reply-To"]).endswith(f"@{DOMAIN}") and is_reply_tag(reqs[BOSS].reply_tag)
    # the original attached, byte for byte
    files = [p for p in msg.iter_attachments() if p.get_filename() == "F2026-0042.pdf"]
    assert len(files) == 1 and files[0].get_content() == PDF
    # tokens: approve/reject/reply per person, bound to the document and the mail's Message-ID
    approvals = Approvals(store)
    for person, req in reqs.items():
        grants = [approvals.look(req.approve), approvals.look(req.reject),
                  approvals.look(req.reply_tag[1:])]
        assert [g.action for g in grants] == ["approve", "reject", "reply"]
        assert {g.approver for g in grants} == {person}
        assert {g.request_message_id for g in grants} == {req.message["Message-ID"]}
    assert reqs[NOTIFY].approve != reqs[BOSS].approve
    assert [e.kind for e in store.events(document_id=doc_id)] == ["approval-requested"]


def test_request_in_english(store: Store) -> None:
    doc_id = make_document(store, make_folder(store, language="en"))
    msg = request(store, doc_id)[BOSS].message
    assert msg["Subject"].startswith("Approval needed: invoice F2026-0042")
    text = text_of(msg, "plain")
    assert "€1,234.56" in text and "Why it needs your approval" in text
    assert "Approve" in text_of(msg, "html")


def test_nothing_sent_without_notify_address_or_when_not_pending(store: Store) -> None:
    folder_id = make_folder(store, notify="")
    doc_id = make_document(store, folder_id)
    with store.write_transaction():
        assert request_approval(store, SETTINGS, doc_id) == []
    Policy(store).set_folder(folder_id, {"notify_email": NOTIFY})
    archived = make_document(store, folder_id, state="archived", part=1)
    with store.write_transaction():
        assert request_approval(store, SETTINGS, archived) == []
    assert OutboxStore(store).items() == []


# ---- replies ----------------------------------------------------------------------------------

def reply_mail(req: Request, body: str, *, sender: str = f"Jeanne <{BOSS}>",
               headers: dict[str, str] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = f"{VAT}+{req.reply_tag}@{DOMAIN}"
    msg["Subject"] = "Re: " + str(req.message["Subject"])
    msg["Date"] = formatdate()
    msg["Message-ID"] = f"<reply.{threading.get_ident()}.{id(body)}@company.test>"
    msg["In-Reply-To"] = str(req.message["Message-ID"])
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def signed(raw: bytes, key: Key, domain: str = "company.test") -> bytes:
    return bytes(dkim.sign(raw, b"sel", domain.encode(), key.pem)) + raw


def answer(store: Store, req: Request, raw: bytes, auth: AuthSettings,
           mail_from: str | None = BOSS) -> tuple[str, AuthVerdict]:
    verdict = authenticate(raw, auth)
    outcome = handle_reply(store, SETTINGS, tag=req.reply_tag, raw=raw, verdict=verdict,
                           parsed=parse_mail(raw), mail_from=mail_from)
    return outcome, verdict


QUOTED = ("\n\nLe jeu. 5 mars 2026 à 12:00, facturd <facturd@invoices.test> a écrit :\n"
          "> Une facture reçue pour Acme SAS attend votre décision.\n"
          "> Répondez NON pour rejeter.\n")


def test_genuine_reply_approves_once_with_one_notice(store: Store, keys: dict[str, Key],
                                                      auth: AuthSettings) -> None:
    """B-APPR-13 shape: own line first, the quoted request (with NON in it) below."""
    doc_id = make_document(store, make_folder(store))
    req = request(store, doc_id)[BOSS]
    raw = signed(reply_mail(req, "Oui, c'est bon pour moi." + QUOTED), keys["company"])
    outcome, verdict = answer(store, req, raw, auth)
    assert verdict.result == "pass" and verdict.from_address == BOSS
    assert outcome == f"approved document {doc_id} by {BOSS}"
    assert state_of(store, doc_id) == "archived"
    [notice] = notices(store)
    assert sorted(notice.recipients) == sorted([NOTIFY, BOSS])
    msg = parse(OutboxStore(store).raw(notice))
    assert msg["In-Reply-To"] == req.message["Message-ID"]  # threads under the request
    assert "APPROUVÉE" in text_of(msg, "plain") and BOSS in text_of(msg, "plain")
    events = store.events(document_id=doc_id)
    assert [(e.kind, e.actor) for e in events][-1] == ("approved", BOSS)
    # the same reply again (a re-delivery, a second click on send): acts no more
    again, _ = answer(store, req, raw, auth)
    assert again == "refused: reply token already used"
    assert len(notices(store)) == 1 and state_of(store, doc_id) == "archived"


def test_reply_rejects_with_reason_code_and_note(store: Store, keys: dict[str, Key],
                                                 auth: AuthSettings) -> None:
    doc_id = make_document(store, make_folder(store))
    req = request(store, doc_id)[BOSS]
    body = "\n\n> OUI\n\nnon DOUBLON montant faux\n-- \nJeanne\nOUI"
    outcome, _ = answer(store, req, signed(reply_mail(req, body), keys["company"]), auth)
    assert outcome == f"rejected document {doc_id} by {BOSS} (DOUBLON)"
    doc = store.documents.get(doc_id)
    assert doc is not None and doc.state == "rejected"
    assert doc.extra["reason_code"] == "DOUBLON"
    assert doc.extra["decision"]["note"] == "montant faux"
    assert doc.extra["decision"]["via"] == "reply"
    [notice] = notices(store)
    text = text_of(parse(OutboxStore(store).raw(notice)), "plain")
    assert "REJETÉE" in text and "DOUBLON" in text and "montant faux" in text


def test_quoted_approval_does_not_count(store: Store, keys: dict[str, Key],
                                        auth: AuthSettings) -> None:
    """B-APPR-13: the first non-quoted line is REJECT although the quote says APPROVE."""
    doc_id = make_document(store, make_folder(store))
    req = request(store, doc_id)[BOSS]
    body = "> APPROVE\n> yes\nREJECT\n\nOn Thu, 5 Mar 2026, facturd wrote:\n> approve"
    outcome, _ = answer(store, req, signed(reply_mail(req, body), keys["company"]), auth)
    assert outcome.startswith("rejected") and "(AUTRE)" in outcome
    assert state_of(store, doc_id) == "rejected"


def _assert_untouched(store: Store, doc_id: int, req: Request) -> None:
    assert state_of(store, doc_id) == "pending_approval"
    assert notices(store) == []
    Approvals(store).look(req.reply_tag[1:])  # still usable: nothing redeemed it


def test_out_of_office_is_ignored(store: Store, keys: dict[str, Key],
                                  auth: AuthSettings) -> None:
    """B-APPR-12: Auto-Submitted auto-replied, quoting APPROVE: no action, no answer."""
    doc_id = make_document(store, make_folder(store, language="en"))
    req = request(store, doc_id)[BOSS]
    raw = signed(reply_mail(req, "YES\nI am out of the office until Monday.\n> approve",
                            headers={"Auto-Submitted": "auto-replied"}), keys["company"])
    outcome, verdict = answer(store, req, raw, auth)
    assert verdict.result == "pass"
    assert outcome == "ignored: automatic reply (Auto-Submitted: auto-replied)"
    for headers in ({"Precedence": "bulk"}, {"X-Autoreply": "yes"}):
        raw = signed(reply_mail(req, "YES", headers=headers), keys["company"])
        assert answer(store, req, raw, auth)[0].startswith("ignored: automatic mail")
    _assert_untouched(store, doc_id, req)


def attempts(store: Store) -> list[EmailMessage]:
    out = OutboxStore(store)
    return [parse(out.raw(item)) for item in out.items(kind="approval_attempt")]


def test_forged_or_foreign_approver_is_refused(store: Store, keys: dict[str, Key],
                                               auth: AuthSettings, clock: Clock) -> None:
    """B-APPR-11: From boss@company.test without DKIM, with an attacker's DKIM, and a genuine
    colleague who is not the approver of this token: no action, no decision notice; the
    approver (never the sender) gets one "unauthenticated attempt" notice per token and hour."""
    doc_id = make_document(store, make_folder(store))
    req = request(store, doc_id)[BOSS]
    unsigned = reply_mail(req, "OUI")
    outcome, verdict = answer(store, req, unsigned, auth)
    assert verdict.result == "none" and outcome.startswith("refused: From boss@company.test")
    forged = signed(reply_mail(req, "OUI"), keys["evil"], domain="evil.test")
    outcome, verdict = answer(store, req, forged, auth)
    assert verdict.result == "fail" and "not authenticated (fail)" in outcome
    colleague = signed(reply_mail(req, "OUI", sender="colleague@company.test"),
                       keys["company"])
    outcome, verdict = answer(store, req, colleague, auth, mail_from="colleague@company.test")
    assert verdict.result == "pass"
    assert outcome == ("refused: From colleague@company.test is not the approver this "
                       "request was sent to")
    _assert_untouched(store, doc_id, req)
    kinds = [e.kind for e in store.events(document_id=doc_id)]
    assert kinds.count("reply-refused") == 3
    # one notice for the three attempts, to the approver, threaded under the request
    [notice] = attempts(store)
    assert notice["To"] == BOSS and notice["Auto-Submitted"] == "auto-generated"
    assert notice["In-Reply-To"] == req.message["Message-ID"]
    assert notice["Subject"] == ("Tentative d'approbation non authentifiée : facture "
                                 "F2026-0042 de Fournitures Dupont")
    text = text_of(notice, "plain")
    assert "RIEN N'A ÉTÉ FAIT" in text and "Expéditeur annoncé : boss@company.test" in text
    assert "DKIM : none" in text and "1 234,56 €" in text
    raw = OutboxStore(store).raw(OutboxStore(store).items(kind="approval_attempt")[0])
    assert req.reply_tag[1:].encode() not in raw.lower()  # the token is never repeated
    details = [e.detail for e in store.events(document_id=doc_id) if e.kind == "reply-refused"]
    assert details[0].endswith("; the approver was warned")
    assert all("one an hour" in d for d in details[1:])
    # an hour later, an attacker signing for its own domain: a second notice, to the approver
    clock.advance(hours=1)
    attacker = signed(reply_mail(req, "OUI", sender="attacker@evil.test"), keys["evil"],
                      domain="evil.test")
    outcome, verdict = answer(store, req, attacker, auth, mail_from="attacker@evil.test")
    assert verdict.result == "pass" and outcome.startswith("refused: From attacker@evil.test")
    _, second = attempts(store)
    assert second["To"] == BOSS and "attacker" not in str(second["To"])
    assert "Expéditeur annoncé : attacker@evil.test" in text_of(second, "plain")
    assert "une personne qui ne peut pas répondre" in text_of(second, "plain")
    _assert_untouched(store, doc_id, req)
    assert OutboxStore(store).items(kind="approval_attempt")[1].recipients == (BOSS,)


def test_automatic_mail_and_bounces_never_warn_the_approver(store: Store,
                                                             auth: AuthSettings) -> None:
    """The loop guard comes first: an unsigned auto-reply or bounce is ignored silently."""
    doc_id = make_document(store, make_folder(store))
    req = request(store, doc_id)[BOSS]
    auto = reply_mail(req, "OUI", headers={"Auto-Submitted": "auto-replied"})
    assert answer(store, req, auto, auth)[0].startswith("ignored")
    bounce = reply_mail(req, "OUI", sender="MAILER-DAEMON@mx.company.test")
    assert answer(store, req, bounce, auth, mail_from="")[0].startswith("ignored")
    assert attempts(store) == []
    unsigned = reply_mail(req, "OUI")  # positive control: a person's unsigned reply warns
    assert answer(store, req, unsigned, auth)[0].startswith("refused")
    assert len(attempts(store)) == 1


def test_dns_trouble_is_retried_not_refused(store: Store, keys: dict[str, Key],
                                            auth: AuthSettings) -> None:
    """temperror for the approver's own domain: the worker retries (TimeoutError) later."""
    doc_id = make_document(store, make_folder(store))
    req = request(store, doc_id)[BOSS]
    raw = signed(reply_mail(req, "OUI"), keys["company"])
    verdict = replace(authenticate(raw, auth), result="temperror")
    with pytest.raises(TimeoutError):
        handle_reply(store, SETTINGS, tag=req.reply_tag, raw=raw, verdict=verdict)
    _assert_untouched(store, doc_id, req)


def test_bounce_is_ignored(store: Store, auth: AuthSettings) -> None:
    """B-APPR-15: a DSN from MAILER-DAEMON (multipart/report), null return path."""
    doc_id = make_document(store, make_folder(store))
    req = request(store, doc_id)[BOSS]
    raw = (
        "From: Mail Delivery System <MAILER-DAEMON@mx.company.test>\r\n"
        f"To: {VAT}+{req.reply_tag}@{DOMAIN}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Date: Thu, 05 Mar 2026 12:00:00 +0000\r\nMessage-ID: <dsn.1@mx.company.test>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nOUI\r\nThe mail could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        "Final-Recipient: rfc822; x@company.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "--B--\r\n").encode()
    outcome, _ = answer(store, req, raw, auth, mail_from="")
    assert outcome == "ignored: bounce or receipt (multipart/report)"
    plain = reply_mail(req, "OUI", sender="MAILER-DAEMON@mx.company.test")
    assert answer(store, req, plain, auth, mail_from="")[0] == "ignored: bounce (null return path)"
    assert answer(store, req, plain, auth, mail_from=None)[0] == (
        "ignored: bounce (mailer-daemon sender)")
    _assert_untouched(store, doc_id, req)


def test_reply_without_command_or_with_bad_token(store: Store, keys: dict[str, Key],
                                                 auth: AuthSettings) -> None:
    doc_id = make_document(store, make_folder(store))
    req = request(store, doc_id)[BOSS]
    raw = signed(reply_mail(req, "Je regarde ça demain.\n> OUI"), keys["company"])
    assert answer(store, req, raw, auth)[0] == "no command"
    _assert_untouched(store, doc_id, req)
    verdict = authenticate(raw, auth)
    assert handle_reply(store, SETTINGS, tag="r" + "a" * 32, raw=raw, verdict=verdict) == (
        "refused: reply token unknown")
    # a link token in the reply position is not a reply grant
    assert handle_reply(store, SETTINGS, tag="sales", raw=raw, verdict=verdict) == (
        "refused: not a reply token address")


@pytest.mark.parametrize(("body", "command"), [
    ("OK", ("approve", None, "")),
    ("Approuvé !", ("approve", None, "!")),
    ("  yes, pay it\n> no", ("approve", None, "pay it")),
    ("NON", ("reject", None, "")),
    ("non DOUBLON montant faux", ("reject", "DOUBLON", "montant faux")),
    ("Rejeter calcul_err: total faux", ("reject", "CALCUL_ERR", "total faux")),
    ("no thanks", ("reject", None, "thanks")),
    ("> OUI\nOn Thu, 5 Mar 2026 at 12:00, facturd <f@x.test> wrote:\n> OUI", None),
    ("-- \nOUI", None),
    ("peut-être", None),
    ("", None),
])
def test_reading_the_command(body: str, command: tuple[str, str | None, str] | None) -> None:
    msg = EmailMessage()
    msg.set_content(body)
    assert read_command(first_line(msg)) == command


def test_html_only_reply_is_read() -> None:
    msg = EmailMessage()
    msg.set_content("<div>Oui</div><blockquote>NON</blockquote>", subtype="html")
    assert read_command(first_line(msg)) == ("approve", None, "")


# ---- decisions --------------------------------------------------------------------------------

def test_decisions_need_the_current_version_and_a_pending_document(store: Store) -> None:
    doc_id = make_document(store, make_folder(store))
    with pytest.raises(AlreadyDecided, match=r"already decided.*changed since"):
        decisions.approve(store, SETTINGS, doc_id, by=BOSS, version=7)
    with pytest.raises(NotAllowed):
        decisions.reject(store, SETTINGS, doc_id, by=BOSS, version=None, code="NOPE")
    with pytest.raises(NotPayable):
        decisions.mark_paid(store, SETTINGS, doc_id, by="cli", on=date(2026, 3, 6))
    assert decisions.approve(store, SETTINGS, doc_id, by=BOSS, version=1) == "archived"
    with pytest.raises(AlreadyDecided, match=f"is archived by {BOSS}"):
        decisions.reject(store, SETTINGS, doc_id, by=NOTIFY, version=None, code="DOUBLON")
    assert decisions.mark_paid(store, SETTINGS, doc_id, by="cli", on=date(2026, 3, 6)) == "paid"
    with pytest.raises(AlreadyDecided, match="is paid by cli"):
        decisions.mark_paid(store, SETTINGS, doc_id, by="cli", on=date(2026, 3, 7))
    doc = store.documents.get(doc_id)
    assert doc is not None and doc.extra["payment"]["on"] == "2026-03-06"
    sent = notices(store)
    assert len(sent) == 2  # the approval, then the payment
    from email import message_from_bytes

    paid = message_from_bytes(OutboxStore(store).raw(sent[-1]), policy=policy.default)
    assert "MARQUÉE COMME PAYÉE" in paid.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert [e.kind for e in store.events(document_id=doc_id)] == ["approved", "paid"]


def test_a_token_grants_only_its_own_decision(store: Store) -> None:
    doc_id = make_document(store, make_folder(store))
    req = request(store, doc_id)[BOSS]
    with pytest.raises(NotAllowed):  # a reject link cannot approve
        decisions.approve(store, SETTINGS, doc_id, by=BOSS, version=1, token=req.reject)
    with pytest.raises(NotAllowed):  # someone else's link
        decisions.approve(store, SETTINGS, doc_id, by=NOTIFY, version=1, token=req.approve)
    Approvals(store).look(req.approve)  # neither attempt used the token
    with pytest.raises(TokenRefused):
        decisions.approve(store, SETTINGS, doc_id, by=BOSS, version=1, token="x" * 43)
    assert state_of(store, doc_id) == "pending_approval" and notices(store) == []


def test_reply_after_a_link_decision_is_told_already_decided(
        store: Store, keys: dict[str, Key], auth: AuthSettings) -> None:
    doc_id = make_document(store, make_folder(store))
    reqs = request(store, doc_id)
    decisions.approve(store, SETTINGS, doc_id, by=NOTIFY, version=1, token=reqs[NOTIFY].approve)
    raw = signed(reply_mail(reqs[BOSS], "non"), keys["company"])
    outcome, _ = answer(store, reqs[BOSS], raw, auth)
    assert outcome == f"already decided: document {doc_id} is archived by {NOTIFY} on 2026-03-05"
    assert state_of(store, doc_id) == "archived" and len(notices(store)) == 1


def test_race_link_against_reply_has_one_winner(store: Store, keys: dict[str, Key],
                                                auth: AuthSettings) -> None:
    """F-19: approve by link and reject by reply at the same moment (several rounds, so both
    orders happen): one decision each time, the loser told it was already decided, one notice."""
    folder_id = make_folder(store)
    winners: list[str] = []
    for part in range(6):
        doc_id = make_document(store, folder_id, part=part)
        reqs = request(store, doc_id)
        raw = signed(reply_mail(reqs[BOSS], "NON CALCUL_ERR"), keys["company"])
        verdict = authenticate(raw, auth)
        barrier = threading.Barrier(2)
        results: dict[str, str] = {}

        def link(doc_id: int = doc_id, reqs: dict[str, Request] = reqs,
                 barrier: threading.Barrier = barrier, results: dict[str, str] = results,
                 ) -> None:
            barrier.wait()
            try:
                results["link"] = decisions.approve(store, SETTINGS, doc_id, by=NOTIFY,
                                                    version=1, token=reqs[NOTIFY].approve)
            except AlreadyDecided as exc:
                results["link"] = str(exc)
            finally:
                store.db.close()

        def reply(reqs: dict[str, Request] = reqs, raw: bytes = raw,
                  verdict: AuthVerdict = verdict, barrier: threading.Barrier = barrier,
                  results: dict[str, str] = results) -> None:
            barrier.wait()
            try:
                results["reply"] = handle_reply(store, SETTINGS, tag=reqs[BOSS].reply_tag,
                                                raw=raw, verdict=verdict)
            finally:
                store.db.close()

        threads = [threading.Thread(target=link), threading.Thread(target=reply)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        won = [k for k, v in results.items() if v == "archived" or v.startswith("rejected")]
        lost = [k for k, v in results.items() if v.startswith("already decided")]
        assert len(won) == 1 and len(lost) == 1, results
        decision = "approved" if won == ["link"] else "rejected"
        assert state_of(store, doc_id) == ("archived" if won == ["link"] else "rejected")
        assert len([n for n in notices(store) if n.document_id == doc_id]) == 1
        kinds = [e.kind for e in store.events(document_id=doc_id)]
        assert kinds.count("approved") + kinds.count("rejected") == 1
        doc = store.documents.get(doc_id)
        assert doc is not None and doc.extra["decision"]["decision"] == decision
        winners += won
    print("race winners:", winners)


def test_link_race_on_sqlite_and_postgresql(any_db: str, tmp_path: Path, clock: Clock) -> None:
    """F-19 on both databases: approve and reject links of two people at the same moment."""
    blobs = "files" if any_db.startswith("sqlite") else "database"
    db_store = Store.open(any_db, blobs, tmp_path / "blobs", clock=clock)
    try:
        folder_id = make_folder(db_store)
        for part in range(4):
            doc_id = make_document(db_store, folder_id, part=part)
            reqs = request(db_store, doc_id)
            barrier = threading.Barrier(2)
            results: list[str] = []

            def run(fn: Any, kwargs: dict[str, Any], doc_id: int = doc_id,
                    barrier: threading.Barrier = barrier, results: list[str] = results) -> None:
                barrier.wait()
                try:
                    results.append(fn(db_store, SETTINGS, doc_id, version=1, **kwargs))
                except AlreadyDecided as exc:
                    results.append(str(exc))
                except Exception as exc:
                    results.append(f"unexpected {exc!r}")
                finally:
                    db_store.db.close()

            threads = [
                threading.Thread(target=run, args=(decisions.approve, {
                    "by": BOSS, "token": reqs[BOSS].approve})),
                threading.Thread(target=run, args=(decisions.reject, {
                    "by": NOTIFY, "token": reqs[NOTIFY].reject, "code": "DOUBLON"})),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert sorted(r.startswith("already decided") for r in results) == [False, True], (
                results)
            assert len([n for n in notices(db_store) if n.document_id == doc_id]) == 1
    finally:
        db_store.close()
