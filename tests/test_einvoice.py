"""daemon/einvoice.py: Factur-X round trips, UBL and ZUGFeRD 1 by hand, hostile XML and PDFs.

The XXE tests point entities at a FIFO and at a loopback listener: a parser that opened the
FIFO or connected to the port would be caught (``Tripwire`` / ``Listener``), and a positive
control shows the FIFO tripwire does fire for an unsafe parser.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import facturx
import pypdf
import pytest
from lxml import etree
from pypdf.generic import NameObject

from daemon.einvoice import (
    MAX_XML_BYTES,
    InvalidInvoice,
    VatLine,
    extract_xml_from_pdf,
    read_invoice_xml,
    sniff_root_name,
)
from daemon.einvoice_map import parse_decimal
from tests.factories import (
    GUIDELINES,
    NS,
    PROFILE_NAMES,
    XRECHNUNG_GUIDELINE,
    compute_totals,
    make_cii_xml,
    make_facturx_pdf,
    make_visible_pdf,
)

D = Decimal
TWO_RATES = ((D("100.00"), D("20.00")), (D("33.33"), D("5.5")), (D("10.00"), D("20.00")))


def add_attachments(pdf: bytes, files: dict[str, bytes]) -> bytes:
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(pdf))
    for name, content in files.items():
        writer.add_attachment(name, content)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def raised_reason(call: object, *args: object) -> str:
    with pytest.raises(InvalidInvoice) as info:
        call(*args)  # type: ignore[operator]
    assert str(info.value) and info.value.reason
    return info.value.reason


# --- factories and round trips -------------------------------------------------------------

@pytest.mark.parametrize("profile", sorted(GUIDELINES))
def test_factory_xml_is_xsd_valid(profile: str) -> None:
    for lines in (((D("100.00"), D("20.00")),), TWO_RATES, ((D("50.00"), D("0")),)):
        xml = make_cii_xml(profile=profile, lines=lines, payment_reference="RF18 5390 0754")
        assert facturx.xml_check_xsd(xml, flavor="factur-x", level=profile) is True


@pytest.mark.parametrize("profile", sorted(GUIDELINES))
def test_round_trip_each_profile(profile: str) -> None:
    kwargs = {"profile": profile, "lines": TWO_RATES, "payment_reference": "F2026-0042/RF"}
    xml = make_cii_xml(**kwargs)  # type: ignore[arg-type]
    pdf = make_facturx_pdf(**kwargs)
    found = extract_xml_from_pdf(pdf)
    assert found is not None
    xml_bytes, name = found
    assert name == "factur-x.xml"
    assert xml_bytes == xml

    inv = read_invoice_xml(xml_bytes)
    net, tax, gross, groups = compute_totals(TWO_RATES)
    minimum = profile == "minimum"
    assert (inv.syntax, inv.profile, inv.guideline) == ("CII", PROFILE_NAMES[profile],
                                                        GUIDELINES[profile])
    assert (inv.xsd_valid, inv.xsd_error) == (True, "")
    assert inv.type_code == "380"
    assert inv.number == "F2026-0042"
    assert inv.issue_date == "2026-11-02"
    assert inv.due_date == (None if minimum else "2026-12-02")
    assert (inv.seller_name, inv.seller_vat) == ("Fournitures Dupont SARL", "FR23334175221")
    assert inv.seller_siren == "334175221"  # from the French VAT number
    assert inv.seller_iban == (None if minimum else "FR7630006000011234567890189")
    assert (inv.buyer_name, inv.buyer_vat) == ("Acme SAS", "FR40303265045")
    assert inv.currency == "EUR"
    assert (inv.total_net, inv.total_tax, inv.total_gross, inv.amount_due) == (
        net, tax, gross, gross)
    assert (net, tax, gross) == (D("143.33"), D("23.83"), D("167.16"))
    assert inv.payment_reference == (None if minimum else "F2026-0042/RF")
    expected_vat = () if minimum else tuple(
        VatLine(rate=str(rate), category="S", base=base, tax=rate_tax)
        for rate, (base, rate_tax) in groups.items())
    assert inv.vat_breakdown == expected_vat
    assert inv.xml_sha256 == hashlib.sha256(xml).hexdigest()
    assert all(isinstance(v, Decimal) for v in (inv.total_net, inv.total_tax))


def test_xrechnung_guideline_maps_to_xrechnung_and_en16931_xsd() -> None:
    inv = read_invoice_xml(make_cii_xml(guideline=XRECHNUNG_GUIDELINE))
    assert (inv.profile, inv.guideline, inv.xsd_valid) == ("XRECHNUNG", XRECHNUNG_GUIDELINE, True)


def test_credit_note_type_and_other_currency() -> None:
    inv = read_invoice_xml(make_cii_xml(type_code="381", currency="CHF",
                                        lines=((D("-12.50"), D("7.7")),)))
    assert (inv.type_code, inv.currency) == ("381", "CHF")
    assert (inv.total_net, inv.total_tax, inv.total_gross) == (D("-12.50"), D("-0.96"),
                                                               D("-13.46"))


def parse_tree(xml: bytes) -> etree._Element:
    return etree.fromstring(xml, etree.XMLParser(resolve_entities=False))


def test_tax_total_in_invoice_currency_is_chosen() -> None:
    root = parse_tree(make_cii_xml())
    summation = root.find(".//ram:SpecifiedTradeSettlementHeaderMonetarySummation", NS)
    assert summation is not None
    eur = summation.find("ram:TaxTotalAmount", NS)
    assert eur is not None
    usd = etree.Element(f"{{{NS['ram']}}}TaxTotalAmount", currencyID="USD")
    usd.text = "21.70"
    eur.addprevious(usd)  # BT-111 (tax currency) first: BT-110 must still win
    inv = read_invoice_xml(etree.tostring(root))
    assert inv.total_tax == D("20.00")


def test_siren_from_siret_and_from_legal_id() -> None:
    for scheme, value, expected in (("0009", "73282932000074", "732829320"),
                                    ("0002", "732829320", "732829320")):
        root = parse_tree(make_cii_xml(seller_vat="DE123456789"))
        name = root.find(".//ram:SellerTradeParty/ram:Name", NS)
        assert name is not None
        legal = etree.Element(f"{{{NS['ram']}}}SpecifiedLegalOrganization")
        etree.SubElement(legal, f"{{{NS['ram']}}}ID", schemeID=scheme).text = value
        name.addnext(legal)
        inv = read_invoice_xml(etree.tostring(root))
        assert (inv.seller_siren, inv.xsd_valid) == (expected, True)
    assert read_invoice_xml(make_cii_xml(seller_vat="DE123456789")).seller_siren is None


def test_xsd_invalid_cii_is_read_and_flagged() -> None:
    root = parse_tree(make_cii_xml())
    document = root.find("rsm:ExchangedDocument", NS)
    assert document is not None
    type_code = document.find("ram:TypeCode", NS)
    assert type_code is not None
    document.insert(0, type_code)  # TypeCode before ID: wrong order for the XSD
    inv = read_invoice_xml(etree.tostring(root))
    assert inv.xsd_valid is False
    assert "TypeCode" in inv.xsd_error or "ID" in inv.xsd_error
    assert (inv.number, inv.total_gross) == ("F2026-0042", D("120.00"))


def test_missing_number_is_refused() -> None:
    root = parse_tree(make_cii_xml())
    number = root.find("rsm:ExchangedDocument/ram:ID", NS)
    assert number is not None
    number.text = "  "
    assert raised_reason(read_invoice_xml, etree.tostring(root)) == "missing-number"


def test_odd_dates_and_amounts() -> None:
    root = parse_tree(make_cii_xml())
    issue = root.find(".//ram:IssueDateTime/udt:DateTimeString", NS)
    due = root.find(".//ram:DueDateDateTime/udt:DateTimeString", NS)
    grand = root.find(".//ram:GrandTotalAmount", NS)
    assert issue is not None and due is not None and grand is not None
    issue.text, due.text, due.attrib["format"] = "20260231", "202612", "610"
    grand.text = "1E+3"
    inv = read_invoice_xml(etree.tostring(root))
    assert (inv.issue_date, inv.due_date, inv.total_gross) == (None, None, None)
    assert inv.xsd_valid is False  # 1E+3 is no xs:decimal
    for text, value in (("12.50", D("12.50")), (" -3 ", D("-3")), (".5", D("0.5")),
                        ("NaN", None), ("Infinity", None), ("1e5", None), ("", None),
                        ("1" * 41, None), ("12,50", None)):
        assert parse_decimal(text) == value, text


# --- UBL and ZUGFeRD 1 written by hand -----------------------------------------------------

def make_ubl(*, credit: bool = False) -> bytes:
    root, line, qty, type_tag = (("CreditNote", "CreditNoteLine", "CreditedQuantity",
                                  "CreditNoteTypeCode") if credit else
                                 ("Invoice", "InvoiceLine", "InvoicedQuantity",
                                  "InvoiceTypeCode"))
    due = "" if credit else "<cbc:DueDate>2026-12-02</cbc:DueDate>"
    pay_due = "<cbc:PaymentDueDate>2026-12-09</cbc:PaymentDueDate>" if credit else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<{root} xmlns="urn:oasis:names:specification:ubl:schema:xsd:{root}-2"
 xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
 xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
 <cbc:CustomizationID>urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0</cbc:CustomizationID>
 <cbc:ProfileID>urn:fdc:peppol.eu:2017:poacc:billing:01:1.0</cbc:ProfileID>
 <cbc:ID>UBL-77</cbc:ID>
 <cbc:IssueDate>2026-11-02</cbc:IssueDate>
 {due}
 <cbc:{type_tag}>{381 if credit else 380}</cbc:{type_tag}>
 <cbc:DocumentCurrencyCode>EUR</cbc:DocumentCurrencyCode>
 <cbc:TaxCurrencyCode>SEK</cbc:TaxCurrencyCode>
 <cac:AccountingSupplierParty><cac:Party>
  <cac:PartyName><cbc:Name>Dupont (trading name)</cbc:Name></cac:PartyName>
  <cac:PostalAddress><cac:Country><cbc:IdentificationCode>FR</cbc:IdentificationCode>
   </cac:Country></cac:PostalAddress>
  <cac:PartyTaxScheme><cbc:CompanyID>FR-LOCAL-1</cbc:CompanyID>
   <cac:TaxScheme><cbc:ID>LOC</cbc:ID></cac:TaxScheme></cac:PartyTaxScheme>
  <cac:PartyTaxScheme><cbc:CompanyID>FR23334175221</cbc:CompanyID>
   <cac:TaxScheme><cbc:ID>VAT</cbc:ID></cac:TaxScheme></cac:PartyTaxScheme>
  <cac:PartyLegalEntity><cbc:RegistrationName>Fournitures
    Dupont SARL</cbc:RegistrationName>
   <cbc:CompanyID schemeID="0002">732829320</cbc:CompanyID></cac:PartyLegalEntity>
 </cac:Party></cac:AccountingSupplierParty>
 <cac:AccountingCustomerParty><cac:Party>
  <cac:PostalAddress><cac:Country><cbc:IdentificationCode>FR</cbc:IdentificationCode>
   </cac:Country></cac:PostalAddress>
  <cac:PartyTaxScheme><cbc:CompanyID>FR40303265045</cbc:CompanyID>
   <cac:TaxScheme><cbc:ID>VAT</cbc:ID></cac:TaxScheme></cac:PartyTaxScheme>
  <cac:PartyLegalEntity><cbc:RegistrationName>Acme SAS</cbc:RegistrationName></cac:PartyLegalEntity>
 </cac:Party></cac:AccountingCustomerParty>
 <cac:PaymentMeans><cbc:PaymentMeansCode>30</cbc:PaymentMeansCode>{pay_due}
  <cbc:PaymentID>RF18 5390 0754</cbc:PaymentID>
  <cac:PayeeFinancialAccount><cbc:ID>5050-1055</cbc:ID></cac:PayeeFinancialAccount></cac:PaymentMeans>
 <cac:PaymentMeans><cbc:PaymentMeansCode>58</cbc:PaymentMeansCode>
  <cac:PayeeFinancialAccount><cbc:ID>fr76 3000 6000 0112 3456 7890 189</cbc:ID>
  </cac:PayeeFinancialAccount></cac:PaymentMeans>
 <cac:TaxTotal><cbc:TaxAmount currencyID="SEK">230.00</cbc:TaxAmount></cac:TaxTotal>
 <cac:TaxTotal><cbc:TaxAmount currencyID="EUR">20.00</cbc:TaxAmount>
  <cac:TaxSubtotal><cbc:TaxableAmount currencyID="EUR">100.00</cbc:TaxableAmount>
   <cbc:TaxAmount currencyID="EUR">20.00</cbc:TaxAmount>
   <cac:TaxCategory><cbc:ID>S</cbc:ID><cbc:Percent>20</cbc:Percent>
    <cac:TaxScheme><cbc:ID>VAT</cbc:ID></cac:TaxScheme></cac:TaxCategory>
  </cac:TaxSubtotal></cac:TaxTotal>
 <cac:LegalMonetaryTotal>
  <cbc:LineExtensionAmount currencyID="EUR">100.00</cbc:LineExtensionAmount>
  <cbc:TaxExclusiveAmount currencyID="EUR">100.00</cbc:TaxExclusiveAmount>
  <cbc:TaxInclusiveAmount currencyID="EUR">120.00</cbc:TaxInclusiveAmount>
  <cbc:PrepaidAmount currencyID="EUR">20.00</cbc:PrepaidAmount>
  <cbc:PayableAmount currencyID="EUR">100.00</cbc:PayableAmount>
 </cac:LegalMonetaryTotal>
 <cac:{line}><cbc:ID>1</cbc:ID><cbc:{qty} unitCode="C62">1</cbc:{qty}>
  <cbc:LineExtensionAmount currencyID="EUR">100.00</cbc:LineExtensionAmount>
  <cac:Item><cbc:Name>Article 1</cbc:Name>
   <cac:ClassifiedTaxCategory><cbc:ID>S</cbc:ID><cbc:Percent>20</cbc:Percent>
    <cac:TaxScheme><cbc:ID>VAT</cbc:ID></cac:TaxScheme></cac:ClassifiedTaxCategory></cac:Item>
  <cac:Price><cbc:PriceAmount currencyID="EUR">100.00</cbc:PriceAmount></cac:Price>
 </cac:{line}>
</{root}>
""".encode()


