"""Reading invoices without XML, end to end through ``facturd serve``: text PDFs, scans (real
ocrmypdf + tesseract), several invoices in one PDF, and the enriched Factur-X copy."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pypdf

from daemon.einvoice import extract_xml_from_pdf, read_invoice_xml
from daemon.recognize import read_pdf_text
from daemon.split import find_ranges
from tests.conftest import VAT, Facturd
from tests.factories import make_visible_pdf
from tests.scans import make_image_pdf
from tests.test_worker import documents, settled

SELLER = ["Fournitures Dupont SARL", "12 rue de la Paix, 75002 Paris",
          "TVA intracommunautaire : FR23334175221", "SIRET 334 175 221 00018",
          "IBAN : FR76 3000 6000 0112 3456 7890 189"]


def invoice_lines(number: str, net: str, tax: str, gross: str) -> list[str]:
    return [*SELLER, "", "Client : Acme SAS", "TVA client : FR40303265045", "",
            f"FACTURE N° {number}", "Date de facture : 02/11/2026",
            "Échéance : 02/12/2026", "", f"Total HT : {net} €", f"TVA 20 % : {tax} €",
            f"Total TTC : {gross} €", f"Net à payer : {gross} €"]


def merge(*pdfs: bytes) -> bytes:
    writer = pypdf.PdfWriter()
    for data in pdfs:
        for page in pypdf.PdfReader(io.BytesIO(data)).pages:
            writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def two_invoices_pdf() -> bytes:
    first = make_visible_pdf(invoice_lines("F-2026-101", "100,00", "20,00", "120,00"))
    annex = make_visible_pdf(["Conditions générales de vente", "Paiement à 30 jours."])
    second = make_visible_pdf(invoice_lines("F-2026-102", "250,00", "50,00", "300,00"))
    return merge(first, annex, second)


def test_find_ranges_keeps_continuation_pages_with_their_invoice() -> None:
    pdf = two_invoices_pdf()
    pages = [p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf)).pages]
    ranges = find_ranges(pages, own_vat=VAT)
    assert [(r.first, r.last, r.number) for r in ranges] == [
        (0, 1, "F-2026-101"), (2, 2, "F-2026-102")]
    single = make_visible_pdf(invoice_lines("F-1", "1,00", "0,20", "1,20"))
    assert len(find_ranges([read_pdf_text(single)] * 2)) == 1  # same number on each page


def test_two_invoices_in_one_pdf_become_two_documents(facturd: Facturd, tmp_path: Path) -> None:
    facturd.add_folder(VAT, "Acme SAS", "--mode", "automatic")
    path = tmp_path / "scan-batch.pdf"
    path.write_bytes(two_invoices_pdf())
    facturd.cli("import", str(path), "--folder", VAT)
    facturd.start()
    settled(facturd)
    docs = sorted(documents(facturd), key=lambda d: d["number"])
    assert [(d["number"], d["total_gross"], d["state"]) for d in docs] == [
        ("F-2026-101", "120.00", "archived"), ("F-2026-102", "300.00", "archived")]
    shown = [json.loads(facturd.cli("documents", "show", str(d["id"]), "--json").stdout)
             for d in docs]
    assert any("split into 2 invoices" in s["outcome"] for d in shown for s in d["trace"])


def test_text_pdf_is_read_and_enriched_original_kept(facturd: Facturd, tmp_path: Path) -> None:
    facturd.add_folder(VAT, "Acme SAS", "--mode", "automatic")
    original = make_visible_pdf(invoice_lines("F-2026-200", "1 000,00", "200,00", "1 200,00"))
    path = tmp_path / "plain.pdf"
    path.write_bytes(original)
    facturd.cli("import", str(path), "--folder", VAT)
    facturd.start()
    settled(facturd)
    [doc] = documents(facturd)
    assert (doc["source"], doc["number"], doc["total_net"], doc["total_gross"], doc["due_date"],
            doc["seller_iban"]) == ("text", "F-2026-200", "1000.00", "1200.00", "2026-12-02",
                                    "FR7630006000011234567890189")
    assert doc["confidence"]["total_gross"] >= 0.9
    assert doc["state"] == "archived"
    trace = {s["stage"]: s["outcome"] for s in doc["trace"]}
    assert trace["ocr"].startswith("text layer") and "xsd valid" in trace["enrich"]
    # the enriched copy carries Factur-X XML with the same values; the original is untouched
    from daemon import config
    from daemon.service import open_store

    store = open_store(config.load(facturd.config, environ={}))
    try:
        record = store.documents.get(doc["id"])
        assert record is not None
        assert store.blobs.get(record.original_sha256) == original
        enriched = store.blobs.get(record.enriched_sha256)
    finally:
        store.close()
    found = extract_xml_from_pdf(enriched)
    assert found is not None
    data = read_invoice_xml(found[0])
    assert (data.number, str(data.total_gross), data.profile) == ("F-2026-200", "1200.00",
                                                                  "BASIC WL")


def test_scanned_invoice_is_ocred_and_read(facturd: Facturd, tmp_path: Path) -> None:
    facturd.add_folder(VAT, "Acme SAS", "--mode", "automatic")
    path = tmp_path / "scan.pdf"
    path.write_bytes(make_image_pdf(invoice_lines("F-2026-300", "500,00", "100,00", "600,00"),
                                    noise=0.1, rotate=0.5))
    facturd.cli("import", str(path), "--folder", VAT)
    facturd.start()
    settled(facturd)
    [doc] = documents(facturd)
    assert doc["source"] == "ocr"
    assert (doc["number"], doc["total_gross"]) == ("F-2026-300", "600.00")
    trace = {s["stage"]: s["outcome"] for s in doc["trace"]}
    assert trace["ocr"].startswith("ocr 1 page(s)")
