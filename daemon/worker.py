"""The work role: claim deliveries, run the pipeline, commit results exactly once.

Job: loop on the job queue; claim jobs in batches and run them on a dedicated thread (the
event loop only waits), renew the leases while they run, and commit each job's documents,
events and end state in a transaction guarded by its lease. The reading stages run outside
any transaction; the deciding stages and the saves of a segment of jobs (those read within
worker.batch_seconds) share one transaction, one savepoint per job, so many small jobs cost
one commit and a duplicate made earlier in the same batch is seen. Errors say what happens next:
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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from daemon.approval import request_approval
from daemon.auth import AuthSettings, authenticate
from daemon.config import Config
from daemon.decisions import ApprovalSettings
from daemon.faults import TransientFault
from daemon.logs import clean
from daemon.mailparse import MailRejected, parse_mail
from daemon.pipeline import DECIDE_STAGES, READ_STAGES, PermanentError, Work, run_stages
from daemon.reading import ReadingSettings
from daemon.replies import handle_reply, is_reply_tag
from daemon.settings import approval_settings, ocr_settings
from storage import records
from storage.blobs import BlobCorrupt, BlobMissing
from storage.db import TRANSIENT_ERRORS
from storage.policy import BatchPolicy
from storage.queue import Job, LeaseLost, Queue
from storage.store import Store

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (
    TransientFault, *TRANSIENT_ERRORS, OSError, TimeoutError)


@dataclass
class _Batch:
    """What the jobs of one claimed batch read alike: their folders and policy, once."""

    policy: BatchPolicy
    folders: dict[int, records.Folder] = field(default_factory=dict)

    def folder(self, store: Store, folder_id: int) -> records.Folder:
        if folder_id not in self.folders:
            folder = store.folder(folder_id)
            assert folder is not None, "deliveries reference folders (foreign key)"
            self.folders[folder_id] = folder
        return self.folders[folder_id]


@dataclass
class _Read:
    """A job after its reading stages: Work to decide and save, or what to record."""

    job: Job
    work: Work | None = None
    state: str | None = None  # already finished (a reply, a lost lease)
    retry: str | None = None
    quarantine: str | None = None


def _failed(job: Job, exc: Exception) -> _Read:
    """What an error in a job's stages means: a lost lease discards the results; a message
    that can never be processed (or whose original is unreadable) is quarantined; transient
    errors, and anything unexpected (logged with its traceback), are retried."""
    if isinstance(exc, LeaseLost):
        log.warning("delivery %d: lease lost, results discarded", job.delivery.id)
        return _Read(job, state="lease-lost")
    if isinstance(exc, PermanentError):
        return _Read(job, quarantine=str(exc))
    if isinstance(exc, BlobMissing | BlobCorrupt):
        return _Read(job, quarantine=f"original message unreadable: {exc}")
    if isinstance(exc, TRANSIENT):
        return _Read(job, retry=f"{type(exc).__name__}: {exc}")
    log.error("delivery %d: internal error", job.delivery.id, exc_info=exc)
    return _Read(job, retry=f"internal error: {type(exc).__name__}: {exc}")


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

    # ---- jobs (run on the worker thread) ---------------------------------------------------
    def claim_batch(self) -> list[Job]:
        return self.queue.claim_many(self.name, self.cfg.worker.lease_seconds,
                                     self.cfg.worker.batch_size)

    def process_batch(self, jobs: list[Job]) -> list[str]:
        """Run claimed jobs to their end states, committing results in segments: reading
        (parse, DNS, OCR: no lock held) for as many jobs as fit in worker.batch_seconds, then
        one transaction that decides and saves them all (one commit, one fsync)."""
        states: list[str] = []
        batch = _Batch(BatchPolicy(self.store))
        index = 0
        while index < len(jobs):
            started = time.monotonic()
            segment: list[_Read] = []
            while index < len(jobs) and (
                    not segment or time.monotonic() - started < self.cfg.worker.batch_seconds):
                segment.append(self._read(jobs[index], batch))
                index += 1
            states.extend(self._commit(segment))
        return states

    def _read(self, job: Job, batch: _Batch) -> _Read:
        """The reading stages of one job, outside any transaction; errors are kept for
        _commit, which records retries and quarantines with the other results."""
        max_attempts = self.cfg.worker.max_attempts
        if job.delivery.attempts > max_attempts:
            return _Read(job, quarantine=f"gave up: the worker stopped {max_attempts} times "
                                         "while processing this message")
        try:
            folder = batch.folder(self.store, job.delivery.folder_id)
            raw = self.store.blobs.get(job.message.sha256)
            if is_reply_tag(job.delivery.tag):
                return _Read(job, state=self._reply(job, raw))
            work = Work(job=job, folder=folder, raw=raw, store=self.store,
                        auth_settings=self.auth_settings, now=self.store.clock(),
                        reading=self.reading, shared_policy=batch.policy)
            run_stages(work, READ_STAGES)
            if not self.store.blobs_in_db:
                self.store.blobs.put_many(work.blobs.items())
            return _Read(job, work=work)
        except Exception as exc:
            return _failed(job, exc)

    def _commit(self, segment: list[_Read]) -> list[str]:
        """Decide and save a segment's jobs in one transaction, each under a savepoint (a job
        whose lease was lost, or whose saving failed, is rolled back alone)."""
        states: list[str] = []
        try:
            with self.store.write_transaction():
                for read in segment:
                    states.append(self._finish(read))
        except Exception as exc:  # the commit itself failed (disk full, database gone)
            error = f"results not committed: {type(exc).__name__}: {exc}"
            log.warning("%d job(s): %s", len(segment), clean(error))
            return [r.state if r.state is not None else self._retry_or_wait(r.job, error)
                    for r in segment]
        self.processed += sum(1 for s in states if s == records.DONE)
        return states

    def _finish(self, read: _Read) -> str:
        job = read.job
        if read.state is not None:
            return read.state
        if read.quarantine is not None:
            return self._quarantine(job, read.quarantine)
        if read.retry is not None:
            return self._retry(job, read.retry)
        assert read.work is not None
        try:
            with self.store.write_transaction():  # a savepoint inside _commit's transaction
                run_stages(read.work, DECIDE_STAGES)
                self._save(read.work)
        except Exception as exc:
            return self._finish(_failed(job, exc))
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
                events = [("received", f"from message M{delivery.message_id}, part "
                                       f"{item.part}")] if created else []
                if changed:  # a re-run that decided the same: no new events, no new mail
                    events += item.events
                store.add_events(events, folder_id=delivery.folder_id,
                                 delivery_id=delivery.id, document_id=doc_id)
                if not changed:
                    continue
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

    def _retry_or_wait(self, job: Job, error: str) -> str:
        """Record a retry; when even that cannot be written, the lease runs out and another
        claim retries the job."""
        try:
            return self._retry(job, error)
        except Exception as exc:
            log.warning("delivery %d: retry not recorded (%s); it is taken again when its "
                        "lease expires", job.delivery.id, clean(str(exc)))
            return "lease-expiry"

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
                    jobs = await loop.run_in_executor(pool, self.claim_batch)
                except TRANSIENT as exc:
                    log.warning("cannot claim jobs: %s", clean(str(exc)))
                    jobs = []
                if not jobs:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.cfg.worker.poll_seconds)
                    continue
                await self._run_jobs(loop, pool, jobs)
            await loop.run_in_executor(pool, self.store.db.close)

    async def _run_jobs(self, loop: asyncio.AbstractEventLoop, pool: ThreadPoolExecutor,
                        jobs: list[Job]) -> None:
        task = loop.run_in_executor(pool, self.process_batch, jobs)
        period = self.cfg.worker.lease_seconds / 3
        while True:
            done, _ = await asyncio.wait({task}, timeout=period)
            if done:
                await task
                return
            with contextlib.suppress(*TRANSIENT):
                await asyncio.to_thread(self.queue.renew_many, jobs,
                                        self.cfg.worker.lease_seconds)


async def run_worker(cfg: Config, store: Store, stop: asyncio.Event) -> None:
    await Worker(cfg, store).run(stop)
