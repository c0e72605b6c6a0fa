"""The Factur-X fast path: structured invoice XML out of a PDF, and its fields out of the XML.

Job: ``extract_xml_from_pdf`` finds the invoice XML embedded in a PDF (Factur-X, ZUGFeRD 1/2,
XRechnung-in-PDF, or any embedded ``.xml`` whose root is CII or UBL); ``read_invoice_xml``
turns CII (Factur-X / ZUGFeRD 2 / XRechnung CII), ZUGFeRD 1 and UBL 2.1 Invoice/CreditNote
into an ``InvoiceData`` and records whether it is valid against the XSD shipped with the
factur-x library. Everything that goes wrong with the input is an ``InvalidInvoice`` with a
short ``reason`` code; no other exception leaves this module for bad input.

Safety rules (docs: RELIABILITY.md 6.1 and 6.3): XML over 5 MB, with any DOCTYPE, or in an
encoding other than UTF-8/UTF-16/Latin-1/ASCII is refused *before* any parser sees it; we parse
ourselves with ``resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False`` and
hand factur-x only the parsed tree (it never re-parses bytes). PDFs are read with pypdf under
lowered per-stream limits (20 MB), without the external ``jbig2dec`` binary, and only the
attachment name tree is walked (no page content is decoded).

What it may touch: the bytes it is given and factur-x's bundled XSD files; no network, no disk
writes, no global state (pypdf limits are set per call through its context variable).

Which XSD: Factur-X / ZUGFeRD 2 profiles get factur-x's XSD for their level (the guideline
``urn:cen.eu:en16931:2017`` counts as Factur-X EN 16931, so CII that is valid EN 16931 but
uses elements outside the Factur-X subset reads ``xsd_valid`` False); XRechnung, Peppol and
unknown CII guidelines get the full UN/CEFACT CII D22B schema; ZUGFeRD 1 gets the ZUGFeRD 1.0
XSD; UBL the OASIS UBL 2.1 Invoice/CreditNote XSD.

Known limits: no Schematron (factur-x needs a Saxon HTTP server for that), so ``xsd_valid``
means "structurally valid", not "conformant" -- business rules and code lists are not
checked (``read_pdf_invoice`` checks the PDF container: OutputIntent, XMP, conformance
level; daemon/fxcontainer.py); attachments are found through the ``/EmbeddedFiles`` name tree only
(not page-level file annotations); when a PDF carries several invoice XMLs, factur-x.xml wins
over zugferd-invoice.xml over xrechnung.xml over any other; password-protected PDFs (and AES
ones: the ``cryptography`` package is not installed) are refused as ``pdf-encrypted``;
factur-x logs XSD failures at ERROR level on its own ``factur-x`` logger.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import threading
from dataclasses import dataclass
from io import BytesIO

import pypdf
from facturx.facturx import FACTURX_LEVEL2xsd, UBL_21_xsd, ZUGFERD_xsd
from lxml import etree
from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError

from daemon.einvoice_map import (
    Header,
    InvoiceData,
    VatLine,
    classify_profile,
    find_guideline,
    map_document,
)
from daemon.fxcontainer import container_problems

__all__ = ["MAX_XML_BYTES", "PDF_LIMITS", "InvalidInvoice", "InvoiceData", "PdfInvoice",
           "VatLine", "extract_xml_from_pdf", "read_invoice_xml", "read_pdf_invoice"]

MAX_XML_BYTES = 5 * 1024 * 1024
MAX_ATTACHMENTS = 100
_PDF_STREAM_LIMIT = 20 * 1024 * 1024
PDF_LIMITS = pypdf.Configuration(
    maximum_declared_stream_length=_PDF_STREAM_LIMIT,
    array_based_stream_maximum_output_length=_PDF_STREAM_LIMIT,
    jbig2_maximum_output_length=_PDF_STREAM_LIMIT,
    lzw_maximum_output_length=_PDF_STREAM_LIMIT,
    run_length_maximum_output_length=_PDF_STREAM_LIMIT,
    zlib_maximum_output_length=_PDF_STREAM_LIMIT,
    brotli_maximum_output_length=_PDF_STREAM_LIMIT,
    image_maximum_buffer_size=_PDF_STREAM_LIMIT,
    stream_decoding_work_maximum_length=3 * _PDF_STREAM_LIMIT,
    xmp_maximum_input_length=1024 * 1024,
    jbig2dec_binary=None,  # never run an external decoder on untrusted input
)

# Attachment names that carry the invoice, in order of preference (compared lower case).
_INVOICE_NAMES = ("factur-x.xml", "zugferd-invoice.xml", "xrechnung.xml")
_INVOICE_ROOTS = ("CrossIndustryInvoice", "CrossIndustryDocument", "Invoice", "CreditNote")

_NS_CII = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
_NS_ZF1 = "urn:ferd:CrossIndustryDocument:invoice:1p0"
# The ZUGFeRD 1.0 release candidate (2013): read like ZUGFeRD 1, and honestly xsd_valid False
# because the 1.0 XSD does not know its namespace.
_NS_ZF_RC = "urn:un:unece:uncefact:data:standard:CBFBUY:5"
_NS_UBL_INVOICE = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
_NS_UBL_CREDIT = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
_SYNTAX = {
    (_NS_CII, "CrossIndustryInvoice"): "CII",
    (_NS_ZF1, "CrossIndustryDocument"): "ZUGFeRD1",
    (_NS_ZF_RC, "Invoice"): "ZUGFeRD1",
    (_NS_UBL_INVOICE, "Invoice"): "UBL",
    (_NS_UBL_CREDIT, "CreditNote"): "UBL",
}
# factur-x XSD level for each Factur-X / ZUGFeRD 2 profile. Other CII (XRechnung, Peppol, an
# unknown guideline) is checked against the full UN/CEFACT CII D22B schema, which factur-x
# ships under the level name "extended-ctc-fr".
_XSD_LEVEL = {"MINIMUM": "minimum", "BASIC WL": "basicwl", "BASIC": "basic",
              "EN 16931": "en16931", "EXTENDED": "extended"}
_XSD_FULL_CII = "extended-ctc-fr"

_ENCODINGS = {"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1",
              "iso-8859-15", "windows-1252", "cp1252", "utf-16", "utf-16le", "utf-16be"}
_DECLARED_ENCODING = re.compile(r"""^\s*<\?xml[^>]*?\bencoding\s*=\s*["']([^"']{1,40})["']""")
# One left-to-right pass: comments (even unterminated ones) are consumed whole, "<?" and "<!"
# are stepped over, the first start tag's local name is group 1. Linear time on any input.
_MARKUP = re.compile(r"<!--.*?(?:-->|\Z)|<[?!]|<(?:[^\W\d][\w.-]*:)?([^\W\d][\w.-]*)", re.S)

_MESSAGES = {
    "doctype-refused": "The XML has a DOCTYPE declaration; invoices never need one, so it is "
                       "refused unread.",
    "xml-too-large": f"The XML is larger than {MAX_XML_BYTES // (1024 * 1024)} MB.",
    "encoding-refused": "The XML uses a character encoding other than UTF-8, UTF-16 or Latin-1.",
    "not-well-formed": "The XML is not well-formed.",
    "not-cii-or-ubl": "The XML is not a CII, ZUGFeRD 1 or UBL invoice.",
    "missing-number": "The invoice XML has no invoice number.",
    "pdf-unreadable": "The PDF cannot be read.",
    "pdf-encrypted": "The PDF is encrypted with a password.",
    "pdf-too-complex": "The PDF exceeds the processing limits (stream size or structure).",
}


class InvalidInvoice(Exception):
    """The file is not a readable invoice. ``.reason`` is a short code ('doctype-refused',
    'xml-too-large', 'encoding-refused', 'not-well-formed', 'not-cii-or-ubl', 'missing-number',
    'pdf-unreadable', 'pdf-encrypted', 'pdf-too-complex'); ``str(exc)`` is a readable sentence.
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or _MESSAGES.get(reason, reason))
        self.reason = reason


