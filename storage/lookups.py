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

from storage import sql

ACCEPTED_STATES = ("accepted", "archived", "paid", "sent")


@dataclass(frozen=True)
class DuplicateMatch:
    kind: str  # message | attachment | xml | business | near
    document_id: int
    detail: str


_EXACT = (("message", "same message received before"),
          ("attachment", "same file received before"),
          ("xml", "same embedded invoice XML received before"))


@dataclass(frozen=True)
class SupplierFacts:
    name: str | None
    iban: str | None
    documents: int


def _seller(vat: str | None, siren: str | None) -> tuple[str, list[str]] | None:
    """The SQL condition (and its values) that names a seller by VAT number or SIREN."""
    conds = [(f'"{column}" = ?', value) for column, value in
             (("seller_vat", vat), ("seller_siren", siren)) if value]
    if not conds:
        return None
    return "(" + " OR ".join(c for c, _ in conds) + ")", [v for _, v in conds]


# Every look-up reads the folder's other documents (``document`` as ``d``); the exact layers
# go in one statement (each branch uses its own index), strongest first.
_BASE = 'd."folder_id" = ? AND d."delivery_id" != ? AND d."state" != \'no_invoice\''
_EXACT_SQL = {
    "message": 'SELECT d."id", 0 AS "layer" FROM "document" d JOIN "delivery" dl ON '
               f'd."delivery_id" = dl."id" JOIN "message" m ON dl."message_id" = m."id" WHERE '
               f'{_BASE} AND m."sha256" = ?',
    "attachment": f'SELECT d."id", 1 FROM "document" d WHERE {_BASE} AND d."original_sha256" = ?',
    "xml": f'SELECT d."id", 2 FROM "document" d WHERE {_BASE} AND d."xml_sha256" = ?',
}


def find_duplicate(folder_id: int, *, delivery_id: int, message_sha: str,
                   attachment_sha: str, xml_sha: str, seller_vat: str | None,
                   seller_siren: str | None, number: str | None, issue_date: str | None,
                   total_gross: str | None) -> DuplicateMatch | None:
    # Hand-written SQL: this runs for every invoice (storage/sql.py says why).
    branches, params = [], []
    for kind, sha in (("message", message_sha), ("attachment", attachment_sha),
                      ("xml", xml_sha)):
        if sha:
            branches.append(_EXACT_SQL[kind])
            params += [folder_id, delivery_id, sha]
    row = sql.execute(" UNION ALL ".join(branches) + " ORDER BY 2, 1 LIMIT 1",
                      params).fetchone()
    if row:
        kind, detail = _EXACT[int(row[1])]
        return DuplicateMatch(kind, int(row[0]), detail)
    seller = _seller(seller_vat, seller_siren)
    if seller is None or not number:
        return None
    same = sql.execute(f'SELECT d."id", d."issue_date", d."total_gross" FROM "document" d '
                       f'WHERE {_BASE} AND {seller[0]} AND d."number" = ? ORDER BY d."id"',
                       [folder_id, delivery_id, *seller[1], number]).fetchall()
    year = (issue_date or "")[:4]
    for other_id, other_date, other_total in same:
        if other_date == issue_date and other_total == total_gross:
            return DuplicateMatch("business", int(other_id),
                                  f"same supplier, number {number}, date and total")
    for other_id, other_date, other_total in same:
        if year and (other_date or "")[:4] == year:
            return DuplicateMatch(
                "near", int(other_id),
                f"same supplier and number {number}, but date {other_date} / total "
                f"{other_total} differ")
    return None


def supplier_facts(folder_id: int, vat: str | None, siren: str | None,
                   exclude_delivery: int) -> SupplierFacts:
    """What earlier accepted documents of this supplier established (latest wins)."""
    seller = _seller(vat, siren)
    if seller is None:
        return SupplierFacts(None, None, 0)
    rows = sql.execute(
        f'SELECT "seller_name", "seller_iban" FROM "document" WHERE "folder_id" = ? AND '
        f'{seller[0]} AND "state" IN ({sql.marks(len(ACCEPTED_STATES))}) AND '
        f'"delivery_id" != ? ORDER BY "id" DESC LIMIT 50',
        [folder_id, *seller[1], *ACCEPTED_STATES, exclude_delivery]).fetchall()
    name = next((r[0] for r in rows if r[0]), None)
    iban = next((r[1] for r in rows if r[1]), None)
    return SupplierFacts(name, iban, len(rows))
