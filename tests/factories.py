"""Fixture builders: Factur-X CII XML, a visible invoice PDF, and the two combined.

``make_cii_xml`` writes a Factur-X 1.0 CII document that is valid against factur-x's bundled
XSD for each profile (minimum, basicwl, basic, en16931, extended); ``tests/test_einvoice.py``
checks that with ``facturx.xml_check_xsd``. ``lines`` are ``(net amount, VAT rate)`` pairs;
VAT is computed per rate and rounded half-up to cents, as EN 16931 does (BR-CO-17).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import facturx
from lxml import etree
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "qdt": "urn:un:unece:uncefact:data:standard:QualifiedDataType:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
}
GUIDELINES = {
    "minimum": "urn:factur-x.eu:1p0:minimum",
    "basicwl": "urn:factur-x.eu:1p0:basicwl",
    "basic": "urn:cen.eu:en16931:2017#compliant#urn:factur-x.eu:1p0:basic",
    "en16931": "urn:cen.eu:en16931:2017",
    "extended": "urn:cen.eu:en16931:2017#conformant#urn:factur-x.eu:1p0:extended",
}
PROFILE_NAMES = {"minimum": "MINIMUM", "basicwl": "BASIC WL", "basic": "BASIC",
                 "en16931": "EN 16931", "extended": "EXTENDED"}
XRECHNUNG_GUIDELINE = "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0"
CENT = Decimal("0.01")
DEFAULT_LINES: tuple[tuple[Decimal, Decimal], ...] = ((Decimal("100.00"), Decimal("20.00")),)


def compute_totals(lines: Iterable[tuple[Decimal, Decimal]]
                   ) -> tuple[Decimal, Decimal, Decimal, dict[Decimal, tuple[Decimal, Decimal]]]:
    """(net, tax, gross, {rate: (base, tax)}) with tax per rate rounded half-up to cents."""
    bases: dict[Decimal, Decimal] = {}
    for net, rate in lines:
        bases[rate] = bases.get(rate, Decimal("0")) + net
    groups = {rate: (base.quantize(CENT), (base * rate / 100).quantize(CENT, ROUND_HALF_UP))
              for rate, base in bases.items()}
    net = sum((b for b, _ in groups.values()), Decimal("0.00"))
    tax = sum((t for _, t in groups.values()), Decimal("0.00"))
    return net, tax, net + tax, groups


def _add(parent: etree._Element, tag: str, text: str | None = None,
        **attrs: str) -> etree._Element:
    prefix, name = tag.split(":")
    child = etree.SubElement(parent, f"{{{NS[prefix]}}}{name}", attrs)
    if text is not None:
        child.text = text
    return child


def _add_date(parent: etree._Element, tag: str, value: date) -> None:
    _add(_add(parent, tag), "udt:DateTimeString", value.strftime("%Y%m%d"), format="102")


def _add_party(parent: etree._Element, tag: str, name: str, vat: str | None,
           full_address: bool) -> None:
    party = _add(parent, tag)
    _add(party, "ram:Name", name)
    address = _add(party, "ram:PostalTradeAddress")
    if full_address:
        _add(address, "ram:PostcodeCode", "75001")
        _add(address, "ram:LineOne", "1 rue de la Paix")
        _add(address, "ram:CityName", "Paris")
    _add(address, "ram:CountryID", (vat or "FR")[:2])
    if vat:
        _add(_add(party, "ram:SpecifiedTaxRegistration"), "ram:ID", vat, schemeID="VA")


def make_cii_xml(*, number: str = "F2026-0042", issue_date: date = date(2026, 11, 2),
                 due_date: date | None = date(2026, 12, 2),
                 seller_name: str = "Fournitures Dupont SARL",
                 seller_vat: str | None = "FR23334175221", buyer_name: str = "Acme SAS",
                 buyer_vat: str | None = "FR40303265045", currency: str = "EUR",
                 lines: Sequence[tuple[Decimal, Decimal]] = DEFAULT_LINES,
                 iban: str | None = "FR7630006000011234567890189", profile: str = "en16931",
                 payment_reference: str | None = None, guideline: str | None = None,
                 type_code: str = "380") -> bytes:
    """A Factur-X CII invoice for ``profile``; ``guideline`` overrides the guideline ID."""
    if profile not in GUIDELINES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(GUIDELINES)}")
    minimum = profile == "minimum"
    with_lines = profile in ("basic", "en16931", "extended")
    net, tax, gross, groups = compute_totals(lines)

    root = etree.Element(f"{{{NS['rsm']}}}CrossIndustryInvoice", nsmap=NS)
    context = _add(root, "rsm:ExchangedDocumentContext")
    _add(_add(context, "ram:GuidelineSpecifiedDocumentContextParameter"), "ram:ID",
        guideline or GUIDELINES[profile])
    document = _add(root, "rsm:ExchangedDocument")
    _add(document, "ram:ID", number)
    _add(document, "ram:TypeCode", type_code)
    _add_date(document, "ram:IssueDateTime", issue_date)

    transaction = _add(root, "rsm:SupplyChainTradeTransaction")
    if with_lines:
        for index, (line_net, rate) in enumerate(lines, start=1):
            item = _add(transaction, "ram:IncludedSupplyChainTradeLineItem")
            _add(_add(item, "ram:AssociatedDocumentLineDocument"), "ram:LineID", str(index))
            _add(_add(item, "ram:SpecifiedTradeProduct"), "ram:Name", f"Article {index}")
            price = _add(_add(item, "ram:SpecifiedLineTradeAgreement"),
                        "ram:NetPriceProductTradePrice")
            _add(price, "ram:ChargeAmount", str(line_net))
            _add(_add(item, "ram:SpecifiedLineTradeDelivery"), "ram:BilledQuantity", "1",
                unitCode="C62")
            settlement = _add(item, "ram:SpecifiedLineTradeSettlement")
            line_tax = _add(settlement, "ram:ApplicableTradeTax")
            _add(line_tax, "ram:TypeCode", "VAT")
            _add(line_tax, "ram:CategoryCode", "S" if rate else "Z")
            _add(line_tax, "ram:RateApplicablePercent", str(rate))
            _add(_add(settlement, "ram:SpecifiedTradeSettlementLineMonetarySummation"),
                "ram:LineTotalAmount", str(line_net))

    agreement = _add(transaction, "ram:ApplicableHeaderTradeAgreement")
    _add_party(agreement, "ram:SellerTradeParty", seller_name, seller_vat, not minimum)
    _add_party(agreement, "ram:BuyerTradeParty", buyer_name, buyer_vat, not minimum)
    _add(transaction, "ram:ApplicableHeaderTradeDelivery")

    settlement = _add(transaction, "ram:ApplicableHeaderTradeSettlement")
    if payment_reference and not minimum:
        _add(settlement, "ram:PaymentReference", payment_reference)
    _add(settlement, "ram:InvoiceCurrencyCode", currency)
    if not minimum:
        if iban:
            means = _add(settlement, "ram:SpecifiedTradeSettlementPaymentMeans")
            _add(means, "ram:TypeCode", "58")
            _add(_add(means, "ram:PayeePartyCreditorFinancialAccount"), "ram:IBANID", iban)
        for rate, (base, rate_tax) in groups.items():
            header_tax = _add(settlement, "ram:ApplicableTradeTax")
            _add(header_tax, "ram:CalculatedAmount", str(rate_tax))
            _add(header_tax, "ram:TypeCode", "VAT")
            _add(header_tax, "ram:BasisAmount", str(base))
            _add(header_tax, "ram:CategoryCode", "S" if rate else "Z")
            _add(header_tax, "ram:RateApplicablePercent", str(rate))
        if due_date:
            _add_date(_add(settlement, "ram:SpecifiedTradePaymentTerms"), "ram:DueDateDateTime",
                  due_date)
    summation = _add(settlement, "ram:SpecifiedTradeSettlementHeaderMonetarySummation")
    if not minimum:
        _add(summation, "ram:LineTotalAmount", str(net))
    _add(summation, "ram:TaxBasisTotalAmount", str(net))
    _add(summation, "ram:TaxTotalAmount", str(tax), currencyID=currency)
    _add(summation, "ram:GrandTotalAmount", str(gross))
    _add(summation, "ram:DuePayableAmount", str(gross))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8",
                                pretty_print=True))


def make_visible_pdf(text_lines: list[str]) -> bytes:
    """A one-page A4 PDF showing ``text_lines`` top to bottom (reportlab, reproducible)."""
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4, invariant=True)
    y = A4[1] - 72
    for line in text_lines:
        pdf.drawString(72, y, line)
        y -= 16
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def make_facturx_pdf(**kwargs: Any) -> bytes:
    """A visible invoice plus ``make_cii_xml(**kwargs)`` embedded as factur-x.xml."""
    xml = make_cii_xml(**kwargs)
    number = kwargs.get("number", "F2026-0042")
    currency = kwargs.get("currency", "EUR")
    net, tax, gross, _ = compute_totals(kwargs.get("lines", DEFAULT_LINES))
    visible = make_visible_pdf([
        f"FACTURE {number}",
        f"Date: {kwargs.get('issue_date', date(2026, 11, 2)).isoformat()}",
        f"Vendeur: {kwargs.get('seller_name', 'Fournitures Dupont SARL')}",
        f"Client: {kwargs.get('buyer_name', 'Acme SAS')}",
        f"Total HT: {net} {currency}",
        f"TVA: {tax} {currency}",
        f"Total TTC: {gross} {currency}",
    ])
    level = kwargs.get("profile", "en16931")
    return bytes(facturx.generate_from_binary(visible, xml, flavor="factur-x", level=level,
                                              check_xsd=True))
