"""Accountant sharing: archived (and sent) documents mailed to the folder's accountant, once.

Job: ``share_documents`` builds ONE mail to ``accountant_email`` with each document's
enriched Factur-X PDF (the ``enriched_sha256`` blob) or, without one, the original file, plus
a CSV summary, and in ONE transaction marks ``shared_at`` on those documents and enqueues the
mail. ``share_due`` finds what to share: every archived, unshared document of folders with
``accountant_frequency`` "immediate"; for "daily", the same once per local day at/after
``digest_time`` (the folder's timezone).

May touch: ``document.shared_at``, the outbox, events; blobs are read only.

Decisions (the issue is silent on these):
  * Never twice, also under concurrency: the mail is composed first, then, in the write
    transaction, each document is claimed with ``UPDATE ... WHERE shared_at IS NULL``; only
    the documents this call claimed go out (recomposed if another call took some), and the
    enqueue is in that same transaction.
  * Shareable = state "archived", "sent" or "paid" (a paid invoice was archived before; it
    must not be skipped because it was paid before the share ran), both directions. A sales
    invoice is archived when sent (DESIGN.md): "sent" is its archived state; a draft, or one
    still "sending" (not yet accepted by the relay), is not shared.
  * One mail carries at most ``max_documents`` files and ``max_attachment_bytes`` of them
    (relays often refuse more than 10-25 MB); ``share_due`` sends as many mails as needed.
    A single larger file still goes, alone.
  * A document whose blob is missing or corrupt is skipped (logged as an error each time),
    never marked shared, so it goes out once the blob is restored.
  * "daily": at most one accountant mail per local day, at or after ``digest_time``, judged
    by the folder's latest ``shared_at``; what is archived after that waits for the next day,
    and so does everything before today's ``digest_time`` (no catch-up of a missed day
    before that time: its documents simply join today's batch).
  * CSV: UTF-8 with a BOM (Excel recognises UTF-8), CRLF, one header row. French folders get
    ``;`` and decimal commas (what French Excel opens by double-click), others ``,`` and
    decimal points; dates ISO 8601. Text cells starting with = + - @ or a tab are prefixed
    with ' (CSV formula injection); control characters become spaces.
  * The name shown per document is the counterparty: seller (purchase) or buyer (sales).

Known limits: turning on sharing for a folder with a long history shares all of it.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfoNotFoundError

import jinja2

from daemon import mailer
from daemon.digest import local_date, scheduled_slot, utc_naive
from storage.blobs import BlobCorrupt, BlobMissing, sha256_hex
from storage.outbox import OutboxStore
from storage.policy import Policy
from storage.records import Document
from storage.store import Store

log = logging.getLogger(__name__)

SHAREABLE = ("archived", "sent", "paid")
CSV_COLUMNS = {
    "en": ("id", "direction", "number", "issue date", "due date", "seller", "seller VAT",
           "buyer", "net", "tax", "gross", "currency", "state", "file", "original sha256"),
    "fr": ("id", "sens", "numéro", "date d'émission", "date d'échéance", "fournisseur",
           "TVA fournisseur", "client", "HT", "TVA", "TTC", "devise", "état", "fichier",
           "sha256 original"),
}
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ShareSettings:
    from_address: str
    template_dirs: tuple[Path, ...]
    max_documents: int = 50
    max_attachment_bytes: int = 10 * 1024 * 1024

    def __post_init__(self) -> None:
        mailer.check_address(self.from_address)
        if self.max_documents < 1 or self.max_attachment_bytes < 1:
            raise ValueError("max_documents, max_attachment_bytes: must be positive")


class Shared(NamedTuple):
    """One accountant mail queued, or (outbox_id 0, ``error`` set) a folder that failed."""

    vat: str
    outbox_id: int
    documents: int
    error: str = ""


@dataclass(frozen=True)
class _File:
    doc: Document
    name: str
    media_type: str
    data: bytes


# ---- the CSV (pure) ------------------------------------------------------------------------

def _text(value: str | None) -> str:
    text = _CONTROL.sub(" ", value or "")
    return "'" + text if text.startswith(_FORMULA) else text


def _amount(value: Decimal | None, lang: str) -> str:
    if value is None:
        return ""
    text = f"{value:.2f}" if value == value.quantize(Decimal("0.01")) else str(value)
    return text.replace(".", ",") if lang == "fr" else text


def summary_csv(rows: Iterable[tuple[Document, str]], lang: str) -> bytes:
    """CSV summary of (document, attachment name) pairs; see the module docstring."""
    lang = "fr" if lang == "fr" else "en"
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=";" if lang == "fr" else ",", lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS[lang])
    for doc, filename in rows:
        writer.writerow([
            str(doc.id), doc.direction, _text(doc.number), _text(doc.issue_date),
            _text(doc.due_date), _text(doc.seller_name), _text(doc.seller_vat),
            _text(doc.buyer_name), _amount(doc.total_net, lang), _amount(doc.total_tax, lang),
            _amount(doc.total_gross, lang), _text(doc.currency), doc.state, _text(filename),
            doc.original_sha256,
        ])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


# ---- sharing -------------------------------------------------------------------------------

def _file(store: Store, doc: Document) -> _File:
    base = doc.filename or doc.number or "document"
    if doc.enriched_sha256:
        stem = base.rsplit(".", 1)[0] if "." in base else base
        return _File(doc, mailer.safe_filename(f"{doc.id}-{stem}.pdf"), "application/pdf",
                     store.blobs.get(doc.enriched_sha256))
    return _File(doc, mailer.safe_filename(f"{doc.id}-{base}"),
                 doc.media_type or "application/octet-stream",
                 store.blobs.get(doc.original_sha256))


def _pick(store: Store, settings: ShareSettings, docs: list[Document]) -> list[_File]:
    files: list[_File] = []
    size = 0
    for doc in docs:
        if len(files) >= settings.max_documents:
            break
        try:
            f = _file(store, doc)
        except (BlobMissing, BlobCorrupt) as exc:
            log.error("document %d: file unreadable, not shared with the accountant: %s",
                      doc.id, exc)
            continue
        if files and size + len(f.data) > settings.max_attachment_bytes:
            break
        files.append(f)
        size += len(f.data)
    return files


def _compose(settings: ShareSettings, env: jinja2.Environment, fs: dict[str, Any],
             vat: str, files: list[_File], now: datetime) -> tuple[bytes, str]:
    lang = fs["language"]
    csv_name = f"{vat}-{now:%Y%m%d-%H%M%S}.csv"
    rendered = mailer.render(env, "accountant_share", lang, {
        "folder_name": fs["name"], "period": None, "csv_filename": csv_name,
        "documents": [dict(supplier=(f.doc.buyer_name if f.doc.direction == "sales"
                                     else f.doc.seller_name) or "—",
                           number=f.doc.number, issue_date=f.doc.issue_date,
                           total_gross=f.doc.total_gross, currency=f.doc.currency,
                           filename=f.name) for f in files],
    })
    domain = mailer.addr_spec(settings.from_address).rpartition("@")[2]
    message_id = (f"<share.{files[0].doc.folder_id}.{now:%Y%m%d%H%M%S}."
                  f"{secrets.token_hex(6)}@{domain}>")
    attachments = [(f.name, f.media_type, f.data) for f in files]
    attachments.append((csv_name, "text/csv",
                        summary_csv(((f.doc, f.name) for f in files), lang)))
    raw = mailer.compose(rendered, sender=settings.from_address, to=[fs["accountant_email"]],
                         message_id=message_id, attachments=attachments,
                         date=now.replace(tzinfo=UTC))
    return raw, message_id


def share_documents(store: Store, settings: ShareSettings, folder_id: int,
                    document_ids: Sequence[int] | None, now: datetime) -> int | None:
    """Mail the shareable, unshared documents among ``document_ids`` (None = all of the
    folder's) to the accountant, as many as fit in one mail; returns the outbox id, or None
    when nothing was sent (no accountant address, nothing left to share)."""
    done = _share(store, settings, folder_id, document_ids, utc_naive(now))
    return done[0] if done else None


def _share(store: Store, settings: ShareSettings, folder_id: int,
           document_ids: Sequence[int] | None, now: datetime) -> tuple[int, int] | None:
    """(outbox id, documents shared) or None."""
    folder = store.folder(folder_id)
    if folder is None:
        return None
    fs = Policy(store).folder_settings(folder_id)
    if not fs["accountant_email"]:
        return None
    to = mailer.addr_spec(fs["accountant_email"])
    files = _pick(store, settings, store.documents.unshared(folder_id, SHAREABLE, document_ids))
    if not files:
        return None
    env = mailer.make_environment(settings.template_dirs)
    raw, message_id = _compose(settings, env, fs, folder.vat, files, now)
    if not store.blobs_in_db:  # write and fsync the bytes before taking the write lock
        store.blobs.put_many([(sha256_hex(raw), raw)])
    with store.write_transaction():
        won = [f for f in files if store.documents.mark_shared(f.doc.id, now)]
        if not won:
            return None
        if len(won) != len(files):  # another call shared some meanwhile
            raw, message_id = _compose(settings, env, fs, folder.vat, won, now)
        outbox_id = OutboxStore(store).enqueue("accountant_share", raw, [to],
                                               folder_id=folder_id, message_id=message_id)
        for f in won:
            store.add_event("shared-with-accountant", f"{f.name} to {to} ({message_id})",
                            folder_id=folder_id, document_id=f.doc.id)
    log.info("%s: %d document(s) shared with %s", folder.vat, len(won), to)
    return outbox_id, len(won)


def share_due(store: Store, settings: ShareSettings, now: datetime, *,
              folder_id: int | None = None, force: bool = False) -> list[Shared]:
    """Share what each folder's ``accountant_frequency`` says is due now (``force``: every
    unshared archived document, whatever the frequency); one entry per mail queued, and
    one with ``error`` per folder whose settings are unusable (the others go on)."""
    now = utc_naive(now)
    policy = Policy(store)
    out: list[Shared] = []
    folders = store.folders() if folder_id is None else [
        f for f in [store.folder(folder_id)] if f is not None]
    for folder in folders:
        fs = policy.folder_settings(folder.id)
        if not fs["accountant_email"]:
            continue
        try:
            if not force and not _due(store, fs, now, folder.id):
                continue
            while (done := _share(store, settings, folder.id, None, now)) is not None:
                out.append(Shared(folder.vat, *done))
        except (ValueError, ZoneInfoNotFoundError, jinja2.TemplateError) as exc:
            out.append(Shared(folder.vat, 0, 0, str(exc)))
    return out


def _due(store: Store, fs: dict[str, Any], now: datetime, folder_id: int) -> bool:
    frequency = fs["accountant_frequency"]
    if frequency == "immediate":
        return True
    if frequency != "daily":
        log.warning("accountant_frequency %r unknown: nothing shared", frequency)
        return False
    zone = fs["timezone"] or "Europe/Paris"
    slot = scheduled_slot("daily", fs["digest_time"] or "08:00", zone, now)
    if local_date(slot, zone) != local_date(now, zone):
        return False  # before today's time: wait for it (missed days go in today's batch)
    last = store.documents.last_shared_at(folder_id)
    return last is None or last < slot



