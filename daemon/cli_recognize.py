"""One file, storing nothing: ``facturd recognize FILE [--json]`` and ``facturd check FILE...``.

``recognize`` runs the reading stages and prints the document fields (the keys of
``documents show --json``, plus ``language``) with their confidences: embedded
Factur-X/CII/UBL XML when present, otherwise the text layer, or OCR for scans and photos.
``check`` says whether e-invoice files are conformant (daemon/conformance.py: XSD, PDF
container, Schematron); exit 1 when one is not.
"""

from __future__ import annotations

import argparse
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.conformance import Conformance, check, looks_like_pdf
from daemon.docjson import KEYS
from daemon.einvoice import InvalidInvoice, extract_xml_from_pdf, read_invoice_xml
from daemon.mailparse import parse_file
from daemon.ocr import OcrIncomplete, ocr_document, read_text_layer
from daemon.recognize import recognize
from daemon.schematron_server import SchematronServer
from daemon.settings import ocr_settings

FIELD_KEYS = tuple(k for k in KEYS if k not in ("id", "folder", "direction", "state",
                                                  "duplicate_of", "reasons", "schematron", "notes",
                                                  "trace"))


def add_parser(sub: Any) -> None:
    p = sub.add_parser("recognize", help="read one PDF or image and print its fields "
                                         "(stores nothing)")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    c = sub.add_parser("check", help="is an e-invoice conformant (XSD, PDF/A container, "
                                     "Schematron)? stores nothing")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--json", action="store_true")


def _checked(name: str, found: Conformance) -> dict[str, Any]:
    return {"file": name, "conformant": found.conformant, "profile": found.profile,
            "number": found.number, "schematron": found.schematron,
            "problems": list(found.problems), "warnings": list(found.warnings)}


def run_check(args: argparse.Namespace) -> int:
    """1 when a file is not conformant, 4 when one is missing, else 0 (a file whose
    Schematron could not run says so, with no problem found)."""
    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        print(f"facturd: not a file: {missing[0]}")
        return 4
    results = []
    with SchematronServer() as server:  # one Saxon child, each stylesheet compiled once
        for name in args.files:
            data = Path(name).read_bytes()
            results.append(_checked(name, check(data, is_pdf=looks_like_pdf(data),
                                                server=server)))
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    verdicts = {True: "conformant", False: "NOT conformant", None: "no problem found"}
    for r in results if not args.json else ():
        print(f"{r['file']}: {verdicts[r['conformant']]} "
              f"({r['profile'] or 'no invoice XML'}, Schematron {r['schematron']})")
        for problem in r["problems"]:
            print(f"  problem: {problem}")
        for warning in r["warnings"]:
            print(f"  warning: {warning}")
    return 1 if any(r["conformant"] is False for r in results) else 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def read_file(path: Path, cfg: Config) -> dict[str, Any]:
    data = path.read_bytes()
    parsed = parse_file(data, path.name)
    if not parsed.invoices:
        reason = parsed.skipped[0][1] if parsed.skipped else "not an invoice file"
        raise ValueError(f"{path.name}: not a PDF, image or invoice XML ({reason})")
    main = parsed.invoices[0].main
    out: dict[str, Any] = dict.fromkeys(FIELD_KEYS)
    out.update(vat_breakdown=[], confidence={}, language=None, problems=[])
    try:
        xml = (extract_xml_from_pdf(main.data) if main.kind == "pdf"
               else (main.data, "") if main.kind in ("cii", "ubl") else None)
        if xml is not None:
            inv = read_invoice_xml(xml[0])
            for key in FIELD_KEYS:
                if hasattr(inv, key):
                    out[key] = getattr(inv, key)
            out["vat_breakdown"] = [{"rate": v.rate, "base": v.base, "tax": v.tax}
                                    for v in inv.vat_breakdown]
            out["source"] = "facturx" if main.kind == "pdf" else main.kind
            out["confidence"] = {k: 1.0 for k in FIELD_KEYS if k not in ("source", "confidence")
                                 and out.get(k) not in (None, [])}
            out["profile"] = inv.profile
    except InvalidInvoice as exc:
        out["problems"].append(f"invalid-xml: {exc}")
    settings = ocr_settings(cfg)
    pages = read_text_layer(main.data, settings.max_pages) if main.kind == "pdf" else None
    text_source = "text"
    if pages is None and main.kind in ("pdf", "image"):
        try:
            pages = ocr_document(main.data, main.kind, settings).pages
            text_source = "ocr"
        except OcrIncomplete as exc:
            out["problems"].append(f"ocr-incomplete: {exc}")
    if pages:
        rec = recognize("\n".join(p.text for p in pages))
        out["language"] = rec.language
        if out.get("source") is None:
            out.update({k: v for k, v in rec.fields.items() if k in out})
            out["confidence"] = dict(rec.confidence)
            out["source"] = text_source
            out["problems"] += list(rec.problems)
    return out


def run(args: argparse.Namespace, cfg: Config) -> int:
    path = Path(args.file)
    if not path.is_file():
        print(f"facturd: not a file: {path}")
        return 4
    try:
        fields = _jsonable(read_file(path, cfg))
    except ValueError as exc:
        print(f"facturd: {exc}")
        return 2
    if args.json:
        print(json.dumps(fields, indent=2, ensure_ascii=False))
        return 0
    confidence = fields.get("confidence", {})
    for key, value in fields.items():
        if key in ("confidence", "vat_breakdown", "problems"):
            continue
        mark = ""
        if key in confidence:
            mark = "  (confident)" if confidence[key] >= 0.9 else f"  ({confidence[key]:.2f})"
        print(f"{key:<18} {value if value is not None else '-'}{mark}")
    for line in fields.get("vat_breakdown", []):
        print(f"vat {line.get('rate')}%: base {line.get('base')} tax {line.get('tax')}")
    for problem in fields.get("problems", []):
        print(f"problem: {problem}")
    return 0
