"""Reading invoices without XML: the text layer of a PDF, or OCR of scans and photos.

``ocr_document(data, kind, settings)`` is a blocking call for a worker thread (never an
event loop). Concurrency is bounded by the number of worker processes: one OCR at a time
per worker.

PDFs are first read in-process with pypdf (stream limits as in daemon/einvoice.py, no
external decoder). Cheap checks come before anything expensive: the page count (declared,
then actual) against ``max_pages``, the physical page size and every image's *declared*
width x height against ``max_image_mpixels`` (so page and pixel bombs are refused in
milliseconds, nothing decoded). A PDF whose pages all carry text is returned as it is
(``ocred=False``): text PDFs never go through ocrmypdf, whose Ghostscript fallback corrupted
their text on Debian's gs 10.0.0.

Everything else - pages without text, images - goes to a child process
(daemon/ocrchild.py) that runs ocrmypdf:

* ``subprocess.Popen([python, "-I", ocrchild.py, JOBDIR])`` with ``start_new_session``: the
  child leads its own process group from the first instruction (no preexec_fn, safe from a
  thread), so the whole tree (python + tesseract) can be stopped with one ``killpg``.
  multiprocessing's spawn context was not used: its child joins our process group and only
  later could ``setsid()`` itself (a window where a group kill misses it or hits us), and
  its pickled-arguments pipe adds nothing over two files.
* The data travel through files in a private ``mkdtemp`` folder (mode 0700) that also holds
  the child's TMPDIR (ocrmypdf's work files) and is removed afterwards, killed or not.
* The child's environment is minimal: PATH is a folder holding only a ``tesseract``
  symlink, so Ghostscript cannot run even if an option fell back to it (B-DOC-06), HOME and
  TMPDIR point into the job folder, no proxy or PYTHON* variables.
* Limits: RLIMIT_AS = ``memory_mb`` (and RLIMIT_CPU / RLIMIT_FSIZE backstops, no core
  files), set by the child on itself before it reads the input; tesseract inherits them.
* Wall clock: ``timeout_seconds`` for the whole child, measured from its spawn. At the
  limit the parent sends SIGTERM to the group (the child kills and reaps its tesseract and
  exits), waits up to ``KILL_GRACE_SECONDS``, then SIGKILLs the group; a final group
  SIGKILL is sent while the child is still an unreaped zombie (so its pid, hence the group
  id, cannot have been reused), then the child is reaped: no process and no zombie is left.
* ocrmypdf options: rasterizer 'pypdfium', output_type 'pdf' (never PDF/A: no
  Ghostscript), mode 'force' restricted with ``pages`` to the pages that need OCR, deskew,
  rotate_pages, max_image_mpixels and skip_big from ``max_image_mpixels``,
  tesseract_timeout, jobs, progress_bar off, a sidecar text file.

The text of OCRed pages comes from tesseract's sidecar; pages that had text keep theirs.
A tesseract timeout makes ocrmypdf exit 0 with a blank page, so it is detected (its log
line) and reported as ``OcrIncomplete('timeout')``; a result without text is
``OcrIncomplete('no-text')``. Every failure is an OcrIncomplete with a reason: the caller
holds the document as ocr-incomplete and never loses it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pypdf
from pypdf.generic import DictionaryObject

from daemon import ocrchild
from daemon.einvoice import PDF_LIMITS

__all__ = ["REASONS", "OcrIncomplete", "OcrResult", "OcrSettings", "PageText",
           "image_to_pdf", "installation_problems", "ocr_document", "read_text_layer"]

REASONS = frozenset({"timeout", "crashed", "too-many-pages", "image-too-large", "no-text",
                     "unreadable"})
KINDS = ("pdf", "image")

MIN_PAGE_CHARS = 20        # letters/digits below which a page "has no text"
MIN_DOCUMENT_CHARS = 10    # below this after OCR: 'no-text'
MIN_CONTENT_BYTES = 1024   # a textless page with more drawing than this may be outlined text
REFERENCE_DPI = 300        # page-size check: the page rasterized at this resolution
KILL_GRACE_SECONDS = 2.0
MAX_XOBJECTS_CHECKED = 2000
CHILD_SCRIPT = Path(ocrchild.__file__).resolve()

_SKIPPED = re.compile(r"\[OCR skipped on page\(s\) (\d+)(?:-(\d+))?\]")
_LANGUAGE = re.compile(r"[a-z]{3}(?:_[a-z]+)?", re.IGNORECASE)


@dataclass(frozen=True)
class OcrSettings:
    languages: tuple[str, ...] = ("fra", "eng")
    timeout_seconds: float = 180.0     # hard wall-clock limit for the whole child process
    memory_mb: int = 2048              # RLIMIT_AS of the child
    max_pages: int = 50
    max_image_mpixels: float = 50.0
    tesseract_timeout: float = 120.0
    jobs: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "languages", tuple(self.languages))  # a list from config
        if not self.languages or not all(_LANGUAGE.fullmatch(x) for x in self.languages):
            raise ValueError(f"ocr languages must be tesseract codes like 'fra': "
                             f"{self.languages!r}")
        if "osd" in self.languages:
            raise ValueError("'osd' is tesseract's orientation model, not a language")
        if not self.timeout_seconds > 0 or not self.tesseract_timeout > 0:
            raise ValueError("ocr timeouts must be > 0")
        if self.memory_mb < 256:
            raise ValueError("ocr memory_mb must be >= 256")
        if self.max_pages < 1 or not self.max_image_mpixels > 0 or self.jobs < 1:
            raise ValueError("ocr max_pages, max_image_mpixels and jobs must be positive")

    @property
    def max_pixels(self) -> int:
        return int(self.max_image_mpixels * 1_000_000)


@dataclass(frozen=True)
class PageText:
    number: int  # 1-based
    text: str


@dataclass(frozen=True)
class OcrResult:
    pdf: bytes                 # searchable PDF (text layer); for a text PDF: the input unchanged
    pages: tuple[PageText, ...]
    ocred: bool                # False when the input already had a text layer
    seconds: float

    @property
    def text(self) -> str:
        return "\n\f".join(p.text for p in self.pages)


class OcrIncomplete(Exception):
    """OCR could not produce the text. ``reason``: 'timeout' | 'crashed' | 'too-many-pages' |
    'image-too-large' | 'no-text' | 'unreadable'; ``detail``: what happened, for people.

    The caller holds the document with reason ocr-incomplete (never loses it)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown OcrIncomplete reason {reason!r}")
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"OCR incomplete ({self.reason})" + (f": {self.detail}" if self.detail else "")


