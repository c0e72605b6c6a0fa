"""daemon/ocr.py on real pixels: ocrmypdf + tesseract in the child process, and the limits.

Real OCR runs are few and one page each (the scanned PDF, the phone photo); the timeout
tests stop tesseract early (a sleeping stub, or a tiny tesseract_timeout) and the bomb,
garbage and text-PDF tests never start tesseract at all.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pypdf
import pytest
from PIL import Image
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject, NumberObject

from daemon import ocrchild
from daemon.ocr import (
    OcrIncomplete,
    OcrSettings,
    image_to_pdf,
    installation_problems,
    ocr_document,
    read_text_layer,
)
from tests.scans import SAMPLE_INVOICE, SAMPLE_NUMBER, font_path, make_image_pdf, make_scan

FAST = OcrSettings(timeout_seconds=120.0)


# ---------------------------------------------------------------------------------------------
# helpers


def _procs() -> Iterator[tuple[int, str, str, int, int]]:
    """(pid, comm, state, ppid, pgrp) of every process, from /proc."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        yield int(entry), comm, fields[0], int(fields[1]), int(fields[2])


def _my_children() -> list[tuple[int, str, str]]:
    me = os.getpid()
    return [(pid, comm, state) for pid, comm, state, ppid, _ in _procs() if ppid == me]


def _group(pgid: int) -> list[tuple[int, str, str]]:
    return [(pid, comm, state) for pid, comm, state, _, pgrp in _procs() if pgrp == pgid]


@pytest.fixture(autouse=True)
def _no_leftover_children() -> Iterator[None]:
    yield
    assert _my_children() == [], "an OCR child (or a zombie) was left behind"


