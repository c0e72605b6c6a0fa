"""Digests: the periodic summary mailed to a folder's notification address.

Job: decide when a folder's digest is due (``digest_due``), compute what is still to pay and
to collect (``buckets``, pure), and ``send_digests``: for each due folder, in ONE
transaction, issue the approval/payment tokens its links carry (and, when it lists open
invoices and the intake domain is known, the folder token of its reply address
``Reply-To: <VAT>+r<token>@<domain>``, answered by daemon.paid_replies: "payé <number>"),
render ``digest`` in the folder's language, enqueue it for the send role and advance
``last_digest_at``. Every token records the digest's Message-ID, so the mails they cause
thread under it.

May touch: the folder row (``last_digest_at`` only), approval tokens, the outbox and events;
documents are only read. Talks to no network: the send role delivers the mail.

Decisions (the issue is silent on these):
  * Amounts: ``amount_due`` when known, else ``total_gross``; due date: ``due_date``, else
    ``issue_date``; an invoice with neither is counted "due in more than 30 days" (the
    template says "or no due date"). Overdue = due before today (due today is not overdue);
    due within 30 days = today .. today+30 inclusive; after = today+31 or later.
  * Open = not paid (``payment_status`` and ``state`` both not "paid"); purchase = state
    accepted/archived, sales = state sent/archived (a sales invoice is archived when sent).
  * Currencies are never added together: one ``Bucket`` per currency and direction. The mail
    shows the main currency (the one with the most open invoices, EUR on a tie or when there
    is none) in the two blocks and lists the others on their own lines.
  * "Something to say": daily/weekly: a pending approval, any activity since the last digest
    or an overdue invoice; immediate: only activity since the last digest (new documents,
    new pending approvals), otherwise a standing overdue invoice would mail every 5 minutes.
    With nothing to say nothing is sent but ``last_digest_at`` IS advanced: the window was
    examined and held nothing (so nothing is lost), and a daily digest must not go out at
    15:00 because a document arrived then.
  * Concurrency: ``last_digest_at`` is advanced with a compare-and-set before anything else
    is written; a second scheduler (another node, the systemd timer) gets "raced" and writes
    nothing.
  * Links are bounded: the first ``MAX_LINKS`` pending approvals (oldest first; approve and
    reject each) and the first ``MAX_LINKS`` purchase invoices to pay (earliest due first),
    with "and N more". The reply address covers every open invoice of the folder, purchase
    or sales, listed or not; it works once and expires with the links (``token_ttl``).

Known limits: the first digest of a folder counts everything since the folder was created.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2

from daemon import mailer
from daemon.approval import reply_address
from storage import digests
from storage.approvals import Approvals
from storage.outbox import OutboxStore
from storage.policy import Policy
from storage.records import Document, Folder
from storage.store import Store

log = logging.getLogger(__name__)

PURCHASE_OPEN = ("accepted", "archived")
SALES_OPEN = ("sent", "archived")
IMMEDIATE_INTERVAL = timedelta(minutes=5)
MAX_LINKS = 50
HORIZON_DAYS = 30
ZERO = Decimal("0")


@dataclass(frozen=True)
class DigestSettings:
    public_url: str  # links are {public_url}/a/{token}
    from_address: str
    token_ttl: timedelta
    template_dirs: tuple[Path, ...]
    domain: str = ""  # intake domain of the reply address; "" = no reply address

    def __post_init__(self) -> None:
        parts = urlsplit(self.public_url)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query:
            raise ValueError(f"public_url: expected https://host[/path], got {self.public_url!r}")
        if self.token_ttl <= timedelta(0):
            raise ValueError("token_ttl: must be positive")
        mailer.check_address(self.from_address)


# ---- buckets (pure) ------------------------------------------------------------------------

@dataclass(frozen=True)
class Invoice:
    """What a digest needs of a document (``party``: the seller of a purchase invoice, the
    buyer of a sales invoice)."""

    id: int
    direction: str
    state: str
    payment_status: str = "unpaid"
    number: str | None = None
    party: str | None = None
    issue_date: str | None = None
    due_date: str | None = None
    currency: str | None = None
    total_gross: Decimal | None = None
    amount_due: Decimal | None = None

    @property
    def amount(self) -> Decimal | None:
        return self.amount_due if self.amount_due is not None else self.total_gross

    @property
    def due(self) -> date | None:
        """``due_date``, else ``issue_date`` (ISO text); None when neither parses."""
        for text in (self.due_date, self.issue_date):
            try:
                return date.fromisoformat((text or "")[:10])
            except ValueError:
                continue
        return None

    @property
    def side(self) -> str | None:
        """'purchase' (to pay), 'sales' (to collect) or None (paid, or not open)."""
        if self.payment_status == "paid" or self.state == "paid":
            return None
        if self.direction == "purchase" and self.state in PURCHASE_OPEN:
            return "purchase"
        if self.direction == "sales" and self.state in SALES_OPEN:
            return "sales"
        return None


@dataclass
class Bucket:
    """Open invoices of one direction in one currency."""

    currency: str
    outstanding: Decimal = ZERO
    overdue_amount: Decimal = ZERO
    overdue_count: int = 0
    due_within_30: Decimal = ZERO
    due_after_30: Decimal = ZERO
    count: int = 0
    without_amount: int = 0  # counted, but no amount known

    def add(self, inv: Invoice, today: date) -> None:
        amount, due = inv.amount, inv.due
        self.count += 1
        if amount is None:
            self.without_amount += 1
            amount = ZERO
        self.outstanding += amount
        if due is not None and due < today:
            self.overdue_amount += amount
            self.overdue_count += 1
        elif due is not None and due <= today + timedelta(days=HORIZON_DAYS):
            self.due_within_30 += amount
        else:
            self.due_after_30 += amount


@dataclass(frozen=True)
class Buckets:
    today: date
    purchase: dict[str, Bucket] = field(default_factory=dict)  # currency -> bucket
    sales: dict[str, Bucket] = field(default_factory=dict)

    def currencies(self) -> list[str]:
        """Main currency first (most open invoices; EUR wins ties), then alphabetical."""
        counts: dict[str, int] = {}
        for side in (self.purchase, self.sales):
            for cur, b in side.items():
                counts[cur] = counts.get(cur, 0) + b.count
        if not counts:
            return ["EUR"]
        return sorted(counts, key=lambda c: (-counts[c], c != "EUR", c))

    def main_currency(self) -> str:
        return self.currencies()[0]

    def get(self, side: str, currency: str) -> Bucket:
        found = (self.purchase if side == "purchase" else self.sales).get(currency)
        return found if found is not None else Bucket(currency)

    @property
    def overdue_count(self) -> int:
        return sum(b.overdue_count for s in (self.purchase, self.sales) for b in s.values())


def buckets(documents: Iterable[Invoice], today: date) -> Buckets:
    """Outstanding amounts per direction and currency (see the module docstring)."""
    out = Buckets(today)
    for inv in documents:
        side = inv.side
        if side is None:
            continue
        cur = (inv.currency or "").strip().upper()
        group = out.purchase if side == "purchase" else out.sales
        group.setdefault(cur, Bucket(cur)).add(inv, today)
    return out


# ---- schedule (pure) -----------------------------------------------------------------------

def utc_naive(moment: datetime) -> datetime:
    """An aware datetime as naive UTC (storage's convention); naive ones are taken as UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def local_date(moment: datetime, zone: str) -> date:
    """The calendar day of a naive-UTC ``moment`` in the folder's time zone ("" = Paris).
    ZoneInfoNotFoundError (or ValueError) for a zone that does not exist."""
    return moment.replace(tzinfo=UTC).astimezone(ZoneInfo(zone or "Europe/Paris")).date()


def parse_hhmm(text: str) -> time:
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit():
        raise ValueError(f"digest_time: expected HH:MM, got {text!r}")
    return time(int(hours), int(minutes))  # ValueError when out of range


def scheduled_slot(kind: str, hhmm: str, timezone: str, now_utc: datetime) -> datetime:
    """The latest daily (or Monday, for ``weekly``) ``hhmm`` in ``timezone`` at or before
    ``now_utc``, as naive UTC. Wall-clock time: 08:00 Paris is 07:00 UTC in winter and
    06:00 UTC in summer; a time skipped by a DST change falls one hour later that day.
    ValueError / ZoneInfoNotFoundError on a bad time or zone."""
    tz, at = ZoneInfo(timezone), parse_hhmm(hhmm)
    now = utc_naive(now_utc).replace(tzinfo=UTC)
    day = now.astimezone(tz).date()
    if kind == "weekly":
        day -= timedelta(days=day.weekday())
    step = timedelta(days=7 if kind == "weekly" else 1)
    for _ in range(3):
        slot = datetime.combine(day, at, tzinfo=tz).astimezone(UTC)
        if slot <= now:
            return slot.replace(tzinfo=None)
        day -= step
    raise AssertionError("unreachable: a slot one period back is always in the past")


def digest_due(folder_settings: Mapping[str, Any], now_utc: datetime,
               last_digest_at: datetime | None) -> bool:
    """immediate: every IMMEDIATE_INTERVAL at most; daily: once per local day at/after
    ``digest_time`` in the folder's ``timezone``; weekly: the same on Mondays; never."""
    frequency = folder_settings.get("notify_frequency", "daily")
    now = utc_naive(now_utc)
    if frequency == "immediate":
        return last_digest_at is None or now - last_digest_at >= IMMEDIATE_INTERVAL
    if frequency not in ("daily", "weekly"):
        return False
    slot = scheduled_slot(frequency, folder_settings.get("digest_time") or "08:00",
                          folder_settings.get("timezone") or "Europe/Paris", now)
    return last_digest_at is None or last_digest_at < slot


# ---- what the digest shows (queries: storage/digests.py) ---------------------------------

def to_invoice(doc: Document) -> Invoice:
    return Invoice(id=doc.id, direction=doc.direction, state=doc.state,
                   payment_status=doc.payment_status, number=doc.number,
                   party=doc.buyer_name if doc.direction == "sales" else doc.seller_name,
                   issue_date=doc.issue_date, due_date=doc.due_date, currency=doc.currency,
                   total_gross=doc.total_gross, amount_due=doc.amount_due)


def open_invoices(folder_id: int) -> list[Invoice]:
    return [to_invoice(d) for d in digests.open_documents(folder_id,
                                                          {*PURCHASE_OPEN, *SALES_OPEN})]


last_digest_at = digests.last_digest_at


@dataclass(frozen=True)
class Activity:
    received: int
    archived: int
    blocked: int
    new_pending: int

    @property
    def anything(self) -> bool:
        return bool(self.received or self.archived or self.blocked or self.new_pending)


def activity(folder_id: int, since: datetime | None, until: datetime) -> Activity:
    """Documents created (received) or moved (archived, blocked as duplicates, held) in
    (since, until]."""
    return Activity(*digests.activity_counts(folder_id, since, until))


def pending_approvals(folder_id: int) -> tuple[list[Invoice], int]:
    """The oldest MAX_LINKS documents waiting for a person, and how many wait in all."""
    docs, total = digests.pending_documents(folder_id, MAX_LINKS)
    return [to_invoice(d) for d in docs], total


# ---- sending -------------------------------------------------------------------------------

class _Raced(Exception):
    """Another scheduler advanced last_digest_at first: roll back, send nothing."""


def send_digests(store: Store, settings: DigestSettings, now: datetime, *,
                 folder_id: int | None = None, force: bool = False) -> list[tuple[str, str]]:
    """(folder VAT, outcome) per folder examined. Outcomes: sent, not due, nothing to say,
    no notification address, raced (another process sent it), error: <reason>.
    ``force`` ignores the schedule (still nothing is sent when there is nothing to say)."""
    now = utc_naive(now)
    env = mailer.make_environment(settings.template_dirs)
    if folder_id is None:
        folders = store.folders()
    else:
        one = store.folder(folder_id)
        folders = [one] if one is not None else []
    out: list[tuple[str, str]] = []
    for folder in folders:
        try:
            outcome = _digest_folder(store, settings, env, folder, now, force)
        except _Raced:
            outcome = "raced"
        except (ValueError, ZoneInfoNotFoundError, jinja2.TemplateError) as exc:
            outcome = f"error: {exc}"
        out.append((folder.vat, outcome))
    return out


def _digest_folder(store: Store, settings: DigestSettings, env: jinja2.Environment,
                   folder: Folder, now: datetime, force: bool) -> str:
    fs = Policy(store).folder_settings(folder.id)
    if not force and not digest_due(fs, now, last_digest_at(folder.id)):
        return "not due"
    if not fs["notify_email"]:
        return "no notification address"
    to = mailer.addr_spec(fs["notify_email"])
    with store.write_transaction():
        since = last_digest_at(folder.id)  # again, under the write lock
        if not force and not digest_due(fs, now, since):
            return "not due"
        if not digests.advance(folder.id, since, now):
            raise _Raced
        moved = activity(folder.id, since, now)
        pending, pending_total = pending_approvals(folder.id)
        invoices = open_invoices(folder.id)
        sums = buckets(invoices, local_date(now, str(fs.get("timezone") or "")))
        worth = moved.anything if fs["notify_frequency"] == "immediate" else bool(
            moved.anything or pending_total or sums.overdue_count)
        if not worth:
            return "nothing to say"
        domain = mailer.addr_spec(settings.from_address).rpartition("@")[2]
        message_id = (f"<digest.{folder.id}.{now:%Y%m%d%H%M%S}."
                      f"{secrets.token_hex(6)}@{domain}>")
        context = _context(store, settings, folder, to, since, moved, (pending, pending_total),
                           invoices, sums, message_id)
        rendered = mailer.render(env, "digest", fs["language"], context)
        raw = mailer.compose(rendered, sender=settings.from_address, to=[fs["notify_email"]],
                             reply_to=context["reply_address"], message_id=message_id,
                             date=now.replace(tzinfo=UTC))
        OutboxStore(store).enqueue("digest", raw, [to], folder_id=folder.id,
                                   message_id=message_id)
        store.add_event("digest-queued", f"to {to}: {pending_total} pending, "
                        f"{moved.received} received, {sums.overdue_count} overdue",
                        folder_id=folder.id)
    log.info("digest for %s queued to %s", folder.vat, to)
    return "sent"


def _context(store: Store, settings: DigestSettings, folder: Folder, approver: str,
             since: datetime | None, moved: Activity, waiting: tuple[list[Invoice], int],
             invoices: list[Invoice], sums: Buckets, message_id: str) -> dict[str, Any]:
    approvals = Approvals(store)
    pending, pending_total = waiting

    def link(doc_id: int, action: str) -> str:
        token = approvals.issue(doc_id, approver, action, ttl=settings.token_ttl,
                                request_message_id=message_id)
        return f"{settings.public_url.rstrip('/')}/a/{token}"

    reply_to = None
    if settings.domain and any(inv.side for inv in invoices):
        token = approvals.issue_for_folder(folder.id, approver, ttl=settings.token_ttl,
                                           request_message_id=message_id)
        reply_to = reply_address(folder.vat, token, settings.domain)

    pending_items = [dict(supplier=inv.party or "—", number=inv.number,
                          total_gross=inv.total_gross, currency=inv.currency,
                          due_date=inv.due_date, url=link(inv.id, "approve"),
                          reject_url=link(inv.id, "reject")) for inv in pending]
    to_pay = sorted((inv for inv in invoices if inv.side == "purchase"),
                    key=lambda inv: (inv.due is None, inv.due or date.min, inv.id))
    pay_items = [dict(supplier=inv.party or "—", number=inv.number, amount=inv.amount,
                      currency=inv.currency, due_date=inv.due_date,
                      overdue=inv.due is not None and inv.due < sums.today,
                      url=link(inv.id, "paid")) for inv in to_pay[:MAX_LINKS]]
    main, *others = sums.currencies()
    return dict(
        folder_name=folder.name, since=since, currency=main,
        pending=pending_items, pending_total=pending_total,
        received_count=moved.received, archived_count=moved.archived,
        blocked_count=moved.blocked,
        purchase=sums.get("purchase", main), sales=sums.get("sales", main),
        other_currencies=[dict(currency=c, purchase=sums.get("purchase", c),
                               sales=sums.get("sales", c)) for c in others],
        to_pay=pay_items, to_pay_total=len(to_pay), dashboard_url=None,
        reply_address=reply_to,
        paid_example=next((inv.number for inv in to_pay if inv.number), None),
    )
