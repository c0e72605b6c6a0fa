"""peewee models: the tables. Only storage/ imports this module.

Job: declare columns; no behaviour. Amounts are stored as decimal strings and dates as ISO
text so SQLite and PostgreSQL agree byte for byte; structured values are JSON text.
Timestamps are naive UTC datetimes.
"""

from __future__ import annotations

from typing import Any

import peewee as pw

proxy: Any = pw.DatabaseProxy()


class Base(pw.Model):
    class Meta:
        database = proxy
        legacy_table_names = False


class SchemaVersion(Base):
    version = pw.IntegerField(primary_key=True)
    name = pw.CharField()
    applied_at = pw.DateTimeField()


class Folder(Base):
    id = pw.AutoField()
    vat = pw.CharField(unique=True)  # normalized, upper case: FR40303265045
    name = pw.CharField()
    siren = pw.CharField(default="")
    iban = pw.CharField(default="")
    mode = pw.CharField(default="manual")
    identify_duplicates = pw.BooleanField(default=True)
    block_duplicates = pw.BooleanField(default=False)
    auto_accept_approved_senders = pw.BooleanField(default=False)
    notify_email = pw.CharField(default="")
    notify_frequency = pw.CharField(default="daily")
    accountant_email = pw.CharField(default="")
    language = pw.CharField(default="fr")
    pay_link_template = pw.CharField(default="")
    amount_limit = pw.CharField(null=True)  # decimal string; above it a person approves
    approvers = pw.TextField(default="[]")  # JSON list of addresses asked besides notify_email
    digest_time = pw.CharField(default="08:00")  # local time HH:MM for daily/weekly digests
    timezone = pw.CharField(default="Europe/Paris")
    last_digest_at = pw.DateTimeField(null=True)
    accountant_frequency = pw.CharField(default="immediate")  # immediate | daily
    created_at = pw.DateTimeField()


class Partner(Base):
    id = pw.AutoField()
    folder = pw.ForeignKeyField(Folder, backref="partners", on_delete="CASCADE")
    name = pw.CharField()
    vat = pw.CharField(default="", index=True)
    siren = pw.CharField(default="")
    email = pw.CharField(default="")
    contact = pw.CharField(default="")
    phone = pw.CharField(default="")
    language = pw.CharField(default="fr")
    send_by = pw.CharField(default="email")
    pay_button = pw.BooleanField(default=False)
    trusted = pw.BooleanField(default=False)
    sending_domains = pw.TextField(default="[]")
    iban = pw.CharField(default="")
    member_folder = pw.ForeignKeyField(Folder, null=True, on_delete="SET NULL")
    created_at = pw.DateTimeField()


class ApprovedSender(Base):
    id = pw.AutoField()
    folder = pw.ForeignKeyField(Folder, backref="approved_senders", on_delete="CASCADE")
    address = pw.CharField()
    created_at = pw.DateTimeField()

    class Meta:
        indexes = ((("folder", "address"), True),)


class Blob(Base):
    """Blob bytes, used when blobs live in the database (the PostgreSQL default)."""

    sha256 = pw.CharField(primary_key=True, max_length=64)
    size = pw.BigIntegerField()
    data = pw.BlobField()


class Message(Base):
    id = pw.AutoField()
    sha256 = pw.CharField(max_length=64, index=True)
    size = pw.BigIntegerField()
    mail_from = pw.CharField(default="", max_length=1024)
    rcpt_tos = pw.TextField(default="[]")
    protocol = pw.CharField(default="smtp")  # smtp | lmtp | import | internal
    peer = pw.CharField(default="")
    helo = pw.CharField(default="", max_length=1024)
    filename = pw.CharField(default="", max_length=1024)  # import only; display, never a path
    header_message_id = pw.CharField(default="", max_length=1024)
    auth = pw.TextField(default="{}")
    received_at = pw.DateTimeField(index=True)


class Delivery(Base):
    """One message for one folder: the unit of work (the job)."""

    id = pw.AutoField()
    message = pw.ForeignKeyField(Message, backref="deliveries", on_delete="RESTRICT")
    folder = pw.ForeignKeyField(Folder, backref="deliveries", on_delete="RESTRICT")
    address = pw.CharField(default="", max_length=1024)
    tag = pw.CharField(default="")
    direction = pw.CharField(default="purchase")
    state = pw.CharField(default="queued")
    attempts = pw.IntegerField(default=0)
    lease_until = pw.DateTimeField(null=True)
    leased_by = pw.CharField(default="")
    next_attempt_at = pw.DateTimeField()
    last_error = pw.TextField(default="")
    duplicate_of = pw.ForeignKeyField("self", null=True, on_delete="SET NULL")
    created_at = pw.DateTimeField()
    updated_at = pw.DateTimeField()

    class Meta:
        indexes = ((("state", "next_attempt_at"), False), (("folder", "message"), False))


