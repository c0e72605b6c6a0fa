"""Money amounts, percentages and currencies as printed on invoices.

Job: find amount tokens in a line ("1 234,56 €", "1.234,56 EUR", "€1,234.56", "1234.56",
"-12,00", "(12.00)") and parse them to ``Decimal``; find VAT-rate percentages; name the
currency of a symbol or code.

What it may touch: nothing (pure functions).

Limits: a number with one separator and three digits after it ("1,234", "1.234") is ambiguous;
the caller passes the document's decimal style (from its unambiguous amounts) to decide. A
plain space is taken as a thousands separator only when a decimal part or a currency follows,
so "2 345" in a quantity column stays two numbers.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from daemon.recognize.text import GROUP_SPACE

CURRENCY_CODES = ("EUR", "USD", "GBP", "CHF", "CAD", "AUD", "JPY", "PLN", "SEK", "DKK", "NOK",
                  "CZK", "HUF", "RON", "BGN", "CNY", "INR", "NZD", "HKD", "SGD", "MAD", "XOF",
                  "XPF", "TND")
SYMBOLS = {"€": "EUR", "£": "GBP", "$": "USD", "US$": "USD", "CA$": "CAD", "C$": "CAD",
           "A$": "AUD", "AU$": "AUD", "¥": "JPY", "zł": "PLN", "Fr.": "CHF"}
_CUR = r"(?:US\$|CA\$|AU\$|A\$|C\$|€|£|\$|¥|" + "|".join(CURRENCY_CODES) + r")"
_CUR_AFTER = _CUR[:-1] + r"|(?i:euros?)|zł)"
_NUM = (r"(?:\d{1,3}(?: \d{3})+(?:[.,]\d{1,2}(?!\d)|(?=\s?(?:€|EUR|(?i:euro))))"
        r"|\d{1,3}(?P<g>[" + GROUP_SPACE + r".,'])\d{3}(?:(?P=g)\d{3})*(?:[.,]\d{1,3})?"
        r"|\d+(?:[.,]\d{1,3})?)")
AMOUNT = re.compile(
    r"(?<![\w.,/@+#-])(?P<neg>\(|-\s?|−)?(?P<pre>" + _CUR + r")?\s?(?P<neg2>-)?\s?"
    r"(?P<num>" + _NUM + r")(?![\w%/]|[.,]\d|\s?%)"
    r"(?:\s?(?P<post>" + _CUR_AFTER + r")(?![A-Za-z]))?(?P<neg3>-(?![\w]))?(?P<close>\))?",
)
PERCENT = re.compile(r"(?<![\d.,])(\d{1,2}(?:[.,]\d{1,3})?)\s?%")


@dataclass(frozen=True)
class Amount:
    """An amount token on a line: value, columns, currency (ISO) when printed beside it."""

    value: Decimal
    start: int
    end: int
    currency: str | None
    decimals: int
    raw: str


def currency_of(token: str) -> str | None:
    upper = token.upper()
    if upper in CURRENCY_CODES:
        return upper
    if upper.startswith("EURO"):
        return "EUR"
    return SYMBOLS.get(token)


def decimal_style(lines: list[str] | tuple[str, ...]) -> str | None:
    """"comma" or "dot": which decimal separator the document's unambiguous amounts use."""
    comma = dot = 0
    for line in lines:
        comma += len(re.findall(r"(?<![\d.,])\d{1,3}(?:[ .\u202f]\d{3})*,\d{2}(?![\d.,])", line))
        dot += len(re.findall(r"(?<![\d.,])\d{1,3}(?:[ ,\u202f]\d{3})*\.\d{2}(?![\d.,])", line))
    if comma == dot:
        return None
    return "comma" if comma > dot else "dot"


def parse_number(raw: str, style: str | None = None) -> tuple[Decimal, int] | None:
    """``"1 234,56"`` -> (Decimal("1234.56"), 2); None when not a well-formed number."""
    s = raw.replace(" ", GROUP_SPACE).replace("'", GROUP_SPACE)
    seps = [c for c in s if not c.isdigit()]
    if not seps:
        return Decimal(s), 0
    last = s.rfind(seps[-1])
    tail = len(s) - last - 1
    kinds = set(seps)
    if len(kinds) == 1 and len(seps) == 1 and seps[0] in ",." and tail == 3:
        # "1,234" / "1.234": thousands or three decimals; the document decides
        is_decimal = (style == "comma") == (seps[0] == ",") if style else seps[0] == "."
        if not is_decimal:
            return Decimal(s.replace(seps[0], "")), 0
    if seps[-1] in ",." and tail <= 3 and (len(seps) == 1 or seps[-1] != seps[0]):
        integer, frac = s[:last], s[last + 1:]
        group = {c for c in integer if not c.isdigit()}
        if len(group) > 1 or (group and seps[-1] in group):
            return None
        digits = re.sub(r"\D", "", integer)
        try:
            return Decimal(f"{digits}.{frac}"), len(frac)
        except InvalidOperation:
            return None
    if len(kinds) == 1 and tail == 3:
        return Decimal(re.sub(r"\D", "", s)), 0
    return None


def find_amounts(line: str, style: str | None = None) -> list[Amount]:
    """Amount tokens of a line, left to right (a fresh list; the parse is cached)."""
    return list(_find_amounts(line, style))


@functools.lru_cache(maxsize=8192)
def _find_amounts(line: str, style: str | None) -> tuple[Amount, ...]:
    found = []
    for m in AMOUNT.finditer(line):
        raw = m.group("num")
        pre, post = m.group("pre"), m.group("post")
        if (raw.isdigit() and not (pre or post)
                and re.match(r"\s\d", line[m.end():m.end() + 2])):
            continue  # "01 23 45 67 89": a phone number or a list of small integers
        parsed = parse_number(raw, style)
        if parsed is None:
            continue
        value, decimals = parsed
        negative = bool(m.group("neg2") or m.group("neg3")
                        or (m.group("neg") and m.group("neg").strip() in "-−")
                        or (m.group("neg") == "(" and m.group("close")))
        currency = currency_of(pre) if pre else currency_of(post) if post else None
        start = m.start("neg") if m.group("neg") else m.start()
        found.append(Amount(-value if negative else value, start, m.end(), currency, decimals,
                            m.group(0).strip()))
    return tuple(found)


def find_percents(line: str) -> list[tuple[Decimal, int, int]]:
    out = []
    for m in PERCENT.finditer(line):
        try:
            out.append((Decimal(m.group(1).replace(",", ".")), m.start(), m.end()))
        except InvalidOperation:
            continue
    return out


def find_currencies(line: str) -> list[str]:
    """ISO codes of every currency symbol, code or word on a line."""
    out = [currency_of(m.group(0)) or "" for m in re.finditer(
        r"(?<![A-Za-z])(?:" + "|".join(CURRENCY_CODES) + r"|euros?|Euros?)(?![A-Za-z])"
        r"|US\$|CA\$|AU\$|A\$|€|£|\$", line)]
    return [c for c in out if c]
