"""The facturd command: folders, import, documents, exit codes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import VAT, Facturd
from tests.mails import fake_pdf


def test_folder_add_validates_vat_with_a_clear_error(facturd: Facturd) -> None:
    res = facturd.cli("folder", "add", "FR40303265046", "--name", "Bad", check=False)
    assert res.returncode == 2
    assert "not a valid VAT number" in res.stderr and "FR40303265045" in res.stderr
    res = facturd.cli("folder", "add", "hello", "--name", "Bad", check=False)
    assert res.returncode == 2 and "e.g. FR40303265045" in res.stderr


def test_folder_add_list_show(facturd: Facturd) -> None:
    res = facturd.cli("folder", "add", "fr 40 303 265 045", "--name", "Acme SAS", "--mode",
                      "except-trusted", "--notify", "boss@acme.test")
    assert "FR40303265045@invoices.test" in res.stdout
    again = facturd.cli("folder", "add", VAT, "--name", "Acme", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
    listed = json.loads(facturd.cli("folder", "list", "--json").stdout)
    assert listed == [{"vat": VAT, "name": "Acme SAS", "mode": "except_trusted",
                       "address": f"{VAT}@invoices.test"}]
    shown = json.loads(facturd.cli("folder", "show", VAT, "--json").stdout)
    assert shown["siren"] == "303265045" and shown["notify_email"] == "boss@acme.test"
    missing = facturd.cli("folder", "show", "FR23334175221", check=False)
    assert missing.returncode == 4


def test_import_queues_files_with_progress_and_recognizes_repeats(facturd: Facturd,
                                                                   tmp_path: Path) -> None:
    facturd.add_folder()
    files = []
    for n in range(3):
        p = tmp_path / f"invoice-{n}.pdf"
        p.write_bytes(fake_pdf(seed=str(n)))
        files.append(str(p))
    res = facturd.cli("import", *files, "--folder", VAT)
    assert "[3/3] invoice-2.pdf: queued as job 3" in res.stderr
    again = facturd.cli("import", files[0], "--folder", VAT)
    assert "already imported (same bytes as job 1)" in again.stderr
    missing = facturd.cli("import", str(tmp_path / "nope.pdf"), "--folder", VAT, check=False)
    assert missing.returncode == 4


def test_documents_list_empty_and_show_missing(facturd: Facturd) -> None:
    facturd.add_folder()
    assert json.loads(facturd.cli("documents", "list", "--json").stdout) == []
    res = facturd.cli("documents", "show", "42", check=False)
    assert res.returncode == 4 and "no document 42" in res.stderr


def test_usage_error_exit_2(facturd: Facturd) -> None:
    assert facturd.cli("frobnicate", check=False).returncode == 2


def test_policy_commands(facturd: Facturd) -> None:
    facturd.add_folder()
    shown = json.loads(facturd.cli("folder", "set", VAT, "mode=except-trusted",
                                   "amount_limit=1500,00", "block_duplicates=yes").stdout)
    assert (shown["mode"], shown["amount_limit"], shown["block_duplicates"]) == (
        "except_trusted", "1500.00", True)
    bad = facturd.cli("folder", "set", VAT, "block_duplicates=maybe", check=False)
    assert bad.returncode == 2 and "block_duplicates: expected true or false" in bad.stderr
    unknown = facturd.cli("folder", "set", VAT, "colour=blue", check=False)
    assert unknown.returncode == 2 and "KEY one of" in unknown.stderr
    facturd.cli("sender", "approve", VAT, "Billing@Exämple.TEST")
    assert facturd.cli("sender", "list", VAT).stdout.split() == ["billing@xn--exmple-cua.test"]
    assert facturd.cli("sender", "revoke", VAT, "billing@exämple.test").returncode == 0
    assert facturd.cli("sender", "list", VAT).stdout.strip() == ""
    added = facturd.cli("partner", "add", VAT, "--name", "Dupont", "--partner-vat",
                        "FR23334175221").stdout
    assert "FR23334175221" in added
    trusted = facturd.cli("partner", "trust", VAT, "334175221").stdout
    assert "note: no authenticated sending domain" in trusted
    trusted = facturd.cli("partner", "trust", VAT, "FR23334175221", "--domain",
                          "Dupont.TEST").stdout
    assert "trusted; domains dupont.test" in trusted
    assert "dupont.test" in facturd.cli("partner", "list", VAT).stdout


def test_recognize_prints_fields_and_stores_nothing(facturd: Facturd, tmp_path: Path) -> None:
    from tests.factories import make_facturx_pdf, make_visible_pdf

    fx = tmp_path / "fx.pdf"
    fx.write_bytes(make_facturx_pdf(number="RX-1"))
    data = json.loads(facturd.cli("recognize", str(fx), "--json").stdout)
    assert (data["source"], data["number"], data["total_gross"]) == ("facturx", "RX-1", "120.00")
    assert data["confidence"]["total_gross"] == 1.0
    plain = tmp_path / "plain.pdf"
    plain.write_bytes(make_visible_pdf([
        "FACTURE N° F-2026-77", "Date de facture : 02/11/2026",
        "Fournitures Dupont SARL - TVA FR23334175221", "Total HT 100,00 €",
        "TVA 20 % 20,00 €", "Total TTC 120,00 €"]))
    data = json.loads(facturd.cli("recognize", str(plain), "--json").stdout)
    assert (data["source"], data["number"], data["issue_date"], data["total_gross"],
            data["language"]) == ("text", "F-2026-77", "2026-11-02", "120.00", "fr")
    assert data["confidence"]["total_gross"] >= 0.9
    assert not (facturd.state / "facturd.sqlite3").exists()  # nothing stored, no database


@pytest.mark.parametrize("role", ["web", "smtp"])
def test_serve_stops_with_the_reason_when_a_listener_cannot_start(facturd: Facturd,
                                                                   role: str) -> None:
    """A port already taken does not leave a daemon running without that role: it stops
    at once, exit 1, and says which listener and why (systemd restarts it, the journal
    shows the reason)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if role == "web":
            facturd.write_config(f'[web]\nlisten = "127.0.0.1:{port}"\n')
        else:
            facturd.smtp_port = port
            facturd.write_config()
        done = subprocess.run([sys.executable, "-m", "daemon", "--config", str(facturd.config),
                               "serve"], capture_output=True, text=True, timeout=90,
                              env=facturd.env())
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("facturd: ") and "address already in use" in last, last
    assert ("web failed" if role == "web" else "receive role: cannot listen") in last
