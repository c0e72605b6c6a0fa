"""The worker pipeline end to end: SMTP into ``facturd serve`` -> documents."""

from __future__ import annotations

import hashlib
import json
import smtplib
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from daemon import config
from daemon.worker import Worker
from storage.queue import Queue
from storage.records import IntakeItem, Recipient
from storage.store import Store
from tests.conftest import DOMAIN, VAT, Clock, Facturd, wait_for
from tests.factories import make_facturx_pdf
from tests.mails import crlf, depth_bomb, invoice_mail

TO = f"{VAT}@{DOMAIN}"


def send(f: Facturd, msg: EmailMessage | bytes) -> None:
    raw = msg if isinstance(msg, bytes) else msg.as_bytes()
    with smtplib.SMTP("127.0.0.1", f.smtp_port, timeout=30) as smtp:
        smtp.sendmail("billing@vendor.test", [TO], crlf(raw))


def documents(f: Facturd) -> list[dict[str, Any]]:
    return list(json.loads(f.cli("documents", "list", "--json").stdout))


def jobs(f: Facturd) -> list[dict[str, Any]]:
    return list(json.loads(f.cli("messages", "list", "--json").stdout))


def settled(f: Facturd, n_jobs: int = 1) -> list[dict[str, Any]]:
    """Wait until n jobs reached an end state; return them."""
    def check() -> list[dict[str, Any]] | None:
        rows = jobs(f)
        ended = [r for r in rows if r["state"] in ("done", "quarantined", "duplicate")]
        return rows if len(ended) >= n_jobs else None
    return list(wait_for(check, what=f"{n_jobs} job(s) to end"))


def test_facturx_by_smtp_is_archived_with_the_xml_values(facturd_any: Facturd) -> None:
    f = facturd_any
    f.add_folder(VAT, "Acme SAS", "--mode", "automatic")
    f.start()
    pdf = make_facturx_pdf(number="F2026-0042")
    send(f, invoice_mail(to=TO, attachments=[("F2026-0042.pdf", "application/pdf", pdf)]))
    assert settled(f)[0]["state"] == "done"
    [doc] = documents(f)
    assert doc["state"] == "archived"
    assert doc["source"] == "facturx"
    assert doc["number"] == "F2026-0042"
    assert doc["issue_date"] == "2026-11-02" and doc["due_date"] == "2026-12-02"
    assert doc["seller_vat"] == "FR23334175221" and doc["seller_siren"] == "334175221"
    assert doc["buyer_vat"] == VAT
    assert (doc["currency"], doc["total_net"], doc["total_tax"], doc["total_gross"]) == (
        "EUR", "100.00", "20.00", "120.00")
    assert doc["vat_breakdown"][0]["tax"] == "20.00"
    # factur-x's library writes no OutputIntent: noted, not held (the values were read).
    assert doc["notes"] == ["not-conformant: not PDF/A: the catalog has no OutputIntent"]
    assert [s["stage"] for s in doc["trace"]] == [
        "parse", "authenticate", "attachments", "facturx", "ocr", "recognize", "enrich",
        "dedupe", "decide", "dispose"]
    shown = json.loads(f.cli("documents", "show", str(doc["id"]), "--json").stdout)
    kinds = [e["kind"] for e in shown["events"]]
    assert kinds == ["received", "archived"]
    text = f.cli("documents", "show", str(doc["id"])).stdout
    assert "facturx" in text and "archived" in text and "EN 16931" in text
    assert "not PDF/A" in text


def test_manual_mode_leaves_the_invoice_pending(facturd: Facturd) -> None:
    facturd.add_folder()
    facturd.start()
    send(facturd, invoice_mail(attachments=[("a.pdf", "application/pdf", make_facturx_pdf())]))
    settled(facturd)
    [doc] = documents(facturd)
    assert doc["state"] == "pending_approval"
    assert any("mode manual" in r for r in doc["reasons"])


def test_forwarded_invoice_inside_message_rfc822(facturd: Facturd) -> None:
    facturd.add_folder(VAT, "Acme SAS", "--mode", "automatic")
    facturd.start()
    original = invoice_mail(attachments=[("inv.pdf", "application/pdf",
                                          make_facturx_pdf(number="FWD-1"))])
    fwd = invoice_mail(sender="boss@acme.test", subject="Fwd: Invoice", body="see below\n")
    fwd.add_attachment(original)  # message/rfc822
    send(facturd, fwd)
    settled(facturd)
    [doc] = documents(facturd)
    assert (doc["number"], doc["state"]) == ("FWD-1", "archived")