@pytest.mark.parametrize("credit", [False, True], ids=["invoice", "credit-note"])
def test_ubl_written_by_hand(credit: bool) -> None:
    inv = read_invoice_xml(make_ubl(credit=credit))
    assert (inv.syntax, inv.profile) == ("UBL", "PEPPOL BIS")
    assert (inv.xsd_valid, inv.xsd_error) == (True, "")
    assert inv.type_code == ("381" if credit else "380")
    assert (inv.number, inv.issue_date) == ("UBL-77", "2026-11-02")
    assert inv.due_date == ("2026-12-09" if credit else "2026-12-02")
    assert inv.seller_name == "Fournitures Dupont SARL"  # legal name, one line
    assert (inv.seller_vat, inv.seller_siren) == ("FR23334175221", "732829320")  # 0002 first
    assert inv.seller_iban == "FR7630006000011234567890189"  # the first account that is an IBAN
    assert (inv.buyer_name, inv.buyer_vat) == ("Acme SAS", "FR40303265045")
    assert inv.currency == "EUR"
    assert (inv.total_net, inv.total_tax, inv.total_gross, inv.amount_due) == (
        D("100.00"), D("20.00"), D("120.00"), D("100.00"))
    assert inv.payment_reference == "RF18 5390 0754"
    assert inv.vat_breakdown == (VatLine("20", "S", D("100.00"), D("20.00")),)


