"""The JSON form of a document, shared by the CLI and (later) the web pages.

Keys are a published interface: id, folder, direction, state, source, number, issue_date,
due_date, seller_name, seller_vat, seller_siren, seller_iban, buyer_name, buyer_vat,
currency, total_net, total_tax, total_gross, amount_due, vat_breakdown, confidence,
duplicate_of, reasons, trace. Amounts are decimal strings, dates ISO 8601.
"""

from __future__ import annotations

from typing import Any

from storage.records import Document

KEYS = ("id", "folder", "direction", "state", "source", "number", "issue_date", "due_date",
        "seller_name", "seller_vat", "seller_siren", "seller_iban", "buyer_name", "buyer_vat",
        "currency", "total_net", "total_tax", "total_gross", "amount_due", "vat_breakdown",
        "confidence", "duplicate_of", "reasons", "notes", "trace")


def document_json(doc: Document, folders: dict[int, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in KEYS:
        if key == "folder":
            out[key] = folders.get(doc.folder_id, str(doc.folder_id))
            continue
        if key == "notes":  # what was found but decides nothing (XSD, PDF container)
            out[key] = list(doc.extra.get("notes") or [])
            continue
        value = getattr(doc, key)
        if key in ("total_net", "total_tax", "total_gross", "amount_due") and value is not None:
            value = str(value)
        out[key] = value
    return out
