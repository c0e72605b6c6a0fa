"""Plain records returned by storage: frozen dataclasses, never ORM rows.

Job: the vocabulary shared by daemon/ and storage/. Nothing here touches the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

MODES = ("manual", "except_trusted", "automatic")

# Delivery (job) states. A delivery is one received message for one folder (one recipient).
QUEUED = "queued"
RUNNING = "running"
DONE = "done"
QUARANTINED = "quarantined"
TRANSPORT_DUPLICATE = "duplicate"

# How a message came in. "internal" is a sales invoice one hosted folder sent to another
# (daemon/sales.py): no listener and no CLI command can produce it.
PROTOCOLS = ("smtp", "lmtp", "import", "internal")


@dataclass(frozen=True)
class Folder:
    id: int
    vat: str
    name: str
    siren: str
    iban: str
    mode: str
    identify_duplicates: bool
    block_duplicates: bool
    auto_accept_approved_senders: bool
    notify_email: str
    notify_frequency: str
    accountant_email: str
    language: str
    created_at: datetime


@dataclass(frozen=True)
class Recipient:
    """An accepted RCPT: which folder, the address as given, and its +tag (may be empty)."""

    folder_id: int
    address: str
    tag: str


@dataclass(frozen=True)
class IntakeItem:
    """One message to make durable, with everything the SMTP transaction knew."""

    raw: bytes
    sha256: str
    mail_from: str
    recipients: tuple[Recipient, ...]
    protocol: str
    peer: str
    helo: str
    filename: str = ""


@dataclass(frozen=True)
class DeliveryResult:
    delivery_id: int
    folder_id: int
    state: str
    duplicate_of: int | None


@dataclass(frozen=True)
class IntakeResult:
    message_id: int
    deliveries: tuple[DeliveryResult, ...]


@dataclass(frozen=True)
class Message:
    id: int
    sha256: str
    size: int
    mail_from: str
    rcpt_tos: tuple[str, ...]
    protocol: str
    peer: str
    helo: str
    filename: str
    received_at: datetime


@dataclass(frozen=True)
class Delivery:
    id: int
    message_id: int
    folder_id: int
    address: str
    tag: str
    direction: str
    state: str
    attempts: int
    lease_until: datetime | None
    next_attempt_at: datetime
    last_error: str
    duplicate_of: int | None
    created_at: datetime


@dataclass(frozen=True)
class Event:
    id: int
    at: datetime
    folder_id: int | None
    delivery_id: int | None
    document_id: int | None
    actor: str
    kind: str
    detail: str


@dataclass(frozen=True)
class Document:
    id: int
    folder_id: int
    delivery_id: int | None
    part: int
    direction: str
    state: str
    source: str
    original_sha256: str
    enriched_sha256: str
    filename: str
    media_type: str
    number: str | None = None
    issue_date: str | None = None
    due_date: str | None = None
    seller_name: str | None = None
    seller_vat: str | None = None
    seller_siren: str | None = None
    seller_iban: str | None = None
    buyer_name: str | None = None
    buyer_vat: str | None = None
    currency: str | None = None
    total_net: Decimal | None = None
    total_tax: Decimal | None = None
    total_gross: Decimal | None = None
    amount_due: Decimal | None = None
    payment_reference: str | None = None
    vat_breakdown: list[dict[str, str]] = field(default_factory=list)
    confidence: dict[str, float] = field(default_factory=dict)
    duplicate_of: int | None = None
    reasons: list[str] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    payment_status: str = "unpaid"  # unpaid | paid (set by daemon/decisions.py, never upsert)
    paid_on: str | None = None
    conformance: dict[str, Any] | None = None  # Schematron verdict; None until checked