def test_two_invoices_in_one_mail_make_two_documents(facturd: Facturd) -> None:
    facturd.add_folder(VAT, "Acme SAS", "--mode", "automatic")
    facturd.start()
    send(facturd, invoice_mail(attachments=[
        ("one.pdf", "application/pdf", make_facturx_pdf(number="A-1")),
        ("two.pdf", "application/pdf", make_facturx_pdf(number="A-2")),
    ]))
    settled(facturd)
    assert sorted(d["number"] for d in documents(facturd)) == ["A-1", "A-2"]


def test_no_invoice_is_recorded_not_dropped(facturd: Facturd) -> None:
    facturd.add_folder()
    facturd.start()
    send(facturd, invoice_mail(body="Hello, when will you pay?\n"))
    assert settled(facturd)[0]["state"] == "done"
    [doc] = documents(facturd)
    assert doc["state"] == "no_invoice"
    assert doc["reasons"][0].startswith("no-invoice")


def test_plain_pdf_without_xml_is_held_as_not_read_yet(facturd: Facturd) -> None:
    from tests.factories import make_visible_pdf

    facturd.add_folder(VAT, "Acme SAS", "--mode", "automatic")
    facturd.start()
    pdf = make_visible_pdf(["FACTURE F-9", "Total TTC 120,00 EUR"])
    send(facturd, invoice_mail(attachments=[("scan.pdf", "application/pdf", pdf)]))
    settled(facturd)
    [doc] = documents(facturd)
    assert doc["state"] == "pending_approval"
    assert any(r.startswith("recognition-incomplete") for r in doc["reasons"])


def test_kill_9_mid_stage_processes_exactly_once(facturd_any: Facturd) -> None:
    """GIVEN a worker that dies (SIGKILL) inside the facturx stage WHEN facturd restarts and
    the lease expires THEN the message is processed exactly once: one document, archived."""
    f = facturd_any
    f.config.write_text(f.config.read_text().replace(
        "[worker]\n", "[worker]\nlease_seconds = 5\n"))
    f.add_folder(VAT, "Acme SAS", "--mode", "automatic")
    f.start(env={"FACTURD_FAULTS": "stage.facturx=kill"})
    send(f, invoice_mail(attachments=[("a.pdf", "application/pdf", make_facturx_pdf())]))
    assert f.proc is not None
    f.proc.wait(30)  # the fault point SIGKILLs the daemon mid-pipeline
    f.stop()
    assert jobs(f)[0]["state"] == "running"  # the dead worker still holds the lease
    f.start()
    [job] = settled(f)
    assert (job["state"], job["attempts"]) == ("done", 2)
    docs = documents(f)
    assert len(docs) == 1 and docs[0]["state"] == "archived"


def test_transient_failure_is_retried_with_backoff(facturd: Facturd) -> None:
    facturd.add_folder(VAT, "Acme SAS", "--mode", "automatic")
    facturd.start(env={"FACTURD_FAULTS": "stage.parse=transient*2"})
    send(facturd, invoice_mail(attachments=[("a.pdf", "application/pdf", make_facturx_pdf())]))
    [job] = settled(facturd)
    assert (job["state"], job["attempts"]) == ("done", 3)
    [doc] = documents(facturd)
    assert doc["state"] == "archived"
    assert "retry in" in facturd.logs()


def test_persistent_transient_failure_is_quarantined_after_max_attempts(facturd: Facturd
                                                                        ) -> None:
    facturd.config.write_text(facturd.config.read_text().replace(
        "[worker]\n", "[worker]\nmax_attempts = 2\n"))
    facturd.add_folder()
    facturd.start(env={"FACTURD_FAULTS": "stage.parse=transient"})
    send(facturd, invoice_mail())
    [job] = settled(facturd)
    assert job["state"] == "quarantined"
    assert job["last_error"].startswith("gave up after 2 attempts: TransientFault")


def test_permanent_failure_is_quarantined_with_its_reason_and_kept(facturd: Facturd) -> None:
    facturd.add_folder()
    facturd.start()
    send(facturd, depth_bomb())
    [job] = settled(facturd)
    assert job["state"] == "quarantined"
    assert "too-deep" in job["last_error"]
    assert documents(facturd) == []
    # the original stays: an operator can retry it (here it fails the same way again)
    assert "queued again" in facturd.cli("messages", "retry", str(job["job"])).stdout


@pytest.mark.parametrize("profile", ["minimum", "basicwl", "basic", "en16931", "extended"])
def test_every_profile_reaches_archive(facturd: Facturd, profile: str) -> None:
    facturd.add_folder(VAT, "Acme SAS", "--mode", "automatic")
    facturd.start()
    send(facturd, invoice_mail(attachments=[
        ("a.pdf", "application/pdf", make_facturx_pdf(number=f"P-{profile}", profile=profile))]))
    settled(facturd)
    [doc] = documents(facturd)
    assert doc["number"] == f"P-{profile}" and doc["total_gross"] == "120.00"
    assert doc["state"] == "archived"


