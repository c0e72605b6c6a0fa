"""The scheduler: sales invoices, accountant shares, digests and the Schematron of received
e-invoices, every ``interval`` seconds.

Job: once per tick, on a worker thread, run ``send_ready`` (daemon/sales.py: new sales drafts
sent, or declined once with the reason; skipped when no settings are given), then
``share_due`` (daemon/sharing.py), then ``send_digests`` (daemon/digest.py) with the time
given by ``clock``, then ``check_received`` (daemon/conformance.py) on at most
``schematron_per_tick`` documents (0: off). Each decides for itself what is due, so a tick
that finds nothing to do costs a few queries. Sales go first so that an invoice delivered to
a hosted customer in this tick is shared with the accountant in the same tick; the
Schematron goes last, being the slowest and the least urgent.

May touch: what those four touch (the outbox, document states, internal deliveries,
``shared_at``, ``last_digest_at``, approval tokens, documents' conformance, events), always
from its own thread,
never on the event loop.

Errors: each tick is independent: failing sales or shares do not stop the digests; an
exception is logged and the same work is tried again at the next tick (nothing is marked
done unless its transaction committed). Several schedulers (several nodes, or the daemon and
the systemd timer ``facturd-digest.timer``) are safe: digests use a compare-and-set on
``last_digest_at``, shares a conditional ``shared_at`` update and sales a compare-and-set on
the document's version and state.

Known limits: one dedicated thread (so one database connection, closed at the end) rather
than ``asyncio.to_thread``'s shared pool, where peewee would open a connection per pool
thread and never close it; the first tick runs at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from daemon.conformance import check_received
from daemon.digest import DigestSettings, send_digests
from daemon.logs import clean
from daemon.sales import SalesSettings, send_ready
from daemon.schematron_server import SchematronServer
from daemon.sharing import ShareSettings, share_due
from storage.db import TRANSIENT_ERRORS
from storage.store import Store

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


def tick(store: Store, digest_settings: DigestSettings, share_settings: ShareSettings,
         now: datetime, sales_settings: SalesSettings | None = None,
         schematron_per_tick: int = 0, schematron: SchematronServer | None = None) -> None:
    """One round: sales invoices, shares, digests, then the Schematron of received
    e-invoices; blocking (run it on a worker thread)."""
    if sales_settings is not None:
        try:
            for sale in send_ready(store, sales_settings, now):
                log.info("scheduler: sales document %d %s: %s", sale.document_id,
                         sale.result, clean(sale.detail))
        except TRANSIENT_ERRORS as exc:
            log.warning("scheduler: sales invoices postponed: %s", clean(str(exc)))
        except Exception:
            log.exception("scheduler: sales invoices failed; retried at the next tick")
    try:
        for shared in share_due(store, share_settings, now):
            if shared.error:
                log.warning("scheduler: accountant share for %s: %s", shared.vat,
                            clean(shared.error))
    except TRANSIENT_ERRORS as exc:
        log.warning("scheduler: accountant shares postponed: %s", clean(str(exc)))
    except Exception:
        log.exception("scheduler: accountant shares failed; retried at the next tick")
    try:
        for vat, outcome in send_digests(store, digest_settings, now):
            if outcome.startswith("error"):
                log.warning("scheduler: digest for %s: %s", vat, clean(outcome))
    except TRANSIENT_ERRORS as exc:
        log.warning("scheduler: digests postponed: %s", clean(str(exc)))
    except Exception:
        log.exception("scheduler: digests failed; retried at the next tick")
    if schematron_per_tick > 0:
        try:
            check_received(store, schematron_per_tick, server=schematron)
        except TRANSIENT_ERRORS as exc:
            log.warning("scheduler: Schematron checks postponed: %s", clean(str(exc)))
        except Exception:
            log.exception("scheduler: Schematron checks failed; retried at the next tick")


async def run_scheduler(store: Store, digest_settings: DigestSettings,
                        share_settings: ShareSettings, stop: asyncio.Event,
                        clock: Callable[[], datetime] = utc_now,
                        interval: float = 60.0,
                        sales_settings: SalesSettings | None = None,
                        schematron_per_tick: int = 0) -> None:
    """Tick every ``interval`` seconds until ``stop`` is set (a tick in progress ends)."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(1, thread_name_prefix="scheduler")
    schematron = SchematronServer()  # its child starts at the first check, lives until stop
    log.info("scheduler: %sdigests and accountant shares every %gs",
             "sales invoices, " if sales_settings is not None else "", interval)
    try:
        while not stop.is_set():
            try:
                await loop.run_in_executor(pool, tick, store, digest_settings,
                                           share_settings, clock(), sales_settings,
                                           schematron_per_tick, schematron)
            except Exception:  # tick() catches its own; this is the clock or the pool
                log.exception("scheduler: tick failed; retried in %gs", interval)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        with contextlib.suppress(Exception):
            await loop.run_in_executor(pool, store.db.close)  # this thread's connection
        with contextlib.suppress(Exception):
            await loop.run_in_executor(pool, schematron.close)
        pool.shutdown(wait=False)
