"""Field mapping for structured invoices: CII, ZUGFeRD 1 and UBL trees -> InvoiceData.

Job: given an already *safely parsed* XML tree (daemon/einvoice.py does the parsing, the
DOCTYPE refusal and the size cap), read the business fields the pipeline needs. Elements are
matched by local name (``{*}Name``), so the CII D16B/D22B, ZUGFeRD 1.0 and UBL 2.1 namespaces
need no per-version tables; only the container element names differ between CII and ZUGFeRD 1.

It touches nothing but the tree it is given: no I/O, no network, no logging.

Leniencies, on purpose: a CII seller VAT number is taken from schemeID ``VA`` or ``VAT``; party
names come on one line (runs of whitespace -> one space); a CII IBANID is taken as given
(compacted, upper case), a UBL PayeeFinancialAccount/ID only when it looks like an IBAN (it may
be a bankgiro or other account number); where an amount appears in several currencies (BT-110
and BT-111), the one in the invoice currency wins.

Known limits: reads header-level values only (no invoice lines, allowances or notes); amounts
must be plain XSD decimals (``12.50``, no exponent, at most 40 characters) or they read as None;
a date that is not a calendar day (CII formats 610 month, 616 week) reads as None; VAT rows of
another tax type (TypeCode other than VAT) are left out of ``vat_breakdown``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from lxml import etree
from stdnum.fr import siren as fr_siren
from stdnum.fr import tva as fr_tva

Element = etree._Element

_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_ISO_DAY = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_IBAN = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}")


@dataclass(frozen=True)
class VatLine:
    """One row of the VAT breakdown (BG-23)."""

    rate: str | None  # decimal string as given, normalized by Decimal: "20.00", "5.5"
    category: str | None  # S, Z, E, AE, K, G, O, L, M
    base: Decimal | None
    tax: Decimal | None


@dataclass(frozen=True)
class InvoiceData:
    """What a structured invoice says. Fields a profile does not carry are None."""

    syntax: str  # "CII" | "UBL" | "ZUGFeRD1"
    profile: str  # "MINIMUM" | "BASIC WL" | "BASIC" | "EN 16931" | "EXTENDED" | "XRECHNUNG" |
    #               "ZUGFeRD 1.0 BASIC|COMFORT|EXTENDED" | "PEPPOL BIS" | "UNKNOWN"
    guideline: str  # raw guideline / customization ID
    xsd_valid: bool | None  # None when no XSD could be applied
    xsd_error: str  # first XSD error, "" when valid
    type_code: str  # 380 invoice, 381 credit note, 384 corrected, 389 self-billed, ...
    number: str | None
    issue_date: str | None  # YYYY-MM-DD
    due_date: str | None
    seller_name: str | None
    seller_vat: str | None
    seller_siren: str | None
    seller_iban: str | None
    buyer_name: str | None
    buyer_vat: str | None
    currency: str | None
    total_net: Decimal | None  # BT-109 tax basis total
    total_tax: Decimal | None  # BT-110 in invoice currency
    total_gross: Decimal | None  # BT-112
    amount_due: Decimal | None  # BT-115
    payment_reference: str | None
    vat_breakdown: tuple[VatLine, ...]
    xml_sha256: str


@dataclass(frozen=True)
class Header:
    """What daemon/einvoice.py found out before mapping: syntax, profile, XSD result, hash."""

    syntax: str
    profile: str
    guideline: str
    xsd_valid: bool | None
    xsd_error: str
    xml_sha256: str


@dataclass(frozen=True)
class _CiiNames:
    """Container element names: the only structural difference between CII and ZUGFeRD 1."""

    context: str
    document: str
    transaction: str
    agreement: str
    settlement: str
    summation: str


_CII = _CiiNames("ExchangedDocumentContext", "ExchangedDocument", "SupplyChainTradeTransaction",
                 "ApplicableHeaderTradeAgreement", "ApplicableHeaderTradeSettlement",
                 "SpecifiedTradeSettlementHeaderMonetarySummation")
_ZF1 = _CiiNames("SpecifiedExchangedDocumentContext", "HeaderExchangedDocument",
                 "SpecifiedSupplyChainTradeTransaction", "ApplicableSupplyChainTradeAgreement",
                 "ApplicableSupplyChainTradeSettlement",
                 "SpecifiedTradeSettlementMonetarySummation")


@dataclass(frozen=True)
class _Party:
    name: str | None
    vat: str | None
    siren: str | None


# --- small readers -------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _wildcard_path(path: str) -> str:
    return "/".join("{*}" + part for part in path.split("/"))


def _find_one(el: Element | None, path: str) -> Element | None:
    return None if el is None else el.find(_wildcard_path(path))


def _find_all(el: Element | None, path: str) -> list[Element]:
    return [] if el is None else list(el.iterfind(_wildcard_path(path)))


def _strip_text(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return text or None


def _read_text(el: Element | None, path: str) -> str | None:
    return _strip_text(None if el is None else el.findtext(_wildcard_path(path)))


def _read_name(el: Element | None, path: str) -> str | None:
    """A party name on one line: runs of whitespace (names often carry line breaks) -> one space."""
    text = _read_text(el, path)
    return " ".join(text.split()) if text else None


def _pick_first_text(elements: list[Element]) -> str | None:
    for el in elements:
        text = _strip_text(el.text)
        if text:
            return text
    return None


def parse_decimal(text: str | None) -> Decimal | None:
    """XSD decimal text -> Decimal; anything else (exponents, NaN, garbage) -> None."""
    text = _strip_text(text)
    if text is None or len(text) > 40 or not _DECIMAL.fullmatch(text):
        return None
    return Decimal(text)


def _pick_amount(elements: list[Element], currency: str | None) -> Decimal | None:
    """First amount in the invoice currency when several are given (BT-110 vs BT-111)."""
    values = [(el.get("currencyID"), parse_decimal(el.text)) for el in elements]
    for cur, value in values:
        if value is not None and currency is not None and cur == currency:
            return value
    return next((value for _, value in values if value is not None), None)


def _read_rate(text: str | None) -> str | None:
    value = parse_decimal(text)
    return None if value is None else str(value)


def _to_iso_day(text: str | None, fmt: str | None = None) -> str | None:
    """CII 102 ``YYYYMMDD`` (and 203 ``YYYYMMDDHHMM``) or ISO ``YYYY-MM-DD[...]`` -> ISO day."""
    text = _strip_text(text)
    if text is None:
        return None
    match = _ISO_DAY.match(text)
    if match:
        parts = match.groups()
    elif text.isdigit() and len(text) in (8, 12) and fmt in (None, "102", "203"):
        parts = (text[0:4], text[4:6], text[6:8])
    else:
        return None
    try:
        return date(int(parts[0]), int(parts[1]), int(parts[2])).isoformat()
    except ValueError:
        return None


def _read_cii_day(el: Element | None) -> str | None:
    """``IssueDateTime/DateTimeString[@format]``; ZUGFeRD RC puts the text on the parent."""
    if el is None:
        return None
    inner = _find_one(el, "DateTimeString")
    target = inner if inner is not None else el
    return _to_iso_day(target.text, target.get("format"))


def _pick_iban(texts: list[str | None], *, loose: bool) -> str | None:
    for text in texts:
        if not text:
            continue
        compact = "".join(text.split()).upper()
        if compact and (loose or _IBAN.fullmatch(compact)):
            return compact
    return None


def _derive_siren(ids: list[tuple[str | None, str | None]], vat: str | None) -> str | None:
    """SIREN from a 0002 legal ID, else from a French VAT number, else from a 0009 SIRET."""
    for scheme, value in ids:
        if scheme == "0002" and value and fr_siren.is_valid(value):
            return str(fr_siren.compact(value))
    if vat and vat.upper().startswith("FR") and fr_tva.is_valid(vat):
        return str(fr_tva.to_siren(vat))
    for scheme, value in ids:
        digits = "".join((value or "").split())
        if scheme == "0009" and len(digits) == 14 and digits.isdigit() \
                and fr_siren.is_valid(digits[:9]):
            return digits[:9]
    return None


def _read_scheme_id(el: Element) -> tuple[str | None, str | None]:
    scheme = el.get("schemeID")
    return (scheme.strip() if scheme else None, _strip_text(el.text))


# --- guideline and profile -----------------------------------------------------------------

def find_guideline(root: Element, syntax: str) -> str:
    """The guideline (CII) or customization (UBL) ID, "" when absent."""
    if syntax == "UBL":
        return _read_text(root, "CustomizationID") or ""
    names = _ZF1 if syntax == "ZUGFeRD1" else _CII
    return _read_text(root, f"{names.context}/GuidelineSpecifiedDocumentContextParameter/ID") or ""


_FX_LEVELS = {"minimum": "MINIMUM", "basicwl": "BASIC WL", "basic": "BASIC",
              "en16931": "EN 16931", "extended": "EXTENDED", "extended-ctc-fr": "EXTENDED"}


def classify_profile(guideline: str) -> str:
    """Name the profile a guideline ID declares (not proof that the file conforms to it)."""
    g = guideline.strip().lower()
    if g.startswith("urn:ferd:crossindustrydocument:invoice:1p0:"):
        level = g.rsplit(":", 1)[-1]
        return f"ZUGFeRD 1.0 {level.upper()}" if level in ("basic", "comfort", "extended") \
            else "UNKNOWN"
    if "xrechnung" in g:
        return "XRECHNUNG"
    if "peppol" in g:
        return "PEPPOL BIS"
    tail = g.rsplit(":", 1)[-1]
    if tail in _FX_LEVELS and ("factur-x" in g or "zugferd" in g or "cpro.gouv.fr" in g):
        return _FX_LEVELS[tail]
    if g.startswith("urn:cen.eu:en16931:2017"):
        return "EN 16931"
    return "UNKNOWN"


# --- CII and ZUGFeRD 1 ---------------------------------------------------------------------

def _read_cii_party(party: Element | None) -> _Party:
    vat = None
    for reg in _find_all(party, "SpecifiedTaxRegistration/ID"):
        if (reg.get("schemeID") or "").strip().upper() in ("VA", "VAT") and _strip_text(reg.text):
            vat = _strip_text(reg.text)
            break
    ids = [_read_scheme_id(el) for el in _find_all(party, "SpecifiedLegalOrganization/ID")
           + _find_all(party, "GlobalID") + _find_all(party, "ID")]
    return _Party(_read_name(party, "Name"), vat, _derive_siren(ids, vat))


def _map_cii(root: Element, head: Header) -> InvoiceData:
    names = _ZF1 if head.syntax == "ZUGFeRD1" else _CII
    doc = _find_one(root, names.document)
    trans = _find_one(root, names.transaction)
    agreement = _find_one(trans, names.agreement)
    settlement = _find_one(trans, names.settlement)
    summation = _find_one(settlement, names.summation)
    currency = _read_text(settlement, "InvoiceCurrencyCode")
    seller = _read_cii_party(_find_one(agreement, "SellerTradeParty"))
    buyer = _read_cii_party(_find_one(agreement, "BuyerTradeParty"))
    vat_lines = []
    for tax in _find_all(settlement, "ApplicableTradeTax"):
        if (_read_text(tax, "TypeCode") or "VAT").upper() != "VAT":
            continue
        rate = _read_text(tax, "RateApplicablePercent") or _read_text(tax, "ApplicablePercent")
        vat_lines.append(VatLine(
            rate=_read_rate(rate), category=_read_text(tax, "CategoryCode"),
            base=_pick_amount(_find_all(tax, "BasisAmount"), currency),
            tax=_pick_amount(_find_all(tax, "CalculatedAmount"), currency)))
    due = None
    for terms in _find_all(settlement, "SpecifiedTradePaymentTerms"):
        due = _read_cii_day(_find_one(terms, "DueDateDateTime"))
        if due:
            break
    means = _find_all(settlement, "SpecifiedTradeSettlementPaymentMeans")
    ibans = [_read_text(m, "PayeePartyCreditorFinancialAccount/IBANID") for m in means]
    return InvoiceData(
        syntax=head.syntax, profile=head.profile, guideline=head.guideline,
        xsd_valid=head.xsd_valid, xsd_error=head.xsd_error,
        type_code=_read_text(doc, "TypeCode") or "",
        number=_read_text(doc, "ID"),
        issue_date=_read_cii_day(_find_one(doc, "IssueDateTime")),
        due_date=due,
        seller_name=seller.name, seller_vat=seller.vat, seller_siren=seller.siren,
        seller_iban=_pick_iban(ibans, loose=True),
        buyer_name=buyer.name, buyer_vat=buyer.vat,
        currency=currency,
        total_net=_pick_amount(_find_all(summation, "TaxBasisTotalAmount"), currency),
        total_tax=_pick_amount(_find_all(summation, "TaxTotalAmount"), currency),
        total_gross=_pick_amount(_find_all(summation, "GrandTotalAmount"), currency),
        amount_due=_pick_amount(_find_all(summation, "DuePayableAmount"), currency),
        payment_reference=_read_text(settlement, "PaymentReference"),
        vat_breakdown=tuple(vat_lines),
        xml_sha256=head.xml_sha256)


# --- UBL -----------------------------------------------------------------------------------

def _read_ubl_party(party: Element | None) -> _Party:
    name = (_read_name(party, "PartyLegalEntity/RegistrationName")
            or _read_name(party, "PartyName/Name"))
    vat = None
    for scheme in _find_all(party, "PartyTaxScheme"):
        if (_read_text(scheme, "TaxScheme/ID") or "").upper() == "VAT" \
                and _read_text(scheme, "CompanyID"):
            vat = _read_text(scheme, "CompanyID")
            break
    ids = [_read_scheme_id(el) for el in _find_all(party, "PartyLegalEntity/CompanyID")
           + _find_all(party, "PartyIdentification/ID")]
    return _Party(name, vat, _derive_siren(ids, vat))


def _find_ubl_tax_total(root: Element, currency: str | None) -> Element | None:
    """The TaxTotal in document currency (a second one may carry the accounting currency)."""
    totals = _find_all(root, "TaxTotal")
    for total in totals:
        amount = _find_one(total, "TaxAmount")
        if currency and amount is not None and amount.get("currencyID") == currency:
            return total
    return totals[0] if totals else None


def _map_ubl(root: Element, head: Header) -> InvoiceData:
    credit = etree.QName(root).localname == "CreditNote"
    currency = _read_text(root, "DocumentCurrencyCode")
    tax_total = _find_ubl_tax_total(root, currency)
    vat_lines = tuple(
        VatLine(rate=_read_rate(_read_text(sub, "TaxCategory/Percent")),
                category=_read_text(sub, "TaxCategory/ID"),
                base=_pick_amount(_find_all(sub, "TaxableAmount"), currency),
                tax=_pick_amount(_find_all(sub, "TaxAmount"), currency))
        for sub in _find_all(tax_total, "TaxSubtotal"))
    seller = _read_ubl_party(_find_one(root, "AccountingSupplierParty/Party"))
    buyer = _read_ubl_party(_find_one(root, "AccountingCustomerParty/Party"))
    means = _find_all(root, "PaymentMeans")
    due = _read_text(root, "DueDate") or _pick_first_text(
        [e for m in means for e in _find_all(m, "PaymentDueDate")])
    accounts = [_read_text(m, "PayeeFinancialAccount/ID") for m in means]
    monetary = _find_one(root, "LegalMonetaryTotal")
    type_code = _read_text(root, "CreditNoteTypeCode" if credit else "InvoiceTypeCode")
    return InvoiceData(
        syntax=head.syntax, profile=head.profile, guideline=head.guideline,
        xsd_valid=head.xsd_valid, xsd_error=head.xsd_error,
        type_code=type_code or ("381" if credit else "380"),
        number=_read_text(root, "ID"),
        issue_date=_to_iso_day(_read_text(root, "IssueDate")),
        due_date=_to_iso_day(due),
        seller_name=seller.name, seller_vat=seller.vat, seller_siren=seller.siren,
        seller_iban=_pick_iban(accounts, loose=False),
        buyer_name=buyer.name, buyer_vat=buyer.vat,
        currency=currency,
        total_net=_pick_amount(_find_all(monetary, "TaxExclusiveAmount"), currency),
        total_tax=_pick_amount(_find_all(tax_total, "TaxAmount"), currency),
        total_gross=_pick_amount(_find_all(monetary, "TaxInclusiveAmount"), currency),
        amount_due=_pick_amount(_find_all(monetary, "PayableAmount"), currency),
        payment_reference=_pick_first_text([e for m in means for e in _find_all(m, "PaymentID")]),
        vat_breakdown=vat_lines,
        xml_sha256=head.xml_sha256)


def map_document(root: Element, head: Header) -> InvoiceData:
    """Read the business fields of a parsed CII / ZUGFeRD 1 / UBL tree."""
    return _map_ubl(root, head) if head.syntax == "UBL" else _map_cii(root, head)
