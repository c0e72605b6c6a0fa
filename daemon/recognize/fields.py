"""Invoice number, dates, payment reference, currency and language.

Job: read the fields that hang off a label (number, issue and due dates, payment reference),
with the due date derived from payment terms when none is printed; name the currency and the
language. Each reader returns the value, a confidence, and what made it confident.

What it may touch: nothing (pure functions over a ``Doc`` and its label hits).

Limits: an invoice number is "validated" only by an unambiguous label, a single value with a
plausible shape, and (when the caller knows one) the supplier's number pattern; numeric dates
with day and month <= 12 follow the document's other dates, else its language (en: cap on
confidence when nothing disambiguates).
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, timedelta

from daemon.recognize import ids
from daemon.recognize.amounts import find_currencies
from daemon.recognize.dates import DateTok, find_dates, resolve, terms_due
from daemon.recognize.locate import HOW_FACTOR, Found, Labels, find_values
from daemon.recognize.text import Doc, fold

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9/_.\-]*")
_LEAD = re.compile(r"[\s:#°.\-]*(?:(?:n\s?°|no\.?|nr\.?|number|nummer|num[eé]ro)\s*[:#.]?\s*)?",
                   re.I)
_OCR_CONFUSABLE = re.compile(r"(?<=\d)[OoIlSB]|[OoIl](?=\d)")
_TITLE = re.compile(r"(?<![a-z])(?:facture|invoice|factuur|rechnung)(?![a-z])")
_LANG_WORDS = {
    "fr": r"facture|tva|montant|echeance|paiement|reglement|ttc|hors|les|des|du|et|pour|avec|"
          r"sur|societe|adresse|acompte|client|quantite|prix|payer|jours|virement",
    "en": r"invoice|the|amount|payment|due|and|for|with|tax|bill|subtotal|please|terms|order|"
          r"customer|price|quantity|days|bank|account|total due",
    "nl": r"factuur|btw|bedrag|betalen|het|een|van|voor|totaal|klant|datum|betaling|"
          r"vervaldatum|aan|rekening|graag|aantal|prijs|dagen|omschrijving|excl|incl",
}
_LANG_RE = {k: re.compile(r"(?<![a-z])(?:" + v + r")(?![a-z])") for k, v in _LANG_WORDS.items()}


def language(doc: Doc) -> str:
    text = "\n".join(doc.folded)
    counts = {lang: len(rx.findall(text)) for lang, rx in _LANG_RE.items()}
    return max(("fr", "en", "nl"), key=lambda k: counts[k])


def _id_value(line: str, index: int, start: int, end: int) -> list[tuple[int, int, str]]:
    lead = _LEAD.match(line, start, end)
    pos = lead.end() if lead else start
    m = _ID.match(line, pos, end)
    if not m:
        return []
    token = m.group(0).rstrip("./-_")
    after = line[pos + len(token):pos + len(token) + 2]
    if not any(ch.isdigit() for ch in token) or not 2 <= len(token) <= 32:
        return []
    if re.match(r"[,.]\d", after) or re.fullmatch(r"\d{1,2}", token):
        return []  # an amount ("1234,56") or a day number, not an invoice number
    dates = find_dates(fold(token))
    if dates and dates[0].end - dates[0].start >= len(token) - 1:
        return []
    return [(pos, pos + len(token), token)]


def invoice_number(doc: Doc, labels: Labels, pattern: str | None
                   ) -> tuple[str | None, float, Found[str] | None]:
    scored: dict[str, float] = {}
    first: dict[str, Found[str]] = {}
    strong: set[str] = set()
    for hits in labels.values():
        for hit in hits:
            if hit.role != "number":
                continue
            strength = hit.strength
            folded = doc.folded[hit.line]
            if folded[hit.start:hit.end] in ("numero", "number", "nummer") and \
                    _TITLE.search(folded[:hit.start] + " " + folded[hit.end:]):
                strength = 0.85  # "FACTURE   Numéro   Date": a bare "Numéro" in the title row
            weak = strength < 0.8
            for found in find_values(doc, labels, hit, _id_value, below=not weak):
                score = strength * HOW_FACTOR[found.how]
                value = found.value
                if value in scored:
                    scored[value] = max(scored[value], score) + 0.05
                else:
                    scored[value] = score
                    first[value] = found
                if not weak:
                    strong.add(value)
                break
    if not scored:
        return None, 0.0, None
    best = max(scored, key=lambda v: (scored[v], -first[v].line))
    conf = 0.6
    if best in strong and len(strong) == 1 and first[best].how in ("right", "below"):
        conf = 0.92
    elif best in strong and len(strong) == 1:
        conf = 0.85
    elif len(strong) > 1:
        conf = 0.5
    if _OCR_CONFUSABLE.search(best):
        conf = min(conf, 0.8)  # "FAO02407": a letter O or l among digits may be a misread
    if pattern:
        try:
            matches = re.fullmatch(pattern, best) is not None
        except re.error:
            matches = False
        conf = min(0.97, conf + 0.05) if matches else min(conf, 0.7)
    return best, conf, first[best]


def _date_value(line: str, index: int, start: int, end: int) -> list[tuple[int, int, DateTok]]:
    folded = fold(line)
    return [(t.start, t.end, t) for t in find_dates(folded) if start <= t.start < end]


def numeric_order(doc: Doc, lang: str) -> tuple[str, bool]:
    """("dmy" | "mdy", decided): the numeric date order, and whether evidence decided it."""
    orders = Counter(t.order for line in doc.folded for t in find_dates(line))
    if orders["dmy"] and not orders["mdy"]:
        return "dmy", True
    if orders["mdy"] and not orders["dmy"]:
        return "mdy", True
    return "dmy", lang != "en" or not orders["?"]


def dates(doc: Doc, labels: Labels, lang: str, today: date, number: Found[str] | None
          ) -> tuple[dict[str, str], dict[str, float]]:
    order, decided = numeric_order(doc, lang)
    cands: dict[str, list[tuple[float, date, DateTok]]] = {"issue_date": [], "due_date": []}
    for hits in labels.values():
        for hit in hits:
            if hit.role not in cands:
                continue
            strength = hit.strength
            if strength < 0.8 and number is not None and abs(hit.line - number.line) <= 4:
                strength = 0.85  # a bare "Date" in the block that holds the invoice number
            for found in find_values(doc, labels, hit, _date_value):
                cands[hit.role].append((strength * HOW_FACTOR[found.how],
                                        resolve(found.value, order), found.value))
                break
    if number is not None:  # "Facture n° 123 du 02/07/2015", "Invoice 12 dated 2 July 2015"
        line = doc.folded[number.line]
        m = re.match(r"\s*(?:du|of|van|dated|vom|von|le|issued\s+(?:on|at))\s+",
                     line[number.end:])
        if m:
            for tok in find_dates(line):
                if tok.start == number.end + m.end():
                    cands["issue_date"].append((0.9, resolve(tok, order), tok))
    if not cands["issue_date"]:
        owned = {(line_no, t.start) for line_no, hits in labels.items() for t in
                 find_dates(doc.folded[line_no]) if any(h.end <= t.start for h in hits)}
        for i, folded in enumerate(doc.folded):
            free = [t for t in find_dates(folded) if (i, t.start) not in owned]
            if free:
                cands["issue_date"].append((0.4, resolve(free[0], order), free[0]))
                break
    out: dict[str, str] = {}
    conf: dict[str, float] = {}
    issue = _pick(cands["issue_date"])
    if issue is not None:
        score, d, tok = issue
        out["issue_date"] = d.isoformat()
        ok = today - timedelta(days=550) <= d <= today + timedelta(days=3)
        conf["issue_date"] = _date_conf(score, tok, decided, ok, cands["issue_date"], d)
    due = _pick(cands["due_date"])
    issue_d = date.fromisoformat(out["issue_date"]) if "issue_date" in out else None
    terms = terms_due("\n".join(doc.folded), issue_d) if issue_d else None
    if due is not None:
        score, d, tok = due
        out["due_date"] = d.isoformat()
        ok = issue_d is not None and issue_d <= d <= issue_d + timedelta(days=400)
        conf["due_date"] = _date_conf(score, tok, decided, ok, cands["due_date"], d)
        if terms is not None and terms[0] == d:
            conf["due_date"] = max(conf["due_date"], min(0.97, conf.get("issue_date", 0) + 0.02))
    elif terms is not None:
        out["due_date"] = terms[0].isoformat()
        conf["due_date"] = min(conf.get("issue_date", 0.0), 0.9)
    return out, conf


def _pick(cands: list[tuple[float, date, DateTok]]) -> tuple[float, date, DateTok] | None:
    if not cands:
        return None
    return max(cands, key=lambda c: c[0])


def _date_conf(score: float, tok: DateTok, decided: bool, plausible: bool,
               cands: list[tuple[float, date, DateTok]], chosen: date) -> float:
    conf = 0.93 if score >= 0.85 else 0.75 if score >= 0.55 else 0.45
    if tok.order == "?" and not decided:
        conf = min(conf, 0.8)
    if not plausible:
        conf = min(conf, 0.6)
    if any(c[1] != chosen and c[0] >= score - 0.1 for c in cands):
        conf = min(conf, 0.6)
    return conf


def payment_reference(doc: Doc, labels: Labels, number: str | None
                      ) -> tuple[str | None, float]:
    for line in doc.lines:
        refs = ids.find_payment_refs(line)
        if refs:
            return refs[0].value, 0.97
    for hits in labels.values():
        for hit in hits:
            if hit.role != "payment_ref":
                continue
            found = find_values(doc, labels, hit, _ref_value)
            if found:
                value = found[0].value
                return value, 0.85 if value == number else 0.7
    return None, 0.0


def _ref_value(line: str, index: int, start: int, end: int) -> list[tuple[int, int, str]]:
    lead = re.compile(r"[\s:#°.\-]*").match(line, start, end)
    pos = lead.end() if lead else start
    m = re.compile(r"[A-Za-z0-9+*][A-Za-z0-9/_.+*\-]*(?: \d{3,})*").match(line, pos, end)
    if not m or not any(ch.isdigit() for ch in m.group(0)) or len(m.group(0)) < 3:
        return []
    return [(pos, m.end(), m.group(0).rstrip("."))]


_EURO = frozenset(("AT", "BE", "CY", "DE", "EE", "EL", "ES", "FI", "FR", "GR", "HR", "IE",
                   "IT", "LT", "LU", "LV", "MC", "MT", "NL", "PT", "SI", "SK"))


def currency(doc: Doc, totals_currency: str | None, lang: str, country: str | None
             ) -> tuple[str | None, float]:
    """The currency printed on the document; else the seller's country's, unconfidently."""
    counts = Counter(c for line in doc.lines for c in find_currencies(line))
    if totals_currency:
        counts[totals_currency] += 3
    if not counts:
        if country in _EURO:
            return "EUR", 0.6
        if country in ("GB", "CH"):
            return {"GB": "GBP", "CH": "CHF"}[country], 0.6
        return ("EUR", 0.5) if lang in ("fr", "nl") else (None, 0.0)
    best, _ = counts.most_common(1)[0]
    if len(counts) == 1:
        return best, 0.95 if totals_currency == best else 0.9
    return best, 0.7
