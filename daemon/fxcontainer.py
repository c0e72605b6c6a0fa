"""The PDF around a received Factur-X / ZUGFeRD invoice: is it the container the standard asks for?

Job: ``container_problems(reader)`` lists, in readable sentences, what makes a received
invoice PDF not a conformant Factur-X / ZUGFeRD container, from the catalog that pypdf already
opened to find the XML: no PDF/A OutputIntent (PDF/A-3 requires one), no XMP metadata, XMP
that is not well-formed XML, XMP without the Factur-X / ZUGFeRD conformance level, or a level
its namespace does not define (Factur-X 1.0 and ZUGFeRD 2: MINIMUM, BASIC WL, BASIC, EN 16931,
EXTENDED, XRECHNUNG; ZUGFeRD 1: BASIC, COMFORT, EXTENDED). The pipeline records them on the
document ("not-conformant: ..."); they are not a hold: the XML's values were read and checked
on their own, and many genuine invoices are not strict PDF/A.

Cheap by design (it runs for every Factur-X PDF): no page content is decoded, only the
catalog, its OutputIntents array and the XMP stream (refused above MAX_XMP_BYTES), parsed with
lxml without entities, DTD or network. Never raises for bad input: an unreadable part is a
problem in the list.

Known limits: this is not a PDF/A validator (fonts, colour spaces, transparency and the XMP
extension schemas are not checked here; daemon/pdfa.py does that for facturd's own copies);
Schematron business rules are not run on received invoices.
"""

from __future__ import annotations

from typing import Any

import pypdf
from lxml import etree

__all__ = ["LEVELS", "MAX_XMP_BYTES", "container_problems", "xmp_value"]

MAX_XMP_BYTES = 1024 * 1024
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_FACTURX_LEVELS = frozenset({"MINIMUM", "BASIC WL", "BASIC", "EN 16931", "EXTENDED",
                             "XRECHNUNG"})
# XMP namespace of the conformance level -> (standard, the levels it defines)
LEVELS: dict[str, tuple[str, frozenset[str]]] = {
    "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#": ("Factur-X", _FACTURX_LEVELS),
    "urn:zugferd:pdfa:CrossIndustryDocument:invoice:2p0#": ("ZUGFeRD 2", _FACTURX_LEVELS),
    "urn:ferd:pdfa:CrossIndustryDocument:invoice:1p0#": (
        "ZUGFeRD 1", frozenset({"BASIC", "COMFORT", "EXTENDED"})),
}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          huge_tree=False)


def container_problems(reader: pypdf.PdfReader) -> tuple[str, ...]:
    """What is wrong with the PDF as a Factur-X / ZUGFeRD container; () when nothing is."""
    try:
        catalog = reader.root_object
        problems = [] if _has_output_intent(catalog) else [
            "not PDF/A: the catalog has no OutputIntent"]
        return (*problems, *_xmp_problems(catalog.get("/Metadata")))
    except Exception as exc:  # pypdf raises many types on hostile input
        return (f"the PDF catalog cannot be read: {type(exc).__name__}: {exc}"[:300],)


def _has_output_intent(catalog: Any) -> bool:
    intents = catalog.get("/OutputIntents")
    intents = intents.get_object() if intents is not None else None
    return isinstance(intents, pypdf.generic.ArrayObject) and len(intents) > 0


def _xmp_problems(metadata: Any) -> list[str]:
    stream = metadata.get_object() if metadata is not None else None
    if not isinstance(stream, pypdf.generic.StreamObject):
        return ["no XMP metadata (PDF/A-3 and Factur-X require it)"]
    declared = stream.get("/Length")
    if isinstance(declared, int) and declared > MAX_XMP_BYTES:
        return [f"XMP metadata larger than {MAX_XMP_BYTES // 1024} KB, not read"]
    data = stream.get_data()
    if len(data) > MAX_XMP_BYTES:
        return [f"XMP metadata larger than {MAX_XMP_BYTES // 1024} KB, not read"]
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        return [f"XMP metadata is not well-formed XML: {exc}"[:300]]
    for namespace, (standard, levels) in LEVELS.items():
        level = xmp_value(root, namespace, "ConformanceLevel")
        if level is None:
            continue
        level = level.strip()
        if level.upper() not in levels:
            return [f"XMP {standard} conformance level {level[:40]!r} is not one the "
                    f"standard defines ({', '.join(sorted(levels))})"]
        return []
    return ["XMP metadata does not declare a Factur-X / ZUGFeRD conformance level"]


def xmp_value(root: etree._Element | None, namespace: str, name: str) -> str | None:
    """An XMP property: ``<ns:name>value</ns:name>`` (text stripped) or the attribute
    ``<rdf:Description ns:name="value">`` (as written); None when absent. Shared with
    daemon/pdfa.py."""
    if root is None:
        return None
    for found in root.iter(f"{{{namespace}}}{name}"):
        return (found.text or "").strip()
    for description in root.iter(f"{{{_RDF}}}Description"):
        value = description.get(f"{{{namespace}}}{name}")
        if value is not None:
            return value
    return None
