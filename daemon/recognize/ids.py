"""Identifiers with check digits: VAT numbers, SIREN/SIRET, IBAN, BIC, payment references.

Job: find identifier-shaped strings in a line and keep only those whose check digits are valid
(python-stdnum for VAT, SIREN, SIRET, Belgian structured communications and RF creditor
references; schwifty for IBAN and BIC), returning them compacted ("FR40303265045",
"FR7630006000011234567890189").

What it may touch: nothing (pure functions over strings).

Limits: a VAT number printed without its country prefix (Belgian "0403.170.701") is only taken
when a VAT label precedes it; a masked IBAN ("FR76 ****") is not an IBAN; BIC validity is a
format and country check, not proof that the bank exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException
from stdnum import get_cc_module, iso11649
from stdnum.be import ogm_vcs
from stdnum.be import vat as be_vat
from stdnum.eu import vat as eu_vat
from stdnum.fr import siren as fr_siren
from stdnum.fr import siret as fr_siret

_VAT_CC = ("AT|BE|BG|CY|CZ|DE|DK|EE|EL|ES|FI|FR|HR|HU|IE|IT|LT|LU|LV|MT|NL|PL|PT|RO|SE|SI|SK|"
           "XI|GB|CHE")
_VAT = re.compile(r"(?<![A-Za-z0-9])(" + _VAT_CC + r")[ .\-]?([0-9A-Z](?:[ .\-]?[0-9A-Z]){7,13})")
_IBAN = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2}\d{2}(?:[ \u202f]?[A-Z0-9]){10,32})")
_BIC = re.compile(r"(?<![A-Za-z0-9])([A-Z]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?)(?![A-Za-z0-9])")
_DIGITS = re.compile(r"(?<![\d])(\d(?:[ .\u202f]?\d){8,13})(?!\d)")
_OGM = re.compile(r"(?:\+\+\+|\*\*\*)\s?(\d{3}\s?/\s?\d{4}\s?/\s?\d{5})\s?(?:\+\+\+|\*\*\*)")
_RF = re.compile(r"(?<![A-Za-z0-9])(RF\d{2}(?:[ ]?[A-Z0-9]){1,21})")
_MASKED = re.compile(r"[A-Z]{2}\d{2}[ \d]*[*xX•]{3,}")


@dataclass(frozen=True)
class Ident:
    """A validated identifier at columns ``start``..``end`` of a line."""

    kind: str  # vat | siren | siret | iban | bic | ogm | rf
    value: str
    start: int
    end: int


def valid_vat(text: str) -> str | None:
    """The compact VAT number when its check digits hold (EU members, XI, GB, CH)."""
    compact = re.sub(r"[ .\-]", "", text.upper())
    try:
        if eu_vat.is_valid(compact):
            return str(eu_vat.compact(compact))
        module = get_cc_module(compact[:2].lower(), "vat") if compact[:2].isalpha() else None
        if module is not None and compact[:2] in ("GB", "CH") and module.is_valid(compact):
            value = str(module.compact(compact))
            return value if value[:2].isalpha() else compact[:2] + value
    except Exception:  # stdnum raises on unknown country prefixes
        return None
    return None


def find_vats(line: str) -> list[Ident]:
    out = []
    for m in _VAT.finditer(line):
        compact = re.sub(r"[ .\-]", "", m.group(0))
        if not valid_vat(compact):  # "FRO2..." : OCR reads a zero as the letter O
            compact = compact[:2] + compact[2:].replace("O", "0")
        # the pattern is greedy: try the longest prefix that validates
        for length in range(len(compact), 7, -1):
            value = valid_vat(compact[:length])
            if value:
                out.append(Ident("vat", value, m.start(), _span_end(m.group(0), m.start(),
                                                                     length)))
                break
    return out


def find_belgian_vat_digits(line: str) -> list[Ident]:
    """"0403.170.701" after a Belgian VAT/enterprise label: BE + 10 digits."""
    out = []
    for m in re.finditer(r"(?<![\d])(0\d{3}[ .]?\d{3}[ .]?\d{3})(?![\d])", line):
        compact = re.sub(r"\D", "", m.group(1))
        if be_vat.is_valid(compact):
            out.append(Ident("vat", "BE" + compact, m.start(), m.end()))
    return out


def _span_end(raw: str, start: int, compact_len: int) -> int:
    seen = 0
    for i, ch in enumerate(raw):
        if ch not in " .-":
            seen += 1
            if seen == compact_len:
                return start + i + 1
    return start + len(raw)


def find_ibans(line: str) -> tuple[list[Ident], bool]:
    """Valid IBANs on a line, and whether an IBAN-shaped string failed its check digits."""
    out = []
    invalid = False
    for m in _IBAN.finditer(line):
        compact = re.sub(r"[ \u202f]", "", m.group(1))
        if valid_iban(compact) is None and "O" in compact[2:4]:
            compact = compact[:2] + compact[2:4].replace("O", "0") + compact[4:]
        found = None
        for length in range(min(len(compact), 34), 14, -1):
            try:
                iban = IBAN(compact[:length])
            except SchwiftyException:
                continue
            found = Ident("iban", str(iban.compact), m.start(),
                          _span_end(m.group(1).replace("\u202f", " "), m.start(), length))
            break
        if found:
            out.append(found)
        elif compact[:2] in _IBAN_COUNTRIES and not _MASKED.match(line, m.start()):
            invalid = True
    return out, invalid


_IBAN_COUNTRIES = frozenset(["FR", "BE", "NL", "DE", "LU", "MC", "ES", "IT", "PT", "IE", "GB",
                             "CH", "AT"])


def valid_iban(text: str) -> str | None:
    try:
        return str(IBAN(text).compact)
    except SchwiftyException:
        return None


def find_bics(line: str) -> list[Ident]:
    out = []
    for m in _BIC.finditer(line.upper()):
        try:
            bic = BIC(m.group(1))
        except SchwiftyException:
            continue
        out.append(Ident("bic", str(bic.compact), m.start(), m.end()))
    return out


def bic_matches_iban(bic: str, iban: str) -> bool:
    """True when the BIC is the one schwifty derives from the IBAN, or its country matches."""
    try:
        derived = IBAN(iban).bic
    except SchwiftyException:
        return False
    if derived is not None:
        return str(derived.compact)[:8] == bic[:8]
    return bic[4:6] == iban[:2] or (iban[:2] in ("MC", "GP", "MQ", "RE") and bic[4:6] == "FR")


def find_siren_like(line: str) -> list[Ident]:
    """Valid SIRET (14 digits) or SIREN (9 digits) numbers on a line."""
    out = []
    for m in _DIGITS.finditer(line):
        digits = re.sub(r"\D", "", m.group(1))
        if len(digits) == 14 and fr_siret.is_valid(digits):
            out.append(Ident("siret", digits, m.start(), m.end()))
        elif len(digits) == 9 and fr_siren.is_valid(digits):
            out.append(Ident("siren", digits, m.start(), m.end()))
    return out


def siren_of_vat(vat: str) -> str | None:
    if vat.startswith("FR") and len(vat) == 13 and vat[4:].isdigit():
        return vat[4:]
    return None


def find_payment_refs(line: str) -> list[Ident]:
    """Belgian structured communications (+++123/4567/89012+++) and RF references."""
    out = []
    for m in _OGM.finditer(line):
        digits = re.sub(r"\D", "", m.group(1))
        if ogm_vcs.is_valid(digits):
            out.append(Ident("ogm", f"+++{digits[:3]}/{digits[3:7]}/{digits[7:]}+++",
                             m.start(), m.end()))
    for m in _RF.finditer(line.upper()):
        compact = m.group(1).replace(" ", "")
        for length in range(len(compact), 4, -1):
            if iso11649.is_valid(compact[:length]):
                out.append(Ident("rf", compact[:length], m.start(), m.end()))
                break
    return out
