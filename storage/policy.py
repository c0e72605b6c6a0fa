"""Per-folder policy records: settings, approved senders, partners (suppliers/customers).

Job: read and change what the rules need to know about a company. Addresses and domains are
stored normalized (lower case, IDNA domain) so comparisons in rules/ are plain equality.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from storage import models
from storage.store import Store

FOLDER_SETTINGS: dict[str, type] = {
    "name": str, "mode": str, "identify_duplicates": bool, "block_duplicates": bool,
    "auto_accept_approved_senders": bool, "notify_email": str, "notify_frequency": str,
    "accountant_email": str, "accountant_frequency": str, "language": str,
    "amount_limit": Decimal, "approvers": list, "digest_time": str, "timezone": str,
    "iban": str, "pay_link_template": str,
}


def normalize_address(address: str) -> str:
    """``Billing@Exämple.TEST`` -> ``billing@xn--exmple-cua.test`` (IDNA 2003 via the codec)."""
    local, _, domain = address.strip().rpartition("@")
    return f"{local.lower()}@{normalize_domain(domain)}" if local else address.strip().lower()


def normalize_domain(domain: str) -> str:
    domain = domain.strip().rstrip(".").lower()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


@dataclass(frozen=True)
class Partner:
    id: int
    folder_id: int
    name: str
    vat: str
    siren: str
    email: str
    trusted: bool
    sending_domains: tuple[str, ...]
    iban: str
    language: str
    pay_button: bool  # show the folder's pay link in invoices sent to this customer
    send_by: str  # how this customer gets sales invoices: "email" (the default)
    member_folder_id: int | None  # the customer's own folder when it is hosted here


def _partner(row: Any) -> Partner:
    return Partner(id=row.id, folder_id=row.folder_id, name=row.name, vat=row.vat,
                   siren=row.siren, email=row.email, trusted=row.trusted,
                   sending_domains=tuple(json.loads(row.sending_domains)), iban=row.iban,
                   language=row.language, pay_button=row.pay_button, send_by=row.send_by,
                   member_folder_id=row.member_folder_id)


class Policy:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- folder settings ------------------------------------------------------------------
    def folder_settings(self, folder_id: int) -> dict[str, Any]:
        row = models.Folder.get_by_id(folder_id)
        out: dict[str, Any] = {}
        for key in FOLDER_SETTINGS:
            value = getattr(row, key)
            if key == "approvers":
                value = json.loads(value)
            elif key == "amount_limit" and value is not None:
                value = Decimal(value)
            out[key] = value
        return out

    def set_folder(self, folder_id: int, values: dict[str, Any], actor: str = "cli") -> None:
        cols: dict[str, Any] = {}
        for key, value in values.items():
            if key not in FOLDER_SETTINGS:
                raise KeyError(key)
            if key == "approvers":
                value = json.dumps([normalize_address(a) for a in value])
            elif key == "amount_limit":
                value = None if value is None else str(value)
            cols[key] = value
        with self.store.write_transaction():
            models.Folder.update(**cols).where(models.Folder.id == folder_id).execute()
            detail = ", ".join(f"{k}={v}" for k, v in sorted(values.items()))
            self.store.add_event("folder-settings", detail, actor=actor, folder_id=folder_id)

    # ---- approved senders -----------------------------------------------------------------
    def approved_senders(self, folder_id: int) -> frozenset[str]:
        q = models.ApprovedSender.select().where(models.ApprovedSender.folder == folder_id)
        return frozenset(r.address for r in q)

    def approve_sender(self, folder_id: int, address: str, actor: str = "cli") -> str:
        norm = normalize_address(address)
        with self.store.write_transaction():
            (models.ApprovedSender.insert(folder=folder_id, address=norm,
                                          created_at=self.store.clock())
             .on_conflict_ignore().execute())
            self.store.add_event("sender-approved", norm, actor=actor, folder_id=folder_id)
        return norm

    def revoke_sender(self, folder_id: int, address: str, actor: str = "cli") -> bool:
        norm = normalize_address(address)
        A = models.ApprovedSender
        with self.store.write_transaction():
            n = A.delete().where((A.folder == folder_id) & (A.address == norm)).execute()
            if n:
                self.store.add_event("sender-revoked", norm, actor=actor, folder_id=folder_id)
        return bool(n)

    # ---- partners -------------------------------------------------------------------------
    def add_partner(self, folder_id: int, name: str, *, vat: str = "", siren: str = "",
                    email: str = "", domains: tuple[str, ...] = (), trusted: bool = False,
                    iban: str = "", language: str = "fr", pay_button: bool = False,
                    actor: str = "cli") -> Partner:
        with self.store.write_transaction():
            row = models.Partner.create(
                folder=folder_id, name=name, vat=vat.upper(), siren=siren,
                email=normalize_address(email) if email else "",
                sending_domains=json.dumps(sorted({normalize_domain(d) for d in domains})),
                trusted=trusted, iban=iban.replace(" ", "").upper(), language=language,
                pay_button=pay_button, created_at=self.store.clock())
            self.store.add_event("partner-added", f"{name} {vat or siren}", actor=actor,
                                 folder_id=folder_id)
        return _partner(row)

    def partners(self, folder_id: int) -> list[Partner]:
        q = models.Partner.select().where(models.Partner.folder == folder_id)
        return [_partner(r) for r in q.order_by(models.Partner.name)]

    def partner(self, folder_id: int, key: str) -> Partner | None:
        """By id, VAT number or SIREN."""
        P = models.Partner
        cond = (P.vat == key.upper()) | (P.siren == key)
        if key.isdigit() and len(key) < 9:
            cond = P.id == int(key)
        row = P.select().where((P.folder == folder_id) & cond).first()
        return _partner(row) if row else None

    def partner_for_document(self, folder_id: int, vat: str | None,
                             siren: str | None) -> Partner | None:
        P = models.Partner
        conds = []
        if vat:
            conds.append(P.vat == vat.upper())
        if siren:
            conds.append(P.siren == siren)
        if not conds:
            return None
        cond = conds[0] if len(conds) == 1 else conds[0] | conds[1]
        row = P.select().where((P.folder == folder_id) & cond).first()
        return _partner(row) if row else None

    def set_partner(self, partner: Partner, *, trusted: bool | None = None,
                    add_domains: tuple[str, ...] = (), actor: str = "cli") -> Partner:
        domains = set(partner.sending_domains) | {normalize_domain(d) for d in add_domains}
        cols: dict[str, Any] = {"sending_domains": json.dumps(sorted(domains))}
        if trusted is not None:
            cols["trusted"] = trusted
        with self.store.write_transaction():
            models.Partner.update(**cols).where(models.Partner.id == partner.id).execute()
            detail = f"{partner.name}: trusted={trusted} domains={sorted(domains)}"
            self.store.add_event("partner-changed", detail, actor=actor,
                                 folder_id=partner.folder_id)
        row = models.Partner.get_by_id(partner.id)
        return _partner(row)


class BatchPolicy(Policy):
    """The policy reads of one claimed batch of jobs, each made once: a batch takes well
    under a second, and a change made meanwhile applies from the next batch, as if it had
    landed a moment later. The worker makes one per batch; never kept longer."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._settings: dict[int, dict[str, Any]] = {}
        self._senders: dict[int, frozenset[str]] = {}
        self._partners: dict[tuple[int, str | None, str | None], Partner | None] = {}

    def folder_settings(self, folder_id: int) -> dict[str, Any]:
        if folder_id not in self._settings:
            self._settings[folder_id] = super().folder_settings(folder_id)
        return dict(self._settings[folder_id])

    def approved_senders(self, folder_id: int) -> frozenset[str]:
        if folder_id not in self._senders:
            self._senders[folder_id] = super().approved_senders(folder_id)
        return self._senders[folder_id]

    def partner_for_document(self, folder_id: int, vat: str | None,
                             siren: str | None) -> Partner | None:
        key = (folder_id, vat, siren)
        if key not in self._partners:
            self._partners[key] = super().partner_for_document(folder_id, vat, siren)
        return self._partners[key]