def test_ubl_schema_error_is_reported() -> None:
    xml = make_ubl().replace(b"<cbc:ID>UBL-77</cbc:ID>", b"<cbc:ID>UBL-77</cbc:ID><cbc:Bogus/>")
    inv = read_invoice_xml(xml)
    assert inv.xsd_valid is False and "Bogus" in inv.xsd_error


ZUGFERD1 = b"""<?xml version="1.0" encoding="UTF-8"?>
<rsm:CrossIndustryDocument xmlns:rsm="urn:ferd:CrossIndustryDocument:invoice:1p0"
 xmlns:ram="urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:12"
 xmlns:udt="urn:un:unece:uncefact:data:standard:UnqualifiedDataType:15">
 <rsm:SpecifiedExchangedDocumentContext>
  <ram:GuidelineSpecifiedDocumentContextParameter>
   <ram:ID>urn:ferd:CrossIndustryDocument:invoice:1p0:comfort</ram:ID>
  </ram:GuidelineSpecifiedDocumentContextParameter>
 </rsm:SpecifiedExchangedDocumentContext>
 <rsm:HeaderExchangedDocument>
  <ram:ID>Z1-471102</ram:ID><ram:Name>RECHNUNG</ram:Name><ram:TypeCode>380</ram:TypeCode>
  <ram:IssueDateTime><udt:DateTimeString format="102">20130305</udt:DateTimeString>
  </ram:IssueDateTime>
 </rsm:HeaderExchangedDocument>
 <rsm:SpecifiedSupplyChainTradeTransaction>
  <ram:ApplicableSupplyChainTradeAgreement>
   <ram:SellerTradeParty><ram:Name>Lieferant GmbH</ram:Name>
    <ram:SpecifiedTaxRegistration><ram:ID schemeID="FC">201/113/40209</ram:ID>
    </ram:SpecifiedTaxRegistration>
    <ram:SpecifiedTaxRegistration><ram:ID schemeID="VA">DE123456789</ram:ID>
    </ram:SpecifiedTaxRegistration>
   </ram:SellerTradeParty>
   <ram:BuyerTradeParty><ram:Name>Kunden AG Mitte</ram:Name></ram:BuyerTradeParty>
  </ram:ApplicableSupplyChainTradeAgreement>
  <ram:ApplicableSupplyChainTradeSettlement>
   <ram:PaymentReference>2013-471102</ram:PaymentReference>
   <ram:InvoiceCurrencyCode>EUR</ram:InvoiceCurrencyCode>
   <ram:SpecifiedTradeSettlementPaymentMeans><ram:TypeCode>31</ram:TypeCode>
    <ram:PayeePartyCreditorFinancialAccount><ram:IBANID>DE08 7009 0100 1234 5678 90</ram:IBANID>
    </ram:PayeePartyCreditorFinancialAccount>
   </ram:SpecifiedTradeSettlementPaymentMeans>
   <ram:ApplicableTradeTax><ram:CalculatedAmount currencyID="EUR">19.00</ram:CalculatedAmount>
    <ram:TypeCode>VAT</ram:TypeCode><ram:BasisAmount currencyID="EUR">100.00</ram:BasisAmount>
    <ram:CategoryCode>S</ram:CategoryCode><ram:ApplicablePercent>19.00</ram:ApplicablePercent>
   </ram:ApplicableTradeTax>
   <ram:SpecifiedTradePaymentTerms>
    <ram:DueDateDateTime><udt:DateTimeString format="102">20130404</udt:DateTimeString>
    </ram:DueDateDateTime>
   </ram:SpecifiedTradePaymentTerms>
   <ram:SpecifiedTradeSettlementMonetarySummation>
    <ram:LineTotalAmount currencyID="EUR">100.00</ram:LineTotalAmount>
    <ram:ChargeTotalAmount currencyID="EUR">0.00</ram:ChargeTotalAmount>
    <ram:AllowanceTotalAmount currencyID="EUR">0.00</ram:AllowanceTotalAmount>
    <ram:TaxBasisTotalAmount currencyID="EUR">100.00</ram:TaxBasisTotalAmount>
    <ram:TaxTotalAmount currencyID="EUR">19.00</ram:TaxTotalAmount>
    <ram:GrandTotalAmount currencyID="EUR">119.00</ram:GrandTotalAmount>
    <ram:DuePayableAmount currencyID="EUR">119.00</ram:DuePayableAmount>
   </ram:SpecifiedTradeSettlementMonetarySummation>
  </ram:ApplicableSupplyChainTradeSettlement>
 </rsm:SpecifiedSupplyChainTradeTransaction>
</rsm:CrossIndustryDocument>
"""