# --- XML -----------------------------------------------------------------------------------

def _decode_for_checks(data: bytes) -> str:
    """The document as text for the pre-parse checks: UTF-16 decoded, UTF-32 refused."""
    if data[:4] in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00", b"<\x00\x00\x00") \
            or data[:2] == b"\x00\x00":
        raise InvalidInvoice("encoding-refused", "The XML is UTF-32 (or starts with NULs).")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16", errors="replace")
    if data[:2] == b"<\x00":
        return data.decode("utf-16-le", errors="replace")
    if data[:2] == b"\x00<":
        return data.decode("utf-16-be", errors="replace")
    return data.decode("latin-1")  # byte for byte: ASCII markup of UTF-8/Latin-1 stays as is


def refuse_unsafe_xml(data: bytes) -> None:
    """Raise InvalidInvoice unless ``data`` is small, DOCTYPE-free and in a known encoding."""
    if len(data) > MAX_XML_BYTES:
        raise InvalidInvoice("xml-too-large", f"The XML is {len(data)} bytes; the limit is "
                             f"{MAX_XML_BYTES}.")
    text = _decode_for_checks(data).lstrip("\ufeff\u00ef\u00bb\u00bf")
    match = _DECLARED_ENCODING.match(text)
    if match and match.group(1).strip().lower() not in _ENCODINGS:
        raise InvalidInvoice("encoding-refused",
                             f"The XML declares the encoding {match.group(1)[:40]!r}; only "
                             "UTF-8, UTF-16 and Latin-1 are accepted.")
    if "<!doctype" in text.lower():
        raise InvalidInvoice("doctype-refused")


