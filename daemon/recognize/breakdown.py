"""VAT breakdown: (rate, base, tax) rows that explain the net and tax totals.

Job: find candidate rows on the page (a VAT rate with a base and a tax that is base x rate, a
rate with one amount, per-rate lines stacked over their amounts, line items with a rate
column) and choose, for a given (net, tax), the breakdown that sums to it; say what it rests
on, from printed rows (validated) down to a single standard rate that explains net and tax.

What it may touch: nothing (pure functions over a ``Doc``).

Limits: per-rate VAT amounts printed without their bases (and without line items carrying
the rate) give no breakdown; rates outside ``RATES`` are only taken when printed with a
percent sign.
"""

from __future__ import annotations

import functools
import itertools
from decimal import ROUND_HALF_UP, Decimal

from daemon.recognize.amounts import decimal_style, find_amounts, find_percents
from daemon.recognize.locate import next_nonempty
from daemon.recognize.text import Doc

CENT = Decimal("0.01")

RATES = tuple(Decimal(r) for r in (
    "20", "10", "5.5", "2.1", "8.5", "21", "6", "12", "9", "19", "7", "0", "17", "14", "8",
    "3", "16", "22", "4", "5", "23", "13.5", "13", "15", "25", "24", "27", "18", "2.6", "3.7",
    "8.1", "7.7"))

def rate_fits(net: Decimal, tax: Decimal) -> Decimal | None:
    for rate in RATES:
        if rate and abs(net * rate / 100 - tax) <= Decimal("0.011"):
            return rate
    return None


def breakdown_for(rows: list[tuple[Decimal, Decimal | None, Decimal, int]],
                   items: tuple[tuple[Decimal, Decimal], ...], printed: set[Decimal],
                   net: Decimal,
                   tax: Decimal) -> tuple[tuple[tuple[Decimal, Decimal, Decimal], ...] | None, str]:
    """The VAT breakdown that fits (net, tax), and what it rests on: "rows" (printed
    rate/base/tax rows), "items" (bases from line items, taxes printed or single rate),
    "computed" (bases from items, per-rate taxes computed), "rate" (one standard rate
    explains net and tax). Per-rate taxes without their bases give no breakdown: bases
    estimated from them are often a cent off."""
    if tax == 0:
        return None, "none"
    found = match_breakdown(rows, net, tax)
    if found:
        return found, "rows"
    tax_only: dict[Decimal, set[Decimal]] = {}
    for rate, base, t, _ in rows:
        if base is None and rate:
            tax_only.setdefault(rate, set()).add(t)
    found, how = item_breakdown(items, tax_only, net, tax)
    if found:
        return found, how
    fit = rate_fits(net, tax)
    if fit is not None:
        return ((fit, net, tax),), "rate"
    return None, "none"


