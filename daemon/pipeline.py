"""The pipeline: one visible, ordered sequence of named stages run on one delivery.

Job: turn one received message (or imported file) into documents, in memory. Each stage is
``(name, function)``; a function gets the Work and returns an outcome (one for all items, or
one per item). The runner times every stage and appends (stage, outcome, ms) to each
document's trace. Nothing here writes to the database: the worker commits the Work's results
in one transaction, which is what makes a re-run after a crash harmless.

The reading stages (ocr, recognize, enrich) live in daemon/reading.py.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from daemon import faults
from daemon.auth import AuthSettings, AuthVerdict, authenticate_delivery
from daemon.einvoice import InvalidInvoice, InvoiceData, read_invoice_xml, read_pdf_invoice
from daemon.mailparse import InvoiceFile, MailRejected, ParsedMail, parse_file, parse_mail
from daemon.reading import ReadingSettings, drop_scratch, stage_enrich, stage_ocr, stage_recognize
from rules import STATE_AFTER, Facts, evaluate
from storage.lookups import DuplicateMatch, find_duplicate, supplier_facts
from storage.policy import Policy
from storage.queue import Job
from storage.records import Folder
from storage.store import Store


class PermanentError(Exception):
    """This message can never be processed: quarantine it with this readable reason."""


REQUIRED_FIELDS = ("number", "issue_date", "currency", "total_gross")


@dataclass
class Item:
    """One future document."""

    part: int
    file: InvoiceFile | None
    filename: str = ""
    media_type: str = ""
    original_sha256: str = ""
    source: str = ""
    state: str = "received"
    fields: dict[str, Any] = field(default_factory=dict)
    holds: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str]] = field(default_factory=list)
    duplicate: DuplicateMatch | None = None
    iban_changed: bool = False
    code: str | None = None


@dataclass
class Work:
    """One delivery on its way through the stages. ``store`` is for reading only: the
    worker commits everything at the end, in one transaction."""

    job: Job
    folder: Folder
    raw: bytes
    store: Store
    auth_settings: AuthSettings
    now: datetime
    reading: ReadingSettings = field(default_factory=ReadingSettings)
    parsed: ParsedMail | None = None
    verdict: AuthVerdict | None = None
    items: list[Item] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    shared_policy: Policy | None = None  # the batch's policy reads (daemon/worker.py)

    @property
    def imported(self) -> bool:
        return self.job.message.protocol == "import"

    @functools.cached_property
    def policy(self) -> Policy:
        return self.shared_policy or Policy(self.store)

    @functools.cached_property
    def settings(self) -> dict[str, Any]:
        """The folder's policy settings, read once per delivery."""
        return self.policy.folder_settings(self.folder.id)

    @functools.cached_property
    def approved_senders(self) -> frozenset[str]:
        return self.policy.approved_senders(self.folder.id)


Outcome = str | dict[int, str]
Stage = tuple[str, Callable[[Work], Outcome]]


def stage_parse(work: Work) -> Outcome:
    msg = work.job.message
    try:
        if msg.protocol == "import":
            parsed = parse_file(work.raw, msg.filename)
        else:
            parsed = parse_mail(work.raw)
    except MailRejected as exc:
        raise PermanentError(f"{exc.reason}: {exc}") from exc
    work.parsed = parsed
    work.items = [Item(part=n, file=f) for n, f in enumerate(parsed.invoices)]
    if not work.items:
        work.items = [Item(part=0, file=None, source="none")]
        return "no-invoice"
    return f"{len(work.items)} invoice file(s)"


def stage_authenticate(work: Work) -> Outcome:
    if work.imported:
        return "not applicable (imported by the company)"
    work.verdict = v = authenticate_delivery(  # "internal": daemon/sales.py, see auth.py
        work.raw, work.auth_settings, protocol=work.job.message.protocol,
        envelope_from=work.job.message.mail_from)
    domain = f" d={v.aligned_domain}" if v.aligned_domain else ""
    return f"{v.result} ({v.method or 'no method'}{domain})"


def stage_attachments(work: Work) -> Outcome:
    out: dict[int, str] = {}
    for item in work.items:
        if item.file is None:
            out[item.part] = "none"
            continue
        main = item.file.main
        item.filename, item.media_type = main.filename, main.media_type
        item.original_sha256 = main.sha256
        work.blobs[main.sha256] = main.data
        note = f"{main.kind} {len(main.data) // 1024} KB"
        if item.file.companion_xml is not None:
            xml = item.file.companion_xml
            work.blobs[xml.sha256] = xml.data
            item.extra["companion_xml_sha256"] = xml.sha256
            note += f" + {xml.kind} xml"
        out[item.part] = note
    return out


