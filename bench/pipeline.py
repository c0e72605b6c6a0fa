"""Factur-X pipeline throughput: facturd's worker vs a bare factur-x extraction loop.

What it measures: invoices per second from a queued job to an archived document (claim,
read the original blob, parse, extract and map the XML, XSD check, decide, commit documents +
events + job state with fsync) against a loop that only calls
``facturx.get_xml_from_pdf`` on the same PDF bytes. Both run in this process on the same
files, interleaved round by round; the ratio of medians is printed last:

    facturx_pipeline_ratio=<facturd invoices/s ÷ bare invoices/s>   (target ≥ 0.5)

A third loop, the *floor*, runs only what the issues require facturd to do with every
Factur-X PDF, with facturd's own functions and no database, queue or trace: extract the XML,
parse it with its XSD check and map the fields (issue 3), read the visible text layer and its
grand total for the XML/text fraud hold (issue 5). ``floor_ratio`` (floor ÷ bare) is the best
facturx_pipeline_ratio facturd could reach with its reading functions as they are, were the
database, queue and trace free; ``facturd_vs_floor`` is how close the worker comes to it.

Usage: .venv/bin/python bench/pipeline.py [--invoices 200] [--rounds 5] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facturx import get_xml_from_pdf  # noqa: E402

from daemon import config  # noqa: E402
from daemon.einvoice import extract_xml_from_pdf, read_invoice_xml  # noqa: E402
from daemon.ocr import read_text_layer  # noqa: E402
from daemon.recognize import visible_total  # noqa: E402
from daemon.service import open_store  # noqa: E402
from daemon.worker import Worker  # noqa: E402
from storage.records import IntakeItem, Recipient  # noqa: E402
from tests.factories import make_facturx_pdf  # noqa: E402


def make_files(n: int) -> list[bytes]:
    return [make_facturx_pdf(number=f"BENCH-{i:05d}") for i in range(n)]


def run_bare(files: list[bytes]) -> float:
    started = time.perf_counter()
    for data in files:
        _, xml = get_xml_from_pdf(data, check_xsd=False)
        assert xml
    return len(files) / (time.perf_counter() - started)


def run_floor(files: list[bytes]) -> float:
    started = time.perf_counter()
    for data in files:
        found = extract_xml_from_pdf(data)
        assert found is not None
        invoice = read_invoice_xml(found[0])
        pages = read_text_layer(data)
        assert pages is not None
        seen, _, _ = visible_total("\n".join(p.text for p in pages))
        assert seen == invoice.total_gross, (seen, invoice.total_gross)
    return len(files) / (time.perf_counter() - started)


def run_facturd(files: list[bytes], tmp: Path) -> float:
    state = tmp / "state"
    shutil.rmtree(state, ignore_errors=True)
    cfg_file = tmp / "bench.toml"
    cfg_file.write_text(f'state_dir = "{state}"\ndomain = "invoices.test"\n')
    cfg = config.load(cfg_file, environ={})
    store = open_store(cfg)
    try:
        folder = store.add_folder("FR40303265045", "Bench", mode="automatic")
        items = [IntakeItem(raw=d, sha256=hashlib.sha256(d).hexdigest(), mail_from="",
                            recipients=(Recipient(folder.id, "", ""),), protocol="import",
                            peer="bench", helo="", filename=f"{i}.pdf")
                 for i, d in enumerate(files)]
        store.record_intake(items)
        worker = Worker(cfg, store, name="bench")
        started = time.perf_counter()
        while jobs := worker.claim_batch():
            worker.process_batch(jobs)
        elapsed = time.perf_counter() - started
        archived = len(store.documents.find(folder.id, "archived", limit=len(files) + 1))
        if archived != len(files):
            raise SystemExit(f"facturd archived {archived} of {len(files)} invoices")
        return len(files) / elapsed
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--invoices", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tmp", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="facturd-bench-", dir=args.tmp or "/var/tmp"))
    try:
        files = make_files(args.invoices)
        print(f"{len(files)} Factur-X PDFs, {sum(map(len, files)) // len(files)} bytes each; "
              f"state in {tmp}")
        runs: dict[str, list[float]] = {"bare": [], "floor": [], "facturd": []}
        loops = {"bare": lambda: run_bare(files), "floor": lambda: run_floor(files),
                 "facturd": lambda: run_facturd(files, tmp)}
        for r in range(args.rounds):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for which in order:
                runs[which].append(loops[which]())
            print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1]:8.1f}/s" for k, v in runs.items()))
        mb, ml, mf = (statistics.median(runs[k]) for k in ("bare", "floor", "facturd"))
        print(f"median: bare {mb:.1f} invoices/s, floor {ml:.1f} invoices/s, "
              f"facturd {mf:.1f} invoices/s")
        print(f"floor_ratio={ml / mb:.3f} (the required reading alone, with facturd's "
              "functions)")
        print(f"facturd_vs_floor={mf / ml:.3f}")
        print(f"facturx_pipeline_ratio={mf / mb:.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