def test_zugferd1_written_by_hand() -> None:
    inv = read_invoice_xml(ZUGFERD1)
    assert (inv.syntax, inv.profile, inv.xsd_valid) == ("ZUGFeRD1", "ZUGFeRD 1.0 COMFORT", True)
    assert (inv.number, inv.issue_date, inv.due_date) == ("Z1-471102", "2013-03-05",
                                                          "2013-04-04")
    assert (inv.seller_name, inv.seller_vat, inv.seller_siren) == ("Lieferant GmbH",
                                                                   "DE123456789", None)
    assert (inv.seller_iban, inv.payment_reference) == ("DE08700901001234567890", "2013-471102")
    assert (inv.total_net, inv.total_tax, inv.total_gross, inv.amount_due) == (
        D("100.00"), D("19.00"), D("119.00"), D("119.00"))
    assert inv.vat_breakdown == (VatLine("19.00", "S", D("100.00"), D("19.00")),)


# --- hostile XML ---------------------------------------------------------------------------

class Tripwire:
    """A FIFO at ``path``: if anything opens it for reading, ``opened`` becomes True."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.opened = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # ENXIO: nobody has it open for reading
                if exc.errno != errno.ENXIO:
                    return  # the FIFO went away (test over): nothing left to watch
                time.sleep(0.002)
                continue
            self.opened = True
            try:
                os.write(fd, b"TOPSECRET")
            except BrokenPipeError:  # the reader already closed it: it did open it
                pass
            finally:
                os.close(fd)

    def __enter__(self) -> Tripwire:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.05)
        self._stop.set()
        self._thread.join(5)


class Listener:
    """A loopback TCP port that counts connections."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.hits += 1
            conn.close()

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.1)
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def tripwire(tmp_path: Path) -> Iterator[Tripwire]:
    with Tripwire(tmp_path / "secret") as wire:
        yield wire


