"""The job queue: deliveries claimed by workers under an expiring lease.

Job: hand each queued delivery to exactly one worker at a time, take it back from a worker
that died (its lease expired), and record how a job ended: done, retried later (doubling
backoff, decided by the caller), or quarantined with a reason a person can read.

PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` so many workers on many nodes never wait on
each other. SQLite: one writer at a time (``BEGIN IMMEDIATE``) and a compare-and-set update.
A claim counts an attempt, so a message that kills its worker every time is quarantined after
``max_attempts`` instead of looping forever.

``finish`` commits a job's results and its end state in the caller's transaction only while
the lease is still ours: a worker that lost its lease cannot write anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import peewee as pw

from storage import models, records, sql
from storage.sales import AUTH_PATIENCE, TEMPERROR_TEXT
from storage.store import Store, _delivery, _message


class LeaseLost(Exception):
    """The job was taken over by another worker: this worker's results must be discarded."""


@dataclass(frozen=True)
class Job:
    delivery: records.Delivery
    message: records.Message
    worker: str


class Queue:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _claimable(self) -> pw.Expression:
        D = models.Delivery
        now = self.store.clock()
        return (((D.state == records.QUEUED) & (D.next_attempt_at <= now))
                | ((D.state == records.RUNNING) & (D.lease_until < now)))

    def claim(self, worker: str, lease_seconds: float) -> Job | None:
        jobs = self.claim_many(worker, lease_seconds, 1)
        return jobs[0] if jobs else None

    def claim_many(self, worker: str, lease_seconds: float, limit: int) -> list[Job]:
        """Up to ``limit`` due jobs in one transaction (one commit for the whole batch), oldest
        first. Each one counts an attempt. Committed before any of them is processed, so a
        message that kills the worker still reaches max_attempts."""
        D = models.Delivery
        with self.store.write_transaction():
            q = (D.select(D.id).where(self._claimable()).order_by(D.next_attempt_at, D.id)
                 .limit(max(1, limit)))
            if self.store.is_postgres:
                q = q.for_update(skip_locked=True)
            ids = [int(row.id) for row in q]
            if not ids:
                return []
            now = self.store.clock()
            (D.update(state=records.RUNNING, leased_by=worker,
                      lease_until=now + timedelta(seconds=lease_seconds),
                      attempts=D.attempts + 1, updated_at=now)
             .where(D.id.in_(ids) & self._claimable()).execute())
            # The rows are locked (SKIP LOCKED / the SQLite write lock): all were taken.
            deliveries: list[Any] = list(
                D.select().where(D.id.in_(ids) & (D.leased_by == worker)
                                 & (D.state == records.RUNNING))
                .order_by(D.next_attempt_at, D.id))
            messages = {int(m.id): m for m in models.Message.select().where(
                models.Message.id.in_({int(d.message_id) for d in deliveries}))}
        return [Job(_delivery(d), _message(messages[int(d.message_id)]), worker)
                for d in deliveries]

    def renew_many(self, jobs: list[Job], lease_seconds: float) -> int:
        """Extend the leases this worker still holds; returns how many it still holds."""
        if not jobs:
            return 0
        D = models.Delivery
        now = self.store.clock()
        with self.store.write_transaction():
            return int(D.update(lease_until=now + timedelta(seconds=lease_seconds))
                       .where(D.id.in_([j.delivery.id for j in jobs])
                              & (D.leased_by == jobs[0].worker)
                              & (D.state == records.RUNNING)).execute())

    def finish(self, job: Job, state: str, error: str = "",
               retry_in: float | None = None) -> None:
        """Set the end state; call inside the transaction that stores the job's results.
        Raises LeaseLost (the caller's transaction must roll back) if the job is not ours."""
        D = models.Delivery
        now = self.store.clock()
        values: dict[str, object] = {"state": state, "last_error": error[:4000],
                                     "lease_until": None, "leased_by": "", "updated_at": now}
        if retry_in is not None:
            values["next_attempt_at"] = now + timedelta(seconds=retry_in)
        fields = [getattr(D, name) for name in values]  # hot path: storage/sql.py
        assignments = ", ".join(f'"{f.column_name}" = ?' for f in fields)
        changed = sql.execute(
            f'UPDATE "delivery" SET {assignments} WHERE "id" = ? AND "leased_by" = ?'
            ' AND "state" = ?', [f.db_value(values[f.name]) for f in fields]
            + [job.delivery.id, job.worker, records.RUNNING]).rowcount
        if not changed:
            raise LeaseLost(f"delivery {job.delivery.id} is no longer leased by {job.worker}")

    def requeue(self, delivery_id: int, actor: str = "cli") -> bool:
        """A person asks for a quarantined delivery to be tried again (attempts reset)."""
        D = models.Delivery
        now = self.store.clock()
        with self.store.write_transaction():
            changed = D.update(state=records.QUEUED, attempts=0, next_attempt_at=now,
                               last_error="", updated_at=now).where(
                (D.id == delivery_id) & (D.state == records.QUARANTINED)).execute()
            if changed:
                self.store.add_event("requeued", "quarantine lifted by an operator",
                                     actor=actor, delivery_id=delivery_id)
        return bool(changed)

    def requeue_auth_pending(self, older_than_seconds: float) -> list[int]:
        """Deliveries whose documents wait as auth-pending (a DNS failure at verification)
        go back to the queue to be verified again; a re-run updates the same documents (and
        the message's verdict, which is what a waiting sales draft needs)."""
        D, Doc = models.Delivery, models.Document
        now = self.store.clock()
        cutoff = now - timedelta(seconds=older_than_seconds)
        with self.store.write_transaction():
            waiting = (Doc.select(Doc.delivery).where(
                (Doc.state == "pending_approval") & (Doc.reasons.contains("auth-pending:"))
                & (Doc.updated_at <= cutoff) & Doc.delivery.is_null(False)).distinct())
            ids = [int(getattr(r, "delivery_id")) for r in waiting]  # noqa: B009
            # sales drafts whose sender could not be verified (daemon/sales.py waits for
            # them): the message's verdict is temperror; spaced by the delivery's last run
            M = models.Message
            sales = (D.select(D.id).join(M, on=(D.message == M.id))
                     .join(Doc, on=(Doc.delivery == D.id))
                     .where((Doc.direction == "sales") & (Doc.state == "draft")
                            & M.auth.contains(TEMPERROR_TEXT) & (D.updated_at <= cutoff)
                            & (Doc.created_at >= now - AUTH_PATIENCE)
                            & (D.state == records.DONE)).distinct())
            ids += [int(r.id) for r in sales if int(r.id) not in ids]
            if ids:
                D.update(state=records.QUEUED, attempts=0, next_attempt_at=now,
                         updated_at=now).where(
                    D.id.in_(ids) & (D.state == records.DONE)).execute()
                for delivery_id in ids:
                    self.store.add_event("reverify", "sender authentication was pending (DNS)"
                                         "; verifying again", actor="worker",
                                         delivery_id=delivery_id)
        return ids
