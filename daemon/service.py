"""Run facturd's roles in one process on one event loop.

Job: open storage (migrations applied), take the role lock, start the listeners and
background tasks of the requested roles, tell systemd we are ready, keep the watchdog fed,
and on SIGTERM/SIGINT stop accepting, let in-flight transactions finish, then exit.

Roles: receive (SMTP/LMTP intake), work (pipeline, replies, and the scheduler: sales
invoices, digests and accountant sharing), web (approval pages), send (outgoing mail).
``serve`` runs them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from daemon import sdnotify
from daemon.config import Config
from daemon.intake import FolderDirectory, IntakeHandler, ReplyTokens, SpaceGuard
from daemon.listeners import SessionLimits, start_listener
from daemon.settings import approval_settings, sales_settings, send_settings
from daemon.writer import IntakeWriter
from storage.store import Store

log = logging.getLogger(__name__)

ALL_ROLES = ("receive", "work", "web", "send")
NOT_BUILT: dict[str, str] = {}


class RoleFailed(RuntimeError):
    """A listener could not start, or a role's task ended with an error: the process stops
    (systemd restarts it and the journal says why) rather than run with a role missing."""


class AlreadyRunning(RuntimeError):
    pass


def lock_role(state: Path, name: str) -> IO[str]:
    """One process per role and state folder (flock, released by the kernel on any exit)."""
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    fh = open(state / f"{name}.lock", "a+")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise AlreadyRunning(f"another facturd {name} is running on {state}") from None
    fh.truncate(0)
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def open_store(cfg: Config) -> Store:
    cfg.state_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Store.open(cfg.database_url, cfg.blob_backend, cfg.blob_path)


async def run(cfg: Config, roles: tuple[str, ...],
              ready: Callable[[], Awaitable[None]] | None = None) -> None:
    store = open_store(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    servers: list[asyncio.AbstractServer] = []
    tasks: list[asyncio.Task[None]] = []
    writer: IntakeWriter | None = None
    for role in roles:
        if role in NOT_BUILT:
            log.warning("%s", NOT_BUILT[role])
    try:
        if "receive" in roles:
            writer = IntakeWriter(store)
            writer.start()
            try:
                servers = await _start_intake(cfg, store, writer)
            except OSError as exc:
                raise RoleFailed(f"receive role: cannot listen: {exc}") from exc
        if "work" in roles:
            from daemon.worker import run_worker

            tasks.append(asyncio.create_task(run_worker(cfg, store, stop), name="worker"))
            from daemon.cli_digest import digest_settings, share_settings
            from daemon.scheduler import run_scheduler

            ttl = timedelta(days=cfg.web.token_ttl_days)
            tasks.append(asyncio.create_task(run_scheduler(
                store, digest_settings(cfg, cfg.public_url, ttl), share_settings(cfg), stop,
                interval=cfg.worker.schedule_seconds, sales_settings=sales_settings(cfg),
                schematron_per_tick=cfg.worker.schematron_per_tick),
                name="scheduler"))
        if "web" in roles and cfg.web_listen is not None:
            from daemon.web import run_web

            listen = cfg.web_listen
            tasks.append(asyncio.create_task(run_web(
                store, approval_settings(cfg), listen.host, listen.path or listen.port, stop,
                trusted_proxies=cfg.web.trusted_proxies), name="web"))
        if "send" in roles:
            from daemon.outbox import run_sender

            tasks.append(asyncio.create_task(run_sender(send_settings(cfg), store, stop),
                                             name="sender"))
        tasks.append(asyncio.create_task(_watchdog(stop), name="watchdog"))
        sdnotify.notify("READY=1\nSTATUS=facturd running: " + ", ".join(roles))
        log.info("facturd ready (%s); state in %s", ", ".join(roles), cfg.state_path)
        if ready is not None:
            await ready()
        failure = await _until_stop_or_failure(stop, tasks)
        sdnotify.notify("STOPPING=1")
        log.info("stopping")
        if failure is not None:
            raise failure
    finally:
        for server in servers:
            server.close()
        for server in servers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 10)
        stop.set()
        for task in tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                if task.done():  # its error, if any, was reported above
                    continue
                await asyncio.wait_for(task, 30)
        if writer is not None:
            await asyncio.to_thread(writer.stop)
        store.close()


async def _until_stop_or_failure(stop: asyncio.Event, tasks: list[asyncio.Task[None]]
                                 ) -> RoleFailed | None:
    """Wait for the stop signal; a task that ends with an error (say, the web role cannot
    listen on its port) stops everything and is returned as the reason. Tasks that simply
    finish (the watchdog outside systemd) do not count."""
    stopper = asyncio.create_task(stop.wait(), name="stop")
    pending: set[asyncio.Future[Any]] = {stopper, *tasks}
    try:
        while not stop.is_set():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is stopper or task.cancelled() or task.exception() is None:
                    continue
                exc = task.exception()
                name = task.get_name() if isinstance(task, asyncio.Task) else "task"
                log.error("%s failed: %s: %s; stopping", name, type(exc).__name__, exc)
                stop.set()
                return RoleFailed(f"{name} failed: {type(exc).__name__}: {exc}")
            if pending == {stopper}:
                await stopper
        return None
    finally:
        stopper.cancel()


async def _start_intake(cfg: Config, store: Store,
                        writer: IntakeWriter) -> list[asyncio.AbstractServer]:
    directory = FolderDirectory(store)
    space_paths = [cfg.state_path]
    if cfg.blob_backend == "files":
        cfg.blob_path.mkdir(parents=True, exist_ok=True, mode=0o700)
        space_paths.append(cfg.blob_path)
    space = SpaceGuard(space_paths, cfg.intake.min_free_mb)
    limits = SessionLimits(cfg.intake.max_sessions, cfg.intake.max_sessions_per_ip)
    servers = []
    for listen, lmtp in ((cfg.smtp_listen, False), (cfg.lmtp_listen, True)):
        if listen is None:
            continue
        handler = IntakeHandler(domain=cfg.domain, directory=directory, writer=writer,
                                space=space, max_recipients=cfg.intake.max_recipients,
                                lmtp=lmtp, replies=ReplyTokens(store))
        servers.append(await start_listener(listen, handler, cfg.intake, cfg.hostname, limits))
    if not servers:
        log.warning("receive role: neither smtp.listen nor lmtp.listen is set")
    return servers


async def _watchdog(stop: asyncio.Event) -> None:
    interval = sdnotify.watchdog_interval()
    if interval is None:
        return
    while not stop.is_set():
        sdnotify.notify("WATCHDOG=1")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