def parse_xml(data: bytes) -> etree._Element:
    """Safely parse checked XML bytes (see ``refuse_unsafe_xml``) into an element tree."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, dtd_validation=False, remove_comments=True,
                             remove_pis=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise InvalidInvoice("not-well-formed",
                             f"The XML is not well-formed: {exc}"[:300]) from None
    if root is None:
        raise InvalidInvoice("not-well-formed")
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise InvalidInvoice("doctype-refused")  # unreachable after refuse_unsafe_xml
    return root


def _detect_syntax(root: etree._Element) -> str:
    qname = etree.QName(root)
    syntax = _SYNTAX.get((qname.namespace or "", qname.localname))
    if syntax is None:
        raise InvalidInvoice("not-cii-or-ubl",
                             f"The XML root is {qname.localname!r} in namespace "
                             f"{(qname.namespace or '')[:100]!r}, not a CII, ZUGFeRD 1 or UBL "
                             "invoice.")
    return syntax


def _check_xsd(root: etree._Element, syntax: str, profile: str, guideline: str
               ) -> tuple[bool | None, str]:
    """(valid, first error) against factur-x's bundled XSD; (None, why) when none applies."""
    if syntax == "UBL":
        xsd = UBL_21_xsd["ubl-2.1-creditnote" if etree.QName(root).localname == "CreditNote"
                         else "ubl-2.1-invoice"]
    elif syntax == "ZUGFeRD1":
        xsd = ZUGFERD_xsd
    else:
        level = "extended-ctc-fr" if "extended-ctc-fr" in guideline.lower() \
            else _XSD_LEVEL.get(profile, _XSD_FULL_CII)
        xsd = FACTURX_LEVEL2xsd[level]
    return xsd_check(root, xsd)


_SCHEMAS = threading.local()


def _schema(xsd: str) -> etree.XMLSchema:
    """factur-x's bundled XSD, parsed once per thread (lxml validators are not shared
    between threads). factur-x's own ``xml_check_xsd`` parses the XSD files at every call,
    which cost more than everything else in reading an invoice's XML."""
    cache: dict[str, etree.XMLSchema] = _SCHEMAS.__dict__.setdefault("cache", {})
    schema = cache.get(xsd)
    if schema is None:
        path = importlib.resources.files("facturx").joinpath(f"xsd_and_schematron/{xsd}")
        schema = cache[xsd] = etree.XMLSchema(file=str(path))
    return schema


def xsd_check(root: etree._Element, xsd: str) -> tuple[bool | None, str]:
    """Validate against one of factur-x's bundled XSD files (a path relative to its
    ``xsd_and_schematron`` folder): (True, ""), (False, first error), or (None, why)."""
    try:
        schema = _schema(xsd)
    except (OSError, etree.XMLSchemaParseError) as exc:
        return None, f"XSD check not possible: {exc}"[:500]
    try:
        schema.assertValid(root)
    except etree.DocumentInvalid as exc:
        return False, str(exc)[:500]
    return True, ""


def read_invoice_xml(xml: bytes) -> InvoiceData:
    """Parse CII (Factur-X / ZUGFeRD 2 / XRechnung CII), ZUGFeRD 1 and UBL 2.1 invoice XML.

    Refuses (InvalidInvoice) oversized XML, any DOCTYPE, odd encodings, malformed XML, other
    document types and invoices without a number. XSD problems do not raise: they are in
    ``xsd_valid`` / ``xsd_error``.
    """
    data = bytes(xml)
    refuse_unsafe_xml(data)
    root = parse_xml(data)
    syntax = _detect_syntax(root)
    guideline = find_guideline(root, syntax)
    profile = classify_profile(guideline)
    xsd_valid, xsd_error = _check_xsd(root, syntax, profile, guideline)
    head = Header(syntax=syntax, profile=profile, guideline=guideline, xsd_valid=xsd_valid,
                  xsd_error=xsd_error, xml_sha256=hashlib.sha256(data).hexdigest())
    invoice = map_document(root, head)
    if not invoice.number:
        raise InvalidInvoice("missing-number")
    return invoice


