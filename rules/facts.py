"""Facts: everything the rules may know about one document, computed before they run.

Job: one frozen record per document, built by the daemon (stage decide) from what the
pipeline learned: direction, the folder's acceptance options, the sender authentication
verdict, the supplier's trust, the duplicate detection result, fraud signals, earlier holds.
Rules only read it. Time is a fact (``now``): no rule reads a clock.

May touch: nothing (pure data). Validates its closed vocabularies on construction, so a typo
in the daemon (``mode="automatique"``) fails loudly instead of silently missing every rule.

Limits: normalization is the builder's job. ``from_address``, ``approved_senders``,
``aligned_domain`` and ``supplier_domains`` arrive IDN-normalized (A-labels) and lowercased;
the rules still compare case-insensitively, nothing more. ``auth_result`` is the verdict of
daemon/auth.py *for the From domain* (DKIM aligned, or a trusted Authentication-Results with
our own authserv-id); the rules do not recompute alignment (no public suffix list here).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

PURCHASE = "purchase"
SALES = "sales"
DIRECTIONS = (PURCHASE, SALES)

MANUAL = "manual"
EXCEPT_TRUSTED = "except_trusted"
AUTOMATIC = "automatic"
MODES = (MANUAL, EXCEPT_TRUSTED, AUTOMATIC)

AUTH_PASS = "pass"  # noqa: S105 (a verdict, not a password)
AUTH_FAIL = "fail"
AUTH_NONE = "none"
AUTH_TEMPERROR = "temperror"
AUTH_RESULTS = (AUTH_PASS, AUTH_FAIL, AUTH_NONE, AUTH_TEMPERROR)

# Duplicate detection layers (daemon/dedupe.py computes which one matched first).
NOT_DUPLICATE = "none"
EXACT_DUPLICATES = ("message", "attachment", "xml", "business")  # same message/file/XML/key
NEAR_DUPLICATE = "near"  # same supplier and number, different amount or date
DUPLICATE_KINDS = (NOT_DUPLICATE, *EXACT_DUPLICATES, NEAR_DUPLICATE)


@dataclass(frozen=True)
class Facts:
    """What is known about one document when the decision is taken."""

    direction: str  # purchase | sales
    mode: str  # manual | except_trusted | automatic (the folder's acceptance mode)
    imported: bool  # the company put the file in itself (CLI import / upload)
    has_invoice: bool  # False: the message carries no invoice file at all
    required_fields_missing: tuple[str, ...]  # e.g. ("number",); empty when complete
    totals_reconcile: bool | None  # net + tax == gross (and breakdown); None = not checkable
    auth_result: str  # pass | fail | none | temperror, for the From domain
    from_address: str | None  # the single From address, normalized; None if 0 or several
    aligned_domain: str | None  # authenticated domain aligned with From (DKIM d= / AR)
    approved_senders: frozenset[str]  # the folder's approved sender addresses, normalized
    auto_accept_approved_senders: bool
    supplier_trusted: bool  # the partner matched by VAT/SIREN on the document is trusted
    supplier_domains: frozenset[str]  # authenticated sending domains recorded for it
    identify_duplicates: bool
    block_duplicates: bool
    duplicate_kind: str  # none | message | attachment | xml | business | near
    duplicate_of: int | None  # id of the earlier document, when one was found
    iban_changed: bool  # the document's IBAN differs from the one recorded for the supplier
    amount_limit: Decimal | None  # the folder's limit on total_gross; None = no limit
    total_gross: Decimal | None
    xml_text_mismatch: bool  # embedded XML and visible text disagree on the totals
    ocr_incomplete: bool  # OCR timed out or failed: the text was not fully read
    stage_holds: tuple[str, ...]  # readable holds raised by stages ("invalid-xml: ...")
    now: datetime  # time is a fact; no rule reads a clock

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("direction", self.direction, DIRECTIONS),
            ("mode", self.mode, MODES),
            ("auth_result", self.auth_result, AUTH_RESULTS),
            ("duplicate_kind", self.duplicate_kind, DUPLICATE_KINDS),
        ):
            if value not in allowed:
                raise ValueError(f"Facts.{name}={value!r}: expected one of {allowed}")
