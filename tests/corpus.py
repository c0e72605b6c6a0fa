"""Where the third-party corpus is: $FACTURD_CORPUS, else ../shared/corpus beside this checkout
(how CI lays it out), else /work/shared/corpus. Tests that need it skip, with that reason,
when none exists; nothing from it is ever copied into the repository."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def find_corpus() -> Path:
    candidates = [Path(os.environ["FACTURD_CORPUS"])] if os.environ.get("FACTURD_CORPUS") else []
    candidates += [ROOT.parent / "shared" / "corpus", Path("/work/shared/corpus")]
    return next((c for c in candidates if (c / "MANIFEST.tsv").is_file()), candidates[0])


CORPUS = find_corpus()
