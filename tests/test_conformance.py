"""`facturd check FILE...`: the full conformance check (XSD, PDF container, Schematron) run
through the real command line on files made here (reportlab + factur-x, then pikepdf)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from daemon.conformance import check_received
from daemon.docjson import document_json
from storage import migrations, records
from storage.blobs import sha256_hex
from storage.store import Store
from tests.conftest import VAT, Clock, Facturd, wait_for
from tests.factories import make_cii_xml, make_facturx_pdf, make_visible_pdf
from tests.mails import invoice_mail
from tests.test_approval_tokens import open_store
from tests.test_fxcontainer import edit
from tests.test_worker import TO, send


def write(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return str(path)


def test_check_reports_each_kind_of_problem(facturd: Facturd, tmp_path: Path) -> None:
    good = write(tmp_path, "good.pdf", edit(make_facturx_pdf(), "output-intent"))
    res = facturd.cli("check", good)
    assert res.stdout.startswith(f"{good}: conformant (EN 16931, Schematron valid)")

    # BR-CO-15: the grand total is not net + VAT (XSD-valid, only the Schematron sees it)
    wrong = wrong_total_cii()
    assert wrong != make_cii_xml()
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


def add_document(store: Store, folder_id: int, source: str, data: bytes | None,
                 part: int, stored: bool = True) -> int:
    sha = ""
    if data is not None:
        sha = sha256_hex(data)
        if stored:  # else: the document names an original the blob store does not have
            store.blobs.put_many([(sha, data)])
    doc = records.Document(
        id=0, folder_id=folder_id, delivery_id=None, part=part, direction="purchase",
        state="archived", source=source, original_sha256=sha, enriched_sha256="",
        filename=f"{part}", media_type="application/pdf", number=f"F-{part}")
    with store.write_transaction():
        return store.documents.upsert(doc)[0]


def wrong_total_cii() -> bytes:
    """XSD-valid CII whose grand total is not net + VAT: only the Schematron sees it."""
    return re.sub(rb"<ram:GrandTotalAmount>[^<]+<", b"<ram:GrandTotalAmount>999.00<",
                  make_cii_xml())


def test_received_invoices_get_their_schematron_verdict_once(any_db: str, tmp_path: Path,
                                                             clock: Clock) -> None:
    store = open_store(any_db, tmp_path, clock)
    try:
        folder = store.add_folder(VAT, "Acme SAS")
        good = add_document(store, folder.id, "facturx", make_facturx_pdf(), 0)
        bad = add_document(store, folder.id, "cii", wrong_total_cii(), 1)
        add_document(store, folder.id, "ubl", b"<Invoice/>", 2)  # no Schematron bundled
        add_document(store, folder.id, "text", make_visible_pdf(["F"]), 3)  # not an e-invoice
        # an XML sent next to its PDF: the PDF stays the original; judged by its content
        pair = add_document(store, folder.id, "cii", make_visible_pdf(["FACTURE F-5"]), 5)
        gone = add_document(store, folder.id, "cii", b"<lost/>", 4, stored=False)

        [(first, _)] = check_received(store, 1)  # newest first: the lost one
        assert first == gone
        done = dict(check_received(store, 10))
        assert done == {good: "valid", bad: "invalid", pair: "not run"}
        assert store.events(document_id=pair) == []
        assert check_received(store, 10) == []  # each verdict is recorded once

        verdict = store.documents.get(bad).conformance  # type: ignore[union-attr]
        assert verdict is not None and verdict["schematron"] == "invalid"
        assert any(e.startswith("[BR-CO-15]") for e in verdict["errors"]), verdict
        shown = document_json(store.documents.get(bad), {})  # type: ignore[arg-type]
        assert shown["schematron"] == "invalid"
        assert any(n.startswith("not-conformant: Schematron: [BR-CO-15]")
                   for n in shown["notes"]), shown["notes"]
        assert [e.kind for e in store.events(document_id=bad)] == ["not-conformant"]
        assert store.events(document_id=good) == []
        lost = store.documents.get(gone)
        assert lost is not None and lost.conformance is not None
        assert lost.conformance["schematron"].startswith("not run: the original cannot be read")
        unchecked = [d for d in store.documents.find(folder.id) if d.conformance is None]
        assert sorted(d.source for d in unchecked) == ["text", "ubl"]
    finally:
        store.close()


def test_migration_6_adds_the_conformance_column(any_db: str, tmp_path: Path,
                                                 clock: Clock) -> None:
    store = open_store(any_db, tmp_path, clock)
    store.db.execute_sql("ALTER TABLE document DROP COLUMN conformance")
    store.db.execute_sql("DELETE FROM schema_version WHERE version > 5")
    assert migrations.current_version(store.db) == 5
    store.close()
    store = open_store(any_db, tmp_path, clock)
    try:
        assert migrations.current_version(store.db) == migrations.MIGRATIONS[-1][0]
        assert "conformance" in {c.name for c in store.db.get_columns("document")}
    finally:
        store.close()


def test_serve_checks_received_invoices_in_the_background(facturd: Facturd) -> None:
    f = facturd
    f.write_config("schematron_per_tick = 5\nschedule_seconds = 0.3\n")  # into [worker]
    f.add_folder(VAT, "Acme SAS", "--mode", "automatic")
    f.start()
    send(f, invoice_mail(to=TO, attachments=[("F-1.pdf", "application/pdf",
                                              make_facturx_pdf(number="F-1"))]))

    def checked() -> dict[str, Any] | None:
        docs = json.loads(f.cli("documents", "list", "--json").stdout)
        return docs[0] if docs and docs[0].get("schematron") else None

    doc = wait_for(checked, "the scheduler's Schematron verdict")
    assert doc["state"] == "archived" and doc["schematron"] == "valid"
    assert "Schematron valid" in f.logs()
