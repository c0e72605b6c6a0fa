"""The OCR child process: one document, ocrmypdf, inside resource limits. Run by daemon/ocr.py.

Started as ``python -I daemon/ocrchild.py JOBDIR`` in its own session (process group) with a
minimal environment. ``-I`` (isolated mode) keeps PYTHON* variables, the user site folder,
the current folder and this file's folder off ``sys.path``: the child imports only the
standard library, Pillow, pypdf and ocrmypdf, never the daemon package, so nothing from the
job folder or the daemon's folder can shadow a module. Reading ``JOBDIR``:

* ``job.json``  what to do: kind ("pdf" | "image"), languages, limits, the 1-based pages to
  OCR (null: all), the parent's pid;
* ``input``     the document bytes.

Written back: ``output.pdf`` (the searchable PDF), ``sidecar.txt`` (tesseract's text, pages
separated by form feeds, skipped page ranges as ``[OCR skipped on page(s) N-M]``) and
``result.json`` (``{"ok": true, ...}`` or ``{"ok": false, "reason": ..., "message": ...}``),
written last and atomically: no result.json means the child died.

Before the input is even read the child sets its own limits (inherited by tesseract):
RLIMIT_AS (memory), RLIMIT_CPU (a backstop above the wall-clock limit), RLIMIT_FSIZE and no
core files. It becomes a child subreaper and, on SIGTERM (sent by the parent at the
wall-clock limit, or by the kernel when the parent dies: PR_SET_PDEATHSIG) or on its own
SIGALRM backstop, it terminates its whole process group and reaps every child before
exiting, so no tesseract is left behind as a zombie even where PID 1 does not reap orphans
(containers without an init; this machine's sandbox).

ocrmypdf runs with the pypdfium rasterizer and plain PDF output, so Ghostscript is never
needed (the parent also leaves ``gs`` off the child's PATH). Network: neither ocrmypdf,
tesseract nor pypdfium fetch anything; no networked feature is enabled. Real network
isolation needs a namespace (systemd ``PrivateNetwork=``/``RestrictAddressFamilies=`` on the
service, or ``unshare -n``), outside this module.

``image_to_pdf`` lives here (and is re-exported by daemon/ocr.py) so that image decoding,
Pillow's C code, also runs under these limits.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import logging
import math
import os
import resource
import shutil
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from types import FrameType
from typing import Any

PROTOCOL = 1
IMAGE_FORMATS = ("JPEG", "PNG", "TIFF")  # Pillow reports some phone JPEGs as "MPO"
FILE_SIZE_LIMIT = 1024 * 1024 * 1024  # RLIMIT_FSIZE: no temp or output file above 1 GiB
A4_LONG_SIDE_INCHES = 11.69
REAP_GRACE_SECONDS = 1.0

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_job: dict[str, Any] = {}  # parent_pid and jobdir, for _terminate


class ChildError(Exception):
    """A document problem with one of daemon.ocr.OcrIncomplete's reasons."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# ---------------------------------------------------------------------------------------------
# Images -> PDF (also used in-process through daemon.ocr.image_to_pdf)