# ---- batches: many jobs, one transaction ------------------------------------------------------

def _batch_worker(tmp_path: Path, store: Store, extra: str = "") -> Worker:
    cfg_file = tmp_path / "facturd.toml"
    cfg_file.write_text(f'state_dir = "{tmp_path}/state"\ndomain = "{DOMAIN}"\n'
                        f'[auth]\nnameservers = ["127.0.0.1:9"]\ndns_timeout_seconds = 0.2\n'
                        f'[worker]\nlease_seconds = 60\n{extra}')
    return Worker(config.load(cfg_file, environ={}), store, name="batch-test")


def _queue_mails(store: Store, folder_id: int, mails: list[bytes]) -> None:
    store.record_intake([
        IntakeItem(raw=raw, sha256=hashlib.sha256(raw).hexdigest(),
                   mail_from="billing@vendor.test", recipients=(Recipient(folder_id, TO, ""),),
                   protocol="smtp", peer="127.0.0.1", helo="vendor.test", filename="")
        for raw in mails])


def test_a_batch_sees_the_duplicates_it_made_itself(tmp_path: Path, store: Store) -> None:
    """GIVEN three mails claimed in one batch, the third carrying the same PDF as the first
    WHEN the batch is processed (one transaction for all) THEN the third is recognised as a
    duplicate of the first, which is not committed yet when the third is decided."""
    folder = store.add_folder(VAT, "Acme SAS", mode="automatic")
    same = make_facturx_pdf(number="F-SAME")
    mails = [invoice_mail(to=TO, attachments=[("a.pdf", "application/pdf", pdf)]).as_bytes()
             for pdf in (same, make_facturx_pdf(number="F-OTHER"), same)]
    _queue_mails(store, folder.id, mails)
    worker = _batch_worker(tmp_path, store)
    jobs = worker.claim_batch()
    assert len(jobs) == 3 and all(j.delivery.attempts == 1 for j in jobs)
    assert worker.process_batch(jobs) == ["done", "done", "done"]
    docs = sorted(store.documents.find(folder.id), key=lambda d: d.id)
    assert [d.number for d in docs] == ["F-SAME", "F-OTHER", "F-SAME"]
    assert [d.state for d in docs[:2]] == ["archived", "archived"]
    assert docs[2].state != "archived" and docs[2].duplicate_of == docs[0].id


def test_a_lost_lease_discards_only_that_job_of_the_batch(tmp_path: Path, store: Store,
                                                          clock: Clock) -> None:
    """GIVEN a batch of two whose first lease expired and was taken by another worker WHEN
    the batch is processed THEN the first job's results are discarded (the other worker
    owns it) and the second is committed."""
    folder = store.add_folder(VAT, "Acme SAS", mode="automatic")
    _queue_mails(store, folder.id, [
        invoice_mail(to=TO, attachments=[("a.pdf", "application/pdf",
                                          make_facturx_pdf(number=n))]).as_bytes()
        for n in ("F-1", "F-2")])
    worker = _batch_worker(tmp_path, store)
    jobs = worker.claim_batch()
    clock.advance(61)  # both leases expired; another worker takes the first job only
    taken = Queue(store).claim("other", lease_seconds=60)
    assert taken is not None and taken.delivery.id == jobs[0].delivery.id
    assert worker.process_batch(jobs) == ["lease-lost", "done"]
    [doc] = store.documents.find(folder.id)
    assert doc.number == "F-2" and doc.state == "archived"


def test_one_bad_message_in_a_batch_does_not_hold_back_the_others(tmp_path: Path,
                                                                   store: Store) -> None:
    """A MIME depth bomb between two good mails: quarantined with its reason; the two
    invoices around it are archived in the same batch."""
    folder = store.add_folder(VAT, "Acme SAS", mode="automatic")
    bomb = depth_bomb(to=TO).as_bytes()
    good = [invoice_mail(to=TO, attachments=[("a.pdf", "application/pdf",
                                              make_facturx_pdf(number=n))]).as_bytes()
            for n in ("F-A", "F-B")]
    _queue_mails(store, folder.id, [good[0], bomb, good[1]])
    worker = _batch_worker(tmp_path, store)
    assert worker.process_batch(worker.claim_batch()) == ["done", "quarantined", "done"]
    assert "too-deep" in "".join(j.last_error for j in store.deliveries())
    assert sorted(d.number or "" for d in store.documents.find(folder.id, "archived")) == [
        "F-A", "F-B"]
