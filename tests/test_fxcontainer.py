"""The PDF container checks of received Factur-X invoices (daemon/fxcontainer.py).

Fixtures: a Factur-X PDF made with reportlab + factur-x (tests/factories.py), then changed with
pikepdf the way real senders get it wrong: no OutputIntent, XMP metadata missing, malformed,
with an undefined conformance level, or carrying an entity bomb.
"""

from __future__ import annotations

import io
import time

import pikepdf
import pytest

from daemon.einvoice import extract_xml_from_pdf, read_invoice_xml, read_pdf_invoice
from daemon.fxcontainer import MAX_XMP_BYTES
from tests.factories import make_facturx_pdf

NO_INTENT = "not PDF/A: the catalog has no OutputIntent"


def edit(data: bytes, change: str, xmp: bytes | None = None) -> bytes:
    with pikepdf.open(io.BytesIO(data)) as pdf:
        if change == "output-intent":
            intent = pikepdf.Dictionary(Type=pikepdf.Name.OutputIntent,
                                        S=pikepdf.Name.GTS_PDFA1,
                                        OutputConditionIdentifier=pikepdf.String("sRGB"))
            pdf.Root.OutputIntents = pikepdf.Array([pdf.make_indirect(intent)])
        elif change == "no-xmp":
            del pdf.Root.Metadata
        elif change == "xmp":
            assert xmp is not None
            pdf.Root.Metadata = pdf.make_stream(xmp, Type=pikepdf.Name.Metadata,
                                                Subtype=pikepdf.Name.XML)
        out = io.BytesIO()
        pdf.save(out, fix_metadata_version=False)  # keep our XMP bytes as they are
        return out.getvalue()


def xmp_of(data: bytes) -> bytes:
    with pikepdf.open(io.BytesIO(data)) as pdf:
        return bytes(pdf.Root.Metadata.read_bytes())


def problems(data: bytes) -> tuple[str, ...]:
    found = read_pdf_invoice(data)
    assert found is not None
    assert found.xml == extract_xml_from_pdf(data)[0]  # type: ignore[index]
    return found.container_problems


@pytest.fixture(scope="module")
def facturx() -> bytes:
    return make_facturx_pdf()


def test_conformant_container_has_no_problem(facturx: bytes) -> None:
    assert problems(facturx) == (NO_INTENT,)  # factur-x's library adds no OutputIntent
    assert problems(edit(facturx, "output-intent")) == ()


def test_missing_and_malformed_xmp(facturx: bytes) -> None:
    good = edit(facturx, "output-intent")
    assert problems(edit(good, "no-xmp")) == (
        "no XMP metadata (PDF/A-3 and Factur-X require it)",)
    broken = xmp_of(good).replace(b"</rdf:RDF>", b"<a & b></rdf:RDF>")
    (problem,) = problems(edit(good, "xmp", broken))
    assert problem.startswith("XMP metadata is not well-formed XML:")
    # The values are read all the same: a container problem is a note, not a refusal.
    found = read_pdf_invoice(edit(good, "xmp", broken))
    assert found is not None and read_invoice_xml(found.xml).number == "F2026-0042"


def test_conformance_level_must_be_one_the_standard_defines(facturx: bytes) -> None:
    good = edit(facturx, "output-intent")
    xmp = xmp_of(good)
    assert b"EN 16931" in xmp
    (problem,) = problems(edit(good, "xmp", xmp.replace(b"EN 16931", b"no thing")))
    assert problem.startswith("XMP Factur-X conformance level 'no thing' is not one")
    undeclared = xmp.replace(b"ConformanceLevel", b"Conformity")
    assert problems(edit(good, "xmp", undeclared)) == (
        "XMP metadata does not declare a Factur-X / ZUGFeRD conformance level",)
    zugferd1 = xmp.replace(b"urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#",
                           b"urn:ferd:pdfa:CrossIndustryDocument:invoice:1p0#")
    (problem,) = problems(edit(good, "xmp", zugferd1))
    assert "ZUGFeRD 1 conformance level 'EN 16931'" in problem  # COMFORT etc. only


def test_hostile_xmp_is_not_expanded_nor_read_when_huge(facturx: bytes) -> None:
    good = edit(facturx, "output-intent")
    lol = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
           + b"".join(b'<!ENTITY %c "%s">' % (ord("b") + i, (b"&%c;" % (ord("a") + i)) * 10)
                      for i in range(8))
           + b']><x>&i;</x>')
    started = time.monotonic()
    (problem,) = problems(edit(good, "xmp", lol))
    assert time.monotonic() - started < 2
    # libxml2 refuses the amplification (or, older, leaves the entities unexpanded and finds
    # no level): a problem about the XMP either way, never an expansion or a hang.
    assert problem.startswith("XMP metadata"), problem
    huge = xmp_of(good) + b" " * (MAX_XMP_BYTES + 1)
    assert problems(edit(good, "xmp", huge)) == (
        f"XMP metadata larger than {MAX_XMP_BYTES // 1024} KB, not read",)
