"""Factur-X pipeline throughput: facturd's worker vs a bare factur-x extraction loop.

What it measures: invoices per second from a queued job to an archived document (claim,
read the original blob, parse, extract and map the XML, XSD check, decide, commit documents +
events + job state with fsync) against a loop that only calls
``facturx.get_xml_from_pdf`` on the same PDF bytes. Both run in this process on the same
files, interleaved round by round; the ratio of medians is printed last:

    facturx_pipeline_ratio=<facturd invoices/s ÷ bare invoices/s>   (target ≥ 0.5)

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
        bare: list[float] = []
        ours: list[float] = []
        for r in range(args.rounds):
            order = ("bare", "facturd") if r % 2 == 0 else ("facturd", "bare")
            for which in order:
                if which == "bare":
                    bare.append(run_bare(files))
                else:
                    ours.append(run_facturd(files, tmp))
            print(f"round {r + 1}: bare {bare[-1]:8.1f}/s  facturd {ours[-1]:8.1f}/s")
        mb, mf = statistics.median(bare), statistics.median(ours)
        print(f"median: bare {mb:.1f} invoices/s, facturd {mf:.1f} invoices/s")
        print(f"facturx_pipeline_ratio={mf / mb:.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