# ---------------------------------------------------------------------------------------------
# PDF text layer (in-process, pypdf with limits)


@dataclass(frozen=True)
class _Page:
    number: int
    text: str
    chars: int          # letters and digits
    drawn: bool         # has an image or a sizeable content stream

    @property
    def needs_ocr(self) -> bool:
        return self.chars < MIN_PAGE_CHARS and self.drawn


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = "".join(c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C")
    return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n")


def _chars(text: str) -> int:
    return sum(c.isalnum() for c in text)


def _open_pdf(data: bytes) -> pypdf.PdfReader:
    if b"%PDF-" not in bytes(data[:1024]):
        raise OcrIncomplete("unreadable", "not a PDF (no %PDF- header)")
    try:
        reader = pypdf.PdfReader(BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise OcrIncomplete("unreadable", "the PDF is encrypted with a password")
    except OcrIncomplete:
        raise
    except Exception as exc:  # pypdf raises many types on hostile input
        raise OcrIncomplete("unreadable", f"PDF cannot be parsed: {type(exc).__name__}: "
                            f"{exc}"[:300]) from None
    return reader


def _page_count(reader: pypdf.PdfReader, max_pages: int) -> int:
    try:
        tree = reader.root_object.get("/Pages")
        tree = tree.get_object() if tree is not None else None
        declared = tree.get("/Count", 0) if isinstance(tree, DictionaryObject) else 0
        if isinstance(declared, int) and declared > max_pages:  # before flattening the tree
            raise OcrIncomplete("too-many-pages", f"{declared} pages, limit {max_pages}")
        count = len(reader.pages)
    except OcrIncomplete:
        raise
    except Exception as exc:
        raise OcrIncomplete("unreadable", f"PDF page tree cannot be read: "
                            f"{type(exc).__name__}: {exc}"[:300]) from None
    if count > max_pages:
        raise OcrIncomplete("too-many-pages", f"{count} pages, limit {max_pages}")
    if count == 0:
        raise OcrIncomplete("unreadable", "the PDF has no pages")
    return count


def _xobjects(resources: Any, seen: set[int], budget: list[int]) -> Iterator[DictionaryObject]:
    """Image and form XObjects reachable from a resource dictionary (bounded, cycle-safe)."""
    if not isinstance(resources, DictionaryObject):
        return
    xobjects = resources.get("/XObject")
    xobjects = xobjects.get_object() if xobjects is not None else None
    if not isinstance(xobjects, DictionaryObject):
        return
    for ref in xobjects.values():
        budget[0] -= 1
        if budget[0] < 0:
            return
        obj = ref.get_object()
        if not isinstance(obj, DictionaryObject) or id(obj) in seen:
            continue
        seen.add(id(obj))
        yield obj
        if obj.get("/Subtype") == "/Form":
            inner = obj.get("/Resources")
            yield from _xobjects(inner.get_object() if inner is not None else None, seen,
                                 budget)


def _probe_page(page: pypdf.PageObject, number: int, max_pixels: int | None) -> _Page:
    drawn = False
    budget = [MAX_XOBJECTS_CHECKED]
    resources = page.get("/Resources")
    for xobj in _xobjects(resources.get_object() if resources is not None else None, set(),
                          budget):
        if xobj.get("/Subtype") != "/Image":
            continue
        drawn = True
        if max_pixels is not None:
            width, height = xobj.get("/Width", 0), xobj.get("/Height", 0)
            if isinstance(width, int) and isinstance(height, int) and width * height > max_pixels:
                raise OcrIncomplete("image-too-large",
                                    f"page {number} has a {width}x{height}-pixel image, limit "
                                    f"{max_pixels / 1e6:g} Mpixels")
    if max_pixels is not None:
        unit = float(page.user_unit)
        width_in = abs(float(page.mediabox.width)) * unit / 72
        height_in = abs(float(page.mediabox.height)) * unit / 72
        if width_in * height_in * REFERENCE_DPI ** 2 > max_pixels:
            raise OcrIncomplete("image-too-large",
                                f"page {number} is {width_in:.0f}x{height_in:.0f} inches")
    text = _clean(page.extract_text() or "")
    chars = _chars(text)
    if not drawn and chars < MIN_PAGE_CHARS:
        contents = page.get_contents()
        drawn = contents is not None and len(contents.get_data()) > MIN_CONTENT_BYTES
    return _Page(number, text, chars, drawn)


def _probe(data: bytes, max_pages: int, max_pixels: int | None) -> list[_Page]:
    with pypdf.apply_configuration(PDF_LIMITS):
        reader = _open_pdf(data)
        count = _page_count(reader, max_pages)
        pages = []
        for index in range(count):
            try:
                pages.append(_probe_page(reader.pages[index], index + 1, max_pixels))
            except OcrIncomplete:
                raise
            except Exception as exc:
                raise OcrIncomplete("unreadable", f"page {index + 1} cannot be read: "
                                    f"{type(exc).__name__}: {exc}"[:300]) from None
        return pages


def _text_layer(pages: list[_Page]) -> tuple[PageText, ...] | None:
    if any(p.needs_ocr for p in pages) or sum(p.chars for p in pages) < MIN_PAGE_CHARS:
        return None
    return tuple(PageText(p.number, p.text) for p in pages)


def read_text_layer(pdf: bytes, max_pages: int = 50) -> tuple[PageText, ...] | None:
    """The text of every page of a PDF, or None when it needs OCR.

    None when a page that draws something (an image, or more than MIN_CONTENT_BYTES of
    content: outlined text) has fewer than MIN_PAGE_CHARS letters/digits - a scanned page,
    also inside an otherwise digital PDF - or when the whole document has almost no text.
    pypdf, not pdfminer.six: both keep French accents ("échéance", "Œ", "€") on reportlab
    standard-font and TrueType PDFs; pypdf has per-stream limits and is 2-5x faster.
    Text is NFC-normalised. Never uses Ghostscript or any external program.

    Raises OcrIncomplete('unreadable') for a file pypdf cannot read (or encrypted with a
    password), OcrIncomplete('too-many-pages') above ``max_pages``.
    """
    return _text_layer(_probe(pdf, max_pages, None))


# ---------------------------------------------------------------------------------------------
# Images


def image_to_pdf(image: bytes, settings: OcrSettings) -> bytes:
    """JPEG/PNG/TIFF (every TIFF frame a page) -> image-only PDF, EXIF orientation applied.

    Pillow's MAX_IMAGE_PIXELS is set from ``settings.max_image_mpixels`` and
    DecompressionBombWarning is an error; every frame's declared size is checked before it
    is decoded. Those Pillow settings are process-global, so ``ocr_document`` only calls this
    inside the OCR child; calling it in the daemon process is fine from one thread at a time.
    Raises OcrIncomplete: 'image-too-large', 'too-many-pages', 'unreadable'.
    """
    try:
        return ocrchild.image_to_pdf(image, max_pixels=settings.max_pixels,
                                     max_frames=settings.max_pages)
    except ocrchild.ChildError as exc:
        raise OcrIncomplete(exc.reason, exc.message) from None


# ---------------------------------------------------------------------------------------------
# The child process


def installation_problems(settings: OcrSettings) -> list[str]:
    """What keeps OCR from working here (empty: fine). For the self-check at start-up.

    tesseract must be on PATH with every configured language and 'osd' (rotate_pages).
    Ghostscript is not needed and not looked for.
    """
    tesseract = shutil.which("tesseract")
    if tesseract is None:
        return ["tesseract is not installed (apt install tesseract-ocr)"]
    try:
        listed = subprocess.run([tesseract, "--list-langs"], capture_output=True, text=True,
                                timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return [f"tesseract --list-langs failed: {exc}"]
    have = {line.strip() for line in listed.splitlines()[1:]}
    return [f"tesseract language '{lang}' is not installed (apt install tesseract-ocr-{lang})"
            for lang in (*settings.languages, "osd") if lang not in have]


def _exited_by(pid: int, deadline: float) -> bool:
    """True once ``pid`` has exited (it is left unreaped), False at ``deadline``."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        fd = -1
    if fd >= 0:
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            while (remaining := deadline - time.monotonic()) > 0:
                if poller.poll(math.ceil(remaining * 1000)):
                    return True
            return bool(poller.poll(0))
        finally:
            os.close(fd)
    delay = 0.005
    while True:  # no pidfd: poll without reaping
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _child_env(jobdir: Path, bindir: Path) -> dict[str, str]:
    env = {"PATH": str(bindir), "HOME": str(jobdir), "TMPDIR": str(jobdir / "tmp"),
           "LANG": "C.UTF-8", "MALLOC_ARENA_MAX": "2"}
    if "TESSDATA_PREFIX" in os.environ:
        env["TESSDATA_PREFIX"] = os.environ["TESSDATA_PREFIX"]
    return env


def _tail(path: Path, size: int = 400) -> str:
    try:
        data = path.read_bytes()[-size:]
    except OSError:
        return ""
    return " ".join(data.decode("utf-8", "replace").split())


def _run_child(data: bytes, kind: str, settings: OcrSettings,
               pages: list[int] | None) -> tuple[bytes, str, dict[str, Any]]:
    tesseract = shutil.which("tesseract")
    if tesseract is None:
        raise OcrIncomplete("crashed", "tesseract is not installed (not found on PATH)")
    with tempfile.TemporaryDirectory(prefix="facturd-ocr-", ignore_cleanup_errors=True) as tmp:
        jobdir = Path(tmp)
        bindir = jobdir / "bin"
        bindir.mkdir()
        (bindir / "tesseract").symlink_to(tesseract)
        (jobdir / "tmp").mkdir()
        (jobdir / "input").write_bytes(data)
        job = {"protocol": ocrchild.PROTOCOL, "kind": kind, "pages": pages,
               "parent_pid": os.getpid(), "languages": list(settings.languages),
               "timeout_seconds": settings.timeout_seconds, "memory_mb": settings.memory_mb,
               "max_pages": settings.max_pages, "max_image_mpixels": settings.max_image_mpixels,
               "tesseract_timeout": settings.tesseract_timeout, "jobs": settings.jobs}
        (jobdir / "job.json").write_text(json.dumps(job), encoding="utf-8")
        log_path = jobdir / "child.log"
        timed_out = False
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-I", str(CHILD_SCRIPT), str(jobdir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=jobdir,
                env=_child_env(jobdir, bindir), start_new_session=True, close_fds=True)
        deadline = time.monotonic() + settings.timeout_seconds
        try:
            if not _exited_by(proc.pid, deadline):
                timed_out = True
                _signal_group(proc.pid, signal.SIGTERM)
                if not _exited_by(proc.pid, time.monotonic() + KILL_GRACE_SECONDS):
                    _signal_group(proc.pid, signal.SIGKILL)
        finally:
            # Stragglers, if any, while the leader is an unreaped zombie: its pid (the
            # group id) cannot have been reused. Then reap it.
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        if timed_out:
            raise OcrIncomplete("timeout", f"OCR did not finish within "
                                f"{settings.timeout_seconds:g} s; the OCR process was stopped")
        try:
            result = json.loads((jobdir / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"exit status {proc.returncode}")
            raise OcrIncomplete("crashed", f"OCR process ended without a result ({how}) "
                                f"{_tail(log_path)}".strip()) from None
        if not result.get("ok"):
            reason = result.get("reason")
            raise OcrIncomplete(reason if reason in REASONS else "crashed",
                                str(result.get("message", ""))[:500])
        try:
            pdf = (jobdir / "output.pdf").read_bytes()
            sidecar = (jobdir / "sidecar.txt").read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise OcrIncomplete("crashed", f"OCR output missing: {exc}") from None
        return pdf, sidecar, result


def _sidecar_pages(sidecar: str) -> dict[int, str]:
    """Page number -> OCR text; pages ocrmypdf skipped are absent."""
    out: dict[int, str] = {}
    number = 1
    for entry in sidecar.split("\f"):
        skipped = _SKIPPED.fullmatch(entry.strip())
        if skipped:
            number = int(skipped[2] or skipped[1]) + 1
            continue
        out[number] = entry
        number += 1
    return out


def _output_page_count(pdf: bytes) -> int:
    try:
        with pypdf.apply_configuration(PDF_LIMITS):
            return len(pypdf.PdfReader(BytesIO(pdf), strict=False).pages)
    except Exception as exc:
        raise OcrIncomplete("crashed", f"OCR output unreadable: {exc}"[:300]) from None


def ocr_document(data: bytes, kind: str, settings: OcrSettings) -> OcrResult:
    """Text of a PDF or image, OCRing only what has no text. Blocking: run it on a worker
    thread. ``kind``: "pdf" | "image" (JPEG, PNG, TIFF). Raises OcrIncomplete."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    started = time.monotonic()
    probed: list[_Page] = []
    ocr_pages: list[int] | None = None
    if kind == "pdf":
        probed = _probe(data, settings.max_pages, settings.max_pixels)
        layer = _text_layer(probed)
        if layer is not None:
            return OcrResult(pdf=data, pages=layer, ocred=False,
                             seconds=time.monotonic() - started)
        wanted = [p.number for p in probed if p.needs_ocr] or \
                 [p.number for p in probed if p.chars < MIN_PAGE_CHARS]
        ocr_pages = None if len(wanted) == len(probed) else wanted

    pdf, sidecar, result = _run_child(data, kind, settings, ocr_pages)
    if result.get("tesseract_timeouts"):
        raise OcrIncomplete("timeout", f"tesseract gave up on {result['tesseract_timeouts']} "
                            f"page(s) after {settings.tesseract_timeout:g} s")
    ocr_text = _sidecar_pages(sidecar)
    count = len(probed) if probed else _output_page_count(pdf)
    wanted_set = set(ocr_pages) if ocr_pages is not None else set(range(1, count + 1))
    pages = []
    for number in range(1, count + 1):
        if number in wanted_set or not probed:
            text = _clean(ocr_text.get(number, ""))
        else:
            text = probed[number - 1].text
        pages.append(PageText(number, text))
    if sum(_chars(p.text) for p in pages) < MIN_DOCUMENT_CHARS:
        raise OcrIncomplete("no-text", "OCR found no text" + (
            f" ({'; '.join(result.get('warnings', [])[-2:])})" if result.get("warnings") else ""))
    return OcrResult(pdf=pdf, pages=tuple(pages), ocred=True,
                     seconds=time.monotonic() - started)
