"""The send role: deliver outbox rows to a relay (or a folder), retry, give up, alert.

Job: claim one outbox row at a time (database calls on one dedicated thread, the event loop
only waits), DKIM-sign it when a key is configured and the bytes are not signed yet, and
either hand it to an SMTP relay (aiosmtplib) or write ``<message-id>.eml`` into the outbox
folder atomically (temp, fsync, rename, fsync dir). The stored bytes never change, so every
resend carries the same Message-ID (at-least-once delivery; recipients can spot a duplicate).

What happens next, by error:
  * 250 (or the file is durable)                  -> ``sent``
  * 4xx, connection refused/lost, timeout, TLS,
    authentication or EHLO trouble, local I/O     -> retried with doubling backoff
  * 5xx to MAIL FROM / RCPT TO / DATA, an invalid
    recipient, unreadable stored bytes            -> ``failed`` at once, operator alerted
  * still failing ``max_age_hours`` after queuing -> ``failed``, operator alerted
The operator alert is an ``operator_alert`` outbox row written in the same transaction as the
``failed`` state (never for a failed alert itself: that one is only logged).

May touch: the outbox (storage/outbox.py), the outbox folder, the relay, the credentials and
DKIM key files (read only).

Known limits: one message at a time per process, one connection per message; a partial
refusal (some recipients accepted) is recorded as sent with the refusals in ``last_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiosmtplib

from daemon import mailer
from daemon.logs import clean
from storage.blobs import BlobCorrupt, BlobMissing, fsync_dir, write_durably
from storage.db import TRANSIENT_ERRORS
from storage.outbox import OutboxItem, OutboxStore
from storage.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")

MODES = ("file", "relay")
SECURITIES = ("starttls", "tls", "none")
_EML_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")


@dataclass(frozen=True)
class SendSettings:
    mode: str = "file"  # file | relay
    outbox_dir: Path = Path("var/outbox")
    relay_host: str = ""
    relay_port: int = 587
    relay_security: str = "starttls"  # starttls | tls | none
    relay_username: str = ""
    relay_password_file: str = ""  # file holding the password (first line), not the password
    relay_ca_file: str = ""  # extra CA bundle for the relay's certificate ("" = system CAs)
    timeout: float = 60.0  # per SMTP command
    backoff_seconds: float = 60.0  # first retry delay; doubles each attempt
    max_backoff_seconds: float = 3600.0
    max_age_hours: float = 48.0  # give up (and alert) this long after queuing
    operator_email: str = ""  # "" = alerts only in the log
    from_address: str = "facturd@invoices.localhost"  # From of alerts; envelope sender
    helo_hostname: str = ""  # "" = the domain of from_address
    dkim_domain: str = ""  # "" = no DKIM signing here (a signing relay does it)
    dkim_selector: str = ""
    dkim_private_key_file: str = ""
    dkim_algorithm: str = "rsa-sha256"  # or ed25519-sha256
    language: str = "fr"  # of operator alerts
    template_dirs: tuple[Path, ...] = ()  # () = the packaged templates only
    poll_seconds: float = 1.0
    lease_seconds: float = 600.0  # must cover one whole SMTP transaction

    def validate(self) -> None:
        """ValueError naming the field, for the config loader to turn into a ConfigError."""
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {' | '.join(MODES)}, got {self.mode!r}")
        if self.relay_security not in SECURITIES:
            raise ValueError(f"relay_security: expected one of {' | '.join(SECURITIES)}")
        if self.mode == "relay" and not self.relay_host:
            raise ValueError("relay_host: required when mode is relay")
        if not 0 < self.relay_port < 65536:
            raise ValueError("relay_port: expected 1..65535")
        if self.relay_username and not self.relay_password_file:
            raise ValueError("relay_password_file: required with relay_username")
        if (self.relay_username and self.relay_security == "none"
                and self.relay_host not in ("127.0.0.1", "::1", "localhost")):
            raise ValueError("relay_security: refusing to send a password in clear text "
                             "to a non-loopback relay; use starttls or tls")
        mailer.check_address(self.from_address)
        if self.operator_email:
            mailer.check_address(self.operator_email)
        if any((self.dkim_domain, self.dkim_selector, self.dkim_private_key_file)) and not all(
                (self.dkim_domain, self.dkim_selector, self.dkim_private_key_file)):
            raise ValueError("dkim_domain, dkim_selector, dkim_private_key_file: set all or none")
        if self.lease_seconds < 5 * self.timeout:
            raise ValueError("lease_seconds: must be at least 5 x timeout")

    @property
    def domain(self) -> str:
        return mailer.addr_spec(self.from_address).rpartition("@")[2]


def load_dkim(settings: SendSettings) -> mailer.DkimSigner | None:
    if not settings.dkim_domain:
        return None
    key = Path(settings.dkim_private_key_file).read_bytes()
    return mailer.DkimSigner(settings.dkim_domain, settings.dkim_selector, key,
                             settings.dkim_algorithm)


def eml_name(message_id: str) -> str:
    """``<abc@example.com>`` -> ``abc@example.com.eml`` (never hidden, never a path)."""
    name = _EML_UNSAFE.sub("_", message_id.strip().strip("<>"))[:200].lstrip(".")
    return f"{name or 'message'}.eml"


def write_eml(directory: Path, message_id: str, raw: bytes) -> Path:
    """Atomically write ``raw`` as ``<message-id>.eml``; durable when this returns.
    Writers see either no file or the whole file; temp files start with a dot."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    final = directory / eml_name(message_id)
    write_durably(directory, final, raw)
    fsync_dir(directory)
    return final