def _apply_invoice(item: Item, data: InvoiceData) -> None:
    for name in ("number", "issue_date", "due_date", "seller_name", "seller_vat",
                 "seller_siren", "seller_iban", "buyer_name", "buyer_vat", "currency",
                 "total_net", "total_tax", "total_gross", "amount_due", "payment_reference"):
        item.fields[name] = getattr(data, name)
    item.fields["vat_breakdown"] = [
        {"rate": v.rate, "category": v.category,
         "base": _dec(v.base), "tax": _dec(v.tax)} for v in data.vat_breakdown]
    item.extra.update(syntax=data.syntax, profile=data.profile, guideline=data.guideline,
                      xsd_valid=data.xsd_valid, xsd_error=data.xsd_error,
                      type_code=data.type_code, xml_sha256=data.xml_sha256)
    item.fields["confidence"] = {k: 1.0 for k, v in item.fields.items()
                                 if v not in (None, [], {}) and k != "vat_breakdown"}


def _dec(value: Decimal | None) -> str | None:
    return str(value) if value is not None else None


def stage_facturx(work: Work) -> Outcome:
    out: dict[int, str] = {}
    for item in work.items:
        if item.file is None:
            out[item.part] = "none"
            continue
        main, companion = item.file.main, item.file.companion_xml
        try:
            xml: bytes | None = None
            origin = ""
            container: tuple[str, ...] = ()
            if main.kind == "pdf":
                found = read_pdf_invoice(main.data)
                if found is not None:
                    xml, origin, container = found.xml, "facturx", found.container_problems
            elif main.kind in ("cii", "ubl"):
                xml, origin = main.data, main.kind
            if xml is None and companion is not None:
                xml, origin = companion.data, companion.kind
            if xml is None:
                out[item.part] = "no embedded xml"
                continue
            data = read_invoice_xml(xml)
        except InvalidInvoice as exc:
            item.holds.append(f"invalid-xml: {exc}")
            out[item.part] = f"invalid: {exc.reason}"
            continue
        item.source = origin
        _apply_invoice(item, data)
        # Recorded and shown, not holds: the values were read and are checked on their own.
        notes = [f"xsd-invalid: {data.xsd_error[:300]}"] if data.xsd_valid is False else []
        notes += [f"not-conformant: {problem}" for problem in container]
        if notes:
            item.extra["notes"] = notes
        out[item.part] = f"{data.syntax} {data.profile}, xsd " + (
            "valid" if data.xsd_valid else "invalid" if data.xsd_valid is False else "n/a") + (
            f"; container: {len(container)} problem(s)" if container else "")
    return out


def stage_dedupe(work: Work) -> Outcome:
    """Duplicates in layers, and what earlier documents say about the supplier's IBAN."""
    out: dict[int, str] = {}
    for item in work.items:
        if item.file is None:
            out[item.part] = "none"
            continue
        f = item.fields
        item.duplicate = find_duplicate(
            work.folder.id, delivery_id=work.job.delivery.id,
            message_sha=work.job.message.sha256, attachment_sha=item.original_sha256,
            xml_sha=str(item.extra.get("xml_sha256") or ""), seller_vat=f.get("seller_vat"),
            seller_siren=f.get("seller_siren"), number=f.get("number"),
            issue_date=f.get("issue_date"), total_gross=_dec(f.get("total_gross")))
        known = supplier_facts(work.folder.id, f.get("seller_vat"), f.get("seller_siren"),
                               work.job.delivery.id)
        iban = f.get("seller_iban")
        item.iban_changed = bool(iban and known.iban and iban != known.iban)
        if item.iban_changed:
            item.extra["known_iban"] = known.iban
        notes = [f"{item.duplicate.kind} duplicate of document {item.duplicate.document_id}"
                 if item.duplicate else "no duplicate"]
        if item.iban_changed:
            notes.append(f"iban-changed (known {known.iban}, now {iban})")
        out[item.part] = "; ".join(notes)
    return out