def item_breakdown(items: tuple[tuple[Decimal, Decimal], ...],
                   printed: dict[Decimal, set[Decimal]], net: Decimal, tax: Decimal
                   ) -> tuple[tuple[tuple[Decimal, Decimal, Decimal], ...] | None, str]:
    """Per-rate bases summed from line items (rate, line total) when they explain the totals;
    per-rate taxes from the printed VAT lines when there are, else computed."""
    bases = _item_bases(items)
    if not bases or abs(sum(bases.values(), Decimal(0)) - net) > CENT:
        return None, "none"
    out = []
    how = "items"
    for rate in sorted(bases, reverse=True):
        base = bases[rate]
        computed = (base * rate / 100).quantize(CENT, ROUND_HALF_UP)
        near = [t for t in printed.get(rate, ()) if abs(t - computed) <= CENT * len(items)]
        if len(bases) == 1:
            value = tax
        elif len(near) == 1:
            value = near[0]
        else:
            value, how = computed, "computed"
        out.append((rate, base, value))
    if abs(sum((x[2] for x in out), Decimal(0)) - tax) > CENT * max(1, len(items) // 2):
        return None, "none"
    return tuple(out), how


@functools.lru_cache(maxsize=256)
def _item_bases(items: tuple[tuple[Decimal, Decimal], ...]) -> dict[Decimal, Decimal]:
    bases: dict[Decimal, Decimal] = {}
    for rate, total in items:
        bases[rate] = bases.get(rate, Decimal(0)) + total
    return bases


def breakdown_rows(doc: Doc) -> tuple[list[tuple[Decimal, Decimal | None, Decimal, int]],
                                     tuple[tuple[Decimal, Decimal], ...]]:
    """(rate, base, tax, line) rows where tax = base x rate, or a rate with one amount; and
    (rate, last amount) of every line with one rate and amounts on both sides (line items).
    A line with several rates ("VAT 20%: 10.00   VAT 5%: 2.00") is cut before each rate."""
    style = decimal_style(doc.lines)
    rows: list[tuple[Decimal, Decimal | None, Decimal, int]] = []
    items: list[tuple[Decimal, Decimal]] = []
    for i, line in enumerate(doc.lines):
        amounts = find_amounts(line, style)
        rates = [(p, s, e) for p, s, e in find_percents(line) if p <= 30]
        if not rates and len(amounts) >= 3 and amounts[0].value in RATES and \
                amounts[0].currency is None and amounts[0].start < len(line) // 2:
            rates = [(amounts[0].value, amounts[0].start, amounts[0].end)]
        if len(rates) == 1:
            rate, s, e = rates[0]
            if any(a.end <= s for a in amounts) and amounts and amounts[-1].start >= e:
                items.append((rate, amounts[-1].value))
            _rows_in(rows, rate, [a.value for a in amounts if a.end <= s or a.start >= e], i)
        elif len(rates) > 1 and amounts and amounts[0].start > rates[0][2]:
            for k, (rate, _, e) in enumerate(rates):
                stop = rates[k + 1][1] if k + 1 < len(rates) else len(line)
                _rows_in(rows, rate, [a.value for a in amounts if e <= a.start < stop], i)
        if len(rates) == 1 and not amounts:  # "VAT 20%" over its amount (labels above values)
            for j in next_nonempty(doc, i, 1):
                below = find_amounts(doc.lines[j], style)
                if len(below) == 1 and not find_percents(doc.lines[j]):
                    rows.append((rates[0][0], None, below[0].value, j))
    return rows, tuple(items)


def _rows_in(rows: list[tuple[Decimal, Decimal | None, Decimal, int]], rate: Decimal,
             vals: list[Decimal], line: int) -> None:
    pairs = [(b, t) for b, t in itertools.permutations(vals, 2)
             if b and abs(b * rate / 100 - t) <= Decimal("0.02") and abs(t) < abs(b)]
    rows.extend((rate, b, t, line) for b, t in pairs)
    if not pairs and len(vals) == 1:
        rows.append((rate, None, vals[0], line))
    if rate == 0 and vals:
        rows.extend((rate, v, Decimal("0.00"), line) for v in vals if v)


def match_breakdown(rows: list[tuple[Decimal, Decimal | None, Decimal, int]], net: Decimal,
                    tax: Decimal) -> tuple[tuple[Decimal, Decimal, Decimal], ...] | None:
    """The rows, one per rate, whose bases sum to ``net`` and taxes to ``tax``."""
    options: dict[Decimal, set[tuple[Decimal, Decimal]]] = {}
    for rate, base, t, _ in rows:
        if base is None:
            if abs(net * rate / 100 - t) <= Decimal("0.011") and t == tax:
                options.setdefault(rate, set()).add((net, t))
        else:
            options.setdefault(rate, set()).add((base, t))
    rates = sorted(options, reverse=True)[:6]
    best: tuple[tuple[Decimal, Decimal, Decimal], ...] | None = None
    choices = [[*sorted(options[r])[:4], None] for r in rates]
    for combo in itertools.product(*choices):
        picked = [(r, c[0], c[1]) for r, c in zip(rates, combo, strict=True) if c is not None]
        if not picked:
            continue
        tol = CENT * len(picked)
        if abs(sum(p[1] for p in picked) - net) <= tol and \
                abs(sum(p[2] for p in picked) - tax) <= tol and \
                (best is None or len(picked) > len(best)):
            best = tuple(picked)
    return best
