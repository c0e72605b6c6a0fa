"""``recognize()``: every field of an invoice from its text, with confidences and problems.

Job: run the readers (labels, totals, parties, number/dates/reference/currency), apply the
supplier memory (a remembered VAT/SIREN confirms the seller; a valid IBAN other than the
remembered one is the problem ``iban-changed`` and is never replaced silently), and assemble
one ``Recognition``. A wrong total that looks right is the worst outcome, so every field stays
below the confidence threshold unless a validation backs it.

What it may touch: nothing (pure function of its arguments; ``today`` defaults to the clock).

Limits: see the readers' modules; this function adds no guessing of its own.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

from daemon.recognize import fields as readers
from daemon.recognize import ids
from daemon.recognize.lexicon import find_labels
from daemon.recognize.model import CONFIDENT, FIELDS, Recognition, SupplierMemory
from daemon.recognize.parties import find_parties
from daemon.recognize.text import make_doc
from daemon.recognize.totals import reconcile

MAX_CHARS = 250_000  # about 80 pages of text; the rest of a longer document is not read


def _rate_text(rate: Decimal) -> str:
    """Decimal("20.00") -> "20", Decimal("5.50") -> "5.5"."""
    return format(rate.normalize(), "f")


def recognize(text: str, *, memory: SupplierMemory | None = None, today: date | None = None,
              own_vat: str | None = None) -> Recognition:
    """Read an invoice's fields from its text (PDF text layer or OCR output)."""
    today = today or date.today()
    doc = make_doc(text[:MAX_CHARS])
    labels = find_labels(doc)
    lang = readers.language(doc)
    values: dict[str, object] = {}
    conf: dict[str, float] = {}
    problems: list[str] = []

    number, number_conf, number_at = readers.invoice_number(
        doc, labels, memory.number_pattern if memory else None)
    if number:
        values["number"], conf["number"] = number, number_conf
    else:
        problems.append("no-number-found")
    found_dates, date_conf = readers.dates(doc, labels, lang, today, number_at)
    values.update(found_dates)
    conf.update(date_conf)
    if "issue_date" not in values:
        problems.append("no-date-found")

    totals = reconcile(doc, labels)
    for name, value in (("total_net", totals.net), ("total_tax", totals.tax),
                        ("total_gross", totals.gross), ("amount_due", totals.due)):
        if value is not None:
            values[name] = value
            conf[name] = totals.confidence.get(name, 0.0)
    if totals.breakdown:
        values["vat_breakdown"] = [
            {"rate": _rate_text(r), "base": f"{b:.2f}", "tax": f"{t:.2f}"}
            for r, b, t in totals.breakdown]
        conf["vat_breakdown"] = totals.confidence.get("vat_breakdown", 0.0)
    problems.extend(totals.problems)

    parties = find_parties(doc, labels, own_vat)
    values.update(parties.fields)
    conf.update(parties.confidence)
    problems.extend(parties.problems)

    seller_id = parties.fields.get("seller_iban") or parties.fields.get("seller_vat")
    cur, cur_conf = readers.currency(doc, totals.currency, lang,
                                     seller_id[:2] if seller_id else None)
    if cur:
        values["currency"], conf["currency"] = cur, cur_conf
    ref, ref_conf = readers.payment_reference(doc, labels, number)
    if ref:
        values["payment_reference"], conf["payment_reference"] = ref, ref_conf

    if memory is not None:
        _apply_memory(memory, values, conf, problems)
    fields = {name: values[name] for name in FIELDS if name in values}
    confidence = {name: round(conf.get(name, 0.0), 3) for name in fields}
    return Recognition(fields, confidence, lang, tuple(dict.fromkeys(problems)))


def visible_total(text: str) -> tuple[Decimal | None, bool, str]:
    """(grand total, validated?, language) read from the text alone: the cross-check of a
    Factur-X PDF's visible page against its XML needs only the totals, not the parties,
    dates or supplier memory that ``recognize`` also reads."""
    doc = make_doc(text[:MAX_CHARS])
    totals = reconcile(doc, find_labels(doc))
    validated = totals.confidence.get("total_gross", 0.0) >= CONFIDENT
    return totals.gross, validated, readers.language(doc)


def _apply_memory(memory: SupplierMemory, values: dict[str, object], conf: dict[str, float],
                  problems: list[str]) -> None:
    vat = values.get("seller_vat")
    siren = values.get("seller_siren")
    mem_vat = ids.valid_vat(memory.vat) if memory.vat else None
    mem_siren = re.sub(r"\D", "", memory.siren or "")[:9] or None
    same = (mem_vat is not None and vat == mem_vat) or \
        (mem_siren is not None and siren == mem_siren)
    if (vat and mem_vat and vat != mem_vat) and not same:
        problems.append("seller-differs-from-memory")
    if same:
        if memory.name:
            values["seller_name"] = memory.name
            conf["seller_name"] = 0.95
        for key in ("seller_vat", "seller_siren"):
            if key in values:
                conf[key] = max(conf.get(key, 0.0), 0.97)
    mem_iban = ids.valid_iban(memory.iban) if memory.iban else None
    iban = values.get("seller_iban")
    if mem_iban and isinstance(iban, str):
        if iban != mem_iban:
            problems.append("iban-changed")
            conf["seller_iban"] = min(conf.get("seller_iban", 0.0), 0.3)
        elif same:
            conf["seller_iban"] = max(conf.get("seller_iban", 0.0), 0.99)
