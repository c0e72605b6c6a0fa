"""Dates and payment terms as printed on French, English and Dutch invoices.

Job: find date tokens in a folded line ("29/11/2026", "29.11.2026", "2026-11-29",
"29 novembre 2026", "29 nov. 2026", "nov 29, 2026", "29 november 2026") with every reading a
numeric date allows (day/month or month/day), and turn payment terms ("30 jours fin de mois",
"à réception", "Net 30", "paiement à 30 jours", "binnen 14 dagen") into a due date.

What it may touch: nothing (pure functions).

Limits: two-digit years are read as 20xx; "N jours fin de mois" is read as the end of the month
in which issue date + N days falls (the common reading; "fin de mois + N jours" also exists);
terms other than a number of days (e.g. "le 10 du mois suivant") are not understood.
"""

from __future__ import annotations

import calendar
import functools
import re
from dataclasses import dataclass
from datetime import date, timedelta

MONTHS: dict[str, int] = {}
for _num, _names in enumerate((
    "janvier janv jan january januari januar jaenner",
    "fevrier fevr fev feb february februari februar",
    "mars mar march maart mrt marz maerz",
    "avril avr apr april",
    "mai may mei",
    "juin jun june juni",
    "juillet juil jul july juli",
    "aout aou aug august augustus",
    "septembre sept sep september",
    "octobre oct october oktober okt",
    "novembre nov november",
    "decembre dec december dezember dez",
), start=1):
    for _name in _names.split():
        MONTHS[_name] = _num
_MONTH = "(?:" + "|".join(sorted(MONTHS, key=len, reverse=True)) + ")"
_NUMERIC = re.compile(
    r"(?<![\d/.\-])(\d{1,2})([/.\-])(\d{1,2})\2(\d{4}|\d{2})(?![\d]|[/.\-]\d)")
_ISO = re.compile(r"(?<![\d/.\-])(\d{4})([/.\-])(\d{1,2})\2(\d{1,2})(?![\d]|[/.\-]\d)")
_DAY_MONTH = re.compile(
    r"(?<![\d\w])(\d{1,2})(?:er|st|nd|rd|th|\.)?\s*(?:de\s+)?(" + _MONTH +
    r")\b\.?,?\s*(\d{4}|'?\d{2})(?![\d])")
_MONTH_DAY = re.compile(
    r"(?<![\w])(" + _MONTH + r")\b\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})(?![\d])")


@dataclass(frozen=True)
class DateTok:
    """A date on a line; ``readings`` holds every valid interpretation, preferred first."""

    start: int
    end: int
    readings: tuple[date, ...]
    order: str  # "dmy", "mdy", "ymd", "text" (month in letters), or "?" (ambiguous)


def _year(text: str) -> int:
    y = int(text.lstrip("'"))
    return y + 2000 if y < 100 else y


def _make(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d) if 1990 <= y <= 2100 else None
    except ValueError:
        return None


def find_dates(folded: str) -> list[DateTok]:
    """Date tokens of a folded (lower case, unaccented) line, left to right."""
    return list(_find_dates(folded))


@functools.lru_cache(maxsize=8192)
def _find_dates(folded: str) -> tuple[DateTok, ...]:
    found: list[DateTok] = []
    taken: list[tuple[int, int]] = []

    def add(tok: DateTok) -> None:
        if tok.readings and not any(s < tok.end and tok.start < e for s, e in taken):
            found.append(tok)
            taken.append((tok.start, tok.end))

    for m in _ISO.finditer(folded):
        d = _make(int(m.group(1)), int(m.group(3)), int(m.group(4)))
        add(DateTok(m.start(), m.end(), (d,) if d else (), "ymd"))
    for m in _NUMERIC.finditer(folded):
        a, b, y = int(m.group(1)), int(m.group(3)), _year(m.group(4))
        if len(m.group(4)) == 2 and m.group(2) == "-":
            continue  # "12-34-56": more likely a reference than a date
        dmy, mdy = _make(y, b, a), _make(y, a, b)
        readings = tuple(x for x in (dmy, mdy) if x is not None)
        order = "?" if dmy and mdy and dmy != mdy else "dmy" if dmy else "mdy"
        add(DateTok(m.start(), m.end(), tuple(dict.fromkeys(readings)), order))
    for m in _DAY_MONTH.finditer(folded):
        d = _make(_year(m.group(3)), MONTHS[m.group(2)], int(m.group(1)))
        add(DateTok(m.start(), m.end(), (d,) if d else (), "text"))
    for m in _MONTH_DAY.finditer(folded):
        d = _make(int(m.group(3)), MONTHS[m.group(1)], int(m.group(2)))
        add(DateTok(m.start(), m.end(), (d,) if d else (), "text"))
    found.sort(key=lambda t: t.start)
    return tuple(found)


