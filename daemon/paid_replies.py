"""Mark as paid by replying to a digest: ``payé F-1042 [date]``, one line per invoice.

Job: for an authenticated reply to a digest's reply address (a folder token, checked by
daemon.replies), read the command lines at the top of the reply (``payé``/``paye``/
``réglé``/``paid`` + an invoice number + an optional payment date, until the first line that
is no such command), mark each folder's open invoice with that number paid through
daemon.decisions (same checks and events as a link click; the per-invoice notice is replaced
by one confirmation), and confirm to the sender what was marked and what was not. All in
ONE transaction: the invoices are marked (each under its own savepoint, so one refusal does
not undo the others), the token is redeemed when at least one was (single use: a second
reply, even a concurrent one, finds it used and rolls back whole; a reply that marked nothing
leaves the address usable for a corrected one), the confirmation is queued; a crash before
the commit leaves nothing done and the worker runs the reply again.

Matching: the number is compared without spaces and case; only open invoices count (purchase
invoices to pay, sales invoices to collect: daemon.digest.open_invoices). A number that
matches several open invoices (a supplier's and a customer's, or two suppliers') marks none
and says so. Dates: ``2026-03-04``, ``04/03/2026``, ``4.3.26`` (day first); none = today in
the folder's time zone.

May touch: approvals (redeem), documents, events, outbox (through daemon.decisions and
storage APIs); documents are read through daemon.digest's query (a storage gap noted there).

Known limits: the confirmation goes to the replying person only (the notification address
learns of it from the digest and the events); a reply without any command line is answered
with the usage; at most ``MAX_LINES`` lines are read.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfoNotFoundError

from daemon import decisions, mailer
from daemon.decisions import ApprovalSettings, DecisionError
from daemon.digest import local_date, open_invoices
from storage.approvals import Approvals, Grant
from storage.outbox import OutboxStore
from storage.policy import Policy
from storage.store import Store

log = logging.getLogger(__name__)

PAID_WORDS = frozenset({"payé", "payée", "payés", "payées", "paye", "payee", "payes",
                        "réglé", "réglée", "réglés", "réglées", "regle", "reglee", "paid"})
MAX_LINES = 50
_NUMBER_PREFIXES = frozenset({"n°", "nº", "no", "no.", "num", "num.", "#", "facture",
                              "invoice", "la", "the"})
_DATE_PREFIXES = frozenset({"le", "on"})
_WORD_EDGES = ".,;:!?()[]\"'«»"
_DMY = re.compile(r"^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4}|\d{2})$")
_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")


@dataclass(frozen=True)
class PaidLine:
    """One command line: ``problem`` is "no-number" or "bad-date" when it cannot be used."""

    text: str
    number: str
    on: date | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Marked:
    document_id: int
    number: str
    party: str
    side: str  # purchase (paid) | sales (collected)
    amount: Decimal | None
    currency: str | None
    paid_on: date


@dataclass(frozen=True)
class Problem:
    line: str
    why: str  # no-number | bad-date | not-found | ambiguous | marked-above | refused
    count: int = 0  # ambiguous: how many open invoices carry the number
    sides: tuple[str, ...] = ()  # ambiguous: purchase and/or sales
    detail: str = ""  # refused: what daemon.decisions said


# ---- reading ----------------------------------------------------------------------------

def parse_day(text: str) -> date | None:
    """``2026-03-04``, ``04/03/2026``, ``4.3.26``, ``04-03-2026`` (day first) -> date; None
    when it is not a date."""
    text = text.strip(_WORD_EDGES)
    try:
        if iso := _ISO.match(text):
            return date(int(iso[1]), int(iso[2]), int(iso[3]))
        if dmy := _DMY.match(text):
            year = int(dmy[3]) + (2000 if len(dmy[3]) == 2 else 0)
            return date(year, int(dmy[2]), int(dmy[1]))
    except ValueError:
        return None
    return None


def _date_like(word: str) -> bool:
    word = word.strip(_WORD_EDGES)
    return bool(_ISO.match(word) or _DMY.match(word))


def read_paid(line: str) -> PaidLine | None:
    """``payé F-1042 04/03/2026`` -> PaidLine("…", "F-1042", date(2026, 3, 4)); None when the
    line is no payment command (its first word is not a paid word)."""
    words = line.split()
    if not words or words[0].strip(_WORD_EDGES).casefold() not in PAID_WORDS:
        return None
    rest = [word for word in words[1:] if word.strip(_WORD_EDGES)]  # drop a lone ":" etc.
    while rest and rest[0].casefold() in _NUMBER_PREFIXES:
        rest = rest[1:]
    if rest and rest[0].startswith("#"):
        rest[0] = rest[0][1:]
    on: date | None = None
    if len(rest) >= 2 and _date_like(rest[-1]):
        on = parse_day(rest[-1])
        if on is None:
            return PaidLine(line, "", problem="bad-date")
        rest = rest[:-1]
        if len(rest) >= 2 and rest[-1].casefold() in _DATE_PREFIXES:
            rest = rest[:-1]
    number = " ".join(rest).strip(_WORD_EDGES).strip()
    if not number:
        return PaidLine(line, "", problem="no-number")
    return PaidLine(line, number[:100], on)


def command_lines(own_lines: Iterable[str]) -> list[PaidLine]:
    """The command lines at the top of the reply, up to the first line that is none."""
    out: list[PaidLine] = []
    for line in own_lines:
        command = read_paid(line)
        if command is None or len(out) >= MAX_LINES:
            break
        out.append(command)
    return out


def number_key(number: str) -> str:
    return "".join(number.split()).casefold()


# ---- acting -----------------------------------------------------------------------------

def handle(store: Store, settings: ApprovalSettings, grant: Grant, token: str, *,
           own_lines: Iterable[str], sender: str, reply_message_id: str) -> str:
    """Act on an authenticated reply to a digest (``grant`` is its folder token, ``sender``
    the authenticated From allowed to use it). Returns the outcome for the delivery's record.
    Raises TokenRefused when the token was used (or expired) meanwhile: nothing is then
    changed."""
    commands = command_lines(own_lines)
    folder_id = grant.folder_id
    fs = Policy(store).folder_settings(folder_id)
    today = _local_today(str(fs.get("timezone") or ""), store.clock())
    marked: list[Marked] = []
    problems: list[Problem] = []
    with store.write_transaction():
        if commands:
            _apply(store, settings, folder_id, commands, sender, today, marked, problems)
        if marked:
            Approvals(store).redeem(token)  # TokenRefused: the transaction rolls back whole
        _confirm(store, settings, grant, fs, sender, reply_message_id,
                 marked, problems, understood=bool(commands))
        if commands:
            summary = (f"{len(marked)} marked paid by reply from {sender}"
                       + (": " + ", ".join(m.number for m in marked) if marked else "")
                       + (f"; {len(problems)} line(s) not used" if problems else ""))
            store.add_event("paid-by-reply", summary, actor=sender, folder_id=folder_id)
        else:
            store.add_event("reply-ignored", f"reply from {sender} to a digest: no 'paid "
                            "<number>' line at the top; the usage was sent back",
                            actor="reply", folder_id=folder_id)
    if not commands:
        return "no command"
    return (f"marked paid by reply from {sender}: "
            + (", ".join(f"{m.number} (document {m.document_id})" for m in marked) or "none")
            + (f"; {len(problems)} line(s) not used" if problems else ""))


def _apply(store: Store, settings: ApprovalSettings, folder_id: int,
           commands: list[PaidLine], sender: str, today: date, marked: list[Marked],
           problems: list[Problem]) -> None:
    candidates = [inv for inv in open_invoices(folder_id) if inv.side and inv.number]
    done: set[int] = set()
    for command in commands:
        if command.problem:
            problems.append(Problem(command.text, command.problem))
            continue
        key = number_key(command.number)
        same = [inv for inv in candidates if number_key(inv.number or "") == key]
        hits = [inv for inv in same if inv.id not in done]
        if not hits:
            problems.append(Problem(command.text, "marked-above" if same else "not-found"))
            continue
        if len(hits) > 1:
            sides = tuple(sorted({str(inv.side) for inv in hits}))
            problems.append(Problem(command.text, "ambiguous", count=len(hits), sides=sides))
            continue
        inv = hits[0]
        on = command.on or today
        try:  # decisions opens a savepoint: a refusal undoes this invoice only
            decisions.mark_paid(store, settings, inv.id, by=sender, on=on, via="reply",
                                notify=False)  # one confirmation below lists them all
        except DecisionError as exc:
            problems.append(Problem(command.text, "refused", detail=str(exc)))
            continue
        done.add(inv.id)
        marked.append(Marked(inv.id, inv.number or "", inv.party or "—", str(inv.side),
                             inv.amount, inv.currency, on))


def _local_today(timezone: str, now: datetime) -> date:
    try:
        return local_date(now, timezone)
    except (ZoneInfoNotFoundError, ValueError):  # a broken setting: the default zone
        return local_date(now, "")


def _confirm(store: Store, settings: ApprovalSettings, grant: Grant, fs: dict[str, object],
             sender: str, reply_message_id: str, marked: list[Marked],
             problems: list[Problem], *, understood: bool) -> None:
    """Queue the answer to the sender (Auto-Submitted: auto-replied, threaded under the
    reply), in the caller's transaction."""
    try:
        to = mailer.addr_spec(sender)
    except ValueError:
        log.warning("folder %d: reply sender %r is no plain address; no confirmation",
                    grant.folder_id, sender)
        return
    lang = str(fs.get("language") or "fr")
    context: dict[str, object] = {
        "folder_name": fs["name"], "understood": understood,
        "marked": [asdict(m) for m in marked],
        "problems": [{**asdict(p), "line": mailer.one_line(p.line, 200)} for p in problems],
    }
    rendered = mailer.render(settings.environment(), "payment_reply", lang, context)
    thread = mailer.thread_ids(grant.request_message_id, reply_message_id.strip())
    message_id = mailer.make_message_id(settings.domain)
    raw = mailer.compose(rendered, sender=settings.from_address, to=[to],
                         message_id=message_id, in_reply_to=thread[-1] if thread else None,
                         references=thread, auto_submitted="auto-replied")
    OutboxStore(store).enqueue("payment_reply", raw, [to], folder_id=grant.folder_id,
                               message_id=message_id)
