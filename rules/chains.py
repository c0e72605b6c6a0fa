"""The default chains, as data: which rule, in which order, does what.

Job: the acceptance policy of facturd in one table. Read a chain top to bottom: the first
link whose rule matches with a terminal action (accept, hold, block, no_invoice, draft)
decides; ``flag`` and ``defer`` record the hit and go on; ``jump`` continues in another
chain. ``any`` matches when an earlier ``defer`` link matched (Mailman's "any" rule), so
every check runs and a person sees all the reasons of a hold at once.

May touch: nothing (data). A site may pass its own chains to ``rules.evaluate``; the tests
run ``engine.check_chains`` on these so a misspelt rule or target fails there.

Limits: the order *is* the policy. In particular: fraud and quality checks run before any
acceptance, so no trust, approved sender, mode or import can skip them; an exact duplicate
that the folder blocks is blocked even when a check also asked for a person (a blocked copy
is never paid, and the deferred reasons stay in the decision); the company's own imports
are accepted only after every check.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from rules.model import ACCEPT, ANY, BLOCK, DEFER, DRAFT, FLAG, HOLD, JUMP, NO_INVOICE, Chain

MAIN: Chain = (
    ("no-invoice", NO_INVOICE, None),
    ("sales", DRAFT, None),
    ("truth", JUMP, "checks"),
)

# Holds whatever the trust, the mode, the approved sender or the import; then duplicates.
CHECKS: Chain = (
    ("stage-hold", DEFER, None),
    ("iban-changed", DEFER, None),
    ("amount-over-limit", DEFER, None),
    ("xml-text-mismatch", DEFER, None),
    ("recognition-incomplete", DEFER, None),
    ("totals-unreconciled", DEFER, None),
    ("auth-pending", DEFER, None),
    ("ocr-incomplete", DEFER, None),
    ("duplicate-blocked", BLOCK, None),  # identify + block, exact kinds: DOUBLON
    ("duplicate", DEFER, None),  # identify only, exact kinds: linked, a person decides
    ("near-duplicate", DEFER, None),  # identify, near: a person decides, never blocked
    (ANY, HOLD, None),
    ("truth", JUMP, "acceptance"),
)

ACCEPTANCE: Chain = (
    ("imported", ACCEPT, None),
    ("mode-automatic", ACCEPT, None),
    ("mode-manual", JUMP, "manual"),
    ("mode-except-trusted", JUMP, "except_trusted"),
    ("approval-required", HOLD, None),  # unreachable with a valid mode; fail closed
)

# The folder's explicit list of approved senders applies in manual mode too: it is opt-in
# (auto_accept_approved_senders) and each address was added by the company.
MANUAL: Chain = (
    ("approved-sender", ACCEPT, None),
    ("approved-sender-unverified", FLAG, None),
    ("approval-required", HOLD, None),
)

EXCEPT_TRUSTED: Chain = (
    ("trusted-supplier", ACCEPT, None),
    ("approved-sender", ACCEPT, None),
    ("trusted-supplier-unverified", FLAG, None),
    ("approved-sender-unverified", FLAG, None),
    ("approval-required", HOLD, None),
)

DEFAULT_CHAINS: Mapping[str, Chain] = MappingProxyType({
    "main": MAIN,
    "checks": CHECKS,
    "acceptance": ACCEPTANCE,
    "manual": MANUAL,
    "except_trusted": EXCEPT_TRUSTED,
})
