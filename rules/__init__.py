"""Pure acceptance policy: facts in, exactly one decision out, every reason recorded.

Job: the public API of the rules layer. Build a ``Facts`` per document, call
``evaluate(facts)``; the ``Decision`` says what to do (accept | hold | block | no_invoice |
draft), the reason code, the readable reasons, the flags and the full trail.

May touch: nothing outside rules/. No I/O, no clock (time is a fact), no imports from
daemon/ or storage/ (tests/test_install.py enforces it).

Limits: see each module (facts, model, builtin, chains, engine, lifecycle).
"""

from __future__ import annotations

from rules.builtin import RULES
from rules.chains import DEFAULT_CHAINS
from rules.engine import ChainError, check_chains, evaluate
from rules.facts import Facts
from rules.lifecycle import LIFECYCLE, REASONS, STATE_AFTER, STATUSES, lifecycle_of
from rules.model import (
    ACCEPT,
    ANY,
    BLOCK,
    DEFER,
    DRAFT,
    FLAG,
    HOLD,
    JUMP,
    NO_INVOICE,
    TERMINAL,
    Chain,
    Decision,
    Hit,
    Link,
    Rule,
)

__all__ = [
    "ACCEPT", "ANY", "BLOCK", "DEFAULT_CHAINS", "DEFER", "DRAFT", "FLAG", "HOLD", "JUMP",
    "LIFECYCLE", "NO_INVOICE", "REASONS", "RULES", "STATE_AFTER", "STATUSES", "TERMINAL",
    "Chain", "ChainError", "Decision", "Facts", "Hit", "Link", "Rule", "check_chains",
    "evaluate", "lifecycle_of",
]
