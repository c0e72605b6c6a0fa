"""Reading stages for invoices without XML: ocr, recognize, enrich (and the XML/text check).

Job: give every document fields a person can trust, or say "please check". Text PDFs are read
from their text layer (never OCRed again); scans and photos go through OCR in a child
process (daemon/ocr.py); the text is read by daemon/recognize; a document whose fields were
recognized gets an enriched Factur-X copy (daemon/enrich.py) that is stored beside the
untouched original. For Factur-X PDFs the visible text is read too, and totals that disagree
with the embedded XML are flagged (``xml_text_mismatch``), a fraud hold in rules/.

Holds raised here (rules/ turns them into a decision): ``ocr-incomplete``,
``recognition-uncertain: <fields>`` when a required field is present but not validated.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from daemon.enrich import EnrichError, build_facturx_xml, enrich_pdf, validate_facturx_xml
from daemon.ocr import OcrIncomplete, OcrSettings, ocr_document, read_text_layer
from daemon.recognize import SupplierMemory, recognize, visible_total
from daemon.split import cut_pdf, find_ranges
from storage.lookups import supplier_facts

if TYPE_CHECKING:
    from daemon.pipeline import Item, Outcome, Work

REQUIRED = ("number", "issue_date", "currency", "total_gross")
RECOGNIZED = ("number", "issue_date", "due_date", "seller_name", "seller_vat", "seller_siren",
              "seller_iban", "buyer_name", "buyer_vat", "currency", "total_net", "total_tax",
              "total_gross", "amount_due", "payment_reference", "vat_breakdown")


@dataclass(frozen=True)
class ReadingSettings:
    ocr: OcrSettings = field(default_factory=OcrSettings)
    enrich: bool = True
    schematron_timeout: float = 30.0


def _text(item: Item) -> str:
    return str(item.extra.get("_text", ""))


def stage_ocr(work: Work) -> Outcome:
    out: dict[int, str] = {}
    for item in work.items:
        main = item.file.main if item.file else None
        if main is None or main.kind not in ("pdf", "image"):
            out[item.part] = "not-needed"
            continue
        if main.kind == "pdf":
            pages = read_text_layer(main.data, work.reading.ocr.max_pages)
            if pages:
                item.extra["_pages"] = [p.text for p in pages]
                item.extra["_text"] = "\n".join(p.text for p in pages)
                item.extra["text_source"] = "text-layer"
                out[item.part] = f"text layer ({len(pages)} page(s)), no OCR"
                continue
        if item.source:  # XML already read; an image-only PDF has no text to compare
            out[item.part] = "not-needed"
            continue
        try:
            result = ocr_document(main.data, main.kind, work.reading.ocr)
        except OcrIncomplete as exc:
            item.extra["ocr_incomplete"] = exc.reason
            item.holds.append(f"ocr-incomplete: {exc}")
            out[item.part] = f"incomplete: {exc.reason}"
            continue
        item.extra["_pages"] = [p.text for p in result.pages]
        item.extra["_text"] = "\n".join(p.text for p in result.pages)
        item.extra["text_source"] = "ocr"
        item.extra["_ocr_pdf"] = result.pdf
        out[item.part] = f"ocr {len(result.pages)} page(s) in {result.seconds:.1f}s"
    return out


def _recognize(work: Work, item: Item) -> Any:
    text = _text(item)
    rec = recognize(text, own_vat=work.folder.vat, today=work.now.date())
    vat, siren = rec.fields.get("seller_vat"), rec.fields.get("seller_siren")
    if vat or siren:
        known = supplier_facts(work.folder.id, _s(vat), _s(siren), work.job.delivery.id)
        if known.documents:
            memory = SupplierMemory(vat=_s(vat), siren=_s(siren), name=known.name,
                                    iban=known.iban)
            rec = recognize(text, memory=memory, own_vat=work.folder.vat,
                            today=work.now.date())
    return rec


def _s(value: object) -> str | None:
    return str(value) if value else None


def split_items(work: Work) -> dict[int, str]:
    """A PDF without XML holding several invoices becomes one item per invoice. The source
    file stays stored as received; each piece records the pages it came from."""
    from daemon.pipeline import Item

    notes: dict[int, str] = {}
    for item in list(work.items):
        pages = item.extra.get("_pages")
        main = item.file.main if item.file else None
        if item.source or main is None or main.kind != "pdf" or not pages or len(pages) < 2:
            continue
        ranges = find_ranges(list(pages), own_vat=work.folder.vat)
        if len(ranges) < 2:
            continue
        work.blobs[main.sha256] = main.data  # the source, byte-identical
        ocr_pdf = item.extra.get("_ocr_pdf")
        pieces = []
        for n, page_range in enumerate(ranges):
            target = item if n == 0 else Item(part=len(work.items), file=item.file,
                                              filename=item.filename,
                                              media_type=item.media_type,
                                              trace=list(item.trace))
            if n:
                work.items.append(target)
            data = cut_pdf(main.data, page_range)
            sha = hashlib.sha256(data).hexdigest()
            work.blobs[sha] = data
            target.original_sha256 = sha
            target.extra.update(split_from=main.sha256, pages=page_range.label(),
                                _pages=pages[page_range.first:page_range.last + 1])
            target.extra["_text"] = "\n".join(target.extra["_pages"])
            if ocr_pdf:
                target.extra["_ocr_pdf"] = cut_pdf(bytes(ocr_pdf), page_range)
            pieces.append(f"pages {page_range.label()}")
        notes[item.part] = f"split into {len(ranges)} invoices ({', '.join(pieces)})"
    return notes


def stage_recognize(work: Work) -> Outcome:
    out: dict[int, str] = split_items(work)
    for item in work.items:
        if not _text(item):
            out[item.part] = "no text" if item.file and not item.source else "not-needed"
            continue
        if item.source:  # Factur-X: compare what the XML says with what the page shows
            seen, validated, item.extra["language"] = visible_total(_text(item))
            said = item.fields.get("total_gross")
            if (validated and seen is not None and said is not None
                    and seen != Decimal(str(said))):
                item.extra["xml_text_mismatch"] = f"XML {said}, visible text {seen}"
                out[item.part] = f"xml/text mismatch on total ({said} vs {seen})"
            else:
                out[item.part] = "visible text agrees with the XML" if seen else "checked"
            continue
        rec = _recognize(work, item)
        item.extra["language"] = rec.language
        item.source = "ocr" if item.extra.get("text_source") == "ocr" else "text"
        for name in RECOGNIZED:
            item.fields[name] = _plain(rec.fields.get(name))
        item.fields["confidence"] = {k: round(v, 3) for k, v in rec.confidence.items()}
        if "iban-changed" in rec.problems:
            item.iban_changed = True
        if rec.problems:
            item.extra["problems"] = list(rec.problems)
        unsure = [k for k in REQUIRED if item.fields.get(k) is not None
                  and not rec.confident(k)]
        if unsure:
            item.holds.append(f"recognition-uncertain: please check {', '.join(unsure)}")
        confident = sum(1 for k in RECOGNIZED if rec.confident(k))
        note = (f"{rec.language}, {confident} confident field(s)"
                + (f"; {', '.join(rec.problems)}" if rec.problems else ""))
        out[item.part] = (f"{out[item.part]}; {note}" if item.part in out else note)
    return out


def _plain(value: object) -> Any:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, list):
        return [{k: str(v) if v is not None else None for k, v in line.items()}
                for line in value if isinstance(line, dict)]
    return value


def stage_enrich(work: Work) -> Outcome:
    out: dict[int, str] = {}
    for item in work.items:
        if item.source not in ("text", "ocr") or not work.reading.enrich:
            out[item.part] = "not-needed" if item.source else "nothing to enrich"
            continue
        try:
            xml, profile = build_facturx_xml(item.fields)
        except ValueError as exc:
            out[item.part] = f"skipped: {exc}"
            continue
        check = validate_facturx_xml(xml, profile,
                                     schematron_timeout=work.reading.schematron_timeout)
        item.extra["enriched_validation"] = {
            "profile": profile, "xsd_valid": check.xsd_valid, "xsd_error": check.xsd_error,
            "schematron_valid": check.schematron_valid,
            "schematron_errors": list(check.schematron_errors)[:20],
            "schematron_reason": check.schematron_reason}
        if not check.xsd_valid:
            out[item.part] = f"generated XML not XSD-valid: {check.xsd_error[:120]}"
            continue
        base = item.extra.get("_ocr_pdf") or (item.file.main.data if item.file else b"")
        try:
            enriched = enrich_pdf(bytes(base), xml, profile)
        except EnrichError as exc:
            out[item.part] = f"failed: {exc}"
            continue
        sha = hashlib.sha256(enriched.pdf).hexdigest()
        work.blobs[sha] = enriched.pdf
        item.extra["enriched_sha256"] = sha
        item.extra["enriched_pdfa_approved"] = enriched.check.approved
        schematron = ("schematron valid" if check.schematron_valid
                      else "schematron not run" if check.schematron_valid is None
                      else f"{len(check.schematron_errors)} schematron error(s)")
        out[item.part] = f"{profile} copy, xsd valid, {schematron}"
    return out


def drop_scratch(item: Item) -> None:
    """Large or private scratch values never reach the database."""
    for key in ("_text", "_pages", "_ocr_pdf"):
        item.extra.pop(key, None)
