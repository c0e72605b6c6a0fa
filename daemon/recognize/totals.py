"""Totals: net, tax, gross and amount due, chosen by arithmetic among labelled amounts.

Job: give every amount on the page role scores from the labels around it (the label to its
left on the same line, the column header above it, a label alone on the line before, or a
stack of labels over a stack of amounts), then choose the (net, tax, gross) triple with
net + tax = gross (within 0.01) that the labels support best, preferring the total row of a
table whose other rows add up to it; the VAT breakdown (``breakdown``) must fit it, and the
amount due must be gross minus deposits. Confidence is high only when the arithmetic holds
*and* the amounts carry the right labels and no other labelled combination also adds up;
otherwise low confidence and a problem code ("totals-do-not-reconcile", "no-total-found",
"amount-due-does-not-reconcile").

What it may touch: nothing (pure functions over a ``Doc`` and its label hits).

Limits: amounts far from any label are used only as a last resort and never confidently; a
total printed without any tax line is read as VAT-free only when net and gross labels agree
or the document says it is exempt; bare integers count only right after their label.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from decimal import Decimal

from daemon.recognize.amounts import Amount, decimal_style, find_amounts, find_percents
from daemon.recognize.breakdown import CENT, breakdown_for, breakdown_rows
from daemon.recognize.lexicon import Hit
from daemon.recognize.locate import Labels, header_span
from daemon.recognize.text import Doc

_BLOCKING = frozenset({"item", "capital", "phone", "order_no", "customer_no", "siren", "siret",
                       "rcs", "kvk", "other_ref", "iban", "bic", "vat_id", "buyer_vat",
                       "number", "other_date", "payment_ref"})
_EXEMPT = ("non applicable", "art. 293 b", "article 293 b", "exoner", "autoliquidation",
           "reverse charge", "btw verlegd", "verlegd", "vrijgesteld", "exempt", "not subject to",
           "steuerfrei", "0% vat", "hors champ")


@dataclass
class Cand:
    """One amount token with the role scores its labels give it."""

    amount: Amount
    line: int
    roles: dict[str, float] = field(default_factory=dict)
    blocked: bool = False


@dataclass(frozen=True)
class Totals:
    net: Decimal | None = None
    tax: Decimal | None = None
    gross: Decimal | None = None
    due: Decimal | None = None
    breakdown: tuple[tuple[Decimal, Decimal, Decimal], ...] | None = None
    confidence: dict[str, float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    currency: str | None = None


def collect(doc: Doc, labels: Labels) -> list[Cand]:
    style = decimal_style(doc.lines)
    cands: list[Cand] = []
    for i, line in enumerate(doc.lines):
        amounts = find_amounts(line, style)
        for k, amount in enumerate(amounts):
            cand = Cand(amount, i)
            _score(doc, labels, cand, amounts[:k])
            cands.append(cand)
    _pair_blocks(doc, labels, cands)
    return cands


def _label_only(doc: Doc, labels: Labels, line: int) -> Hit | None:
    """The amount label a line consists of ("Subtotal", "Tax 15%:"), if that is all it is."""
    hits = labels.get(line, [])
    if len(hits) != 1 or not hits[0].amount_role:
        return None
    rest = doc.folded[line][:hits[0].start] + doc.folded[line][hits[0].end:]
    rest = re.sub(r"\d{1,2}(?:[.,]\d{1,2})?\s?%|\(|\)", "", rest)
    return hits[0] if not rest.strip(" :.-") else None


def _pair_blocks(doc: Doc, labels: Labels, cands: list[Cand]) -> None:
    """Labels stacked in one block and their amounts stacked in another, as OCR and
    reading-order text print a two-column totals box: pair the k-th label with the k-th
    amount of the next run of exactly as many lone amounts."""
    by_line: dict[int, list[Cand]] = {}
    for c in cands:
        by_line.setdefault(c.line, []).append(c)
    lines = [i for i, text in enumerate(doc.lines) if text.strip()]
    lone = [len(by_line.get(i, [])) == 1 and not labels.get(i) and _lone(doc, by_line[i][0])
            for i in lines]
    claimed: set[int] = set()
    k = 0
    while k < len(lines):
        run: list[Hit] = []
        while k < len(lines) and (hit := _label_only(doc, labels, lines[k])) is not None:
            run.append(hit)
            k += 1
        if len(run) < 2:
            k += 1 if not run else 0
            continue
        for start in range(k, min(len(lines), k + 80)):
            if not lone[start] or (start > k and lone[start - 1]) or start in claimed:
                continue
            end = start
            while end < len(lines) and lone[end]:
                end += 1
            if end - start == len(run):
                for hit, idx in zip(run, range(start, end), strict=True):
                    by_line[lines[idx]][0].roles = {hit.role: 0.7 * hit.strength}
                    claimed.add(idx)
                break


def _lone(doc: Doc, cand: Cand) -> bool:
    """The amount is all its line holds (besides a currency sign)."""
    a = cand.amount
    rest = doc.lines[cand.line][:a.start] + doc.lines[cand.line][a.end:]
    return not rest.strip(" :.-€$£")


def _score(doc: Doc, labels: Labels, cand: Cand, before: list[Amount]) -> None:
    a = cand.amount
    row = [h for h in labels.get(cand.line, ()) if h.end <= a.start]
    nearest = max(row, key=lambda h: h.end) if row else None
    cell = doc.cell_at(cand.line, nearest.start) if nearest is not None else None
    if cell is not None:  # "Montant HT de l'acompte": the cell's first amount label leads
        lead = [h for h in row if cell.start <= h.start < cell.end and h.amount_role]
        if lead:
            nearest = min(lead, key=lambda h: h.start)
    if nearest is not None:
        between = sum(1 for b in before if b.start >= nearest.end)
        if nearest.amount_role:
            cand.roles[nearest.role] = nearest.strength * (1.0 if between == 0 else 0.9)
        elif nearest.role in _BLOCKING and between == 0:
            cand.blocked = True
    if a.decimals == 0 and a.currency is None:
        gap = doc.lines[cand.line][nearest.end:a.start] if nearest is not None else "x"
        if not re.fullmatch(r"[\s:=.]*", gap):
            cand.roles.clear()  # "please pay within 30 days": 30 is not an amount
        return  # a bare integer is an amount only when a label right before it says so
    header, distance = _column_header(doc, labels, cand)
    if header is not None:
        if header.amount_role and (nearest is None or nearest.amount_role):
            factor = (0.85 if nearest is not None else 0.8) if distance <= 3 else 0.45
            cand.roles[header.role] = max(cand.roles.get(header.role, 0.0),
                                          factor * header.strength)
        elif header.role == "item" and nearest is None:
            cand.blocked = True
    if nearest is None and not cand.roles:
        for j in _previous_nonempty(doc, cand.line):
            hits = labels.get(j, [])
            rest = doc.folded[j]
            for h in hits:
                rest = rest[:h.start] + " " * (h.end - h.start) + rest[h.end:]
            if len(hits) == 1 and hits[0].amount_role and not rest.strip(" :.-"):
                cand.roles[hits[0].role] = 0.75 * hits[0].strength
            break


def _previous_nonempty(doc: Doc, line: int) -> list[int]:
    for j in range(line - 1, max(-1, line - 4), -1):
        if doc.lines[j].strip():
            return [j]
    return []


def _column_header(doc: Doc, labels: Labels, cand: Cand) -> tuple[Hit | None, int]:
    a = cand.amount
    for j in range(cand.line - 1, max(-1, cand.line - 9), -1):
        hits = labels.get(j)
        if not hits:
            continue
        over = [h for h in hits if _overlap(header_span(doc, h), (a.start, a.end))]
        if over and not find_amounts(doc.lines[j]):
            return over[0], cand.line - j
    return None, 0


def _overlap(span: tuple[int, int], other: tuple[int, int]) -> bool:
    return span[0] < other[1] + 1 and other[0] < span[1] + 1


def _best_scores(cands: list[Cand]) -> dict[Decimal, dict[str, float]]:
    """Per distinct value: the best score of each role over its tokens."""
    out: dict[Decimal, dict[str, float]] = {}
    for c in cands:
        if c.blocked and not c.roles:
            continue
        roles = out.setdefault(c.amount.value, {})
        for role, score in c.roles.items():
            roles[role] = max(roles.get(role, 0.0), score)
        if c.amount.decimals == 2:
            roles["any"] = max(roles.get("any", 0.0), 0.1)
    return out


@dataclass(frozen=True)
class _Triple:
    score: float
    net: Decimal
    tax: Decimal
    gross: Decimal
    breakdown: tuple[tuple[Decimal, Decimal, Decimal], ...] | None
    how: str  # rows | items | rate | none: what backs the breakdown


def reconcile(doc: Doc, labels: Labels) -> Totals:
    cands = collect(doc, labels)
    scores = _best_scores(cands)
    exempt = any(word in "\n".join(doc.folded) for word in _EXEMPT)
    rows, items = breakdown_rows(doc)
    printed_rates = {p for line in doc.lines for p, _, _ in find_percents(line)}

    def score(value: Decimal, role: str) -> float:
        roles = scores.get(value, {})
        s = roles.get(role, 0.0)
        if role == "gross":
            s = max(s, 0.7 * roles.get("due", 0.0))
        return max(s, roles.get("any", 0.0))

    values = [v for v in scores if any(scores[v].values())]
    nets = _top({v: score(v, "net") for v in values if v != 0})
    taxes = _top({v: score(v, "tax") for v in values})
    grosses = {v: score(v, "gross") for v in values if v != 0}
    labelled_taxes = sorted(((v, s) for v, s in taxes.items() if s >= 0.5 and v),
                            key=lambda x: -x[1])[:8]
    for size in (2, 3):  # per-rate VAT lines without a VAT total
        for combo in itertools.combinations(labelled_taxes, size):
            total = sum((v for v, _ in combo), Decimal(0))
            taxes.setdefault(total, min(s for _, s in combo) - 0.05)

    def triple(n: Decimal, t: Decimal, g: Decimal, bonus: float = 0.0) -> _Triple:
        s = nets.get(n, 0.0) + taxes.get(t, 0.0) + grosses.get(g, 0.0) + bonus
        breakdown, how = breakdown_for(rows, items, printed_rates, n, t)
        s += {"rows": 0.4, "items": 0.3, "computed": 0.3, "rate": 0.2}.get(how, 0.0)
        return _Triple(s, n, t, g, breakdown, how)

    triples: list[_Triple] = []
    for n, t in itertools.product(nets, taxes):
        if t == n or (n > 0 > t) or (n < 0 < t) or t == 0 or abs(t) >= abs(n) * Decimal("0.3"):
            continue
        for g in (n + t, n + t + CENT, n + t - CENT):
            if g in grosses and max(nets[n], taxes[t], grosses[g]) >= 0.5:
                triples.append(triple(n, t, g))
    no_tax_line = not any(s >= 0.5 for v, s in taxes.items() if v)
    zero_tax = exempt or taxes.get(Decimal(0), 0.0) >= 0.5 or no_tax_line
    for g in grosses if zero_tax else ():  # only when the document says there is no VAT
        if nets.get(g, 0.0) > 0.2 and grosses[g] > 0.2:
            taxes.setdefault(Decimal("0.00"), 0.5 if exempt or no_tax_line else
                             taxes.get(Decimal(0), 0.0))
            triples.append(triple(g, Decimal("0.00"), g, bonus=-0.3))
    if not triples:
        gross_only = sorted(((s, v) for v, s in grosses.items() if s >= 0.5), reverse=True)
        return _unreconciled(scores, gross_only, cands)
    triples.sort(key=lambda x: x.score, reverse=True)
    totals_rows = {id(x) for x in triples[:8] if _sums_others(x, triples)}
    triples.sort(key=lambda x: x.score + (0.6 if id(x) in totals_rows else 0.0), reverse=True)
    best = triples[0]
    n, t, g = best.net, best.tax, best.gross
    labelled = min(nets[n], taxes.get(t, 0.0), grosses[g])
    conf = 0.75
    if labelled >= 0.5:
        conf = 0.97 if best.how != "none" else 0.92
    rivals = [x for x in triples[1:] if (x.gross != g or x.net != n) and x.gross != 0 and
              min(nets[x.net], taxes.get(x.tax, 0.0), grosses[x.gross]) >= 0.5]
    if rivals and id(best) not in totals_rows and rivals[0].score >= best.score - 0.5:
        conf = min(conf, 0.75)  # another labelled combination also adds up: please check
    problems: list[str] = []
    for v in (n, t, g):  # a deposit is never the invoice's own net, tax or gross
        scores.get(v, {}).pop("deposit", None)
    pages = {doc.pages[c.line] for c in cands if c.amount.value == g} if doc.pages else set()
    elsewhere = {c.amount.value for c in cands if doc.pages and doc.pages[c.line] not in pages}
    here = {c.amount.value for c in cands if not doc.pages or doc.pages[c.line] in pages}
    for v in elsewhere - here:  # an amount due is printed on the page of its total
        scores.get(v, {}).pop("due", None)
    due, due_conf = _amount_due(scores, g, conf, problems)
    b_conf = {"rows": conf, "items": min(conf, 0.93), "computed": min(conf, 0.85),
              "rate": min(conf, 0.9)}.get(best.how, 0.0)
    if best.how == "rate" and best.breakdown and best.breakdown[0][0] not in printed_rates:
        b_conf = min(b_conf, 0.8)
    confidence = {"total_net": conf, "total_tax": conf, "total_gross": conf,
                  "amount_due": due_conf, "vat_breakdown": b_conf}
    if t == 0 and not exempt and scores.get(Decimal(0), {}).get("tax", 0.0) < 0.5:
        confidence["total_tax"] = min(conf, 0.85)  # no VAT line at all: zero is inferred
    currency = next((c.amount.currency for c in cands if c.amount.value == g and
                     c.amount.currency), None)
    return Totals(n, t, g, due, best.breakdown, confidence, tuple(problems), currency)


def _top(scored: dict[Decimal, float], limit: int = 120) -> dict[Decimal, float]:
    """The best-supported candidates only: bounds the pair search on long documents."""
    return dict(sorted(scored.items(), key=lambda kv: -kv[1])[:limit])


def _sums_others(total: _Triple, triples: list[_Triple]) -> bool:
    """True when two or more other triples add up to this one (the total row of a table)."""
    parts = list({(x.net, x.tax) for x in triples
                  if x is not total and 0 < x.net < total.net and x.tax <= total.tax})[:10]
    for size in range(2, len(parts) + 1):
        for combo in itertools.combinations(parts, size):
            if abs(sum((c[0] for c in combo), Decimal(0)) - total.net) <= CENT * size and \
                    abs(sum((c[1] for c in combo), Decimal(0)) - total.tax) <= CENT * size:
                return True
    return False


def _unreconciled(scores: dict[Decimal, dict[str, float]], gross_only: list[tuple[float, Decimal]],
                  cands: list[Cand]) -> Totals:
    if not gross_only:
        return Totals(problems=("no-total-found",))
    g = gross_only[0][1]
    net = max(((r.get("net", 0.0), v) for v, r in scores.items() if r.get("net", 0.0) >= 0.5),
              default=None)
    tax = max(((r.get("tax", 0.0), v) for v, r in scores.items() if r.get("tax", 0.0) >= 0.5),
              default=None)
    problems = ["totals-do-not-reconcile"] if net or tax else []
    conf = 0.4 if problems else 0.6
    if len(gross_only) > 1 and gross_only[1][0] >= gross_only[0][0] - 0.1:
        conf = min(conf, 0.4)
    due_labelled = max(((r.get("due", 0.0), v) for v, r in scores.items()
                        if r.get("due", 0.0) >= 0.7), default=None)
    due = due_labelled[1] if due_labelled else g
    currency = next((c.amount.currency for c in cands if c.amount.value == g and
                     c.amount.currency), None)
    return Totals(net[1] if net else None, tax[1] if tax else None, g, due, None,
                  {"total_net": 0.4, "total_tax": 0.4, "total_gross": conf,
                   "amount_due": min(conf, 0.5)}, tuple(problems), currency)


def _amount_due(scores: dict[Decimal, dict[str, float]], gross: Decimal, conf: float,
                problems: list[str]) -> tuple[Decimal, float]:
    dues = sorted(((r["due"], v) for v, r in scores.items() if r.get("due", 0.0) >= 0.5),
                  reverse=True)
    deposits = [abs(v) for v, r in scores.items() if r.get("deposit", 0.0) >= 0.5 and v]
    explained: list[Decimal] = []
    for size in range(1, min(3, len(deposits)) + 1):
        for combo in itertools.combinations(deposits, size):
            explained.append(gross - sum(combo, Decimal(0)))
    for _, due in dues:
        if due == gross and not deposits:
            return due, conf
        if any(abs(due - e) <= CENT for e in explained):
            return due, min(conf, 0.96)
    for _, due in dues:
        if due == gross:
            return due, min(conf, 0.8)
    if dues:
        problems.append("amount-due-does-not-reconcile")
        return dues[0][1], 0.4
    if len(explained) == 1 and len(deposits) == 1:
        return explained[0], min(conf, 0.8)
    return gross, min(conf, 0.85) if not deposits else 0.5  # inferred, not printed