@pytest.fixture
def listener() -> Iterator[Listener]:
    with Listener() as server:
        yield server


def build_entity_xml(doctype: str, ref: str = "&e;") -> bytes:
    xml = make_cii_xml(seller_name="SELLER")
    head, _, body = xml.partition(b"?>")
    return head + b"?>\n" + doctype.encode() + body.replace(b"SELLER", ref.encode())


def test_tripwire_catches_an_unsafe_parser(tripwire: Tripwire) -> None:
    xxe = build_entity_xml(f'<!DOCTYPE r [<!ENTITY e SYSTEM "file://{tripwire.path}">]>')
    unsafe = etree.XMLParser(resolve_entities=True, load_dtd=True, no_network=True)
    root = etree.fromstring(xxe, unsafe)
    assert b"TOPSECRET" in etree.tostring(root)
    deadline = time.monotonic() + 5
    while not tripwire.opened and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tripwire.opened  # so the tripwire works; the next tests rely on it


def test_xxe_local_file_is_refused_unread(tripwire: Tripwire) -> None:
    xxe = build_entity_xml(f'<!DOCTYPE r [<!ENTITY e SYSTEM "file://{tripwire.path}">]>')
    with pytest.raises(InvalidInvoice) as info:
        read_invoice_xml(xxe)
    assert info.value.reason == "doctype-refused"
    assert "TOPSECRET" not in str(info.value)
    time.sleep(0.05)
    assert not tripwire.opened


