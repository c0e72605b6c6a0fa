"""Seller and buyer: names, VAT numbers, SIREN, IBAN and BIC.

Job: find the buyer's block (under "Client", "Facturé à", "Bill to", "Factuur aan", ...), take
every validated identifier (VAT, SIREN/SIRET, IBAN, BIC) outside it as the seller's and inside
it (or labelled "N° TVA client", or equal to our own VAT) as the buyer's, and pick the seller's
name from the letterhead, the legal mentions ("X SAS au capital de ...", "RCS", "KvK") or a
seller label ("Bénéficiaire", "Account holder").

What it may touch: nothing (pure functions over a ``Doc`` and its label hits).

Limits: names cannot be validated, so their confidence stays below the threshold unless the
caller's supplier memory confirms them; an invoice printing two seller VAT numbers or two
IBANs gets low confidence on those fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from daemon.recognize import ids
from daemon.recognize.lexicon import Hit
from daemon.recognize.locate import Labels, find_values
from daemon.recognize.text import Cell, Doc

LEGAL_FORMS = (
    "SAS", "SASU", "SARL", "SA", "EURL", "SNC", "SCI", "SCOP", "SELARL", "SCP", "GIE", "SCA",
    "BV", "B.V.", "NV", "N.V.", "BVBA", "SPRL", "SRL", "CV", "VOF", "V.O.F.", "VZW", "ASBL",
    "Ltd", "Ltd.", "Limited", "LLP", "PLC", "plc", "LLC", "Inc", "Inc.", "Corp", "Corp.",
    "GmbH", "AG", "KG", "UG", "e.K.", "S.A.", "S.A.S.", "S.A.R.L.", "Sàrl", "SpA", "S.L.")
_FORM = re.compile(r"(?<![\w.])(" + "|".join(re.escape(f) for f in sorted(
    LEGAL_FORMS, key=len, reverse=True)) + r")(?![\w])")
_TITLES = re.compile(r"^(?:facture|invoice|factuur|tax\s+invoice|avoir|credit\s+note|"
                     r"creditnota|rechnung|logo|page|bill|receipt|devis|quote)\b", re.I)
_NOT_NAME = re.compile(r"@|www\.|https?:|^\+?\d|\d{4,}|^(?:rue|avenue|bd|boulevard|chemin|"
                       r"route|place|allee|impasse|quai)\b", re.I)
_SEPARATORS = re.compile(r"\s+[-–|•●·]\s+|\s*[|•●·]\s*|,\s")
_DEBIT = ("prelev", "direct debit", "incasso", "domiciliering", "sera debite", "lastschrift",
          "votre compte", "your account", "uw rekening")


@dataclass(frozen=True)
class Parties:
    fields: dict[str, str] = field(default_factory=dict)
    confidence: dict[str, float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def buyer_region(doc: Doc, labels: Labels) -> tuple[set[tuple[int, int]], str | None]:
    """(line, cell start) pairs of the buyer's block, and the buyer's name if found."""
    region: set[tuple[int, int]] = set()
    name: str | None = None
    for hits in labels.values():
        for hit in hits:
            if hit.role != "buyer":
                continue
            block, first = _block_under(doc, labels, hit)
            if not block:
                continue
            region |= block
            if name is None and first:
                name = first
    if name is None:
        window, name = _window_block(doc, labels)
        region |= window
    return region, name


_POSTCODE = re.compile(r"(?:^|\s)(?:[A-Z]{1,2}-?)?(?:\d{5}|\d{4}(?:\s?[A-Z]{2})?)\s+[A-Za-zÀ-ÿ]")
_RETURN_ADDRESS = re.compile(r"\s[●•|·–-]\s")


def _window_block(doc: Doc, labels: Labels) -> tuple[set[tuple[int, int]], str | None]:
    """No buyer label: the address block of a window envelope, under a one-line return
    address ("Seller ● street ● town"), or a right-hand block of name, street and postcode."""
    top = min(len(doc.lines), 40)
    for i in range(top):
        line = doc.lines[i]
        if len(_RETURN_ADDRESS.findall(line)) >= 2 and _POSTCODE.search(line):
            for j in range(i + 1, min(top, i + 4)):
                if doc.cells[j]:
                    found = _address_block(doc, labels, j, doc.cells[j][0].start)
                    if found[0]:
                        return found
                    break
    for i in range(1, top):
        for cell in doc.cells[i]:
            if cell.start >= 30 and not any(cell.start <= h.start < cell.end
                                            for h in labels.get(i, ())):
                found = _address_block(doc, labels, i, cell.start)
                if found[0]:
                    return found
    return set(), None


def _address_block(doc: Doc, labels: Labels, line: int, col: int
                   ) -> tuple[set[tuple[int, int]], str | None]:
    """Name, street lines and a postcode line stacked in one column from ``line``."""
    cells: list[Cell] = []
    gap = 0
    for j in range(line, min(len(doc.lines), line + 12)):
        cell = next((c for c in doc.cells[j] if abs(c.start - col) <= 3), None)
        if cell is None:
            gap += 1
            if gap > 2:
                break
            continue
        gap = 0
        if any(cell.start <= h.start < cell.end for h in labels.get(j, ())):
            break
        cells.append(cell)
        if len(cells) == 6:
            break
    if not 2 <= len(cells) <= 6 or not _namelike(cells[0].text):
        return set(), None
    name = _norm(cells[0].text)
    if sum(_norm(x).count(name) for x in doc.lines) > 1:
        return set(), None  # a name printed again elsewhere is the seller's letterhead
    if not any(_POSTCODE.search(doc.lines[c.line][c.start:c.start + 40]) for c in cells[1:]):
        return set(), None
    return {(c.line, c.start) for c in cells}, cells[0].text


def _block_under(doc: Doc, labels: Labels, hit: Hit) -> tuple[set[tuple[int, int]], str | None]:
    """The buyer's block under (or after) a buyer label, and the name it starts with."""
    cell = doc.cell_at(hit.line, hit.start)
    col = cell.start if cell else hit.start
    block: set[tuple[int, int]] = set()
    names: list[str] = []
    line = doc.lines[hit.line]
    tail = line[hit.end:cell.end if cell else None].strip(" :.-")
    if not tail:  # "Client :      ACME SARL": the value in the next cell of the same line
        nxt = doc.next_cell(hit.line, cell.end if cell else hit.end)
        if nxt is not None and nxt.start - hit.end < 16:
            tail = nxt.text
            block.add((hit.line, nxt.start))
    if hit.strength < 1.0 and (cell is None or cell.start != hit.start or (
            tail and not line[hit.end:].lstrip().startswith(":"))):
        return set(), None  # "Espace Client Bouygues": a word in a sentence, not a label
    if cell is not None:
        block.add((hit.line, cell.start))
    elif hit.strength < 1.0:
        return set(), None
    if tail:
        names.append(tail.split(", ")[0])
    empty = 0
    for j in range(hit.line + 1, min(len(doc.lines), hit.line + 9)):
        if not doc.lines[j].strip():
            empty += 1
            if empty >= 2 and block:
                break
            continue
        empty = 0
        below = [c for c in doc.cells[j] if col - 4 <= c.start <= col + 24]
        if not below:
            if len(block) > 2:
                break
            continue
        c = below[0]
        if any(c.start <= h.start < c.end and h.role not in _BLOCK_ROLES
               for h in labels.get(j, ())) and not ids.find_vats(c.text):
            break
        block.add((j, c.start))
        names.append(c.text)
    first = next((n for n in names if _namelike(n)), None)
    return block, first


