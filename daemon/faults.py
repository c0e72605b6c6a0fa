"""Fault points for tests: inert unless $FACTURD_FAULTS names them.

``FACTURD_FAULTS="stage.facturx=kill,stage.parse=transient*2"``:
  kill        SIGKILL this process when the point is reached (crash mid-stage)
  transient   raise TransientFault (the worker retries with backoff)
  ``*N``      fire only the first N times in this process
"""

from __future__ import annotations

import os
import signal
from collections import Counter


class TransientFault(Exception):
    """An injected transient failure."""


_fired: Counter[str] = Counter()


def _plan() -> dict[str, tuple[str, int | None]]:
    plan: dict[str, tuple[str, int | None]] = {}
    for entry in os.environ.get("FACTURD_FAULTS", "").split(","):
        point, _, action = entry.strip().partition("=")
        if not point or not action:
            continue
        kind, _, times = action.partition("*")
        plan[point] = (kind, int(times) if times.isdigit() else None)
    return plan


def hit(point: str) -> None:
    if "FACTURD_FAULTS" not in os.environ:
        return
    entry = _plan().get(point)
    if entry is None:
        return
    kind, times = entry
    if times is not None and _fired[point] >= times:
        return
    _fired[point] += 1
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "transient":
        raise TransientFault(f"injected transient fault at {point}")