def test_xxe_in_an_embedded_factur_x_xml(tripwire: Tripwire) -> None:
    xxe = build_entity_xml(f'<!DOCTYPE r [<!ENTITY e SYSTEM "file://{tripwire.path}">]>')
    pdf = add_attachments(make_visible_pdf(["FACTURE"]), {"factur-x.xml": xxe})
    found = extract_xml_from_pdf(pdf)
    assert found == (xxe, "factur-x.xml")  # handed over unparsed ...
    assert raised_reason(read_invoice_xml, found[0]) == "doctype-refused"  # ... and refused
    time.sleep(0.05)
    assert not tripwire.opened


@pytest.mark.parametrize("template", [
    '<!DOCTYPE r [<!ENTITY e SYSTEM "http://127.0.0.1:9/x">]>',
    '<!DOCTYPE r [<!ENTITY e SYSTEM "http://127.0.0.1:{port}/e">]>',
    '<!DOCTYPE r SYSTEM "http://127.0.0.1:{port}/x.dtd">',
    '<!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:{port}/p.dtd"> %p;]>',
], ids=["entity-port-9", "entity", "external-dtd", "parameter-entity"])
def test_network_entities_are_refused_without_a_connection(template: str,
                                                           listener: Listener) -> None:
    xml = build_entity_xml(template.format(port=listener.port), ref="&e;")
    assert raised_reason(read_invoice_xml, xml) == "doctype-refused"
    assert listener.hits == 0


def test_schema_location_and_xinclude_are_not_followed(listener: Listener) -> None:
    url = f"http://127.0.0.1:{listener.port}/x"
    xml = make_cii_xml().replace(
        b"<rsm:ExchangedDocumentContext>",
        f'<rsm:ExchangedDocumentContext xmlns:xi="http://www.w3.org/2001/XInclude" '
        f'xsi:schemaLocation="urn:x {url}.xsd" '
        f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f'<xi:include href="{url}.xml"/>'.encode())
    inv = read_invoice_xml(xml)
    assert inv.number == "F2026-0042"
    assert inv.xsd_valid is False  # the xi:include element is simply unexpected
    assert listener.hits == 0


