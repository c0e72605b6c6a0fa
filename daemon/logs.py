"""Logging set-up: one line per event, control characters escaped (no log injection)."""

from __future__ import annotations

import logging
import sys

_ESCAPES = {i: f"\\x{i:02x}" for i in range(32) if i != 9}
_ESCAPES[0x7F] = "\\x7f"


def clean(text: str, limit: int = 300) -> str:
    """Text from the outside world, safe for a log line: no CR/LF, bounded length."""
    text = text.translate(_ESCAPES)
    return text if len(text) <= limit else text[:limit] + "…"


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.replace("\r", "\\r").replace("\n", "\n    ")


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter
    # factur-x logs every XSD failure at ERROR; facturd records the result on the document.
    logging.getLogger("factur-x").setLevel(logging.CRITICAL)
    # peewee logs every statement with its parameters at DEBUG: blob bytes, password and
    # token hashes. Never, whatever log_level says.
    logging.getLogger("peewee").setLevel(logging.INFO)
