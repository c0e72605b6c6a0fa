"""The vocabulary of the rules engine: actions, Rule, Link, Chain, Hit, Decision.

Job: name the pieces so that builtin.py (the rules), chains.py (the chains as data) and
engine.py (the evaluator) can share them without importing one another.

May touch: nothing (pure data and types).

Limits: a chain is a plain tuple of ``(rule name, action, target)`` links, as in Mailman's
``chains/builtin.py``; links refer to rules by name, so a typo is caught by
``engine.check_chains`` (run by the tests), not by the type checker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rules.facts import Facts

# Terminal actions: the first matching link with one of these ends the evaluation.
ACCEPT = "accept"  # archived (and shared with the accountant)
HOLD = "hold"  # pending approval: a person decides, the reasons say why
BLOCK = "block"  # refused without a person (duplicate): kept, not archived
NO_INVOICE = "no_invoice"  # nothing to decide: the message is recorded
DRAFT = "draft"  # the company's own sales invoice: waits to be sent
TERMINAL = (ACCEPT, HOLD, BLOCK, NO_INVOICE, DRAFT)

# Non-terminal actions.
FLAG = "flag"  # record the hit (reason and flags) and continue
DEFER = "defer"  # record the hit as asking for a person and continue (see ANY)
JUMP = "jump"  # continue in the target chain (no return, as Mailman's jump)
ACTIONS = (*TERMINAL, FLAG, DEFER, JUMP)

# The one rule the engine answers itself (Mailman's "any"): did an earlier DEFER link match
# during this evaluation? It lets a chain run every check, so that a person sees all the
# reasons at once, and then hold once.
ANY = "any"


@dataclass(frozen=True)
class Rule:
    """One small pure predicate with a readable explanation.

    ``explain(facts, matched)`` returns the human text for a hit or a miss (the engine
    prefixes the rule name). ``flags(facts)`` gives the marks recorded on the document
    when the rule matches (e.g. ``duplicate-of:12``). ``code`` is the lifecycle reason code
    that goes with a match (rules/lifecycle.py), e.g. DOUBLON.
    """

    name: str
    check: Callable[[Facts], bool]
    explain: Callable[[Facts, bool], str]
    flags: Callable[[Facts], tuple[str, ...]] | None = None
    code: str | None = None


Link = tuple[str, str, str | None]  # (rule name, action, target chain for JUMP else None)
Chain = tuple[Link, ...]


@dataclass(frozen=True)
class Hit:
    """One evaluated link: which rule, whether it matched, the link's action, why."""

    rule: str
    matched: bool
    action: str
    reason: str
    chain: str = ""


@dataclass(frozen=True)
class Decision:
    """Exactly one per document.

    ``action`` is terminal (accept | hold | block | no_invoice | draft). ``code`` is the
    lifecycle reason code that fits: the refusal reason for a block (DOUBLON), for a hold
    the reason a person would cite to refuse or suspend when a check gives one (e.g.
    COORD_BANC_ERR for a changed IBAN), else None. ``reasons`` are the readable texts of
    the rules that matched on the way (flags, deferred checks, the deciding rule), in
    evaluation order. ``flags`` are marks to record on the document. ``trail`` holds every
    link evaluated, matched or not, for display.
    """

    action: str
    code: str | None
    reasons: tuple[str, ...]
    flags: tuple[str, ...]
    trail: tuple[Hit, ...]
