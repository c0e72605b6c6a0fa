"""The rules layer: each rule's predicate, then the default chains' behaviour, then lifecycle.

Pure tests: no daemon, no database, no clock. ``make_facts`` builds a clean purchase invoice
from an unknown, unauthenticated sender in manual mode; each test overrides what it is about.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from rules import (
    ACCEPT,
    BLOCK,
    DEFAULT_CHAINS,
    DRAFT,
    HOLD,
    NO_INVOICE,
    RULES,
    TERMINAL,
    Chain,
    ChainError,
    Decision,
    Facts,
    check_chains,
    evaluate,
)
from rules.facts import AUTH_RESULTS, DUPLICATE_KINDS, MODES
from rules.lifecycle import (
    LIFECYCLE,
    PURCHASE_STATES,
    REASONS,
    SALES_STATES,
    STATE_AFTER,
    STATUSES,
    lifecycle_of,
)

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
SUPPLIER = "billing@supplier.example"
SUPPLIER_DOMAIN = "supplier.example"


def make_facts(**overrides: Any) -> Facts:
    """A clean purchase invoice, complete and consistent, from an unknown unauthenticated
    sender, in manual mode, with every option off and no fraud signal."""
    values: dict[str, Any] = dict(
        direction="purchase", mode="manual", imported=False, has_invoice=True,
        required_fields_missing=(), totals_reconcile=True, auth_result="none",
        from_address=SUPPLIER, aligned_domain=None, approved_senders=frozenset(),
        auto_accept_approved_senders=False, supplier_trusted=False,
        supplier_domains=frozenset(), identify_duplicates=False, block_duplicates=False,
        duplicate_kind="none", duplicate_of=None, iban_changed=False, amount_limit=None,
        total_gross=Decimal("120.00"), xml_text_mismatch=False, ocr_incomplete=False,
        stage_holds=(), now=NOW)
    values.update(overrides)
    return Facts(**values)


AUTHENTICATED: dict[str, Any] = dict(auth_result="pass", from_address=SUPPLIER,
                                     aligned_domain=SUPPLIER_DOMAIN)
APPROVED: dict[str, Any] = dict(AUTHENTICATED, auto_accept_approved_senders=True,
                                approved_senders=frozenset({SUPPLIER}))
TRUSTED: dict[str, Any] = dict(AUTHENTICATED, supplier_trusted=True,
                               supplier_domains=frozenset({SUPPLIER_DOMAIN}))
FORGED = dict(auth_result="fail", from_address=SUPPLIER, aligned_domain=None)

# Every way a document would otherwise be accepted.
ACCEPT_PATHS: dict[str, dict[str, Any]] = {
    "automatic": dict(mode="automatic"),
    "approved-sender": dict(APPROVED, mode="manual"),
    "trusted-supplier": dict(TRUSTED, mode="except_trusted"),
    "imported": dict(imported=True, mode="manual"),
}

# Every check that holds whatever the trust, mode, approved sender or import.
FRAUD_HOLDS: dict[str, dict[str, Any]] = {
    "iban-changed": dict(iban_changed=True),
    "amount-over-limit": dict(amount_limit=Decimal("100"), total_gross=Decimal("120.00")),
    "xml-text-mismatch": dict(xml_text_mismatch=True),
    "recognition-incomplete": dict(required_fields_missing=("number",)),
    "totals-unreconciled": dict(totals_reconcile=False),
    "auth-pending": dict(auth_result="temperror"),
    "ocr-incomplete": dict(ocr_incomplete=True),
    "stage-hold": dict(stage_holds=("invalid-xml: not well-formed",)),
}


# -- each rule's predicate -------------------------------------------------------------------

PREDICATES: list[tuple[str, dict[str, Any], bool]] = [
    ("truth", {}, True),
    ("no-invoice", dict(has_invoice=False), True),
    ("no-invoice", {}, False),
    ("sales", dict(direction="sales"), True),
    ("sales", {}, False),
    ("stage-hold", dict(stage_holds=("invalid-xml: x",)), True),
    ("stage-hold", {}, False),
    ("iban-changed", dict(iban_changed=True), True),
    ("iban-changed", {}, False),
    ("amount-over-limit", dict(amount_limit=Decimal("100"), total_gross=Decimal("100.01")),
     True),
    ("amount-over-limit", dict(amount_limit=Decimal("100"), total_gross=None), True),
    ("amount-over-limit", dict(amount_limit=Decimal("100"), total_gross=Decimal("100.00")),
     False),
    ("amount-over-limit", dict(amount_limit=None, total_gross=Decimal("1e9")), False),
    ("xml-text-mismatch", dict(xml_text_mismatch=True), True),
    ("xml-text-mismatch", {}, False),
    ("recognition-incomplete", dict(required_fields_missing=("number", "currency")), True),
    ("recognition-incomplete", {}, False),
    ("totals-unreconciled", dict(totals_reconcile=False), True),
    ("totals-unreconciled", dict(totals_reconcile=None), False),
    ("totals-unreconciled", {}, False),
    ("auth-pending", dict(auth_result="temperror"), True),
    ("auth-pending", dict(auth_result="fail"), False),
    ("ocr-incomplete", dict(ocr_incomplete=True), True),
    ("ocr-incomplete", {}, False),
    ("duplicate-blocked", dict(identify_duplicates=True, block_duplicates=True,
                               duplicate_kind="xml", duplicate_of=12), True),
    ("duplicate-blocked", dict(identify_duplicates=True, block_duplicates=True,
                               duplicate_kind="near", duplicate_of=12), False),
    ("duplicate-blocked", dict(identify_duplicates=False, block_duplicates=True,
                               duplicate_kind="xml", duplicate_of=12), False),
    ("duplicate-blocked", dict(identify_duplicates=True, duplicate_kind="xml"), False),
    ("duplicate", dict(identify_duplicates=True, duplicate_kind="business", duplicate_of=3),
     True),
    ("duplicate", dict(identify_duplicates=True, block_duplicates=True,
                       duplicate_kind="business"), False),
    ("duplicate", dict(identify_duplicates=True, duplicate_kind="none"), False),
    ("near-duplicate", dict(identify_duplicates=True, duplicate_kind="near"), True),
    ("near-duplicate", dict(identify_duplicates=True, block_duplicates=True,
                            duplicate_kind="near"), True),
    ("near-duplicate", dict(identify_duplicates=False, duplicate_kind="near"), False),
    ("imported", dict(imported=True), True),
    ("imported", {}, False),
    ("mode-manual", {}, True),
    ("mode-manual", dict(mode="automatic"), False),
    ("mode-except-trusted", dict(mode="except_trusted"), True),
    ("mode-except-trusted", {}, False),
    ("mode-automatic", dict(mode="automatic"), True),
    ("mode-automatic", {}, False),
    ("approved-sender", APPROVED, True),
    ("approved-sender", dict(APPROVED, from_address="Billing@Supplier.Example"), True),
    ("approved-sender", dict(APPROVED, auto_accept_approved_senders=False), False),
    ("approved-sender", dict(APPROVED, auth_result="fail"), False),
    ("approved-sender", dict(APPROVED, auth_result="none", aligned_domain=None), False),
    ("approved-sender", dict(APPROVED, aligned_domain=None), False),
    ("approved-sender", dict(APPROVED, from_address=None), False),
    ("approved-sender", dict(APPROVED, from_address="other@supplier.example"), False),
    ("approved-sender-unverified", dict(APPROVED, **FORGED), True),
    ("approved-sender-unverified", APPROVED, False),
    ("approved-sender-unverified", dict(APPROVED, from_address="x@elsewhere.example",
                                        auth_result="fail"), False),
    ("trusted-supplier", TRUSTED, True),
    ("trusted-supplier", dict(TRUSTED, aligned_domain="SUPPLIER.example."), True),
    ("trusted-supplier", dict(TRUSTED, supplier_trusted=False), False),
    ("trusted-supplier", dict(TRUSTED, aligned_domain="mailer.example"), False),
    ("trusted-supplier", dict(TRUSTED, **FORGED), False),
    ("trusted-supplier", dict(TRUSTED, supplier_domains=frozenset()), False),
    ("trusted-supplier", dict(TRUSTED, from_address=None), False),
    ("trusted-supplier-unverified", dict(TRUSTED, **FORGED), True),
    ("trusted-supplier-unverified", dict(TRUSTED, aligned_domain="mailer.example"), True),
    ("trusted-supplier-unverified", TRUSTED, False),
    ("trusted-supplier-unverified", {}, False),
    ("approval-required", {}, True),
]


@pytest.mark.parametrize(("rule", "overrides", "expected"), PREDICATES,
                         ids=[f"{r}-{'hit' if e else 'miss'}-{n}"
                              for n, (r, _, e) in enumerate(PREDICATES)])
def test_rule_predicate(rule: str, overrides: dict[str, Any], expected: bool) -> None:
    facts = make_facts(**overrides)
    assert RULES[rule].check(facts) is expected
    text = RULES[rule].explain(facts, expected)
    assert text.strip() and "None" not in text, text


def test_every_rule_has_a_hit_and_a_miss_case() -> None:
    hits = {r for r, _, e in PREDICATES if e}
    misses = {r for r, _, e in PREDICATES if not e}
    always = {"truth", "approval-required"}
    assert hits == set(RULES)
    assert misses | always == set(RULES)


# -- the chains themselves -------------------------------------------------------------------

def test_default_chains_are_sound() -> None:
    assert check_chains(DEFAULT_CHAINS) == []


@pytest.mark.parametrize(("chains", "problem"), [
    ({"main": (("nope", ACCEPT, None),)}, "unknown rule 'nope'"),
    ({"main": (("truth", "approve", None),)}, "unknown action 'approve'"),
    ({"main": (("truth", "jump", "elsewhere"),)}, "jump to unknown chain 'elsewhere'"),
    ({"main": (("truth", ACCEPT, "main"),)}, "target 'main' on a accept link"),
    ({"main": (("truth", "jump", "b"),), "b": (("truth", "jump", "main"),)}, "jump loop"),
    ({"other": (("truth", ACCEPT, None),)}, "no start chain 'main'"),
])
def test_check_chains_finds_mistakes(chains: dict[str, Chain], problem: str) -> None:
    assert any(problem in p for p in check_chains(chains)), check_chains(chains)


def test_evaluate_refuses_a_jump_loop_and_an_unknown_rule() -> None:
    loop = {"main": (("truth", "jump", "b"),), "b": (("truth", "jump", "main"),)}
    with pytest.raises(ChainError, match="jump loop"):
        evaluate(make_facts(), loop)
    with pytest.raises(ChainError, match="unknown rule"):
        evaluate(make_facts(), {"main": (("nope", ACCEPT, None),)})


def test_falling_off_a_chain_holds() -> None:
    decision = evaluate(make_facts(), {"main": (("sales", DRAFT, None),)})
    assert decision.action == HOLD
    assert decision.reasons[-1].startswith("end-of-chain:")
    assert [h.rule for h in decision.trail] == ["sales", "end-of-chain"]


def test_a_site_can_reorder_the_policy_with_data_only() -> None:
    """GIVEN chains where duplicates are only flagged THEN an identified duplicate in
    automatic mode is accepted with its flag: the policy changed without code."""
    chains = dict(DEFAULT_CHAINS)
    chains["checks"] = tuple(("duplicate", "flag", None) if rule == "duplicate" else
                             (rule, action, target)
                             for rule, action, target in DEFAULT_CHAINS["checks"])
    facts = make_facts(mode="automatic", identify_duplicates=True, duplicate_kind="message",
                       duplicate_of=7)
    decision = evaluate(facts, chains)
    assert (decision.action, decision.flags) == (ACCEPT, ("duplicate-of:7",))
    assert evaluate(facts).action == HOLD


# -- modes, approved senders, trusted suppliers ----------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("option", [True, False])
@pytest.mark.parametrize("auth", AUTH_RESULTS)
def test_mode_and_approved_sender(mode: str, option: bool, auth: str) -> None:
    facts = make_facts(**dict(APPROVED, mode=mode, auto_accept_approved_senders=option,
                              auth_result=auth,
                              aligned_domain=SUPPLIER_DOMAIN if auth == "pass" else None))
    decision = evaluate(facts)
    if auth == "temperror":
        expected = HOLD  # auth-pending holds whatever the mode
    elif mode == "automatic" or (option and auth == "pass"):
        expected = ACCEPT
    else:
        expected = HOLD
    assert decision.action == expected, decision.reasons
    if expected == ACCEPT and mode != "automatic":
        assert decision.reasons == (
            f"approved-sender: {SUPPLIER} is an approved sender and the message is "
            f"authenticated for its domain ({SUPPLIER_DOMAIN})",)
    if expected == HOLD and mode != "automatic" and option and auth in ("fail", "none"):
        assert "unverified-sender" in decision.flags
        assert any("does not count" in r for r in decision.reasons)


def test_manual_mode_holds_with_the_mode_as_reason() -> None:
    decision = evaluate(make_facts())
    assert decision.action == HOLD and decision.code is None
    assert decision.reasons == ("approval-required: mode manual: a person approves each "
                                "invoice",)


def test_approved_sender_address_is_compared_case_insensitively_and_exactly() -> None:
    ok = make_facts(**dict(APPROVED, from_address="BILLING@supplier.example"))
    assert evaluate(ok).action == ACCEPT
    other = make_facts(**dict(APPROVED, from_address="ceo@supplier.example"))
    assert evaluate(other).action == HOLD


def test_several_from_addresses_never_count_as_approved() -> None:
    decision = evaluate(make_facts(**dict(APPROVED, from_address=None)))
    assert decision.action == HOLD
    [miss] = [h for h in decision.trail if h.rule == "approved-sender"]
    assert not miss.matched and "no single From" in miss.reason


@pytest.mark.parametrize(("case", "overrides", "expected", "flag"), [
    ("recorded domain", TRUSTED, ACCEPT, None),
    ("domain not recorded", dict(TRUSTED, aligned_domain="bulkmailer.example"), HOLD,
     "unverified-supplier"),
    ("no domain recorded", dict(TRUSTED, supplier_domains=frozenset()), HOLD,
     "unverified-supplier"),
    ("forged From", dict(TRUSTED, **FORGED), HOLD, "unverified-supplier"),
    ("not authenticated", dict(TRUSTED, auth_result="none", aligned_domain=None), HOLD,
     "unverified-supplier"),
    ("supplier not trusted", dict(TRUSTED, supplier_trusted=False), HOLD, None),
])
def test_trusted_supplier_in_except_trusted_mode(case: str, overrides: dict[str, Any],
                                                 expected: str, flag: str | None) -> None:
    decision = evaluate(make_facts(**dict(overrides, mode="except_trusted")))
    assert decision.action == expected, case
    if flag:
        assert flag in decision.flags
    if expected == HOLD:
        assert decision.reasons[-1].startswith("approval-required: mode except_trusted")


def test_trusted_supplier_does_not_count_in_manual_mode() -> None:
    decision = evaluate(make_facts(**dict(TRUSTED, mode="manual")))
    assert decision.action == HOLD
    assert "trusted-supplier" not in [h.rule for h in decision.trail]


def test_except_trusted_also_accepts_authenticated_approved_senders() -> None:
    assert evaluate(make_facts(**dict(APPROVED, mode="except_trusted"))).action == ACCEPT


# -- duplicates ------------------------------------------------------------------------------

@pytest.mark.parametrize("identify", [True, False])
@pytest.mark.parametrize("block", [True, False])
@pytest.mark.parametrize("kind", DUPLICATE_KINDS)
def test_duplicate_options(identify: bool, block: bool, kind: str) -> None:
    facts = make_facts(mode="automatic", identify_duplicates=identify, block_duplicates=block,
                       duplicate_kind=kind, duplicate_of=None if kind == "none" else 12)
    decision = evaluate(facts)
    if not identify or kind == "none":
        assert decision.action == ACCEPT
        assert decision.flags == () and decision.code is None
        assert not any("duplicate" in r for r in decision.reasons)
    elif kind == "near":
        assert decision.action == HOLD  # flagged for a person, never blocked
        assert decision.flags == ("near-duplicate-of:12",)
        assert decision.reasons[0].startswith("near-duplicate: same supplier and number as #12")
    elif block:
        assert (decision.action, decision.code) == (BLOCK, "DOUBLON")
        assert decision.flags == ("duplicate-of:12",)
        assert "#12" in decision.reasons[-1] and "blocked" in decision.reasons[-1]
    else:
        assert (decision.action, decision.code) == (HOLD, "DOUBLON")
        assert decision.flags == ("duplicate-of:12",)
        assert decision.reasons[0].startswith("duplicate: ")


def test_blocked_duplicate_keeps_the_other_reasons() -> None:
    """GIVEN a blocked exact duplicate whose IBAN also changed (a classic fraud: the same
    invoice resent with new bank details) THEN it is blocked, and the IBAN reason is shown."""
    decision = evaluate(make_facts(identify_duplicates=True, block_duplicates=True,
                                   duplicate_kind="business", duplicate_of=4,
                                   iban_changed=True))
    assert (decision.action, decision.code) == (BLOCK, "DOUBLON")
    assert [r.split(":")[0] for r in decision.reasons] == ["iban-changed", "duplicate-blocked"]


def test_duplicate_without_earlier_id_still_reads_well() -> None:
    decision = evaluate(make_facts(identify_duplicates=True, block_duplicates=True,
                                   duplicate_kind="attachment", duplicate_of=None))
    assert decision.action == BLOCK and decision.flags == ()
    assert "the same file as an earlier document" in decision.reasons[-1]


# -- fraud holds override every acceptance path -----------------------------------------------

@pytest.mark.parametrize("path", ACCEPT_PATHS)
@pytest.mark.parametrize("hold", FRAUD_HOLDS)
def test_fraud_holds_override_acceptance(path: str, hold: str) -> None:
    assert evaluate(make_facts(**ACCEPT_PATHS[path])).action == ACCEPT  # the baseline
    decision = evaluate(make_facts(**{**ACCEPT_PATHS[path], **FRAUD_HOLDS[hold]}))
    assert decision.action == HOLD
    assert decision.reasons[0].startswith(f"{hold}: ")
    [any_hit] = [h for h in decision.trail if h.rule == "any"]
    assert any_hit.matched and hold in any_hit.reason


def test_every_check_is_shown_at_once_and_the_code_comes_from_the_first() -> None:
    decision = evaluate(make_facts(**{k: v for d in FRAUD_HOLDS.values() for k, v in d.items()}))
    assert decision.action == HOLD
    assert [r.split(":")[0] for r in decision.reasons] == list(FRAUD_HOLDS_ORDER)
    assert decision.code == "COORD_BANC_ERR"


FRAUD_HOLDS_ORDER = ("stage-hold", "iban-changed", "amount-over-limit", "xml-text-mismatch",
                     "recognition-incomplete", "totals-unreconciled", "auth-pending",
                     "ocr-incomplete")


@pytest.mark.parametrize(("overrides", "code"), [
    (dict(xml_text_mismatch=True), "MONTANTTOTAL_ERR"),
    (dict(totals_reconcile=False), "CALCUL_ERR"),
    (dict(required_fields_missing=("number",)), None),
    (dict(amount_limit=Decimal(1)), None),
])
def test_hold_code_is_the_reason_a_person_would_cite(overrides: dict[str, Any],
                                                     code: str | None) -> None:
    decision = evaluate(make_facts(mode="automatic", **overrides))
    assert (decision.action, decision.code) == (HOLD, code)


def test_imported_documents() -> None:
    assert evaluate(make_facts(imported=True)).action == ACCEPT
    assert evaluate(make_facts(imported=True)).reasons == (
        "imported: the company imported this file itself",)
    blocked = evaluate(make_facts(imported=True, identify_duplicates=True,
                                  block_duplicates=True, duplicate_kind="xml", duplicate_of=1))
    assert blocked.action == BLOCK
    assert evaluate(make_facts(imported=True, iban_changed=True)).action == HOLD


# -- sales, no invoice -----------------------------------------------------------------------

def test_no_invoice_comes_first() -> None:
    for direction in ("purchase", "sales"):
        decision = evaluate(make_facts(direction=direction, has_invoice=False,
                                       iban_changed=True))
        assert decision.action == NO_INVOICE
        assert decision.reasons[0].startswith("no-invoice: ")
        assert len(decision.trail) == 1


def test_sales_invoice_is_a_draft_whatever_else() -> None:
    decision = evaluate(make_facts(direction="sales", iban_changed=True, identify_duplicates=True,
                                   block_duplicates=True, duplicate_kind="xml"))
    assert decision.action == DRAFT
    assert decision.reasons == ("sales: the company's own sales invoice: kept as a draft until "
                                "it is sent",)


# -- exactly one decision, reasons and trail, whatever the facts -----------------------------

def _all_facts() -> list[Facts]:
    out = []
    for (direction, mode, imported, has_invoice, auth, approved, trusted, identify, block,
         kind, iban) in itertools.product(
            ("purchase", "sales"), MODES, (False, True), (True, False), AUTH_RESULTS,
            (False, True), (False, True), (False, True), (False, True),
            ("none", "message", "near"), (False, True)):
        out.append(make_facts(
            direction=direction, mode=mode, imported=imported, has_invoice=has_invoice,
            auth_result=auth, aligned_domain=SUPPLIER_DOMAIN if auth == "pass" else None,
            auto_accept_approved_senders=approved,
            approved_senders=frozenset({SUPPLIER}) if approved else frozenset(),
            supplier_trusted=trusted,
            supplier_domains=frozenset({SUPPLIER_DOMAIN}) if trusted else frozenset(),
            identify_duplicates=identify, block_duplicates=block, duplicate_kind=kind,
            duplicate_of=None if kind == "none" else 9, iban_changed=iban))
    return out


def test_exactly_one_readable_decision_for_every_combination() -> None:
    for facts in _all_facts():
        decision = evaluate(facts)
        assert isinstance(decision, Decision)
        assert decision.action in TERMINAL
        assert decision.reasons, facts
        last = decision.trail[-1]
        assert last.matched and last.action == decision.action
        assert sum(h.matched and h.action in TERMINAL for h in decision.trail) == 1
        for hit in decision.trail:
            assert hit.reason.startswith(f"{hit.rule}: ") and len(hit.reason) > len(hit.rule) + 4
        if decision.action == BLOCK:
            assert decision.code == "DOUBLON"
        if facts.iban_changed and facts.has_invoice and facts.direction == "purchase":
            assert decision.action in (HOLD, BLOCK)
        if decision.action == ACCEPT:
            assert not facts.iban_changed and facts.auth_result != "temperror"
        assert evaluate(facts) == decision  # deterministic


def test_trail_records_misses_with_their_reasons() -> None:
    decision = evaluate(make_facts(mode="automatic"))
    misses = {h.rule: h.reason for h in decision.trail if not h.matched}
    assert misses["iban-changed"] == ("iban-changed: the bank account is the recorded one, or "
                                      "none is recorded yet")
    assert misses["duplicate-blocked"] == ("duplicate-blocked: the folder does not identify "
                                           "duplicates")
    assert [h.chain for h in decision.trail if h.matched] == ["main", "checks", "acceptance"]


def test_values_are_frozen_and_validated() -> None:
    facts = make_facts()
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.mode = "automatic"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        evaluate(facts).action = ACCEPT  # type: ignore[misc]
    for bad in (dict(mode="automatique"), dict(direction="in"), dict(auth_result="PASS"),
                dict(duplicate_kind="exact")):
        with pytest.raises(ValueError, match="expected one of"):
            make_facts(**bad)
    with pytest.raises(TypeError):
        DEFAULT_CHAINS["main"] = ()  # type: ignore[index]


def test_rules_do_no_io_and_read_no_clock() -> None:
    allowed = {"__future__", "collections", "dataclasses", "datetime", "decimal", "types",
               "typing", "rules"}
    for path in (ROOT / "rules").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                names = set()
            assert names <= allowed, f"{path.name} imports {names - allowed}"
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("now", "today", "utcnow") or (isinstance(
                    node.value, ast.Name) and node.value.id in ("facts", "f")), (
                    f"{path.name} reads a clock")
            if isinstance(node, ast.Name):
                assert node.id not in ("open", "print"), f"{path.name} does I/O"


# -- lifecycle -------------------------------------------------------------------------------

def test_every_state_maps_to_the_lifecycle_once() -> None:
    expected = {("purchase", s) for s in PURCHASE_STATES} | {("sales", s) for s in SALES_STATES}
    assert set(LIFECYCLE) == expected
    for entry in LIFECYCLE.values():
        assert entry.status is None or entry.status in STATUSES
        assert entry.reason is None or entry.reason in REASONS
    assert set(STATE_AFTER) == set(TERMINAL)
    for action, state in STATE_AFTER.items():
        assert ("purchase", state) in LIFECYCLE or ("sales", state) in LIFECYCLE, action


def test_lifecycle_look_up() -> None:
    status, reason = lifecycle_of("purchase", "duplicate")
    assert status is not None and (status.code, status.fr) == (210, "Refusée")
    assert reason is not None and reason.code == "DOUBLON" and 210 in reason.statuses
    assert lifecycle_of("sales", "paid")[0] == STATUSES[212]
    assert lifecycle_of("purchase", "paid")[0] == STATUSES[211]
    assert lifecycle_of("purchase", "no_invoice") == (None, None)
    with pytest.raises(KeyError):
        lifecycle_of("purchase", "draft")


def test_lifecycle_tables_are_consistent() -> None:
    assert {s.code for s in STATUSES.values() if s.mandatory} == {200, 210, 212, 213}
    for code, status in STATUSES.items():
        assert status.code == code and status.fr and status.en
    refusal = {r.code for r in REASONS.values() if 210 in r.statuses}
    assert {"DOUBLON", "MONTANTTOTAL_ERR", "CALCUL_ERR", "CMD_ERR", "NON_CONFORME"} <= refusal
    assert len(refusal) == 13
    for name, reason in REASONS.items():
        assert reason.code == name and reason.fr and reason.en and reason.statuses
    for rule in RULES.values():
        assert rule.code is None or rule.code in REASONS, rule.name


# -- the compatibility module used by daemon/pipeline.py until it moves to rules.evaluate ---

def test_legacy_decide_keeps_the_pipeline_behaviour() -> None:
    from rules.decide import Facts as LegacyFacts
    from rules.decide import decide

    def legacy(**kw: Any) -> Decision:
        base: dict[str, Any] = dict(direction="purchase", mode="manual", imported=False,
                                    has_invoice=True, fields_complete=True)
        return decide(LegacyFacts(**{**base, **kw}))

    assert legacy(has_invoice=False).reasons[0].startswith("no-invoice")
    assert legacy(direction="sales").action == DRAFT
    assert any("mode manual" in r for r in legacy().reasons)
    assert legacy(mode="automatic").action == ACCEPT
    held = legacy(mode="automatic", fields_complete=False)
    assert held.action == HOLD and held.reasons[0].startswith("recognition-incomplete")
    assert legacy(mode="automatic", holds=("invalid-xml: bad",)).reasons == (
        "stage-hold: invalid-xml: bad",)
    assert legacy(imported=True).action == ACCEPT