_BLOCK_ROLES = frozenset({"buyer", "buyer_vat", "vat_id", "phone", "customer_no", "siren",
                          "siret", "kvk", "other_ref"})


def _namelike(text: str) -> bool:
    text = text.strip()
    return (2 <= len(text) <= 70 and sum(ch.isalpha() for ch in text) >= 2
            and not _NOT_NAME.search(text) and not _TITLES.match(text))


def _in_region(region: set[tuple[int, int]], doc: Doc, line: int, pos: int) -> bool:
    cell = doc.cell_at(line, pos)
    return cell is not None and (line, cell.start) in region


def find_parties(doc: Doc, labels: Labels, own_vat: str | None) -> Parties:
    region, buyer_name = buyer_region(doc, labels)
    out: dict[str, str] = {}
    conf: dict[str, float] = {}
    problems: list[str] = []
    seller_vats: dict[str, float] = {}
    buyer_vats: list[str] = []
    sirens: dict[str, float] = {}
    ibans: list[str] = []
    bics: list[tuple[str, bool]] = []
    own = ids.valid_vat(own_vat) if own_vat else None
    bad_iban = False
    for i, line in enumerate(doc.lines):
        hits = labels.get(i, [])
        for ident in ids.find_vats(line) + _belgian(doc, labels, i):
            label = _label_before(hits, ident.start)
            if ident.value == own or (label and label.role == "buyer_vat") or \
                    _in_region(region, doc, i, ident.start):
                buyer_vats.append(ident.value)
            else:
                bonus = 0.5 if label and label.role == "vat_id" else 0.0
                seller_vats[ident.value] = max(seller_vats.get(ident.value, 0.0), 1.0 + bonus)
        for ident in ids.find_siren_like(line):
            label = _label_before(hits, ident.start)
            if label is None or label.role not in ("siren", "siret", "rcs") or \
                    _in_region(region, doc, i, ident.start):
                continue
            sirens.setdefault(ident.value[:9], 1.0)
        found, invalid = ids.find_ibans(line)
        context = doc.folded[max(0, i - 1)] + " " + doc.folded[i]
        bad_iban = bad_iban or (invalid and "iban" in doc.folded[i] and
                                not any(w in context for w in _DEBIT))
        for ident in found:
            if _in_region(region, doc, i, ident.start) or any(w in context for w in _DEBIT):
                continue
            ibans.append(ident.value)
        for ident in ids.find_bics(line):
            label = _label_before(hits, ident.start)
            if label is not None and label.role == "bic":
                bics.append((ident.value, True))
    distinct_ibans = list(dict.fromkeys(ibans))
    if seller_vats:
        ranked = sorted(seller_vats.items(), key=lambda kv: -kv[1])
        out["seller_vat"] = ranked[0][0]
        conf["seller_vat"] = 0.95 if len(ranked) == 1 or ranked[1][1] < ranked[0][1] else 0.6
    buyers = [v for v in dict.fromkeys(buyer_vats) if v != out.get("seller_vat")]
    if buyers:
        out["buyer_vat"] = own if own in buyers else buyers[0]
        conf["buyer_vat"] = 0.95 if len(buyers) == 1 or own in buyers else 0.6
    _siren(out, conf, sirens)
    if bad_iban and not distinct_ibans:
        problems.append("iban-invalid")  # an IBAN whose check digits fail: typo, OCR or fraud
    if distinct_ibans:
        out["seller_iban"] = distinct_ibans[0]
        conf["seller_iban"] = 0.95 if len(distinct_ibans) == 1 else 0.6
        if len(distinct_ibans) > 1:
            problems.append("several-ibans")
    if bics:
        bic = bics[0][0]
        out["seller_bic"] = bic
        matches = "seller_iban" in out and ids.bic_matches_iban(bic, out["seller_iban"])
        conf["seller_bic"] = 0.95 if matches else 0.8
    if buyer_name:
        out["buyer_name"] = _clean_name(buyer_name)
        conf["buyer_name"] = 0.7
    seller = seller_name(doc, labels, region)
    if seller and _norm(seller) != _norm(out.get("buyer_name", "")):
        out["seller_name"] = seller
        conf["seller_name"] = 0.7
    return Parties(out, conf, tuple(problems))