class PermanentFailure(Exception):
    """This message can never be delivered as it is: give up now."""


def is_permanent(exc: BaseException) -> bool:
    """5xx to the message's own commands (MAIL, RCPT, DATA) is permanent; 5xx at connect,
    EHLO, STARTTLS or AUTH is a relay/config problem for every message: retried."""
    if isinstance(exc, PermanentFailure):
        return True
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        return bool(codes) and all(500 <= c < 600 for c in codes)
    if isinstance(exc, (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPRecipientRefused,
                        aiosmtplib.SMTPDataError)):
        return 500 <= exc.code < 600
    return False


def describe(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{type(exc).__name__}: {exc.code} {exc.message}"
    return f"{type(exc).__name__}: {exc}"


class Sender:
    """One send role. ``send_one`` handles one due row; ``run`` loops until ``stop``."""

    def __init__(self, settings: SendSettings, store: Store, name: str | None = None) -> None:
        settings.validate()
        self.settings = settings
        self.store = store
        self.outbox = OutboxStore(store)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.dkim = load_dkim(settings)
        self.env = mailer.make_environment(settings.template_dirs
                                           or mailer.template_dirs())
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sender")
        self._warned_password_mode = False

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def aclose(self) -> None:
        await self._db(self.store.db.close)
        self._pool.shutdown()

    # ---- one message ----------------------------------------------------------------------
    async def send_one(self) -> str | None:
        """Claim and handle one due row: 'sent' | 'retry' | 'failed' | 'lost', None if idle."""
        item = await self._db(self.outbox.claim, self.name, self.settings.lease_seconds)
        if item is None:
            return None
        try:
            raw = await self._db(self.outbox.raw, item)
            for rcpt in item.recipients:
                mailer.addr_spec(rcpt)  # B-OUT-02: never write a dubious RCPT TO
            note = await self._deliver(item, self._sign(raw))
        except (BlobMissing, BlobCorrupt) as exc:
            return await self._give_up(item, f"stored message unreadable: {exc}", True)
        except ValueError as exc:
            return await self._give_up(item, f"invalid message: {exc}", True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, (aiosmtplib.SMTPException, OSError)):
                log.exception("outbox %d: unexpected error while sending", item.id)
            if is_permanent(exc):
                return await self._give_up(item, describe(exc), True)
            return await self._retry(item, describe(exc))
        if not await self._db(self.outbox.mark_sent, item, note):
            log.warning("outbox %d: sent, but the claim was taken over meanwhile", item.id)
            return "lost"
        log.info("outbox %d: %s %s sent to %s", item.id, item.kind, clean(item.message_id),
                 clean(", ".join(item.recipients)))
        return "sent"

    def _sign(self, raw: bytes) -> bytes:
        if self.dkim is None:
            return raw
        head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        if re.search(rb"(?im)^dkim-signature:", head):
            return raw  # composed with a key already
        return self.dkim.sign(raw)

    async def _deliver(self, item: OutboxItem, raw: bytes) -> str:
        s = self.settings
        if s.mode == "file":
            await asyncio.to_thread(write_eml, s.outbox_dir, item.message_id, raw)
            return ""
        username = s.relay_username or None
        password = await asyncio.to_thread(self._password) if username else None
        refused, _ = await aiosmtplib.send(
            raw, sender=mailer.addr_spec(s.from_address), recipients=list(item.recipients),
            hostname=s.relay_host, port=s.relay_port, username=username, password=password,
            use_tls=s.relay_security == "tls", start_tls=s.relay_security == "starttls",
            timeout=s.timeout, local_hostname=s.helo_hostname or s.domain,
            cert_bundle=s.relay_ca_file or None)
        if refused:
            note = "partly refused: " + "; ".join(
                f"{rcpt}: {resp.code} {resp.message}" for rcpt, resp in refused.items())
            log.warning("outbox %d: %s", item.id, clean(note))
            return note
        return ""

    def _password(self) -> str:
        path = Path(self.settings.relay_password_file)
        if path.stat().st_mode & 0o077 and not self._warned_password_mode:
            self._warned_password_mode = True
            log.warning("%s is readable by other users; chmod 600 it", path)
        lines = path.read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""

    async def _retry(self, item: OutboxItem, error: str) -> str:
        s = self.settings
        deadline = item.created_at + timedelta(hours=s.max_age_hours)
        left = (deadline - self.store.clock()).total_seconds()
        if left <= 0:
            return await self._give_up(
                item, f"still undelivered after {s.max_age_hours:g} h: {error}", False)
        delay = min(s.backoff_seconds * 2 ** max(item.attempts - 1, 0),
                    s.max_backoff_seconds, left)
        log.warning("outbox %d: attempt %d failed (%s); retry in %.1fs", item.id,
                    item.attempts, clean(error), delay)
        if not await self._db(self.outbox.retry, item, delay, error):
            return "lost"
        return "retry"

    async def _give_up(self, item: OutboxItem, error: str, permanent: bool) -> str:
        alert: tuple[bytes, str] | None = None
        if self.settings.operator_email and item.kind != "operator_alert":
            try:
                alert = self._alert(item, error, permanent)
            except Exception:
                log.exception("outbox %d: cannot compose the operator alert", item.id)
        done = await self._db(self._give_up_tx, item, error, alert)
        if not done:
            return "lost"
        log.error("outbox %d: gave up on %s %s to %s after %d attempt(s): %s%s", item.id,
                  item.kind, clean(item.message_id), clean(", ".join(item.recipients)),
                  item.attempts, clean(error), "" if alert else " (no operator alert)")
        return "failed"

    def _give_up_tx(self, item: OutboxItem, error: str, alert: tuple[bytes, str] | None
                    ) -> bool:
        with self.store.write_transaction():
            if not self.outbox.give_up(item, error):
                return False
            if alert is not None:
                raw, message_id = alert
                self.outbox.enqueue("operator_alert", raw, [self._operator()],
                                    folder_id=item.folder_id, message_id=message_id)
            return True

    def _operator(self) -> str:
        return mailer.addr_spec(self.settings.operator_email)

    def _alert(self, item: OutboxItem, error: str, permanent: bool) -> tuple[bytes, str]:
        s = self.settings
        rendered = mailer.render(self.env, "operator_alert", s.language, {
            "outbox_id": item.id, "kind": item.kind, "message_id": item.message_id,
            "recipients": list(item.recipients), "attempts": item.attempts,
            "created_at": item.created_at, "last_error": error, "permanent": permanent,
        })
        # Stable per failure: one alert per (row, attempt), even if this is retried.
        token = hashlib.sha256(f"{item.message_id}/{item.attempts}".encode()).hexdigest()[:24]
        message_id = f"<alert.{item.id}.{item.attempts}.{token}@{s.domain}>"
        raw = mailer.compose(rendered, sender=s.from_address, to=[s.operator_email],
                             message_id=message_id, auto_submitted="auto-generated")
        return raw, message_id

    # ---- the loop -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        log.info("send role: %s", self.settings.mode if self.settings.mode == "file" else
                 f"relay {self.settings.relay_host}:{self.settings.relay_port} "
                 f"({self.settings.relay_security})")
        try:
            while not stop.is_set():
                try:
                    outcome = await self.send_one()
                except TRANSIENT_ERRORS as exc:
                    log.warning("send role: cannot reach the outbox: %s", clean(str(exc)))
                    outcome = None
                except Exception:
                    log.exception("send role: internal error; the row is retried when its "
                                  "lease expires")
                    outcome = None
                if outcome is None:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.settings.poll_seconds)
        finally:
            await self.aclose()


async def run_sender(settings: SendSettings, store: Store, stop: asyncio.Event) -> None:
    await Sender(settings, store).run(stop)
