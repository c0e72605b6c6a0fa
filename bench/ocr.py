"""OCR stage overhead: facturd's ``ocr_document`` against the plain ``ocrmypdf`` command.

What it measures
    Wall-clock seconds to OCR the same generated scan (an image-only PDF of a French
    invoice, ``--pages`` A4 pages at 300 dpi, from tests/scans.py) two ways, interleaved
    round by round with the order alternating:

    * ``facturd``: ``daemon.ocr.ocr_document(data, "pdf", OcrSettings())`` called in this
      process - the pypdf probe (page count, sizes, text layer), the private job folder,
      the child process (``python -I daemon/ocrchild.py``, limits, its own process group),
      ocrmypdf inside it, then the sidecar and page texts read back.
    * ``plain``: ``.venv/bin/ocrmypdf`` with the same work: ``-l fra+eng --rasterizer
      pypdfium --output-type pdf --force-ocr --deskew --rotate-pages --max-image-mpixels 50
      --skip-big 50 --tesseract-timeout 120 --tesseract-non-ocr-timeout 120 --jobs 1
      --optimize 1 --invalidate-digital-signatures --sidecar FILE -q``, reading the input
      file and writing the output file (what a cron script around ocrmypdf would do).

    Both outputs must contain the invoice number, or the run fails ("BENCH FAILED", exit 1).
    CPU seconds: this process (facturd's in-process probe) plus the reaped child processes
    (python/ocrmypdf and tesseract), for both runners alike.

How to read it
    ``ocr_overhead_ratio`` (last line) = median facturd seconds / median plain seconds;
    target <= 1.15. It is the price of the isolation (probe, spawn, limits, file
    hand-over). ``ocr_cpu_ratio`` (the line before) is the same for CPU seconds, which other
    load on a shared machine disturbs less than wall-clock time. Absolute seconds depend
    on the machine and on other load (tesseract is CPU-bound); compare ratios from one run.
    One unmeasured warm-up pair runs first (page cache, tesseract model files) unless
    ``--warmup 0``.

Usage
    .venv/bin/python bench/ocr.py [--rounds 5] [--pages 1] [--warmup 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.ocr import OcrSettings, ocr_document  # noqa: E402
from tests.scans import SAMPLE_INVOICE, SAMPLE_NUMBER, make_image_pdf  # noqa: E402

OCRMYPDF = ROOT / ".venv" / "bin" / "ocrmypdf"
SECOND_PAGE = ["Conditions générales de vente", "Pénalités de retard : 3 fois le taux légal",
               "Indemnité forfaitaire pour frais de recouvrement : 40 EUR",
               "Escompte pour paiement anticipé : néant"]


def children_cpu() -> float:
    """CPU seconds of this process and of its reaped descendants."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def run_facturd(data: bytes, work: Path, settings: OcrSettings) -> tuple[float, float]:
    cpu = children_cpu()
    started = time.perf_counter()
    result = ocr_document(data, "pdf", settings)
    elapsed = time.perf_counter() - started
    if not result.ocred or SAMPLE_NUMBER not in result.pages[0].text:
        raise SystemExit(f"BENCH FAILED: facturd text lacks {SAMPLE_NUMBER!r}")
    return elapsed, children_cpu() - cpu


def plain_command(src: Path, out: Path, sidecar: Path, settings: OcrSettings) -> list[str]:
    mp = f"{settings.max_image_mpixels:g}"
    return [str(OCRMYPDF), "-l", "+".join(settings.languages), "--rasterizer", "pypdfium",
            "--output-type", "pdf", "--force-ocr", "--deskew", "--rotate-pages",
            "--max-image-mpixels", mp, "--skip-big", mp,
            "--tesseract-timeout", f"{settings.tesseract_timeout:g}",
            "--tesseract-non-ocr-timeout", f"{settings.tesseract_timeout:g}",
            "--jobs", str(settings.jobs), "--optimize", "1", "--invalidate-digital-signatures",
            "--sidecar", str(sidecar), "-q", str(src), str(out)]


def run_plain(data: bytes, work: Path, settings: OcrSettings) -> tuple[float, float]:
    src, out, sidecar = work / "in.pdf", work / "out.pdf", work / "out.txt"
    for p in (out, sidecar):
        p.unlink(missing_ok=True)
    cpu = children_cpu()
    started = time.perf_counter()
    src.write_bytes(data)
    subprocess.run(plain_command(src, out, sidecar, settings), check=True)
    text = sidecar.read_text(encoding="utf-8")
    out.read_bytes()
    elapsed = time.perf_counter() - started
    if SAMPLE_NUMBER not in text:
        raise SystemExit(f"BENCH FAILED: ocrmypdf text lacks {SAMPLE_NUMBER!r}")
    return elapsed, children_cpu() - cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pages", type=int, default=1, choices=(1, 2))
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()

    settings = OcrSettings()
    pages = [SAMPLE_INVOICE] + ([SECOND_PAGE] if args.pages == 2 else [])
    data = make_image_pdf(*pages, noise=0.1, rotate=0.7, seed=3)
    cpu_model = next((line.split(":", 1)[1].strip() for line in
                      Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    print(f"machine: nproc={os.cpu_count()} cpu={cpu_model!r} "
          f"load={' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"input: {args.pages} page(s), {len(data)} bytes image-only PDF; "
          f"settings: {settings}")
    runners: dict[str, Callable[[bytes, Path, OcrSettings], tuple[float, float]]] = {
        "facturd": run_facturd, "plain": run_plain}
    times: dict[str, list[float]] = {name: [] for name in runners}
    cpus: dict[str, list[float]] = {name: [] for name in runners}
    with tempfile.TemporaryDirectory(prefix="bench-ocr-") as tmp:
        work = Path(tmp)
        for _ in range(args.warmup):
            for runner in runners.values():
                runner(data, work, settings)
        for rnd in range(args.rounds):
            order = list(runners) if rnd % 2 == 0 else list(reversed(runners))
            line = []
            for name in order:
                seconds, cpu = runners[name](data, work, settings)
                times[name].append(seconds)
                cpus[name].append(cpu)
                line.append(f"{name} {seconds:.2f}s (cpu {cpu:.2f}s)")
            print(f"round {rnd + 1}: " + ", ".join(line), flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpus.items()}
    print("medians: " + ", ".join(f"{n} {m:.2f}s (cpu {cpu_medians[n]:.2f}s)"
                                  for n, m in medians.items()))
    print(f"ocr_cpu_ratio={cpu_medians['facturd'] / cpu_medians['plain']:.3f}")
    print(f"ocr_overhead_ratio={medians['facturd'] / medians['plain']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
