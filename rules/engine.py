"""The evaluator: facts and chains in, exactly one Decision out, with the whole trail.

Job: walk the chains like Mailman's chain processing. From the start chain, evaluate each
link's rule on the facts and record a Hit (matched or not, with the rule's readable reason).
A matching terminal link (accept, hold, block, no_invoice, draft) decides; ``flag`` and
``defer`` record and continue; ``jump`` continues in the target chain. ``any`` matches when
an earlier ``defer`` link matched. Falling off the end of a chain holds the document (fail
closed) with a reason saying so.

May touch: Facts, rules and chains passed in. No I/O, no clock, no logging, no imports from
daemon/ or storage/.

Limits: a malformed chain (unknown rule, action or chain, a jump loop) raises ChainError,
a programming or configuration error, never a disposition; ``check_chains`` finds the same
errors up front for all links, not just the ones a given document reaches. A rule that
raises is not caught: that is a bug to see.
"""

from __future__ import annotations

from collections.abc import Mapping

from rules.builtin import RULES
from rules.chains import DEFAULT_CHAINS
from rules.facts import Facts
from rules.model import ACTIONS, ANY, DEFER, FLAG, HOLD, JUMP, Chain, Decision, Hit, Rule

END_OF_CHAIN = "end-of-chain"


class ChainError(ValueError):
    """The chains themselves are wrong (unknown rule/action/chain, jump loop)."""


def evaluate(facts: Facts, chains: Mapping[str, Chain] = DEFAULT_CHAINS, start: str = "main",
             rules: Mapping[str, Rule] = RULES) -> Decision:
    """Return the one decision for ``facts``, with reasons, flags and the full trail."""
    trail: list[Hit] = []
    shown: list[Hit] = []  # matched hits whose reason the user reads
    deferred: list[Hit] = []
    flags: list[str] = []
    visited: set[str] = set()
    name = start
    while True:
        if name in visited:
            raise ChainError(f"jump loop: chain {name!r} reached twice")
        visited.add(name)
        chain = chains.get(name)
        if chain is None:
            raise ChainError(f"unknown chain {name!r}")
        target = _run_chain(facts, name, chain, rules, trail, shown, deferred, flags)
        if isinstance(target, Decision):
            return target
        if target is None:
            hit = Hit(END_OF_CHAIN, True, HOLD,
                      f"{END_OF_CHAIN}: no rule decided in chain {name}: a person decides",
                      name)
            trail.append(hit)
            shown.append(hit)
            return _decide(HOLD, None, shown, deferred, flags, trail, rules)
        name = target


def _run_chain(facts: Facts, name: str, chain: Chain, rules: Mapping[str, Rule],
               trail: list[Hit], shown: list[Hit], deferred: list[Hit],
               flags: list[str]) -> Decision | str | None:
    """Evaluate one chain: a Decision, the chain to jump to, or None when it falls off."""
    for rule_name, action, target in chain:
        if action not in ACTIONS:
            raise ChainError(f"chain {name!r}: unknown action {action!r}")
        rule: Rule | None = None
        if rule_name == ANY:
            matched = bool(deferred)
            text = ("held for: " + ", ".join(h.rule for h in deferred) if matched
                    else "no check asked for a person")
        else:
            rule = rules.get(rule_name)
            if rule is None:
                raise ChainError(f"chain {name!r}: unknown rule {rule_name!r}")
            matched = rule.check(facts)
            text = rule.explain(facts, matched)
        if matched and action == JUMP:
            text += f" -> chain {target}"
        hit = Hit(rule_name, matched, action, f"{rule_name}: {text}", name)
        trail.append(hit)
        if not matched:
            continue
        if action == JUMP:
            if target is None:
                raise ChainError(f"chain {name!r}: jump on {rule_name!r} without a target")
            return target
        if rule is not None:
            shown.append(hit)
            if rule.flags is not None:
                for flag in rule.flags(facts):
                    if flag not in flags:
                        flags.append(flag)
        if action == DEFER:
            if rule is not None:
                deferred.append(hit)
        elif action != FLAG:
            code = rule.code if rule is not None else None
            return _decide(action, code, shown, deferred, flags, trail, rules)
    return None


def _decide(action: str, code: str | None, shown: list[Hit], deferred: list[Hit],
            flags: list[str], trail: list[Hit], rules: Mapping[str, Rule]) -> Decision:
    if code is None and action == HOLD:
        # A hold carries the reason code a person would most likely use: the first deferred
        # check that has one (e.g. COORD_BANC_ERR for a changed IBAN).
        code = next((c for h in deferred if (c := rules[h.rule].code) is not None), None)
    return Decision(action=action, code=code, reasons=tuple(h.reason for h in shown),
                    flags=tuple(flags), trail=tuple(trail))


def check_chains(chains: Mapping[str, Chain], rules: Mapping[str, Rule] = RULES,
                 start: str = "main") -> list[str]:
    """Every problem in ``chains`` (empty when sound): names, actions, targets, loops."""
    problems: list[str] = []
    if start not in chains:
        problems.append(f"no start chain {start!r}")
    for name, chain in chains.items():
        for n, (rule_name, action, target) in enumerate(chain, 1):
            where = f"{name}[{n}]"
            if rule_name != ANY and rule_name not in rules:
                problems.append(f"{where}: unknown rule {rule_name!r}")
            if action not in ACTIONS:
                problems.append(f"{where}: unknown action {action!r}")
            if action == JUMP and target not in chains:
                problems.append(f"{where}: jump to unknown chain {target!r}")
            if action != JUMP and target is not None:
                problems.append(f"{where}: target {target!r} on a {action} link")
            if rule_name == ANY and action in (FLAG, DEFER):
                problems.append(f"{where}: 'any' with {action} has no effect")
    problems.extend(_loops(chains))
    return problems


def _loops(chains: Mapping[str, Chain]) -> list[str]:
    edges = {name: [t for _, a, t in chain if a == JUMP and t in chains]
             for name, chain in chains.items()}
    found: list[str] = []

    def walk(name: str, path: tuple[str, ...]) -> None:
        for target in edges.get(name, []):
            if target is None:
                continue
            if target in path:
                found.append("jump loop: " + " -> ".join((*path, target)))
            else:
                walk(target, (*path, target))

    for name in chains:
        walk(name, (name,))
    return sorted(set(found))