def _facts(work: Work, item: Item) -> Facts:
    settings = work.settings
    f = item.fields
    partner = work.policy.partner_for_document(work.folder.id, f.get("seller_vat"),
                                               f.get("seller_siren"))
    v = work.verdict
    dup = item.duplicate
    gross = f.get("total_gross")
    return Facts(
        direction=work.job.delivery.direction, mode=work.folder.mode, imported=work.imported,
        has_invoice=item.file is not None,
        required_fields_missing=tuple(k for k in REQUIRED_FIELDS if f.get(k) is None),
        totals_reconcile=_reconcile(f),
        auth_result=v.result if v else "none",
        from_address=v.from_address if v else None,
        aligned_domain=v.aligned_domain if v else None,
        approved_senders=work.approved_senders,
        auto_accept_approved_senders=settings["auto_accept_approved_senders"],
        supplier_trusted=bool(partner and partner.trusted),
        supplier_domains=frozenset(partner.sending_domains if partner else ()),
        identify_duplicates=settings["identify_duplicates"],
        block_duplicates=settings["block_duplicates"],
        duplicate_kind=dup.kind if dup else "none", duplicate_of=dup.document_id if dup else None,
        iban_changed=item.iban_changed, amount_limit=settings["amount_limit"],
        total_gross=Decimal(str(gross)) if gross is not None else None,
        xml_text_mismatch=bool(item.extra.get("xml_text_mismatch")),
        ocr_incomplete=bool(item.extra.get("ocr_incomplete")),
        stage_holds=tuple(item.holds), now=work.now)


def _reconcile(f: dict[str, Any]) -> bool | None:
    net, tax, gross = f.get("total_net"), f.get("total_tax"), f.get("total_gross")
    if net is None or tax is None or gross is None:
        return None
    return abs(Decimal(str(net)) + Decimal(str(tax)) - Decimal(str(gross))) <= Decimal("0.01")


def stage_decide(work: Work) -> Outcome:
    out: dict[int, str] = {}
    for item in work.items:
        decision = evaluate(_facts(work, item))
        item.state = STATE_AFTER[decision.action]
        item.reasons = list(decision.reasons)
        item.code = decision.code
        item.extra["flags"] = list(decision.flags)
        item.extra["trail"] = [f"{'+' if h.matched else '-'} {h.reason}" for h in decision.trail]
        if item.duplicate and work.settings["identify_duplicates"]:
            item.fields["duplicate_of"] = item.duplicate.document_id
        out[item.part] = decision.action + (f" ({decision.code})" if decision.code else "")
    return out


def stage_dispose(work: Work) -> Outcome:
    out: dict[int, str] = {}
    for item in work.items:
        if item.state == "archived":
            item.events.append(("archived", f"original kept, sha256 {item.original_sha256}"))
        elif item.state == "pending_approval":
            item.events.append(("held", "; ".join(item.reasons)))
        elif item.state == "no_invoice":
            item.events.append(("no-invoice", "recorded; the message is kept"))
        elif item.state == "duplicate" and item.duplicate is not None:
            item.events.append(("blocked-duplicate", f"{item.code}: {item.duplicate.kind} "
                                f"duplicate of document {item.duplicate.document_id}"))
        else:
            item.events.append((item.state, "; ".join(item.reasons)))
        out[item.part] = item.state
    return out


# Reading: pure and possibly slow (DNS, OCR, schematron); runs before any transaction.
READ_STAGES: tuple[Stage, ...] = (
    ("parse", stage_parse),
    ("authenticate", stage_authenticate),
    ("attachments", stage_attachments),
    ("facturx", stage_facturx),
    ("ocr", stage_ocr),
    ("recognize", stage_recognize),
    ("enrich", stage_enrich),
)
# Deciding: fast, reads the database; the worker runs these inside the transaction that
# commits the results, so a duplicate processed just before in the same batch is seen.
DECIDE_STAGES: tuple[Stage, ...] = (
    ("dedupe", stage_dedupe),
    ("decide", stage_decide),
    ("dispose", stage_dispose),
)
STAGES: tuple[Stage, ...] = READ_STAGES + DECIDE_STAGES


def run_stages(work: Work, stages: tuple[Stage, ...]) -> None:
    """Run ``stages`` in order, appending (stage, outcome, ms) to every item's trace."""
    for name, run in stages:
        faults.hit(f"stage.{name}")
        started = time.perf_counter()
        outcome = run(work)
        ms = round((time.perf_counter() - started) * 1000, 1)
        for item in work.items:
            text = outcome if isinstance(outcome, str) else outcome.get(item.part, "")
            item.trace.append({"stage": name, "outcome": text, "ms": ms})
    if stages and stages[-1] is STAGES[-1]:
        for item in work.items:
            drop_scratch(item)


def run_pipeline(work: Work) -> None:
    """Every stage, in order (the worker runs READ_STAGES and DECIDE_STAGES separately)."""
    run_stages(work, STAGES)
