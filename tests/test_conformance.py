"""`facturd check FILE...`: the full conformance check (XSD, PDF container, Schematron) run
through the real command line on files made here (reportlab + factur-x, then pikepdf)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import Facturd
from tests.factories import make_cii_xml, make_facturx_pdf, make_visible_pdf
from tests.test_fxcontainer import edit


def write(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return str(path)


def test_check_reports_each_kind_of_problem(facturd: Facturd, tmp_path: Path) -> None:
    good = write(tmp_path, "good.pdf", edit(make_facturx_pdf(), "output-intent"))
    res = facturd.cli("check", good)
    assert res.stdout.startswith(f"{good}: conformant (EN 16931, Schematron valid)")

    # BR-CO-15: the grand total is not net + VAT (XSD-valid, only the Schematron sees it)
    xml = make_cii_xml()
    wrong = re.sub(rb"<ram:GrandTotalAmount>[^<]+<", b"<ram:GrandTotalAmount>999.00<", xml)
    assert wrong != xml
    files = [good, write(tmp_path, "wrong-total.xml", wrong),
             write(tmp_path, "plain.pdf", edit(make_facturx_pdf(), "no-xmp")),
             write(tmp_path, "no-xml.pdf", make_visible_pdf(["FACTURE F-1", "Total 120,00"]))]
    res = facturd.cli("check", "--json", *files, check=False)
    assert res.returncode == 1, res.stderr
    out = {Path(r["file"]).name: r for r in json.loads(res.stdout)}
    assert out["good.pdf"]["conformant"] is True
    bad = out["wrong-total.xml"]
    assert bad["conformant"] is False and bad["schematron"] == "invalid"
    assert any(p.startswith("Schematron: [BR-CO-15]") for p in bad["problems"]), bad
    assert out["plain.pdf"]["problems"] == [
        "not PDF/A: the catalog has no OutputIntent",
        "no XMP metadata (PDF/A-3 and Factur-X require it)"]
    assert out["no-xml.pdf"]["problems"] == ["the PDF carries no invoice XML"]

    zugferd1 = write(tmp_path, "x.xml", make_cii_xml(profile="minimum").replace(
        b"urn:factur-x.eu:1p0:minimum", b"urn:xoev-de:kosit:standard:xrechnung_2.3"))
    res = facturd.cli("check", zugferd1, check=False)
    assert res.returncode == 0 and "no problem found" in res.stdout, res.stdout
    assert "Schematron not run: no Schematron is bundled for" in res.stdout

    missing = facturd.cli("check", str(tmp_path / "nope.pdf"), check=False)
    assert missing.returncode == 4 and "not a file" in missing.stdout
