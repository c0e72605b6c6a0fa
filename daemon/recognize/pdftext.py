"""The text layer of a PDF, laid out in columns, for field recognition.

Job: ``read_pdf_text(pdf)`` returns the text of every page with its horizontal layout kept
(pypdf's layout mode: a label and its value stay on one line, table columns stay aligned),
pages separated by form feeds, accents kept. Falls back to pdfminer.six when pypdf yields
nothing for a page.

What it may touch: the bytes it is given; pypdf runs under the same stream limits as the
Factur-X reader (``daemon.einvoice.PDF_LIMITS``). No disk, no network.

Limits: at most ``MAX_PAGES`` pages are read; an image-only PDF returns (almost) no text, and
the caller should OCR it; a PDF that cannot be parsed raises ``UnreadablePdf``.
"""

from __future__ import annotations

from io import BytesIO

import pypdf
from pypdf.errors import PyPdfError

from daemon.einvoice import PDF_LIMITS

MAX_PAGES = 20


class UnreadablePdf(ValueError):
    """The PDF cannot be parsed (corrupt, encrypted, or beyond the processing limits)."""


def read_pdf_text(pdf: bytes) -> str:
    """Text of a PDF's pages in layout mode, pages separated by ``\\f``."""
    pages: list[str] = []
    try:
        with pypdf.apply_configuration(PDF_LIMITS):
            reader = pypdf.PdfReader(BytesIO(pdf), strict=False)
            if reader.is_encrypted and not reader.decrypt(""):
                raise UnreadablePdf("the PDF is encrypted")
            for index, page in enumerate(reader.pages):
                if index >= MAX_PAGES:
                    break
                try:
                    text = page.extract_text(extraction_mode="layout")
                except (PyPdfError, ValueError, KeyError, TypeError, ZeroDivisionError):
                    text = ""
                if not text.strip():
                    text = _pdfminer_page(pdf, index)
                pages.append(text)
    except UnreadablePdf:
        raise
    except (PyPdfError, ValueError, RecursionError, MemoryError, KeyError, TypeError) as exc:
        raise UnreadablePdf(f"cannot read the PDF: {exc}"[:300]) from None
    return clean_text("\f".join(pages))


def clean_text(text: str) -> str:
    """Join surrogate pairs some PDFs' text comes out with; lone surrogates become U+FFFD
    (so the text can be stored as UTF-8)."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _pdfminer_page(pdf: bytes, index: int) -> str:
    try:
        from pdfminer.high_level import extract_text
        from pdfminer.layout import LAParams
    except ImportError:  # pragma: no cover - pdfminer is a test/bench extra here
        return ""
    try:
        return str(extract_text(BytesIO(pdf), page_numbers=[index],
                                laparams=LAParams(line_margin=0.3)))
    except Exception:  # pdfminer raises many unrelated types on malformed input
        return ""
