"""Read-only look-ups the pipeline needs: duplicates in layers, and supplier memory.

Job: answer "have we seen this before?" and "what do we know about this supplier?" from
earlier documents of the same folder. Read-only; called from the worker thread.

Duplicate layers, strongest first: same raw message, same attachment bytes, same embedded
XML, same business key (seller VAT/SIREN + number + issue date + gross), then *near*
duplicates (same seller and number in the same year, different amount or date). Numbering
that restarts each year is not a duplicate: the year of the issue date is part of the key.

Known limit: two copies processed at the same instant by two workers may both see no
original (each commits after its own look-up); the transport-level check at intake covers
the common case of the same bytes delivered twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage import models

ACCEPTED_STATES = ("accepted", "archived", "paid", "sent")


@dataclass(frozen=True)
class DuplicateMatch:
    kind: str  # message | attachment | xml | business | near
    document_id: int
    detail: str


@dataclass(frozen=True)
class SupplierFacts:
    name: str | None
    iban: str | None
    documents: int


def _seller(vat: str | None, siren: str | None) -> Any:
    D = models.Document
    conds = [c for c in ((D.seller_vat == vat) if vat else None,
                         (D.seller_siren == siren) if siren else None) if c is not None]
    if not conds:
        return None
    return conds[0] if len(conds) == 1 else conds[0] | conds[1]


def find_duplicate(folder_id: int, *, delivery_id: int, message_sha: str,
                   attachment_sha: str, xml_sha: str, seller_vat: str | None,
                   seller_siren: str | None, number: str | None, issue_date: str | None,
                   total_gross: str | None) -> DuplicateMatch | None:
    D, Dl, M = models.Document, models.Delivery, models.Message
    base = ((D.folder == folder_id) & (D.delivery != delivery_id)
            & (D.state != "no_invoice"))
    row = (D.select(D.id).join(Dl).join(M)
           .where(base & (M.sha256 == message_sha)).order_by(D.id).first())
    if row:
        return DuplicateMatch("message", row.id, "same message received before")
    if attachment_sha:
        row = D.select(D.id).where(base & (D.original_sha256 == attachment_sha)).order_by(
            D.id).first()
        if row:
            return DuplicateMatch("attachment", row.id, "same file received before")
    if xml_sha:
        row = D.select(D.id).where(base & (D.xml_sha256 == xml_sha)).order_by(D.id).first()
        if row:
            return DuplicateMatch("xml", row.id, "same embedded invoice XML received before")
    seller = _seller(seller_vat, seller_siren)
    if seller is None or not number:
        return None
    same = D.select(D.id, D.issue_date, D.total_gross).where(
        base & seller & (D.number == number)).order_by(D.id)
    year = (issue_date or "")[:4]
    for other in same:
        if other.issue_date == issue_date and other.total_gross == total_gross:
            return DuplicateMatch("business", other.id,
                                  f"same supplier, number {number}, date and total")
    for other in same:
        if year and (other.issue_date or "")[:4] == year:
            return DuplicateMatch(
                "near", other.id,
                f"same supplier and number {number}, but date {other.issue_date} / total "
                f"{other.total_gross} differ")
    return None


def supplier_facts(folder_id: int, vat: str | None, siren: str | None,
                   exclude_delivery: int) -> SupplierFacts:
    """What earlier accepted documents of this supplier established (latest wins)."""
    D = models.Document
    seller = _seller(vat, siren)
    if seller is None:
        return SupplierFacts(None, None, 0)
    q = (D.select(D.seller_name, D.seller_iban)
         .where((D.folder == folder_id) & seller & D.state.in_(ACCEPTED_STATES)
                & (D.delivery != exclude_delivery))
         .order_by(D.id.desc()))
    rows = list(q.limit(50))
    name = next((r.seller_name for r in rows if r.seller_name), None)
    iban = next((r.seller_iban for r in rows if r.seller_iban), None)
    return SupplierFacts(name, iban, len(rows))