class Document(Base):
    id = pw.AutoField()
    folder = pw.ForeignKeyField(Folder, backref="documents", on_delete="RESTRICT")
    delivery = pw.ForeignKeyField(Delivery, null=True, backref="documents",
                                  on_delete="RESTRICT")
    part = pw.IntegerField(default=0)  # position of the invoice inside its delivery
    direction = pw.CharField(default="purchase")
    state = pw.CharField(default="received")
    source = pw.CharField(default="")  # facturx | cii | ubl | text | ocr | none
    original_sha256 = pw.CharField(default="", max_length=64, index=True)
    enriched_sha256 = pw.CharField(default="", max_length=64)
    filename = pw.CharField(default="", max_length=1024)
    media_type = pw.CharField(default="")
    number = pw.CharField(null=True)
    issue_date = pw.CharField(null=True)
    due_date = pw.CharField(null=True)
    seller_name = pw.CharField(null=True, max_length=1024)
    seller_vat = pw.CharField(null=True)
    seller_siren = pw.CharField(null=True)
    seller_iban = pw.CharField(null=True)
    buyer_name = pw.CharField(null=True, max_length=1024)
    buyer_vat = pw.CharField(null=True)
    currency = pw.CharField(null=True)
    total_net = pw.CharField(null=True)
    total_tax = pw.CharField(null=True)
    total_gross = pw.CharField(null=True)
    amount_due = pw.CharField(null=True)
    payment_reference = pw.CharField(null=True)
    vat_breakdown = pw.TextField(default="[]")
    confidence = pw.TextField(default="{}")
    duplicate_of = pw.ForeignKeyField("self", null=True, on_delete="SET NULL")
    reasons = pw.TextField(default="[]")
    trace = pw.TextField(default="[]")
    extra = pw.TextField(default="{}")
    payment_status = pw.CharField(default="unpaid")
    paid_on = pw.CharField(null=True)
    xml_sha256 = pw.CharField(default="", max_length=64, index=True)
    shared_at = pw.DateTimeField(null=True)  # sent to the accountant (never twice)
    # Schematron verdict of a received e-invoice (JSON, daemon/conformance.py); null until
    # the scheduler has checked it
    conformance = pw.TextField(null=True)
    version = pw.IntegerField(default=1)
    created_at = pw.DateTimeField()
    updated_at = pw.DateTimeField()

    class Meta:
        # Idempotency key: re-running a delivery never creates a second document.
        indexes = ((("delivery", "part"), True),)


class Event(Base):
    """Append-only audit trail."""

    id = pw.AutoField()
    at = pw.DateTimeField(index=True)
    folder = pw.ForeignKeyField(Folder, null=True, on_delete="SET NULL")
    delivery = pw.ForeignKeyField(Delivery, null=True, on_delete="SET NULL")
    document = pw.ForeignKeyField(Document, null=True, backref="events", on_delete="SET NULL")
    actor = pw.CharField(default="facturd")
    kind = pw.CharField()
    detail = pw.TextField(default="")


class Approval(Base):
    """A token. Bound to one document (approval links, the reply address of an approval
    request, "mark as paid" links) or, with ``document`` null, to a folder (the reply address
    of a digest). ``folder`` is set on every row (migration 4 filled it in for older rows)."""

    id = pw.AutoField()
    document = pw.ForeignKeyField(Document, null=True, backref="approvals", on_delete="CASCADE")
    folder = pw.ForeignKeyField(Folder, null=True, backref="approvals", on_delete="CASCADE")
    token_hash = pw.CharField(unique=True, max_length=64)
    approver = pw.CharField(default="")
    action = pw.CharField(default="")  # approve | reject | reply | paid
    document_version = pw.IntegerField(default=1)
    expires_at = pw.DateTimeField()
    used_at = pw.DateTimeField(null=True)
    request_message_id = pw.CharField(default="", max_length=512)  # threading of replies
    attempt_noticed_at = pw.DateTimeField(null=True)  # last "unauthenticated attempt" notice
    created_at = pw.DateTimeField()


class Outbox(Base):
    id = pw.AutoField()
    folder = pw.ForeignKeyField(Folder, null=True, on_delete="SET NULL")
    document = pw.ForeignKeyField(Document, null=True, on_delete="SET NULL")
    kind = pw.CharField()
    message_id = pw.CharField(unique=True, max_length=512)
    recipients = pw.TextField(default="[]")
    blob_sha256 = pw.CharField(default="", max_length=64)
    state = pw.CharField(default="queued")
    attempts = pw.IntegerField(default=0)
    next_attempt_at = pw.DateTimeField()
    lease_until = pw.DateTimeField(null=True)
    leased_by = pw.CharField(default="")
    last_error = pw.TextField(default="")
    created_at = pw.DateTimeField()
    sent_at = pw.DateTimeField(null=True)


class Setting(Base):
    """Installation-wide values shared by every node (e.g. the web role's CSRF secret)."""

    key = pw.CharField(primary_key=True)
    value = pw.TextField()


class Operator(Base):
    """A person who may sign in to the status page. Only a scrypt hash of the password."""

    id = pw.AutoField()
    name = pw.CharField(unique=True, max_length=64)
    password_hash = pw.CharField(max_length=256)  # scrypt$N$r$p$<salt b64>$<hash b64>
    created_at = pw.DateTimeField()


class OperatorSession(Base):
    """A status-page login. Only the sha256 of the session token (the cookie) is kept."""

    id = pw.AutoField()
    token_hash = pw.CharField(unique=True, max_length=64)
    operator = pw.ForeignKeyField(Operator, backref="sessions", on_delete="CASCADE")
    created_at = pw.DateTimeField()
    expires_at = pw.DateTimeField(index=True)


ALL_MODELS: tuple[type[Base], ...] = (
    Folder, Partner, ApprovedSender, Blob, Message, Delivery, Document, Event, Approval, Outbox,
    Setting, Operator, OperatorSession,
)
