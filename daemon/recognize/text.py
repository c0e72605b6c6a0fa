"""Invoice text as lines and cells, normalized for matching.

Job: turn the text of an invoice (a PDF text layer in layout mode, or OCR output) into a
``Doc``: lines with typographic variants unified, a same-length "folded" copy (lower case, no
accents) for label matching, and "cells" (runs of text separated by two or more spaces, a tab
or a bar) with their column positions, so that a label can find its value to its right or
below it in the same column.

What it may touch: nothing (pure functions).

Limits: columns are character offsets; they line up only when the text keeps the layout
(``pdftotext -layout``, pypdf layout mode). Plain reading-order text still works: values are
then looked for after the label and on the next lines.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

GROUP_SPACE = "\u202f"
"""Digit-group space kept from the source (NBSP, narrow NBSP, thin or figure space)."""

_SPECIAL_SPACES = "\u00a0\u202f\u2009\u2007\u2008\u200a\u2002\u2003\u2004\u2005\u2006"
_DIGIT_SPACE = re.compile(rf"(?<=\d)[{_SPECIAL_SPACES}](?=\d)")
_OTHER_SPACE = re.compile(rf"[{_SPECIAL_SPACES}\u3000]")
_REPLACE = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u2032": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
    "\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
    "\u2116": "N°", "\u00ba": "°", "\u02da": "°", "\t": "    ", "\r": "", "\f": "\n",
    "\u200b": "", "\ufeff": "", "\u00ad": "",
})
_CELL_GAP = re.compile(r" {2,}|\s\|\s|\|")


@dataclass(frozen=True)
class Cell:
    """A run of text on one line; ``start``/``end`` are character columns."""

    line: int
    start: int
    end: int
    text: str

    def overlaps(self, start: int, end: int, slack: int = 1) -> bool:
        return self.start < end + slack and start < self.end + slack


@dataclass(frozen=True)
class Doc:
    """Normalized lines, their folded twins (same length) and their cells."""

    lines: tuple[str, ...]
    folded: tuple[str, ...]
    cells: tuple[tuple[Cell, ...], ...]
    pages: tuple[int, ...] = ()  # page number (0-based) of each line; pages split on \f

    def cell_at(self, line: int, pos: int) -> Cell | None:
        for cell in self.cells[line]:
            if cell.start <= pos < cell.end:
                return cell
        return None

    def next_cell(self, line: int, pos: int) -> Cell | None:
        """The first cell starting at or after ``pos`` on ``line``."""
        for cell in self.cells[line]:
            if cell.start >= pos:
                return cell
        return None


def normalize(text: str) -> str:
    """Unify spaces, dashes, quotes and ligatures; keep digit-group spaces as U+202F."""
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    text = unicodedata.normalize("NFC", text)
    text = _DIGIT_SPACE.sub(GROUP_SPACE, text)
    text = text.translate(_REPLACE)
    text = _OTHER_SPACE.sub(" ", text)
    return "\n".join(line.rstrip() for line in text.split("\n"))


def fold(line: str) -> str:
    """Lower case without accents, same length as ``line`` (one char for one char)."""
    out = []
    for ch in line:
        if ch.isascii():
            out.append(ch.lower())
            continue
        base = unicodedata.normalize("NFKD", ch)
        kept = [c for c in base if not unicodedata.combining(c)]
        out.append(kept[0].lower() if len(kept) == 1 else ch.lower()[:1] or " ")
    return "".join(out)


def split_cells(index: int, line: str) -> tuple[Cell, ...]:
    cells = []
    pos = 0
    for gap in _CELL_GAP.finditer(line):
        if gap.start() > pos and line[pos:gap.start()].strip():
            cells.append(_cell(index, line, pos, gap.start()))
        pos = gap.end()
    if pos < len(line) and line[pos:].strip():
        cells.append(_cell(index, line, pos, len(line)))
    return tuple(cells)


def _cell(index: int, line: str, start: int, end: int) -> Cell:
    while start < end and line[start] == " ":
        start += 1
    return Cell(index, start, end, line[start:end])


MAX_LINE = 600


def _wrap(line: str) -> list[str]:
    """Lines longer than MAX_LINE (a PDF whose text came out as one line) cut at spaces,
    so that no per-line step works on a whole document at once."""
    if len(line) <= MAX_LINE:
        return [line]
    parts = []
    while len(line) > MAX_LINE:
        cut = line.rfind(" ", MAX_LINE // 2, MAX_LINE)
        cut = cut if cut > 0 else MAX_LINE
        parts.append(line[:cut])
        line = line[cut:].lstrip(" ")
    return [*parts, line]


def make_doc(text: str) -> Doc:
    lines: list[str] = []
    pages: list[int] = []
    for number, page in enumerate(text.split("\f")):
        page_lines = [part for line in normalize(page).split("\n") for part in _wrap(line)]
        lines.extend(page_lines)
        pages.extend([number] * len(page_lines))
    return Doc(tuple(lines), tuple(fold(line) for line in lines),
               tuple(split_cells(i, line) for i, line in enumerate(lines)), tuple(pages))
