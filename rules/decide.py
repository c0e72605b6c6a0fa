"""Compatibility: the first, small decide() API, now answered by the rules engine.

Job: keep ``daemon/pipeline.py`` working until stage_decide builds ``rules.Facts`` and calls
``rules.evaluate`` itself. ``LegacyFacts`` (exported as ``Facts`` here) is mapped onto the
full Facts with every fact it does not know set to its neutral value (not authenticated, no
approved sender, no trusted supplier, no duplicate detection, no fraud signal).

May touch: nothing (pure).

Limits: deprecated; delete it once the pipeline uses ``rules.evaluate``. The legacy facts
carry no time, so ``now`` is a fixed placeholder (no rule reads it today).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from rules.engine import evaluate
from rules.facts import AUTH_NONE, NOT_DUPLICATE
from rules.facts import Facts as FullFacts
from rules.model import ACCEPT, BLOCK, DRAFT, HOLD, NO_INVOICE, Decision

__all__ = ["ACCEPT", "BLOCK", "DRAFT", "HOLD", "NO_INVOICE", "Decision", "Facts",
           "LegacyFacts", "decide"]

_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class LegacyFacts:
    direction: str  # purchase | sales
    mode: str  # manual | except_trusted | automatic
    imported: bool  # the company put the file in itself (CLI import)
    has_invoice: bool
    fields_complete: bool  # number, issue date, currency and gross total were read
    holds: tuple[str, ...] = ()  # reasons raised by earlier stages (e.g. invalid-xml)


Facts = LegacyFacts


def decide(facts: LegacyFacts) -> Decision:
    missing = () if facts.fields_complete else ("number, issue date, currency or gross total",)
    return evaluate(FullFacts(
        direction=facts.direction, mode=facts.mode, imported=facts.imported,
        has_invoice=facts.has_invoice, required_fields_missing=missing,
        totals_reconcile=None, auth_result=AUTH_NONE, from_address=None,
        aligned_domain=None, approved_senders=frozenset(), auto_accept_approved_senders=False,
        supplier_trusted=False, supplier_domains=frozenset(), identify_duplicates=False,
        block_duplicates=False, duplicate_kind=NOT_DUPLICATE, duplicate_of=None,
        iban_changed=False, amount_limit=None, total_gross=None, xml_text_mismatch=False,
        ocr_incomplete=False, stage_holds=facts.holds, now=_NO_TIME))