def _belgian(doc: Doc, labels: Labels, i: int) -> list[ids.Ident]:
    if not any(h.role in ("vat_id", "buyer_vat") for h in labels.get(i, ())):
        return []
    line = doc.lines[i]
    return [x for x in ids.find_belgian_vat_digits(line)
            if not re.search(r"BE[ .]?$", line[:x.start])]


def _label_before(hits: list[Hit], pos: int) -> Hit | None:
    before = [h for h in hits if h.end <= pos]
    return max(before, key=lambda h: h.end) if before else None


def _siren(out: dict[str, str], conf: dict[str, float], sirens: dict[str, float]) -> None:
    vat = out.get("seller_vat")
    from_vat = ids.siren_of_vat(vat) if vat else None
    if from_vat:
        out["seller_siren"] = from_vat
        agrees = not sirens or from_vat in sirens
        conf["seller_siren"] = conf["seller_vat"] if agrees else 0.6
    elif sirens:
        out["seller_siren"] = next(iter(sirens))
        conf["seller_siren"] = 0.9 if len(sirens) == 1 and not vat else 0.6


def _norm(name: str) -> str:
    return re.sub(r"\W+", " ", name).strip().casefold()


def _clean_name(text: str) -> str:
    text = re.sub(r"\s{2,}.*$", "", text.strip())
    return text.strip(" ,;:-•|")