# --- PDF -----------------------------------------------------------------------------------

def sniff_root_name(data: bytes) -> str | None:
    """Local name of the first element, read with a regex (no XML parser) from the first 64 KB."""
    try:
        text = _decode_for_checks(data[:65536])
    except InvalidInvoice:
        return None
    for match in _MARKUP.finditer(text):
        if match.group(1):
            return match.group(1)
    return None


def _find_invoice_attachment(reader: pypdf.PdfReader) -> tuple[bytes, str] | None:
    named: dict[str, tuple[bytes, str]] = {}
    generic: tuple[bytes, str] | None = None
    for count, attachment in enumerate(reader.attachment_list):
        if count >= MAX_ATTACHMENTS:
            break
        names = {attachment.name, attachment.alternative_name or attachment.name}
        lowered = {n.lower().rsplit("/", 1)[-1] for n in names if n}
        if not any(n.endswith(".xml") for n in lowered):
            continue
        content = attachment.content
        if not content:
            continue
        for known in _INVOICE_NAMES:
            if known in lowered and known not in named:
                named[known] = (content, attachment.name)
        if _INVOICE_NAMES[0] in named:
            break  # nothing can beat factur-x.xml; do not decode the rest
        if generic is None and sniff_root_name(content) in _INVOICE_ROOTS:
            generic = (content, attachment.name)
    for known in _INVOICE_NAMES:
        if known in named:
            return named[known]
    return generic


@dataclass(frozen=True)
class PdfInvoice:
    """The invoice XML embedded in a PDF, and what is wrong with the PDF around it."""

    xml: bytes
    name: str  # the embedded file's name
    container_problems: tuple[str, ...]  # daemon/fxcontainer.py; () for a conformant one


def extract_xml_from_pdf(data: bytes) -> tuple[bytes, str] | None:
    """(xml_bytes, embedded file name) of the invoice XML in a PDF, or None when it has none.

    Raises InvalidInvoice ('pdf-unreadable', 'pdf-encrypted', 'pdf-too-complex') for PDFs that
    cannot be read; never another exception. The XML is returned unparsed: pass it to
    ``read_invoice_xml``, which applies the XML safety rules.
    """
    found = _read_pdf(data, check_container=False)
    return (found.xml, found.name) if found is not None else None


def read_pdf_invoice(data: bytes) -> PdfInvoice | None:
    """``extract_xml_from_pdf`` plus the container checks of daemon/fxcontainer.py (the
    catalog is already open: they cost a few tenths of a millisecond)."""
    return _read_pdf(data, check_container=True)


def _read_pdf(data: bytes, *, check_container: bool) -> PdfInvoice | None:
    try:
        head = bytes(data[:1024])
        if b"%PDF-" not in head:
            raise InvalidInvoice("pdf-unreadable", "The file is not a PDF (no %PDF- header).")
        with pypdf.apply_configuration(PDF_LIMITS):
            reader = pypdf.PdfReader(BytesIO(data), strict=False)
            if reader.is_encrypted and not reader.decrypt(""):
                raise InvalidInvoice("pdf-encrypted")
            found = _find_invoice_attachment(reader)
            if found is None:
                return None
            problems = container_problems(reader) if check_container else ()
            return PdfInvoice(found[0], found[1], problems)
    except InvalidInvoice:
        raise
    except (FileNotDecryptedError, DependencyError) as exc:
        raise InvalidInvoice("pdf-encrypted",
                             f"The PDF is encrypted and cannot be read: {exc}"[:300]) from None
    except (LimitReachedError, RecursionError, MemoryError) as exc:
        raise InvalidInvoice("pdf-too-complex",
                             f"The PDF exceeds the processing limits: {exc}"[:300]) from None
    except Exception as exc:
        raise InvalidInvoice("pdf-unreadable",
                             f"The PDF cannot be read: {type(exc).__name__}: {exc}"[:300]
                             ) from None