def image_to_pdf(image: bytes, *, max_pixels: int, max_frames: int) -> bytes:
    """JPEG/PNG/TIFF bytes (every TIFF frame) -> an image-only PDF, EXIF orientation applied.

    Raises ChildError: 'image-too-large' (a frame above ``max_pixels``: checked on the
    declared size before any pixel is decoded, and Pillow's own limit is set to the same
    value with DecompressionBombWarning turned into an error), 'too-many-pages' (more frames
    than ``max_frames``), 'unreadable' (not one of the accepted formats, or broken).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    previous_limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                im = Image.open(io.BytesIO(image), formats=IMAGE_FORMATS)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ChildError("image-too-large", f"image too large: {exc}") from None
            except UnidentifiedImageError:
                raise ChildError("unreadable", "not a readable JPEG/PNG/TIFF image") from None
            except (OSError, SyntaxError, ValueError) as exc:
                raise ChildError("unreadable",
                                 f"not a readable JPEG/PNG/TIFF image: {exc}"[:300]) from None
            with im:
                frames = int(getattr(im, "n_frames", 1) or 1)
                if im.format == "MPO":
                    frames = 1  # extra MPO frames are previews/depth maps, not pages
                if frames > max_frames:
                    raise ChildError("too-many-pages",
                                     f"image has {frames} frames, limit {max_frames}")
                pages: list[bytes] = []
                for index in range(frames):
                    try:
                        im.seek(index)
                        width, height = im.size
                        if width * height > max_pixels:
                            raise ChildError("image-too-large",
                                             f"frame {index + 1} is {width}x{height} pixels, "
                                             f"limit {max_pixels / 1e6:g} Mpixels")
                        frame = ImageOps.exif_transpose(im)
                        dpi = _page_dpi(im.info.get("dpi"), frame.size)
                        pages.append(_frame_pdf(_printable(frame), dpi))
                    except ChildError:
                        raise
                    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                        raise ChildError("image-too-large", f"image too large: {exc}") from None
                    except (OSError, SyntaxError, ValueError, EOFError) as exc:
                        raise ChildError("unreadable", f"image frame {index + 1} cannot be "
                                         f"decoded: {exc}"[:300]) from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    if len(pages) == 1:
        return pages[0]
    import pypdf

    writer = pypdf.PdfWriter()
    for page_pdf in pages:
        writer.append(pypdf.PdfReader(io.BytesIO(page_pdf)))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _page_dpi(declared: Any, size: tuple[int, int]) -> float:
    """The declared resolution when it gives a plausible paper size, else "fit to A4".

    Phone photos say 72 dpi (a 4000-pixel photo would become a 55-inch page); scans say
    their real resolution.
    """
    try:
        dpi = float(declared[0])
    except (TypeError, ValueError, IndexError):
        dpi = 0.0
    long_side = max(size)
    if 100.0 <= dpi <= 1200.0 and long_side / dpi <= 17.0:  # up to A3
        return dpi
    return max(50.0, long_side / A4_LONG_SIDE_INCHES)


def _printable(frame: Any) -> Any:
    """Convert to a mode Pillow's PDF writer keeps well: 1 (CCITT G4), L or RGB (JPEG)."""
    from PIL import Image

    mode = frame.mode
    if mode in ("1", "L", "RGB"):
        return frame
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        scale = 1 / 256 if mode.startswith("I;16") or frame.getextrema()[1] > 255 else 1
        return frame.convert("I").point(lambda v: v * scale).convert("L")
    if mode in ("RGBA", "LA", "PA", "P", "RGBa", "La"):
        rgba = frame.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return frame.convert("RGB")


def _frame_pdf(frame: Any, dpi: float) -> bytes:
    out = io.BytesIO()
    frame.save(out, "PDF", resolution=dpi, quality=95)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Process hygiene


def _terminate(signum: int, _frame: FrameType | None) -> None:
    """Stop everything this child started, reap it, exit. Runs on SIGTERM/SIGALRM."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.killpg(0, signal.SIGTERM)  # tesseract & co.; we ignore SIGTERM now
    deadline = time.monotonic() + REAP_GRACE_SECONDS
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if time.monotonic() > deadline:
                os.killpg(0, signal.SIGKILL)  # includes us: last resort
            time.sleep(0.01)
    if _job and os.getppid() != _job["parent_pid"]:  # orphaned: nobody else will clean up
        shutil.rmtree(_job["jobdir"], ignore_errors=True)
    os._exit(128 + signum)


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _limit(which: int, soft: int, hard: int | None = None) -> None:
    """Lower a limit; never try to raise it above a hard limit the service already set."""
    _, current = resource.getrlimit(which)
    hard = soft if hard is None else hard
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(which, (soft, hard))


def _harden(job: dict[str, Any], jobdir: Path) -> None:
    _job.update(parent_pid=int(job["parent_pid"]), jobdir=str(jobdir))
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGALRM, _terminate)
    memory = int(job["memory_mb"]) * 1024 * 1024
    _limit(resource.RLIMIT_AS, memory)
    cpu = math.ceil(float(job["timeout_seconds"])) + 10
    _limit(resource.RLIMIT_CPU, cpu, cpu + 5)
    _limit(resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT)
    _limit(resource.RLIMIT_CORE, 0)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != int(job["parent_pid"]):  # the parent died before PDEATHSIG was set
        _terminate(int(signal.SIGTERM), None)
    signal.alarm(math.ceil(float(job["timeout_seconds"])) + 5)  # parent alive but stuck


# ---------------------------------------------------------------------------------------------
# OCR


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # an unformattable log line is not a crash
            self.messages.append(record.getMessage()[:500])


def ocr_options(job: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments for ``ocrmypdf.ocr`` (names checked against ocrmypdf 17.13)."""
    pages = job.get("pages")
    return {
        "language": list(job["languages"]),
        "output_type": "pdf",          # plain PDF: PDF/A would need Ghostscript
        "rasterizer": "pypdfium",      # never Ghostscript for page images
        "mode": "force",               # only pages without text are sent (see `pages`)
        "pages": ",".join(str(p) for p in pages) if pages else None,
        "deskew": True,
        "rotate_pages": True,
        "max_image_mpixels": float(job["max_image_mpixels"]),
        "skip_big": float(job["max_image_mpixels"]),
        "tesseract_timeout": float(job["tesseract_timeout"]),
        "tesseract_non_ocr_timeout": float(job["tesseract_timeout"]),
        "jobs": int(job["jobs"]),
        "use_threads": True,
        "optimize": 1,                 # lossless only; no pngquant, no jbig2 needed
        "progress_bar": False,
        # The output is a derived copy; the caller archives the original bytes unchanged.
        "invalidate_digital_signatures": True,
    }