def test_billion_laughs_and_quadratic_blowup_are_refused_fast() -> None:
    laughs = ['<!ENTITY l0 "lol">'] + [
        f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10)]
    bombs = [
        build_entity_xml(f"<!DOCTYPE r [{''.join(laughs)}]>", ref="&l9;"),
        build_entity_xml(f'<!DOCTYPE r [<!ENTITY a "{"x" * 50_000}">]>',
                               ref="&a;" * 50_000),
    ]
    for bomb in bombs:
        start = time.monotonic()
        assert raised_reason(read_invoice_xml, bomb) == "doctype-refused"
        assert time.monotonic() - start < 1.0


def test_doctype_hidden_in_utf16_or_odd_encodings() -> None:
    xxe = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY e "x">]><r>&e;</r>'
    assert raised_reason(read_invoice_xml, xxe.encode("utf-16")) == "doctype-refused"
    assert raised_reason(read_invoice_xml, xxe.encode("utf-16-le")) == "doctype-refused"
    utf7 = b'<?xml version="1.0" encoding="UTF-7"?>+ADw-!DOCTYPE r+AD4-<r/>'
    assert raised_reason(read_invoice_xml, utf7) == "encoding-refused"
    for utf32 in ("utf-32", "utf-32-le", "utf-32-be"):
        assert raised_reason(read_invoice_xml, xxe.encode(utf32)) == "encoding-refused"
    lower = b"<!doctype r><r/>"
    assert raised_reason(read_invoice_xml, lower) == "doctype-refused"
    # a UTF-16 invoice without DOCTYPE is fine
    utf16 = make_cii_xml().decode().replace('encoding="UTF-8"', 'encoding="UTF-16"')
    assert read_invoice_xml(utf16.encode("utf-16")).number == "F2026-0042"


def test_oversized_xml_is_refused_before_parsing() -> None:
    xml = make_cii_xml(seller_name="x" * (MAX_XML_BYTES + 1))
    start = time.monotonic()
    assert raised_reason(read_invoice_xml, xml) == "xml-too-large"
    assert time.monotonic() - start < 0.5


@pytest.mark.parametrize("xml,reason", [
    (b"", "not-well-formed"),
    (b"   ", "not-well-formed"),
    (b"<r><unclosed></r>", "not-well-formed"),
    (b"\xff\xd8\xff\xe0 JPEG", "not-well-formed"),
    (b"<html><body>Invoice</body></html>", "not-cii-or-ubl"),
    (b'<Invoice xmlns="urn:example:not-ubl"><ID>1</ID></Invoice>', "not-cii-or-ubl"),
    (b'<rsm:SCRDMCCBDACIOMessageStructure xmlns:rsm="urn:un:unece:uncefact:data:'
     b'SCRDMCCBDACIOMessageStructure:100"/>', "not-cii-or-ubl"),
])
def test_not_an_invoice(xml: bytes, reason: str) -> None:
    assert raised_reason(read_invoice_xml, xml) == reason


