"""The work role: claim deliveries, run the pipeline, commit results exactly once.

Job: loop on the job queue; run each job's pipeline on a dedicated thread (the event loop
only waits), renew the lease while it runs, and commit the documents, their events and the
job's end state in one transaction guarded by the lease. Errors say what happens next:
transient (database busy, disk full, injected faults) -> retried with doubling backoff;
permanent (a mail that cannot be processed safely) -> quarantined at once with its reason;
anything else -> retried, then quarantined as an internal error. The original message is
never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from daemon.approval import request_approval
from daemon.auth import AuthSettings, authenticate
from daemon.config import Config
from daemon.decisions import ApprovalSettings
from daemon.faults import TransientFault
from daemon.logs import clean
from daemon.mailparse import MailRejected, parse_mail
from daemon.pipeline import PermanentError, Work, run_pipeline
from daemon.reading import ReadingSettings
from daemon.replies import handle_reply, is_reply_tag
from daemon.settings import approval_settings, ocr_settings
from storage import records
from storage.blobs import BlobCorrupt, BlobMissing
from storage.db import TRANSIENT_ERRORS
from storage.queue import Job, LeaseLost, Queue
from storage.store import Store

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (
    TransientFault, *TRANSIENT_ERRORS, OSError, TimeoutError)


class Worker:
    def __init__(self, cfg: Config, store: Store, name: str | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.queue = Queue(store)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.processed = 0
        self.approvals: ApprovalSettings | None = None
        try:
            self.approvals = approval_settings(cfg)
        except ValueError as exc:
            log.warning("approval requests disabled: %s", exc)
        self.reading = ReadingSettings(
            ocr=ocr_settings(cfg),
            enrich=cfg.enrich.enabled,
            schematron_timeout=cfg.enrich.schematron_timeout_seconds)
        a = cfg.auth
        self.auth_settings = AuthSettings(nameservers=a.nameservers,
                                          dns_timeout=a.dns_timeout_seconds,
                                          authserv_ids=a.authserv_ids, alignment=a.alignment)

    # ---- one job (runs on the worker thread) ----------------------------------------------
    def claim(self) -> Job | None:
        return self.queue.claim(self.name, self.cfg.worker.lease_seconds)

    def process(self, job: Job) -> str:
        """Run one job to its end state; returns that state."""
        max_attempts = self.cfg.worker.max_attempts
        if job.delivery.attempts > max_attempts:
            return self._quarantine(job, f"gave up: the worker stopped {max_attempts} times "
                                         "while processing this message")
        try:
            folder = self.store.folder(job.delivery.folder_id)
            assert folder is not None, "deliveries reference folders (foreign key)"
            raw = self.store.blobs.get(job.message.sha256)
            if is_reply_tag(job.delivery.tag):
                return self._reply(job, raw)
            work = Work(job=job, folder=folder, raw=raw, store=self.store,
                        auth_settings=self.auth_settings, now=self.store.clock(),
                        reading=self.reading)
            run_pipeline(work)
            self._save(work)
        except LeaseLost:
            log.warning("delivery %d: lease lost, results discarded", job.delivery.id)
            return "lease-lost"
        except PermanentError as exc:
            return self._quarantine(job, str(exc))
        except (BlobMissing, BlobCorrupt) as exc:
            return self._quarantine(job, f"original message unreadable: {exc}")
        except TRANSIENT as exc:
            return self._retry(job, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            log.exception("delivery %d: internal error", job.delivery.id)
            return self._retry(job, f"internal error: {type(exc).__name__}: {exc}")
        self.processed += 1
        return records.DONE

    def _reply(self, job: Job, raw: bytes) -> str:
        """A reply to an approval request: act on it (at most once), never make documents."""
        try:
            parsed = parse_mail(raw)
        except MailRejected as exc:
            raise PermanentError(f"{exc.reason}: {exc}") from exc
        if self.approvals is None:
            raise PermanentError("a reply to an approval request arrived, but approvals are "
                                 "disabled (web.public_url or outgoing.from_address invalid)")
        verdict = authenticate(raw, self.auth_settings)
        outcome = handle_reply(self.store, self.approvals, tag=job.delivery.tag, raw=raw,
                               verdict=verdict, parsed=parsed,
                               mail_from=job.message.mail_from)
        with self.store.write_transaction():
            self.store.set_message_auth(job.delivery.message_id, verdict.to_json())
            self.store.add_event("reply", outcome, actor="worker",
                                 folder_id=job.delivery.folder_id, delivery_id=job.delivery.id)
            self.queue.finish(job, records.DONE)
        log.info("delivery %d (reply): %s", job.delivery.id, clean(outcome))
        return records.DONE

    def _save(self, work: Work) -> None:
        store = self.store
        if not store.blobs_in_db:
            store.blobs.put_many(work.blobs.items())
        delivery = work.job.delivery
        with store.write_transaction():
            if store.blobs_in_db:
                store.blobs.put_many(work.blobs.items())
            if work.verdict is not None:
                store.set_message_auth(delivery.message_id, work.verdict.to_json())
            for item in work.items:
                doc = records.Document(
                    id=0, folder_id=delivery.folder_id, delivery_id=delivery.id,
                    part=item.part, direction=delivery.direction, state=item.state,
                    source=item.source, original_sha256=item.original_sha256,
                    enriched_sha256=str(item.extra.get("enriched_sha256", "")),
                    filename=item.filename, media_type=item.media_type,
                    reasons=item.reasons, trace=item.trace, extra=item.extra,
                    **item.fields,
                )
                doc_id, created, changed = store.documents.upsert(doc)
                if created:
                    store.add_event("received", f"from message M{delivery.message_id}, part "
                                    f"{item.part}", folder_id=delivery.folder_id,
                                    delivery_id=delivery.id, document_id=doc_id)
                if not changed:
                    continue  # a re-run that decided the same: no new events, no new mail
                for kind, detail in item.events:
                    store.add_event(kind, detail, folder_id=delivery.folder_id,
                                    delivery_id=delivery.id, document_id=doc_id)
                if item.state == "pending_approval" and self.approvals is not None:
                    asked = request_approval(store, self.approvals, doc_id)
                    if asked:
                        store.add_event("approval-requested", ", ".join(asked),
                                        folder_id=delivery.folder_id, document_id=doc_id)
            self.queue.finish(work.job, records.DONE)
        log.info("delivery %d: %s", delivery.id,
                 ", ".join(f"part {i.part} {i.state}" for i in work.items))

    def _retry(self, job: Job, error: str) -> str:
        attempts = job.delivery.attempts
        if attempts >= self.cfg.worker.max_attempts:
            return self._quarantine(job, f"gave up after {attempts} attempts: {error}")
        delay = self.cfg.worker.backoff_seconds * 2 ** (attempts - 1)
        log.warning("delivery %d: attempt %d failed (%s); retry in %.1fs", job.delivery.id,
                    attempts, clean(error), delay)
        with contextlib.suppress(LeaseLost), self.store.write_transaction():
            self.queue.finish(job, records.QUEUED, error, retry_in=delay)
            self.store.add_event("retry", f"attempt {attempts}: {error}", actor="worker",
                                 folder_id=job.delivery.folder_id, delivery_id=job.delivery.id)
        return records.QUEUED

    def _quarantine(self, job: Job, reason: str) -> str:
        log.error("delivery %d quarantined: %s", job.delivery.id, clean(reason))
        with contextlib.suppress(LeaseLost), self.store.write_transaction():
            self.queue.finish(job, records.QUARANTINED, reason)
            self.store.add_event("quarantined", reason, actor="worker",
                                 folder_id=job.delivery.folder_id, delivery_id=job.delivery.id)
        return records.QUARANTINED

    # ---- the loop (event loop side) --------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        reverified_at = 0.0
        with ThreadPoolExecutor(1, thread_name_prefix="worker") as pool:
            while not stop.is_set():
                if loop.time() - reverified_at >= min(60.0, self.cfg.auth.reverify_seconds):
                    reverified_at = loop.time()
                    with contextlib.suppress(*TRANSIENT):
                        await loop.run_in_executor(
                            pool, self.queue.requeue_auth_pending, self.cfg.auth.reverify_seconds)
                try:
                    job = await loop.run_in_executor(pool, self.claim)
                except TRANSIENT as exc:
                    log.warning("cannot claim jobs: %s", clean(str(exc)))
                    job = None
                if job is None:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.cfg.worker.poll_seconds)
                    continue
                await self._run_job(loop, pool, job)
            await loop.run_in_executor(pool, self.store.db.close)

    async def _run_job(self, loop: asyncio.AbstractEventLoop, pool: ThreadPoolExecutor,
                       job: Job) -> None:
        task = loop.run_in_executor(pool, self.process, job)
        period = self.cfg.worker.lease_seconds / 3
        while True:
            done, _ = await asyncio.wait({task}, timeout=period)
            if done:
                await task
                return
            await asyncio.to_thread(self.queue.renew, job, self.cfg.worker.lease_seconds)


async def run_worker(cfg: Config, store: Store, stop: asyncio.Event) -> None:
    await Worker(cfg, store).run(stop)
