"""``facturd recognize FILE [--json]``: the reading stages on one PDF or image, storing nothing.

Prints the document fields (the keys of ``documents show --json``, plus ``language``) with
their confidences: embedded Factur-X/CII/UBL XML when present, otherwise the text layer, or
OCR for scans and photos.
"""

from __future__ import annotations

import argparse
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.docjson import KEYS
from daemon.einvoice import InvalidInvoice, extract_xml_from_pdf, read_invoice_xml
from daemon.mailparse import parse_file
from daemon.ocr import OcrIncomplete, ocr_document, read_text_layer
from daemon.recognize import recognize
from daemon.settings import ocr_settings

FIELD_KEYS = tuple(k for k in KEYS if k not in ("id", "folder", "direction", "state",
                                                  "duplicate_of", "reasons", "trace"))


def add_parser(sub: Any) -> None:
    p = sub.add_parser("recognize", help="read one PDF or image and print its fields "
                                         "(stores nothing)")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")


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
