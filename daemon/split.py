"""Several invoices in one PDF: find the page ranges that belong to different invoices.

Job: from the text of each page, decide where a new invoice starts, and cut the PDF into one
file per invoice (pypdf, pages copied as they are). A page starts a new invoice when it
carries an invoice number different from the one of the range so far; pages without a number
(continuations, terms, annexes) stay with the range before them. "Page 1/2"-style markers are
not needed, and one invoice over several pages whose number is repeated on each page stays
whole.

Known limits: two invoices with the same number in one file stay together; a first page
whose number cannot be read joins the next numbered range.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pypdf

from daemon.recognize import recognize


@dataclass(frozen=True)
class PageRange:
    first: int  # 0-based, inclusive
    last: int  # 0-based, inclusive
    number: str | None

    def label(self) -> str:
        if self.first == self.last:
            return f"{self.first + 1}"
        return f"{self.first + 1}-{self.last + 1}"


def find_ranges(pages: list[str], own_vat: str | None = None) -> list[PageRange]:
    """Page ranges of the invoices in a document, in order (one range = not split)."""
    numbers: list[str | None] = []
    for text in pages:
        rec = recognize(text, own_vat=own_vat) if text.strip() else None
        number = rec.fields.get("number") if rec is not None else None
        confident = rec is not None and rec.confident("number")
        numbers.append(str(number) if number and confident else None)
    ranges: list[PageRange] = []
    start, current = 0, None
    for index, number in enumerate(numbers):
        if number is None:
            continue
        if current is None:
            current = number
        elif number != current:
            ranges.append(PageRange(start, index - 1, current))
            start, current = index, number
    ranges.append(PageRange(start, len(pages) - 1, current))
    return ranges


def cut_pdf(pdf: bytes, page_range: PageRange) -> bytes:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    writer = pypdf.PdfWriter()
    for index in range(page_range.first, page_range.last + 1):
        writer.add_page(reader.pages[index])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