def seller_name(doc: Doc, labels: Labels, region: set[tuple[int, int]]) -> str | None:
    """Votes from the legal mentions, a seller label and the letterhead."""
    votes: dict[str, float] = {}
    keys: dict[str, str] = {}

    def vote(name: str | None, weight: float) -> None:
        if not name or not _namelike(name):
            return
        name = _clean_name(name)
        key = _norm(_FORM.sub("", name)) or _norm(name)
        if not key:
            return
        votes[key] = votes.get(key, 0.0) + weight
        if key not in keys or len(name) > len(keys[key]):
            keys[key] = name

    for i, line in enumerate(doc.lines):
        folded = doc.folded[i]
        legal = any(w in folded for w in ("capital", "rcs", "siret", "siren", "kvk", "btw",
                                          "registered", "handelsregister", "ondernemings"))
        for m in _FORM.finditer(line):
            if _in_region(region, doc, i, m.start()):
                continue
            name = _name_before(line, m.start(), m.end())
            vote(name, 1.0 if legal else 0.6 if i < 12 else 0.3)
    for hits in labels.values():
        for hit in hits:
            if hit.role == "seller":
                found = find_values(doc, labels, hit, _text_value, max_down=1)
                vote(found[0].value if found else None, 0.8)
    for i in range(min(8, len(doc.lines))):
        cells = [c for c in doc.cells[i] if not _in_region(region, doc, i, c.start)]
        if not cells or any(cells[0].start <= h.start < cells[0].end for h in labels.get(i, ())):
            continue
        first = _SEPARATORS.split(cells[0].text)[0].strip()
        if _namelike(first):
            vote(first, 0.9)
            break
    if not votes:
        return None
    best = max(votes, key=lambda k: votes[k])
    return keys[best]


def _name_before(line: str, start: int, end: int) -> str | None:
    head = line[:start]
    head = re.split(r"\s{2,}|[|•●·,;]|\s-\s|\.\s", head)[-1].strip()
    if not head or len(head) > 50:
        return None
    return f"{head} {line[start:end]}"


def _text_value(line: str, index: int, start: int, end: int) -> list[tuple[int, int, str]]:
    text = line[start:end]
    stripped = text.strip(" :.-")
    if not stripped:
        return []
    offset = start + text.find(stripped)
    return [(offset, offset + len(stripped), stripped)]
