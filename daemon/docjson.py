"""The JSON form of a document, shared by the CLI and the status page.

Keys are a published interface: id, folder, direction, state, source, number, issue_date,
due_date, seller_name, seller_vat, seller_siren, seller_iban, buyer_name, buyer_vat,
currency, total_net, total_tax, total_gross, amount_due, vat_breakdown, confidence,
duplicate_of, reasons, schematron, notes, trace. Amounts are decimal strings, dates ISO 8601;
``schematron`` is "valid", "invalid", "not run: ..." or null (not checked yet).
"""

from __future__ import annotations

from typing import Any

from storage.records import Document

KEYS = ("id", "folder", "direction", "state", "source", "number", "issue_date", "due_date",
        "seller_name", "seller_vat", "seller_siren", "seller_iban", "buyer_name", "buyer_vat",
        "currency", "total_net", "total_tax", "total_gross", "amount_due", "vat_breakdown",
        "confidence", "duplicate_of", "reasons", "schematron", "notes", "trace")
MAX_NOTED_ERRORS = 10  # Schematron errors written out in ``notes``


def document_json(doc: Document, folders: dict[int, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in KEYS:
        if key == "folder":
            out[key] = folders.get(doc.folder_id, str(doc.folder_id))
            continue
        if key == "notes":  # what was found but decides nothing (XSD, container, Schematron)
            out[key] = notes(doc)
            continue
        if key == "schematron":  # None until the scheduler has checked it
            out[key] = doc.conformance.get("schematron") if doc.conformance else None
            continue
        value = getattr(doc, key)
        if key in ("total_net", "total_tax", "total_gross", "amount_due") and value is not None:
            value = str(value)
        out[key] = value
    return out


def notes(doc: Document) -> list[str]:
    """Found on the document but deciding nothing: the worker's notes (``xsd-invalid: ...``,
    ``not-conformant: ...`` about the PDF container), then the Schematron errors."""
    out = list(doc.extra.get("notes") or [])
    errors = list((doc.conformance or {}).get("errors") or [])
    out += [f"not-conformant: Schematron: {e}" for e in errors[:MAX_NOTED_ERRORS]]
    total = int((doc.conformance or {}).get("error_count") or len(errors))
    if total > MAX_NOTED_ERRORS:
        out.append(f"not-conformant: Schematron: {total - MAX_NOTED_ERRORS} more")
    return out
