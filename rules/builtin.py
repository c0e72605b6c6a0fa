"""The built-in rules: one small pure predicate each, with a readable explanation.

Job: answer one question about a document's Facts (is there an invoice? did the IBAN
change? is the From an authenticated approved sender? ...) and say why, for a hit and for a
miss. A rule knows nothing of modes of evaluation or of other rules: what a match *does* is
decided by the chains (rules/chains.py), which are data.

May touch: Facts only. No I/O, no clock, no imports from daemon/ or storage/.

Limits: the rules compare what the daemon computed; they do not authenticate mail, find
duplicates or read invoices. Sender identity counts only with ``auth_result == "pass"``, a
single From address and an aligned authenticated domain; anything less is treated as
forged for the purpose of approval (never for rejection).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from rules.facts import (
    AUTH_PASS,
    AUTH_TEMPERROR,
    AUTOMATIC,
    EXACT_DUPLICATES,
    EXCEPT_TRUSTED,
    MANUAL,
    NEAR_DUPLICATE,
    SALES,
    Facts,
)
from rules.model import Rule

# -- structure ------------------------------------------------------------------------------


def _truth(facts: Facts) -> bool:
    return True


def _explain_truth(facts: Facts, matched: bool) -> str:
    return "always"


def _no_invoice(facts: Facts) -> bool:
    return not facts.has_invoice


def _explain_no_invoice(facts: Facts, matched: bool) -> str:
    if matched:
        return "the message carries no PDF, XML or image invoice; it is recorded and kept"
    return "an invoice file was found"


def _sales(facts: Facts) -> bool:
    return facts.direction == SALES


def _explain_sales(facts: Facts, matched: bool) -> str:
    if matched:
        return "the company's own sales invoice: kept as a draft until it is sent"
    return "purchase invoice"


# -- holds whatever the trust, the mode, the sender or the import --------------------------


def _stage_hold(facts: Facts) -> bool:
    return bool(facts.stage_holds)


def _explain_stage_hold(facts: Facts, matched: bool) -> str:
    return "; ".join(facts.stage_holds) if matched else "earlier stages raised nothing"


def _iban_changed(facts: Facts) -> bool:
    return facts.iban_changed


def _explain_iban_changed(facts: Facts, matched: bool) -> str:
    if matched:
        return ("the bank account (IBAN) differs from the one recorded for this supplier: "
                "confirm it with the supplier by a known channel before paying")
    return "the bank account is the recorded one, or none is recorded yet"


def _amount_over_limit(facts: Facts) -> bool:
    if facts.amount_limit is None:
        return False
    # Fail closed: with a limit set, an unknown total is not under it.
    return facts.total_gross is None or facts.total_gross > facts.amount_limit


def _explain_amount_over_limit(facts: Facts, matched: bool) -> str:
    limit, gross = facts.amount_limit, facts.total_gross
    if limit is None:
        return "the folder sets no amount limit"
    if gross is None:
        return f"the total is unknown and the folder's limit is {limit}: a person checks it"
    if matched:
        return f"total {gross} is over the folder's limit of {limit}"
    return f"total {gross} is within the folder's limit of {limit}"


def _xml_text_mismatch(facts: Facts) -> bool:
    return facts.xml_text_mismatch


def _explain_xml_text_mismatch(facts: Facts, matched: bool) -> str:
    if matched:
        return ("the embedded XML and the visible invoice disagree on the totals: the "
                "amount to pay is not certain")
    return "embedded XML and visible text agree, or there is only one of them"


def _recognition_incomplete(facts: Facts) -> bool:
    return bool(facts.required_fields_missing)


def _explain_recognition_incomplete(facts: Facts, matched: bool) -> str:
    if matched:
        return "missing " + ", ".join(facts.required_fields_missing)
    return "every required field was read"


def _totals_unreconciled(facts: Facts) -> bool:
    return facts.totals_reconcile is False


def _explain_totals_unreconciled(facts: Facts, matched: bool) -> str:
    if matched:
        return "the amounts do not add up (net + tax against the gross total)"
    if facts.totals_reconcile is None:
        return "the totals could not be checked (not all amounts were read)"
    return "the totals add up"


def _auth_pending(facts: Facts) -> bool:
    return facts.auth_result == AUTH_TEMPERROR


def _explain_auth_pending(facts: Facts, matched: bool) -> str:
    if matched:
        return ("the sender's authentication could not be completed (temporary DNS "
                "error): a person decides")
    return f"sender authentication gave a verdict ({facts.auth_result})"


def _ocr_incomplete(facts: Facts) -> bool:
    return facts.ocr_incomplete


def _explain_ocr_incomplete(facts: Facts, matched: bool) -> str:
    if matched:
        return "text recognition did not finish (timeout or error): the scan was not fully read"
    return "no text recognition was needed, or it finished"


# -- duplicates -----------------------------------------------------------------------------


_SAME = {
    "message": "the same message as",
    "attachment": "the same file as",
    "xml": "the same XML invoice as",
    "business": "the same supplier, number, date and amount as",
}


def _earlier(facts: Facts) -> str:
    return f"#{facts.duplicate_of}" if facts.duplicate_of is not None else "an earlier document"


def _same(facts: Facts) -> str:
    return f"{_SAME.get(facts.duplicate_kind, 'a duplicate of')} {_earlier(facts)}"


def _duplicate_flags(facts: Facts) -> tuple[str, ...]:
    return (f"duplicate-of:{facts.duplicate_of}",) if facts.duplicate_of is not None else ()


def _near_duplicate_flags(facts: Facts) -> tuple[str, ...]:
    if facts.duplicate_of is None:
        return ()
    return (f"near-duplicate-of:{facts.duplicate_of}",)


def _exact(facts: Facts) -> bool:
    return facts.identify_duplicates and facts.duplicate_kind in EXACT_DUPLICATES


def _duplicate_blocked(facts: Facts) -> bool:
    return _exact(facts) and facts.block_duplicates


def _explain_duplicate_blocked(facts: Facts, matched: bool) -> str:
    if matched:
        return f"{_same(facts)}: blocked, not archived (the folder blocks duplicates)"
    return _duplicate_miss(facts, "blocked")


def _duplicate(facts: Facts) -> bool:
    return _exact(facts) and not facts.block_duplicates


def _explain_duplicate(facts: Facts, matched: bool) -> str:
    if matched:
        return (f"{_same(facts)}: linked to it; a person decides (the folder identifies "
                "duplicates without blocking them)")
    return _duplicate_miss(facts, "identified")


def _near_duplicate(facts: Facts) -> bool:
    return facts.identify_duplicates and facts.duplicate_kind == NEAR_DUPLICATE


def _explain_near_duplicate(facts: Facts, matched: bool) -> str:
    if matched:
        return (f"same supplier and number as {_earlier(facts)} but a different amount or "
                "date: a correction or a duplicate? a person decides")
    return _duplicate_miss(facts, "near")


def _duplicate_miss(facts: Facts, which: str) -> str:
    if not facts.identify_duplicates:
        return "the folder does not identify duplicates"
    if facts.duplicate_kind == "none":
        return "no earlier document matches"
    if which == "blocked" and not facts.block_duplicates:
        return "the folder does not block duplicates"
    return f"not this kind ({facts.duplicate_kind} duplicate)"


# -- acceptance ----------------------------------------------------------------------------


def _imported(facts: Facts) -> bool:
    return facts.imported


def _explain_imported(facts: Facts, matched: bool) -> str:
    return "the company imported this file itself" if matched else "received by mail"


def _mode_is(mode: str) -> Rule:
    def check(facts: Facts) -> bool:
        return facts.mode == mode

    def explain(facts: Facts, matched: bool) -> str:
        if not matched:
            return f"mode is {facts.mode}, not {mode}"
        if mode == AUTOMATIC:
            return "mode automatic: invoices are accepted without a person"
        return f"mode {mode}"

    return Rule(f"mode-{mode.replace('_', '-')}", check, explain)


def _authenticated(facts: Facts) -> bool:
    """The message is authenticated for the domain of its single From address."""
    return (facts.auth_result == AUTH_PASS and facts.from_address is not None
            and facts.aligned_domain is not None)


def _from_is_approved(facts: Facts) -> bool:
    if facts.from_address is None:
        return False
    approved = {a.lower() for a in facts.approved_senders}
    return facts.from_address.lower() in approved


def _why_not_authenticated(facts: Facts) -> str:
    if facts.from_address is None:
        return "the message has no single From address"
    if facts.auth_result != AUTH_PASS:
        return f"the message is not authenticated for the From domain ({facts.auth_result})"
    return "no authenticated domain aligned with the From address"


def _approved_sender(facts: Facts) -> bool:
    return (facts.auto_accept_approved_senders and _authenticated(facts)
            and _from_is_approved(facts))


def _explain_approved_sender(facts: Facts, matched: bool) -> str:
    if matched:
        return (f"{facts.from_address} is an approved sender and the message is "
                f"authenticated for its domain ({facts.aligned_domain})")
    if not facts.auto_accept_approved_senders:
        return "the folder does not auto-accept approved senders"
    if not _from_is_approved(facts):
        if facts.from_address is None:
            return "the message has no single From address"
        return f"{facts.from_address} is not an approved sender"
    return _why_not_authenticated(facts)


def _approved_sender_unverified(facts: Facts) -> bool:
    return (facts.auto_accept_approved_senders and _from_is_approved(facts)
            and not _authenticated(facts))


def _explain_approved_sender_unverified(facts: Facts, matched: bool) -> str:
    if matched:
        return (f"the From address {facts.from_address} is an approved sender but "
                f"{_why_not_authenticated(facts)}: it does not count (possibly forged)")
    return "no unauthenticated use of an approved sender address"


def _domain_recorded(facts: Facts) -> bool:
    if facts.aligned_domain is None:
        return False
    recorded = {d.lower().rstrip(".") for d in facts.supplier_domains}
    return facts.aligned_domain.lower().rstrip(".") in recorded


def _trusted_supplier(facts: Facts) -> bool:
    return facts.supplier_trusted and _authenticated(facts) and _domain_recorded(facts)


def _explain_trusted_supplier(facts: Facts, matched: bool) -> str:
    if matched:
        return ("the supplier (matched by the VAT/SIREN on the invoice) is trusted and the "
                f"message is authenticated for its recorded domain {facts.aligned_domain}")
    if not facts.supplier_trusted:
        return "the supplier on the invoice is not marked trusted (or is not known)"
    return f"the supplier is marked trusted but {_why_not_trusted(facts)}"


def _why_not_trusted(facts: Facts) -> str:
    if not _authenticated(facts):
        return _why_not_authenticated(facts)
    recorded = ", ".join(sorted(facts.supplier_domains)) or "none"
    return (f"the authenticated domain {facts.aligned_domain} is not one recorded for this "
            f"supplier ({recorded})")


def _trusted_supplier_unverified(facts: Facts) -> bool:
    return facts.supplier_trusted and not _trusted_supplier(facts)


def _explain_trusted_supplier_unverified(facts: Facts, matched: bool) -> str:
    if matched:
        return ("the supplier on the invoice is marked trusted but "
                f"{_why_not_trusted(facts)}: it does not count (possibly forged)")
    return "no unverified claim of a trusted supplier"


def _approval_required(facts: Facts) -> bool:
    return True


def _explain_approval_required(facts: Facts, matched: bool) -> str:
    if facts.mode == MANUAL:
        return "mode manual: a person approves each invoice"
    if facts.mode == EXCEPT_TRUSTED:
        return ("mode except_trusted: not a trusted supplier with an authenticated recorded "
                "domain, so a person approves")
    return f"mode {facts.mode}: a person approves"


RULES: Mapping[str, Rule] = MappingProxyType({
    r.name: r
    for r in (
        Rule("truth", _truth, _explain_truth),
        Rule("no-invoice", _no_invoice, _explain_no_invoice),
        Rule("sales", _sales, _explain_sales),
        Rule("stage-hold", _stage_hold, _explain_stage_hold),
        Rule("iban-changed", _iban_changed, _explain_iban_changed, code="COORD_BANC_ERR"),
        Rule("amount-over-limit", _amount_over_limit, _explain_amount_over_limit),
        Rule("xml-text-mismatch", _xml_text_mismatch, _explain_xml_text_mismatch,
             code="MONTANTTOTAL_ERR"),
        Rule("recognition-incomplete", _recognition_incomplete,
             _explain_recognition_incomplete),
        Rule("totals-unreconciled", _totals_unreconciled, _explain_totals_unreconciled,
             code="CALCUL_ERR"),
        Rule("auth-pending", _auth_pending, _explain_auth_pending),
        Rule("ocr-incomplete", _ocr_incomplete, _explain_ocr_incomplete),
        Rule("duplicate-blocked", _duplicate_blocked, _explain_duplicate_blocked,
             flags=_duplicate_flags, code="DOUBLON"),
        Rule("duplicate", _duplicate, _explain_duplicate, flags=_duplicate_flags,
             code="DOUBLON"),
        Rule("near-duplicate", _near_duplicate, _explain_near_duplicate,
             flags=_near_duplicate_flags),
        Rule("imported", _imported, _explain_imported),
        _mode_is(MANUAL),
        _mode_is(EXCEPT_TRUSTED),
        _mode_is(AUTOMATIC),
        Rule("approved-sender", _approved_sender, _explain_approved_sender),
        Rule("approved-sender-unverified", _approved_sender_unverified,
             _explain_approved_sender_unverified, flags=lambda f: ("unverified-sender",)),
        Rule("trusted-supplier", _trusted_supplier, _explain_trusted_supplier),
        Rule("trusted-supplier-unverified", _trusted_supplier_unverified,
             _explain_trusted_supplier_unverified, flags=lambda f: ("unverified-supplier",)),
        Rule("approval-required", _approval_required, _explain_approval_required),
    )
})