@pytest.fixture
def tesseract_only_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The daemon's PATH: tesseract, plus a ``gs`` that would leave a canary file if run."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "tesseract").symlink_to("/usr/bin/tesseract")
    canary = tmp_path / "gs-was-run"
    gs = bindir / "gs"
    gs.write_text(f"#!/bin/sh\ntouch {canary}\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    return canary


def _text_pdf() -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    ttf = font_path()
    if ttf is not None:
        pdfmetrics.registerFont(TTFont("Body", str(ttf)))
    c.setFont("Body" if ttf is not None else "Helvetica", 11)
    for i, line in enumerate(SAMPLE_INVOICE[1:]):
        c.drawString(72, 770 - 16 * i, line.replace("\t", "  "))
    c.setFont("Helvetica", 11)  # a standard-14 font (WinAnsi) too
    c.drawString(72, 400, "Échéance : 11/04/2024 - Œuvre déjà réglée")
    c.showPage()
    c.save()
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG that declares width x height 1-bit pixels: 'write small, declare huge'."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))


def _pdf_with_huge_image(width: int, height: int) -> bytes:
    writer = pypdf.PdfWriter()
    page = writer.add_blank_page(595, 842)
    image = DecodedStreamObject()
    image.set_data(b"\0" * 16)
    image.update({NameObject("/Type"): NameObject("/XObject"),
                  NameObject("/Subtype"): NameObject("/Image"),
                  NameObject("/Width"): NumberObject(width),
                  NameObject("/Height"): NumberObject(height),
                  NameObject("/BitsPerComponent"): NumberObject(1),
                  NameObject("/ColorSpace"): NameObject("/DeviceGray")})
    page[NameObject("/Resources")] = DictionaryObject({
        NameObject("/XObject"): DictionaryObject({NameObject("/Im0"): writer._add_object(image)})})
    content = DecodedStreamObject()
    content.set_data(b"q 595 0 0 842 0 0 cm /Im0 Do Q")
    page[NameObject("/Contents")] = writer._add_object(content)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# real OCR


def test_scanned_pdf_french_invoice_without_ghostscript(tesseract_only_path: Path) -> None:
    data = make_image_pdf(SAMPLE_INVOICE)
    assert read_text_layer(data) is None  # image-only: needs OCR

    result = ocr_document(data, "pdf", FAST)

    assert result.ocred is True
    assert [p.number for p in result.pages] == [1]
    text = result.pages[0].text
    assert SAMPLE_NUMBER in text
    assert "Total TTC" in text
    assert "échéance" in text
    assert "Société" in text
    # the output is searchable: its text layer reads back without OCR
    layer = read_text_layer(result.pdf)
    assert layer is not None and SAMPLE_NUMBER in layer[0].text
    # ocrmypdf never needed nor ran Ghostscript (PATH had only tesseract and a canary gs)
    assert not tesseract_only_path.exists()


def test_rotated_noisy_jpeg_photo() -> None:
    photo = make_scan(SAMPLE_INVOICE, dpi=200, rotate=2.0, noise=0.3, jpeg_quality=70, seed=7)

    result = ocr_document(photo, "image", FAST)

    assert result.ocred is True and len(result.pages) == 1
    text = result.pages[0].text
    assert SAMPLE_NUMBER in text
    assert "Total" in text
    assert pypdf.PdfReader(io.BytesIO(result.pdf)).pages[0].extract_text()


# ---------------------------------------------------------------------------------------------
# text PDFs never reach ocrmypdf


def test_text_pdf_is_read_not_ocred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _text_pdf()
    # Any OCR attempt would fail: no tesseract on PATH and a 1 ms wall-clock budget.
    monkeypatch.setenv("PATH", str(tmp_path))
    settings = OcrSettings(timeout_seconds=0.001)

    result = ocr_document(data, "pdf", settings)

    assert result.ocred is False
    assert result.pdf is data
    assert result.seconds < 1.0
    text = result.pages[0].text
    assert f"Facture n° {SAMPLE_NUMBER}" in text
    assert "Date d'échéance : 11/04/2024" in text
    assert "Échéance : 11/04/2024 - Œuvre déjà réglée" in text  # standard-14 font
    assert "Société Générale de Négoce" in text


def test_mixed_pdf_text_page_and_scanned_page_needs_ocr() -> None:
    writer = pypdf.PdfWriter()
    writer.append(pypdf.PdfReader(io.BytesIO(_text_pdf())))
    writer.append(pypdf.PdfReader(io.BytesIO(make_image_pdf(["Page 2", "Conditions"]))))
    out = io.BytesIO()
    writer.write(out)
    assert read_text_layer(out.getvalue()) is None  # the scanned page 2 must be OCRed


# ---------------------------------------------------------------------------------------------
# timeouts: the whole process group goes, nothing is left


class _Watcher(threading.Thread):
    """Records the OCR child (a child of this process), its process group and job folder."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.child: int | None = None
        self.jobdir: str | None = None
        self.members: set[str] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            for pid, comm, _state in _my_children():
                if comm.startswith("python"):
                    self.child = pid
                    with contextlib.suppress(OSError):
                        self.jobdir = os.readlink(f"/proc/{pid}/cwd")
            if self.child is not None:
                self.members |= {comm for _, comm, _ in _group(self.child)}
            time.sleep(0.02)


def _assert_all_gone(watcher: _Watcher) -> None:
    assert watcher.child is not None
    deadline = time.monotonic() + 2.0
    while _group(watcher.child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group(watcher.child) == []  # no process, no zombie (PID 1 here never reaps)
    assert watcher.jobdir is not None and not os.path.exists(watcher.jobdir)


def test_wall_clock_timeout_kills_tesseract_and_leaves_no_zombie(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # F-17: tesseract hangs. The stub answers ocrmypdf's version/language probes and then
    # sleeps instead of recognising anything.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stub = bindir / "tesseract"
    stub.write_text('#!/bin/sh\ncase "$*" in *--version*|*--list-langs*) '
                    'exec /usr/bin/tesseract "$@";; esac\nexec /bin/sleep 1000\n')
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    watcher = _Watcher()
    watcher.start()
    started = time.monotonic()
    with pytest.raises(OcrIncomplete) as caught:
        ocr_document(make_image_pdf(SAMPLE_INVOICE), "pdf", OcrSettings(timeout_seconds=8.0))
    elapsed = time.monotonic() - started
    watcher.stop.set()
    watcher.join()

    assert caught.value.reason == "timeout"
    assert "8 s" in str(caught.value)
    assert 8.0 <= elapsed < 8.0 + 3.0
    assert "sleep" in watcher.members  # the hung "tesseract" was running when time ran out
    _assert_all_gone(watcher)


def test_short_wall_clock_timeout_on_a_real_scan() -> None:
    watcher = _Watcher()
    watcher.start()
    started = time.monotonic()
    with pytest.raises(OcrIncomplete) as caught:
        ocr_document(make_image_pdf(SAMPLE_INVOICE), "pdf", OcrSettings(timeout_seconds=0.5))
    elapsed = time.monotonic() - started
    watcher.stop.set()
    watcher.join()
    assert caught.value.reason == "timeout"
    assert elapsed < 0.5 + 2.5
    _assert_all_gone(watcher)


def test_tesseract_timeout_is_not_silent_success() -> None:
    # ocrmypdf exits 0 with a blank text layer when tesseract times out: must not pass.
    with pytest.raises(OcrIncomplete) as caught:
        ocr_document(make_image_pdf(SAMPLE_INVOICE), "pdf",
                     OcrSettings(timeout_seconds=60.0, tesseract_timeout=0.01))
    assert caught.value.reason == "timeout"
    assert "tesseract gave up on 1 page(s)" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# bombs and garbage: refused quickly, nothing decoded


def test_pixel_bomb_image() -> None:
    bomb = _png_header(100_000, 100_000)
    assert len(bomb) < 200
    started = time.monotonic()
    with pytest.raises(OcrIncomplete) as caught:
        ocr_document(bomb, "image", OcrSettings())
    assert caught.value.reason == "image-too-large"
    assert time.monotonic() - started < 3.0  # a child start, Pillow header, no ocrmypdf
    with pytest.raises(OcrIncomplete) as again:  # the in-process helper refuses it as well
        image_to_pdf(bomb, OcrSettings())
    assert again.value.reason == "image-too-large"
    # just above the limit (warning level, not error level in Pillow): also refused
    with pytest.raises(OcrIncomplete) as near:
        image_to_pdf(_png_header(8000, 8000), OcrSettings(max_image_mpixels=50))
    assert near.value.reason == "image-too-large"


def test_pixel_bomb_inside_pdf_is_refused_before_any_child() -> None:
    started = time.monotonic()
    with pytest.raises(OcrIncomplete) as caught:
        ocr_document(_pdf_with_huge_image(100_000, 100_000), "pdf", OcrSettings())
    assert caught.value.reason == "image-too-large"
    assert time.monotonic() - started < 1.0


def test_page_size_bomb() -> None:
    writer = pypdf.PdfWriter()
    page = writer.add_blank_page(14400, 14400)
    page[NameObject("/UserUnit")] = NumberObject(75000)
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(OcrIncomplete) as caught:
        ocr_document(out.getvalue(), "pdf", OcrSettings())
    assert caught.value.reason == "image-too-large"


def test_page_bomb() -> None:
    writer = pypdf.PdfWriter()
    page = writer.add_blank_page(595, 842)
    for _ in range(499):
        writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    started = time.monotonic()
    with pytest.raises(OcrIncomplete) as caught:
        ocr_document(out.getvalue(), "pdf", OcrSettings(max_pages=50))
    assert caught.value.reason == "too-many-pages"
    assert "500" in str(caught.value)
    assert time.monotonic() - started < 1.0
    with pytest.raises(OcrIncomplete):
        read_text_layer(out.getvalue(), max_pages=50)


def test_multipage_tiff_frames_are_pages_and_counted() -> None:
    frames = [Image.new("L", (850, 1100), 255) for _ in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:], dpi=(100, 100))
    pdf = image_to_pdf(buf.getvalue(), OcrSettings())
    assert len(pypdf.PdfReader(io.BytesIO(pdf)).pages) == 3
    with pytest.raises(OcrIncomplete) as caught:
        ocr_document(buf.getvalue(), "image", OcrSettings(max_pages=2))
    assert caught.value.reason == "too-many-pages"


def test_exif_orientation_is_applied() -> None:
    im = Image.new("RGB", (400, 200), "white")  # stored landscape, shown portrait (tag 6)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif, dpi=(100, 100))
    box = pypdf.PdfReader(io.BytesIO(image_to_pdf(buf.getvalue(), OcrSettings()))).pages[0].mediabox
    assert float(box.height) > float(box.width)


@pytest.mark.parametrize("data", [
    bytes(range(256)) * 40,
    b"%PDF-1.7\n" + bytes(range(256)) * 40,
    b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n",  # truncated
])
def test_garbage_pdf_is_unreadable(data: bytes) -> None:
    with pytest.raises(OcrIncomplete) as caught:
        ocr_document(data, "pdf", OcrSettings())
    assert caught.value.reason == "unreadable"


def test_garbage_image_is_unreadable() -> None:
    with pytest.raises(OcrIncomplete) as caught:
        ocr_document(b"GIF89a" + bytes(range(256)) * 10, "image", OcrSettings())
    assert caught.value.reason == "unreadable"
    assert "JPEG/PNG/TIFF" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# settings and options


def test_settings_are_validated() -> None:
    for languages in ((), ("fra+eng",), ("../etc",), ("osd",)):
        with pytest.raises(ValueError):
            OcrSettings(languages=languages)
    with pytest.raises(ValueError):
        OcrSettings(timeout_seconds=0)
    with pytest.raises(ValueError):
        ocr_document(b"", "docx", OcrSettings())
    with pytest.raises(ValueError):
        OcrIncomplete("because")


def test_ocrmypdf_options_avoid_ghostscript() -> None:
    job = {"languages": ["fra", "eng"], "pages": [2, 3], "max_image_mpixels": 50.0,
           "tesseract_timeout": 120.0, "jobs": 1}
    options = ocrchild.ocr_options(job)
    assert options["rasterizer"] == "pypdfium"
    assert options["output_type"] == "pdf"
    assert options["pages"] == "2,3"
    assert options["deskew"] is options["rotate_pages"] is True
    assert options["progress_bar"] is False


def test_installation_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert installation_problems(OcrSettings(languages=("fra", "eng"))) == []
    assert installation_problems(OcrSettings(languages=("fra", "xyz"))) == [
        "tesseract language 'xyz' is not installed (apt install tesseract-ocr-xyz)"]
    monkeypatch.setenv("PATH", str(tmp_path))
    assert installation_problems(OcrSettings()) == [
        "tesseract is not installed (apt install tesseract-ocr)"]
