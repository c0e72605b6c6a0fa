"""The public value types of field recognition.

Job: define what a caller passes in (``SupplierMemory``) and gets back (``Recognition``), the
field names, and the confidence threshold that separates "validated" from "please check".

What it may touch: nothing (plain frozen dataclasses).

Limits: ``Recognition.fields`` holds plain values (ISO date strings, ``Decimal`` amounts, a list
of dicts of decimal strings for the VAT breakdown) so it can be stored as JSON by the caller
after converting the Decimals.
"""

from __future__ import annotations

from dataclasses import dataclass

CONFIDENT = 0.9
"""A field at or above this confidence was validated (check digits, arithmetic, plausibility)."""

FIELDS = (
    "number", "issue_date", "due_date", "seller_name", "seller_vat", "seller_siren",
    "seller_iban", "seller_bic", "buyer_name", "buyer_vat", "currency", "total_net",
    "total_tax", "total_gross", "amount_due", "payment_reference", "vat_breakdown",
)
AMOUNT_FIELDS = ("total_net", "total_tax", "total_gross", "amount_due")
DATE_FIELDS = ("issue_date", "due_date")


@dataclass(frozen=True)
class SupplierMemory:
    """What earlier accepted documents of one supplier established."""

    vat: str | None
    siren: str | None
    name: str | None
    iban: str | None
    number_pattern: str | None = None  # a regex learnt from earlier invoice numbers


@dataclass(frozen=True)
class Recognition:
    """Fields read from an invoice's text, each with a confidence in 0..1.

    A confidence >= ``CONFIDENT`` means the value passed a validation (check digits, totals
    that reconcile, a plausible date with an unambiguous label); anything lower means "please
    check". ``problems`` are short codes such as ``totals-do-not-reconcile`` or
    ``iban-changed``.
    """

    fields: dict[str, object]
    confidence: dict[str, float]
    language: str
    problems: tuple[str, ...]

    def confident(self, name: str) -> bool:
        return self.confidence.get(name, 0.0) >= CONFIDENT
