"""Field recognition from the text of an invoice (PDF text layer or OCR output).

Job: ``recognize(text)`` reads number, dates, parties, identifiers, totals, VAT breakdown,
amount due and payment reference from French, English and Dutch/Belgian invoices, each with a
confidence that reaches 0.9 only when validated (check digits, arithmetic, plausibility);
``read_pdf_text(pdf)`` gives the text layer to feed it.

Design: labels are found first (``lexicon``), values next to them (``locate``); identifiers
are kept only when their check digits hold (``ids``); totals are chosen as the labelled
combination that reconciles (``totals``); seller and buyer are separated by the buyer's block
and our own VAT (``parties``); the rest is in ``fields``; ``recognizer`` assembles it all and
applies the supplier memory.

What it may touch: nothing but its arguments (no disk, no network, no clock unless ``today``
is omitted).
"""

from __future__ import annotations

from daemon.recognize.model import CONFIDENT, FIELDS, Recognition, SupplierMemory
from daemon.recognize.pdftext import UnreadablePdf, read_pdf_text
from daemon.recognize.recognizer import recognize, visible_total

__all__ = ["CONFIDENT", "FIELDS", "Recognition", "SupplierMemory", "UnreadablePdf",
           "read_pdf_text", "recognize", "visible_total"]
