"""Acceptance decision for one document: a pure function of facts (no I/O, no clock).

Job: turn what the pipeline learned into exactly one decision with readable reasons. This is
the first, small rule set (acceptance mode only); the rules issue replaces it with chains of
named rules over a richer facts object, keeping this signature's spirit: facts in, one
decision out, every reason recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

ACCEPT = "accept"
HOLD = "hold"
NO_INVOICE = "no_invoice"
DRAFT = "draft"


@dataclass(frozen=True)
class Facts:
    direction: str  # purchase | sales
    mode: str  # manual | except_trusted | automatic
    imported: bool  # the company put the file in itself (CLI import)
    has_invoice: bool
    fields_complete: bool  # number, issue date, currency and gross total were read
    holds: tuple[str, ...] = ()  # reasons raised by earlier stages (e.g. invalid-xml)


@dataclass(frozen=True)
class Decision:
    action: str
    reasons: tuple[str, ...]


def decide(facts: Facts) -> Decision:
    if not facts.has_invoice:
        return Decision(NO_INVOICE, ("no-invoice: the message carries no PDF, XML or image "
                                     "invoice",))
    if facts.direction == "sales":
        return Decision(DRAFT, ("sales invoice: waits to be sent",))
    holds = list(facts.holds)
    if not facts.fields_complete:
        holds.append("recognition-incomplete: number, date, currency or total missing")
    if holds:
        return Decision(HOLD, tuple(holds))
    if facts.imported:
        return Decision(ACCEPT, ("imported by the company",))
    if facts.mode == "automatic":
        return Decision(ACCEPT, ("mode automatic",))
    return Decision(HOLD, (f"mode {facts.mode}: a person approves each invoice",))
