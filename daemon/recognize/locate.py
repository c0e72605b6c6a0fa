"""Where a label's value is: to its right, below it in the same column, or on the next line.

Job: given a label ``Hit``, return the text spans that can hold its value, in order of
preference: the rest of its line up to the next label ("right"), the cells below that overlap
the label's column, stopping at another label ("below", for headers over values), and the
start of the next non-empty line when the label stands alone ("next", for reading-order text).

What it may touch: nothing (pure functions over a ``Doc`` and its label hits).

Limits: "below" needs column-preserving text; in reading-order text only "right" and "next"
work, and values printed in a separate block far from their labels are not paired here (the
totals module pairs amounts by arithmetic instead).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from daemon.recognize.lexicon import Hit
from daemon.recognize.text import Doc

T = TypeVar("T")
V = TypeVar("V")
Labels = dict[int, list[Hit]]
Extract = Callable[[str, int, int, int], list[tuple[int, int, T]]]
"""(line text, line index, start col, end col) -> [(start, end, value)] in that span."""

HOW_FACTOR = {"right": 1.0, "below": 0.9, "next": 0.8}


@dataclass(frozen=True)
class Found(Generic[V]):
    """A value found for a label: where, and how it was reached."""

    value: V
    line: int
    start: int
    end: int
    how: str


def right_span(doc: Doc, labels: Labels, hit: Hit) -> tuple[int, int]:
    """Columns after ``hit`` on its line, up to the next label."""
    end = len(doc.lines[hit.line])
    for other in labels.get(hit.line, ()):
        if other.start >= hit.end:
            end = min(end, other.start)
    return hit.end, end


def header_span(doc: Doc, hit: Hit) -> tuple[int, int]:
    """The label's columns, widened to its cell when the cell holds only this label."""
    cell = doc.cell_at(hit.line, hit.start)
    if cell is not None and cell.start >= hit.start - 12 and cell.end <= hit.end + 12:
        return min(cell.start, hit.start), max(cell.end, hit.end)
    return hit.start, hit.end


def next_nonempty(doc: Doc, line: int, limit: int = 3) -> Iterator[int]:
    seen = 0
    for j in range(line + 1, len(doc.lines)):
        if doc.lines[j].strip():
            yield j
            seen += 1
            if seen >= limit:
                return


def find_values(doc: Doc, labels: Labels, hit: Hit, extract: Extract[T], *,
                below: bool = True, nxt: bool = True, max_down: int = 3) -> list[Found[T]]:
    """Values for ``hit``: right of it; else below it; else at the start of the next line."""
    line = doc.lines[hit.line]
    start, end = right_span(doc, labels, hit)
    found = [Found(v, hit.line, s, e, "right") for s, e, v in extract(line, hit.line, start, end)]
    if found:
        return found
    if below:
        found = _row_pair(doc, labels, hit, extract) or _below(doc, labels, hit, extract,
                                                               max_down)
        if found:
            return found
    if nxt and not line[start:end].strip(" :.-#°"):
        for j in next_nonempty(doc, hit.line, 1):
            if labels.get(j) and labels[j][0].start < 2:
                break
            text = doc.lines[j]
            lead = len(text) - len(text.lstrip())
            cells = doc.cells[j]
            stop = cells[0].end if cells else len(text)
            found = [Found(v, j, s, e, "next") for s, e, v in extract(text, j, lead, stop)
                     if s <= lead + 2]
    return found


def _row_pair(doc: Doc, labels: Labels, hit: Hit, extract: Extract[T]) -> list[Found[T]]:
    """A row of k labels over a row of k values, columns lost (OCR, reading order):
    the label's rank in its row picks the value of the same rank."""
    hits = labels.get(hit.line, [])
    folded = doc.folded[hit.line]
    if len(hits) < 2 or len(folded) > 400:
        return []
    free = list(folded)
    for h in hits:
        free[h.start:h.end] = " " * (h.end - h.start)
    if re.search(r"[a-z0-9]", "".join(free)):
        return []
    for j in next_nonempty(doc, hit.line, 1):
        if labels.get(j):
            return []
        items = value_items(doc.lines[j], doc.folded[j])
        if len(items) != len(hits):
            return []
        s, e = items[hits.index(hit)]
        return [Found(v, j, a, b, "below") for a, b, v in extract(doc.lines[j], j, s, e)]
    return []


def value_items(line: str, folded: str) -> list[tuple[int, int]]:
    """Spans of the values on a line: dates and amounts whole, other words one by one."""
    from daemon.recognize.amounts import find_amounts
    from daemon.recognize.dates import find_dates

    spans = [(t.start, t.end) for t in find_dates(folded)]
    spans += [(a.start, a.end) for a in find_amounts(line)
              if (a.decimals or a.currency) and not any(s <= a.start < e for s, e in spans)]
    for m in re.finditer(r"\S+", line):
        if not any(s < m.end() and m.start() < e for s, e in spans) and \
                re.search(r"\w", m.group(0)):  # "~", "_", "|": scanner dust, not a value
            spans.append((m.start(), m.end()))
    return sorted(spans)


def _below(doc: Doc, labels: Labels, hit: Hit, extract: Extract[T],
           max_down: int) -> list[Found[T]]:
    lo, hi = header_span(doc, hit)
    for j in next_nonempty(doc, hit.line, max_down):
        if any(o.start < hi + 1 and lo < o.end + 1 for o in labels.get(j, ())):
            return []  # another label sits in this column: the value below is its own
        for cell in doc.cells[j]:
            if cell.overlaps(lo, hi, 1):
                found = [Found(v, j, s, e, "below")
                         for s, e, v in extract(doc.lines[j], j, cell.start, cell.end)]
                if found:
                    return found
    return []