def run(job: dict[str, Any], jobdir: Path) -> dict[str, Any]:
    if job.get("protocol") != PROTOCOL:
        raise ChildError("crashed", f"protocol mismatch: {job.get('protocol')!r}")
    source = jobdir / "input"
    if job["kind"] == "image":
        max_pixels = int(float(job["max_image_mpixels"]) * 1_000_000)
        pdf = image_to_pdf(source.read_bytes(), max_pixels=max_pixels,
                           max_frames=int(job["max_pages"]))
        source = jobdir / "image.pdf"
        source.write_bytes(pdf)

    logging.raiseExceptions = False
    collect = _Collect()
    root = logging.getLogger()
    root.addHandler(collect)
    root.setLevel(logging.WARNING)

    import ocrmypdf
    from ocrmypdf import exceptions as ocr_exc
    from PIL import Image

    try:
        ocrmypdf.ocr(source, jobdir / "output.pdf", sidecar=jobdir / "sidecar.txt",
                     **ocr_options(job))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ChildError("image-too-large", f"image too large: {exc}"[:300]) from None
    except (ocr_exc.InputFileError, ocr_exc.EncryptedPdfError,
            ocr_exc.UnsupportedImageFormatError, ocr_exc.DpiError) as exc:
        raise ChildError("unreadable", f"{type(exc).__name__}: {exc}"[:300]) from None
    except MemoryError:
        raise
    except Exception as exc:
        detail = "; ".join(collect.messages[-3:])
        raise ChildError("crashed", f"ocrmypdf failed: {type(exc).__name__}: {exc} "
                         f"{detail}"[:500]) from None
    timeouts = sum("took too long" in m for m in collect.messages)
    return {"ok": True, "tesseract_timeouts": timeouts, "warnings": collect.messages[-20:]}


def _write_result(jobdir: Path, result: dict[str, Any]) -> None:
    tmp = jobdir / "result.json.tmp"
    tmp.write_text(json.dumps(result), encoding="utf-8")
    tmp.replace(jobdir / "result.json")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: ocrchild.py JOBDIR", file=sys.stderr)
        return 2
    jobdir = Path(argv[1])
    job = json.loads((jobdir / "job.json").read_text(encoding="utf-8"))
    _harden(job, jobdir)
    try:
        result = run(job, jobdir)
    except ChildError as exc:
        result = {"ok": False, "reason": exc.reason, "message": exc.message}
    except MemoryError:
        result = {"ok": False, "reason": "crashed",
                  "message": f"out of memory (limit {job['memory_mb']} MB)"}
    except Exception as exc:
        traceback.print_exc()
        result = {"ok": False, "reason": "crashed",
                  "message": f"{type(exc).__name__}: {exc}"[:500]}
    _write_result(jobdir, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
