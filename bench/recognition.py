"""Field-recognition accuracy on labelled invoices, optionally against invoice2data.

Usage::

    .venv/bin/python bench/recognition.py DIR [--generate N] [--seed S] [--baseline]
    .venv/bin/python bench/recognition.py --corpus [--facturx] [--baseline]

DIR holds documents (``.pdf``, ``.png``/``.jpg``/``.tif``, ``.txt``) each with an expected
``.json`` beside it (keys of ``Recognition.fields``; a key present with ``null`` means "must
not be found"; a missing key is not judged; ``variant`` = text | scan | photo, default text).
``--generate N`` first writes N invoices from tests/invoicegen.py into DIR. Text PDFs are read
with ``read_pdf_text``; images and image-only PDFs go through ``daemon.ocr.ocr_document`` when
that module exists (otherwise they are skipped, with a message).

``--corpus`` also runs the plain invoices of /work/shared/corpus (MANIFEST kind
``plain-invoice-pdf``, expected values parsed from the notes or from the invoice2data JSON
beside the file, plus invoice2data's text and PNG samples); ``--facturx`` adds the Factur-X
PDFs' visual text, judged against the values of their embedded XML (from the notes). Files are
read in place, never copied.

Output: per-field and per-variant accuracy, the share of confident (>= 0.9) fields that are
correct, per-file lines for the corpus, then ``invoice2data_field_accuracy=<y>`` (with
``--baseline``) and last ``field_accuracy=<x>``.

Comparison: amounts as Decimal, dates ISO, identifiers without spaces, names case/space/
punctuation-insensitive with a trailing legal form ignored (tests.invoicegen.same_value).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib
import json
import logging
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.recognize import FIELDS, read_pdf_text, recognize  # noqa: E402
from tests.corpus import CORPUS  # noqa: E402
from tests.invoicegen import same_value, write_set  # noqa: E402

IMAGES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


@dataclass
class Tally:
    right: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    confident: int = 0
    confident_right: int = 0

    def add(self, name: str, ok: bool, conf: float | None = None) -> None:
        self.total[name] += 1
        self.right[name] += ok
        if conf is not None and conf >= 0.9:
            self.confident += 1
            self.confident_right += ok

    def accuracy(self) -> float:
        n = sum(self.total.values())
        return sum(self.right.values()) / n if n else 0.0


OCR_CACHE: Path | None = None


def ocr_text(path: Path) -> str | None:
    """OCR through daemon.ocr (tesseract's reading-order text), or None without that module.
    With ``--ocr-cache DIR`` the text is kept there by content hash for the next run."""
    data = path.read_bytes()
    cached = OCR_CACHE / (hashlib.sha256(data).hexdigest() + ".txt") if OCR_CACHE else None
    if cached is not None and cached.exists():
        return cached.read_text(encoding="utf-8")
    text = _run_ocr(path, data)
    if cached is not None and text:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(text, encoding="utf-8")
    return text


def _run_ocr(path: Path, data: bytes) -> str | None:
    try:
        ocr = importlib.import_module("daemon.ocr")
    except ImportError:
        return None
    kind = "pdf" if path.suffix.lower() == ".pdf" else "image"
    settings = ocr.OcrSettings(languages=("fra", "eng", "nld"))
    try:
        result = ocr.ocr_document(data, kind, settings)
    except ocr.OcrIncomplete as exc:
        print(f"  {path.name}: {exc}")
        return ""
    return str(result.text)


def document_text(path: Path) -> tuple[str | None, str]:
    """(text, how) for a document; text None when it needs OCR that is not available."""
    if path.suffix == ".txt":
        return path.read_text(encoding="utf-8", errors="replace"), "text"
    if path.suffix == ".pdf":
        text = read_pdf_text(path.read_bytes())
        if len(re.sub(r"\s", "", text)) >= 40:
            return text, "text"
    return ocr_text(path), "ocr"


def judge(expected: dict[str, Any], fields: dict[str, object], conf: dict[str, float],
          tally: Tally, variant_tally: Tally) -> list[str]:
    wrong = []
    for name in FIELDS:
        if name not in expected or (expected[name] is None and fields.get(name) is None):
            continue
        got = _plain(fields.get(name))
        if expected.get("credit_note") and isinstance(got, str) and got.startswith("-"):
            got = got[1:]
        try:
            ok = same_value(name, expected[name], got)
        except (ArithmeticError, ValueError, TypeError, KeyError):
            ok = False  # a value of the wrong shape (the baseline's lists, free text)
        tally.add(name, ok, conf.get(name))
        variant_tally.add(name, ok, conf.get(name))
        if not ok:
            wrong.append(f"{name}: expected {expected[name]!r} got {got!r}"
                         f" ({conf.get(name, 0):.2f})")
    return wrong


def _plain(value: object) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    return str(value) if value is not None and not isinstance(value, list) else value


def run_invoice2data(path: Path) -> dict[str, Any]:
    from invoice2data import extract_data
    from invoice2data.extract.loader import read_templates

    global _TEMPLATES
    if _TEMPLATES is None:
        _TEMPLATES = read_templates()
    try:
        result = extract_data(str(path), templates=_TEMPLATES)
    except Exception as exc:  # the baseline may fail on any file; that is a miss, not a crash
        logging.getLogger("bench").debug("invoice2data failed on %s: %s", path, exc)
        return {}
    if not result:
        return {}
    out: dict[str, Any] = {}
    for theirs, ours in (("invoice_number", "number"), ("date", "issue_date"),
                         ("date_due", "due_date"), ("amount", "total_gross"),
                         ("amount_untaxed", "total_net"), ("amount_tax", "total_tax"),
                         ("currency", "currency"), ("issuer", "seller_name"),
                         ("vat", "seller_vat"), ("iban", "seller_iban"), ("bic", "seller_bic"),
                         ("payment_reference", "payment_reference")):
        if result.get(theirs) is not None:
            value = result[theirs]
            if isinstance(value, list):  # some templates return every match
                value = value[0] if value else None
            if hasattr(value, "date"):
                value = value.date().isoformat()
            elif isinstance(value, float):
                value = f"{value:.2f}"
            if value is not None:
                out[ours] = value
    return out


_TEMPLATES: Any = None


def evaluate(docs: list[tuple[Path, dict[str, Any]]], *, baseline: bool, today: date | None,
             per_file: bool) -> tuple[Tally, dict[str, Tally], Tally | None]:
    tally, by_variant = Tally(), defaultdict(Tally)
    base = Tally() if baseline else None
    for path, expected in docs:
        variant = str(expected.get("variant", "text"))
        try:
            text, how = document_text(path)
        except Exception as exc:
            print(f"  {path.name}: cannot read ({exc})")
            continue
        if text is None:
            print(f"  {path.name}: skipped ({variant}: needs OCR and daemon.ocr is not available)")
            continue
        started = time.monotonic()
        rec = recognize(text, today=today)
        ms = (time.monotonic() - started) * 1000
        wrong = judge(expected, rec.fields, rec.confidence, tally, by_variant[variant])
        if base is not None:
            theirs = run_invoice2data(path) if path.suffix in (".pdf", ".txt") else {}
            judge(expected, theirs, {}, base, Tally())
        if per_file or wrong:
            status = "ok" if not wrong else f"{len(wrong)} wrong"
            print(f"  {path.name} [{variant}/{how}, {rec.language}, {ms:.0f} ms] {status}"
                  + (f" problems={','.join(rec.problems)}" if rec.problems else ""))
            for line in wrong:
                print(f"      {line}")
    return tally, by_variant, base


def report(title: str, tally: Tally, by_variant: dict[str, Tally]) -> None:
    print(f"\n{title}")
    print(f"  {'field':20} {'right':>6} {'total':>6} {'acc':>7}")
    for name in FIELDS:
        if tally.total.get(name):
            acc = tally.right[name] / tally.total[name]
            print(f"  {name:20} {tally.right[name]:6d} {tally.total[name]:6d} {acc:7.3f}")
    for variant, vt in sorted(by_variant.items()):
        print(f"  variant {variant}: field accuracy {vt.accuracy():.3f} "
              f"({sum(vt.right.values())}/{sum(vt.total.values())})")
    rate = tally.confident_right / tally.confident if tally.confident else 1.0
    print(f"  confident fields correct: {tally.confident_right}/{tally.confident} = {rate:.4f}")


def _manifest(corpus: Path) -> list[dict[str, str]]:
    with (corpus / "MANIFEST.tsv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def expected_from_notes(notes: str) -> dict[str, Any]:
    """Expected values from a plain invoice's MANIFEST notes (free text written by a person)."""
    exp: dict[str, Any] = {}
    patterns = (
        ("seller_name", r"(?:seller|issuer) ([^;(]+?)\s*(?:;|$|\()"),
        ("buyer_name", r"buyer ([^;]+?)\s*(?:;|$)"),
        ("total_net", r"(?:\bnet|\bHT|subtotal) (-?\d+\.\d{2})\b"),
        ("total_tax", r"(?:\bVAT|\bTVA|\btax)(?: \d+%)? (-?\d+\.\d{2})\b"),
        ("total_gross", r"(?:\btotal|\bTTC|Saldo adeudado) (-?\d+\.\d{2})\b"),
        ("currency", r"(?:\btotal|\bTTC|\bHT) -?\d+\.\d{2} ([A-Z]{3})\b"),
        ("number", r"(?:Invoice No\.|N de facture|FACTURA|\binvoice) ([A-Z0-9][\w/\-]*\d)\b"),
        ("issue_date", r"(?<!order )(?<!header )(?:\bdate|FECHA) (\d{4}[-/]\d{2}[-/]\d{2})"),
        ("due_date", r"\bdue (\d{4}-\d{2}-\d{2})"),
    )
    for name, pattern in patterns:
        m = re.search(pattern, notes)
        if m:
            value = m.group(1).strip()
            if name.endswith("_date"):
                value = value.replace("/", "-")
            if name == "seller_name":
                value = " ".join(w for w in value.split() if not any(c.isdigit() for c in w))
            exp[name] = value
    return exp


def expected_from_invoice2data(data: dict[str, Any]) -> dict[str, Any]:
    from schwifty import BIC, IBAN
    from stdnum.eu import vat

    exp: dict[str, Any] = {}
    for theirs, ours in (("issuer", "seller_name"), ("invoice_number", "number"),
                         ("date", "issue_date"), ("date_due", "due_date"),
                         ("amount", "total_gross"), ("amount_untaxed", "total_net"),
                         ("amount_tax", "total_tax"), ("currency", "currency"),
                         ("payment_reference", "payment_reference")):
        if data.get(theirs) not in (None, ""):
            value = data[theirs]
            exp[ours] = f"{value:.2f}" if isinstance(value, float) else str(value)
    if isinstance(data.get("vat"), str) and vat.is_valid(data["vat"]):
        exp["seller_vat"] = vat.compact(data["vat"])
    for theirs, ours, check in (("iban", "seller_iban", IBAN), ("bic", "seller_bic", BIC)):
        try:
            if data.get(theirs):
                check(data[theirs])
                exp[ours] = data[theirs]
        except ValueError:
            pass
    return exp


def corpus_documents(corpus: Path, *, facturx: bool) -> list[tuple[Path, dict[str, Any]]]:
    docs: list[tuple[Path, dict[str, Any]]] = []
    rows = _manifest(corpus)
    for row in rows:
        path = corpus / row["local_path"]
        if row["kind"] == "plain-invoice-pdf":
            beside = path.with_suffix(".json")
            if beside.exists():
                data = json.loads(beside.read_text())
                exp = expected_from_invoice2data(data[0] if isinstance(data, list) else data)
            else:
                exp = expected_from_notes(row["notes"])
            docs.append((path, exp))
        elif row["kind"] in ("invoice-text", "invoice-image") and "/compare/" in row["local_path"]:
            data = json.loads(path.with_name(path.stem + ".json").read_text())
            exp = expected_from_invoice2data(data[0] if isinstance(data, list) else data)
            exp["variant"] = "scan" if row["kind"] == "invoice-image" else "text"
            docs.append((path, exp))
        elif facturx and row["kind"] == "facturx-pdf" and path.suffix == ".pdf":
            exp = {}
            for key, ours in (("id", "number"), ("date", "issue_date"), ("currency", "currency"),
                              ("grand_total", "total_gross"), ("due_payable", "amount_due"),
                              ("seller", "seller_name")):
                m = re.search(rf"\b{key}=([^;]+)", row["notes"])
                if m:
                    value = m.group(1).strip()
                    if key == "date" and re.fullmatch(r"\d{8}", value):
                        value = f"{value[:4]}-{value[4:6]}-{value[6:]}"
                    exp[ours] = value
            if re.search(r"\btype=(?:381|261|262|396|532)\b", row["notes"]):
                exp["credit_note"] = True  # the XML's amounts are positive, the print may not
            exp["variant"] = "facturx-visual"
            docs.append((path, exp))
    return docs


def write_scans(directory: Path, count: int) -> int:
    """Scan (clean PNG) and photo (crooked, noisy JPEG) variants of the first ``count``
    text invoices of ``directory``, rendered from their text with tests/scans.py."""
    try:
        from tests.scans import make_scan
    except ImportError:
        print("tests/scans.py is not available: no scan/photo variants")
        return 0
    from daemon.recognize.text import make_doc

    made = 0
    for pdf in sorted(directory.glob("*.pdf"))[:count]:
        expected = json.loads(pdf.with_suffix(".json").read_text())
        lines = []
        for cells in make_doc(read_pdf_text(pdf.read_bytes())).cells:
            if cells:
                right = "   ".join(c.text for c in cells[1:])
                lines.append(cells[0].text + (f"\t{right}" if right else ""))
        for variant, suffix, options in (
                ("scan", ".png", {}),
                ("photo", ".jpg", {"rotate": 1.5, "noise": 0.35, "jpeg_quality": 60})):
            out = pdf.with_name(f"{pdf.stem}-{variant}{suffix}")
            out.write_bytes(make_scan(lines, seed=made, **options))  # type: ignore[arg-type]
            out.with_suffix(".json").write_text(json.dumps({**expected, "variant": variant}))
            made += 1
    return made


def load_dir(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() in (".pdf", ".txt", *IMAGES) and path.with_suffix(".json").exists():
            docs.append((path, json.loads(path.with_suffix(".json").read_text())))
    return docs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", type=Path)
    ap.add_argument("--generate", type=int, default=0, metavar="N")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scans", type=int, default=0, metavar="K",
                    help="also write scan and photo variants of K invoices (needs OCR)")
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--corpus", action="store_true")
    ap.add_argument("--facturx", action="store_true")
    ap.add_argument("--today", type=date.fromisoformat, default=None)
    ap.add_argument("--verbose", action="store_true", help="one line per document")
    ap.add_argument("--ocr-cache", type=Path, default=None, metavar="DIR")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    for noisy in ("invoice2data", "ocrmypdf"):  # "No template for ...", OCR fallbacks
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    global OCR_CACHE
    OCR_CACHE = args.ocr_cache
    if args.dir is None and not args.corpus:
        ap.error("give a DIR, --corpus, or both")
    final: tuple[Tally, Tally | None] | None = None
    if args.corpus:
        docs = corpus_documents(CORPUS, facturx=args.facturx)
        print(f"corpus: {len(docs)} documents from {CORPUS}")
        tally, by_variant, base = evaluate(docs, baseline=args.baseline, today=args.today,
                                           per_file=True)
        report("corpus", tally, by_variant)
        if base is not None:
            print(f"corpus_invoice2data_field_accuracy={base.accuracy():.4f}")
        print(f"corpus_field_accuracy={tally.accuracy():.4f}")
        final = (tally, base)
    if args.dir is not None:
        if args.generate:
            write_set(args.dir, args.generate, args.seed)
            print(f"generated {args.generate} invoices into {args.dir} (seed {args.seed})")
        if args.scans:
            print(f"wrote {write_scans(args.dir, args.scans)} scan/photo variants")
        docs = load_dir(args.dir)
        print(f"{args.dir}: {len(docs)} documents")
        tally, by_variant, base = evaluate(docs, baseline=args.baseline, today=args.today,
                                           per_file=args.verbose)
        report(str(args.dir), tally, by_variant)
        final = (tally, base)
    assert final is not None
    if final[1] is not None:
        print(f"invoice2data_field_accuracy={final[1].accuracy():.4f}")
    print(f"field_accuracy={final[0].accuracy():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