def resolve(tok: DateTok, order: str) -> date:
    """The reading of ``tok`` under the document's numeric order ("dmy" or "mdy")."""
    if tok.order == "?" and order == "mdy" and len(tok.readings) > 1:
        return tok.readings[1]
    return tok.readings[0]


def end_of_month(d: date) -> date:
    return d.replace(day=calendar.monthrange(d.year, d.month)[1])


_DAYS = r"(\d{1,3})\s*(?:jours|jour|j\b|days?|dagen|dag)"
_TERMS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), kind) for p, kind in (
    (_DAYS + r"\s*(?:date\s+de\s+facture\s+)?(?:fin\s+de\s+mois|f\.?d\.?m\b)", "eom"),
    (_DAYS + r"\s*(?:end\s+of\s+(?:the\s+)?month|e\.?o\.?m\b)", "eom"),
    (_DAYS + r"\s*(?:einde|eind)\s+(?:van\s+de\s+)?maand", "eom"),
    (r"(?:paiement|reglement|payable|a\s+regler|echeance|conditions?)[^.\n]{0,30}?\ba\s+"
     + _DAYS, "days"),
    (_DAYS + r"\s*(?:nets?|netto|net|date\s+de\s+(?:la\s+)?facture|a\s+compter|"
     r"from\s+(?:the\s+)?(?:invoice\s+date|date\s+of\s+(?:the\s+)?invoice)|"
     r"after\s+(?:the\s+)?(?:invoice\s+date|invoice)|na\s+factuurdatum|"
     r"na\s+(?:de\s+)?factuurdatum)", "days"),
    (r"(?<!total\s)(?<!totaal\s)\bnet\s*(\d{1,3})(?:\s*days?|\s*jours|\s*dagen)?\b"
     r"(?![\d.,\u202f]|\s+\d)", "days"),
    (r"(?:within|binnen|sous)\s+" + _DAYS, "days"),
    (r"(?:payment\s+terms?|terms|betalingstermijn|delai\s+de\s+paiement)\s*:?\s*" + _DAYS,
     "days"),
    (r"(?:payable|paiement|reglement|a\s+regler|due|payment|betaling|te\s+betalen)"
     r"[^.\n]{0,20}?(?:a\s+(?:la\s+)?reception|(?:up)?on\s+receipt|bij\s+ontvangst|"
     r"comptant|immediate(?:ly)?|onmiddellijk)", "receipt"),
    (r"(?:due|payable)\s+(?:up)?on\s+receipt|a\s+reception\s+de\s+(?:la\s+)?facture", "receipt"),
))


def terms_due(folded_text: str, issue: date) -> tuple[date, str] | None:
    """Due date implied by the payment terms in ``folded_text``, with the phrase read.

    None when there are no terms, or several terms that disagree.
    """
    results: dict[date, str] = {}
    spans: list[tuple[int, int]] = []
    for pattern, kind in _TERMS:
        for m in pattern.finditer(folded_text):
            if any(s < m.end() and m.start() < e for s, e in spans):
                continue  # "paiement à 30 jours fin de mois": read once, as end of month
            spans.append((m.start(), m.end()))
            if kind == "receipt":
                results.setdefault(issue, m.group(0))
                continue
            days = int(m.group(1))
            if not 0 <= days <= 120:
                continue
            due = issue + timedelta(days=days)
            results.setdefault(end_of_month(due) if kind == "eom" else due, m.group(0))
    if len(results) != 1:
        return None
    return next(iter(results.items()))
