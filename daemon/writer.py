"""Group-commit writer: the only path by which received mail reaches the disk.

Job: take intake items from the event loop, make them durable in batches on one thread
(blob fsync + one database commit per batch), and resolve each caller's future only after
the commit returned. Concurrent SMTP sessions therefore share fsyncs instead of queueing
behind each other, and the event loop never waits on disk.

Known limits: one thread per process; a batch that fails fails every item in it (each
sender then gets 451 and retries, which is correct but coarse).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from typing import Any

from storage.records import IntakeItem, IntakeResult
from storage.store import Store

log = logging.getLogger(__name__)

_STOP = object()


class IntakeWriter:
    def __init__(self, store: Store, max_batch: int = 64) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="intake-writer", daemon=True)
        self.batches = 0
        self.items = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what was submitted, then stop."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    async def submit(self, item: IntakeItem) -> IntakeResult:
        fut: concurrent.futures.Future[IntakeResult] = concurrent.futures.Future()
        self._queue.put((item, fut))
        return await asyncio.wrap_future(fut)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                batch.append(nxt)
            self._write(batch)
        if not self.store.db.is_closed():
            self.store.db.close()  # this thread's connection

    def _write(self, batch: list[tuple[IntakeItem, concurrent.futures.Future[IntakeResult]]],
               ) -> None:
        live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = self.store.record_intake([item for item, _ in live])
        except BaseException as exc:  # every caller must hear about it, whatever it is
            log.error("intake batch of %d failed: %s: %s", len(live), type(exc).__name__, exc)
            for _, fut in live:
                fut.set_exception(exc)
            return
        self.batches += 1
        self.items += len(live)
        for (_, fut), result in zip(live, results, strict=True):
            fut.set_result(result)