def test_garbage_and_truncations_only_raise_invalid_invoice() -> None:
    xml = make_cii_xml(profile="extended", lines=TWO_RATES)
    for cut in range(0, len(xml), max(1, len(xml) // 60)):
        with pytest.raises(InvalidInvoice):
            read_invoice_xml(xml[:cut])
    for seed in range(30):
        blob = hashlib.sha512(str(seed).encode()).digest() * 20
        with pytest.raises(InvalidInvoice):
            read_invoice_xml(b"<?xml version='1.0'?>" + blob)


# --- PDFs ----------------------------------------------------------------------------------

def test_pdf_without_xml_gives_none() -> None:
    assert extract_xml_from_pdf(make_visible_pdf(["FACTURE F-1", "Total TTC 120,00 EUR"])) \
        is None
    other = add_attachments(make_visible_pdf(["x"]), {"notes.xml": b"<notes/>",
                                                      "photo.jpg": b"\xff\xd8"})
    assert extract_xml_from_pdf(other) is None


def test_pdf_attachment_choice() -> None:
    visible = make_visible_pdf(["FACTURE"])
    ubl = make_ubl()
    assert extract_xml_from_pdf(add_attachments(visible, {"invoice-data.xml": ubl})) == (
        ubl, "invoice-data.xml")
    cii = make_cii_xml()
    both = add_attachments(visible, {"ZUGFeRD-invoice.xml": ZUGFERD1, "factur-x.xml": cii,
                                     "xrechnung.xml": ubl})
    assert extract_xml_from_pdf(both) == (cii, "factur-x.xml")
    assert extract_xml_from_pdf(add_attachments(visible, {"xrechnung.xml": cii})) == (
        cii, "xrechnung.xml")


@pytest.mark.parametrize("cut", [0.1, 0.4, 0.9, 0.99])
def test_truncated_pdf_is_unreadable(cut: float) -> None:
    pdf = make_facturx_pdf()
    assert raised_reason(extract_xml_from_pdf, pdf[:int(len(pdf) * cut)]) == "pdf-unreadable"


@pytest.mark.parametrize("data", [
    b"", b"not a pdf at all", b"%PDF-1.7\n", b"%PDF-1.7\n" + b"\x00garbage" * 500,
    b"%PDF-1.7\n" + hashlib.sha512(b"seed").digest() * 100,
], ids=["empty", "text", "header-only", "garbage", "random"])
def test_corrupt_pdf_is_unreadable(data: bytes) -> None:
    assert raised_reason(extract_xml_from_pdf, data) == "pdf-unreadable"


def test_encrypted_pdf() -> None:
    pdf = make_facturx_pdf()
    locked = pypdf.PdfWriter(clone_from=io.BytesIO(pdf))
    locked.encrypt(user_password="secret", algorithm="RC4-128")
    out = io.BytesIO()
    locked.write(out)
    assert raised_reason(extract_xml_from_pdf, out.getvalue()) == "pdf-encrypted"
    # an owner password alone does not stop reading
    owner_only = pypdf.PdfWriter(clone_from=io.BytesIO(pdf))
    owner_only.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    owner_only.write(out)
    found = extract_xml_from_pdf(out.getvalue())
    assert found is not None and read_invoice_xml(found[0]).number == "F2026-0042"


def test_flate_bomb_attachment_hits_the_stream_limit() -> None:
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(make_visible_pdf(["FACTURE"])))
    attachment = writer.add_attachment("factur-x.xml", b"placeholder")
    stream = cast(Any, attachment.pdf_object)["/EF"]["/F"].get_object()
    stream._data = zlib.compress(b"\0" * (64 * 1024 * 1024), 9)  # 64 MB of zeros, ~64 KB
    stream[NameObject("/Filter")] = NameObject("/FlateDecode")
    out = io.BytesIO()
    writer.write(out)
    assert len(out.getvalue()) < 200_000
    start = time.monotonic()
    assert raised_reason(extract_xml_from_pdf, out.getvalue()) == "pdf-too-complex"
    assert time.monotonic() - start < 5


def test_pdf_with_an_oversized_xml_is_refused_when_read() -> None:
    big = make_cii_xml(seller_name="y" * (MAX_XML_BYTES + 10))
    found = extract_xml_from_pdf(add_attachments(make_visible_pdf(["F"]), {"factur-x.xml": big}))
    assert found is not None
    assert raised_reason(read_invoice_xml, found[0]) == "xml-too-large"


def test_round_trip_custom_values() -> None:
    kwargs = {"number": "A/2026/7", "issue_date": date(2026, 1, 31), "due_date": None,
              "seller_name": "Café Ünïcode & Fils", "seller_vat": "BE0123456749",
              "buyer_vat": None, "iban": None, "currency": "GBP", "profile": "basic"}
    found = extract_xml_from_pdf(make_facturx_pdf(**kwargs))
    assert found is not None
    inv = read_invoice_xml(found[0])
    assert (inv.number, inv.issue_date, inv.due_date) == ("A/2026/7", "2026-01-31", None)
    assert (inv.seller_name, inv.seller_vat, inv.seller_siren) == (
        "Café Ünïcode & Fils", "BE0123456749", None)
    assert (inv.buyer_vat, inv.seller_iban, inv.currency) == (None, None, "GBP")


def test_root_sniffing_is_linear_and_skips_comments() -> None:
    assert sniff_root_name(b'<?xml version="1.0"?><!-- <Invoice> --><rsm:CrossIndustryInvoice'
                           b' xmlns:rsm="u"/>') == "CrossIndustryInvoice"
    assert sniff_root_name("<CreditNote/>".encode("utf-16")) == "CreditNote"
    assert sniff_root_name(b"<!-- never closed <Invoice>") is None
    start = time.monotonic()
    sniff_root_name(b"<!--" * 16_384)
    sniff_root_name(b"<!---->" * 9_000 + b"<Invoice/>")
    assert time.monotonic() - start < 0.5
