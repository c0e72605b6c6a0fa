"""What a PDF copy really is: PDF/A-3b and Factur-X structure checks (pikepdf).

Job: ``check_pdfa`` runs pikepdf's allowlist PDF/A-3b validator and checks the Factur-X
structure itself (OutputIntent with an ICC profile, pdfaid part 3 / B, fx: properties
declared by an extension schema, factur-x.xml in the catalog /AF); findings about the XMP
extension schemas pikepdf cannot read are waived (listed apart), nothing else. Split out of
daemon/enrich.py (see its docstring for what is and is not guaranteed).

May touch: the bytes it is given (read only).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass

import pikepdf
import pikepdf.pdfa
from lxml import etree

from daemon.fxcontainer import xmp_value

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
    return all(xmp_value(root, _FX, name) for name in _FX_PROPERTIES) \
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
    part = xmp_value(xmp, _PDFAID, "part")
    conformance = xmp_value(xmp, _PDFAID, "conformance")
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
