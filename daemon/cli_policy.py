"""``facturd folder set``, ``facturd sender ...``, ``facturd partner ...``: a company's policy.

Values are parsed and checked here (booleans, modes, amounts, addresses, VAT numbers) so the
storage layer only ever sees valid settings.
"""

from __future__ import annotations

import argparse
import json
from decimal import Decimal, InvalidOperation
from typing import Any

from daemon import mailer
from daemon.payment import check_pay_link_template
from daemon.vat import InvalidVat, normalize_vat
from storage.policy import FOLDER_SETTINGS, Policy
from storage.records import MODES
from storage.store import Store

CHOICES = {
    "mode": MODES, "notify_frequency": ("immediate", "daily", "weekly", "never"),
    "accountant_frequency": ("immediate", "daily"), "language": ("fr", "en"),
}
TRUE, FALSE = ("true", "yes", "on", "1", "oui"), ("false", "no", "off", "0", "non")


class PolicyError(ValueError):
    pass


def add_parsers(sub: Any) -> None:
    fs = sub.choices["folder"]._subparsers._group_actions[0]  # the folder sub-command group
    st = fs.add_parser("set", help="change settings: key=value ... (see README)")
    st.add_argument("vat")
    st.add_argument("settings", nargs="+", metavar="KEY=VALUE")

    sender = sub.add_parser("sender", help="approved sender addresses of a folder"
                            ).add_subparsers(dest="action", required=True, metavar="ACTION")
    for action in ("approve", "revoke"):
        p = sender.add_parser(action, help=f"{action} an address")
        p.add_argument("vat")
        p.add_argument("address")
    sender.add_parser("list", help="list approved addresses").add_argument("vat")

    partner = sub.add_parser("partner", help="suppliers and customers of a folder"
                             ).add_subparsers(dest="action", required=True, metavar="ACTION")
    add = partner.add_parser("add", help="record a partner")
    add.add_argument("vat", help="the folder")
    add.add_argument("--name", required=True)
    add.add_argument("--partner-vat", default="")
    add.add_argument("--siren", default="")
    add.add_argument("--email", default="")
    add.add_argument("--domain", action="append", default=[],
                     help="authenticated sending domain (repeatable)")
    add.add_argument("--trusted", action="store_true")
    add.add_argument("--language", default="fr", choices=("fr", "en"),
                     help="language of the invoices sent to this customer")
    add.add_argument("--pay-button", action="store_true",
                     help="show the folder's pay link in invoices sent to this customer")
    for action in ("trust", "untrust"):
        p = partner.add_parser(action, help=f"{action} a partner")
        p.add_argument("vat", help="the folder")
        p.add_argument("partner", help="partner id, VAT number or SIREN")
        p.add_argument("--domain", action="append", default=[])
    partner.add_parser("list", help="list partners").add_argument("vat")


def parse_setting(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or key not in FOLDER_SETTINGS:
        known = ", ".join(sorted(FOLDER_SETTINGS))
        raise PolicyError(f"{text!r}: expected KEY=VALUE with KEY one of {known}")
    kind = FOLDER_SETTINGS[key]
    raw = raw.strip()
    if kind is bool:
        if raw.lower() not in TRUE + FALSE:
            raise PolicyError(f"{key}: expected true or false, got {raw!r}")
        return key, raw.lower() in TRUE
    if kind is Decimal:
        if raw.lower() in ("", "none", "off"):
            return key, None
        try:
            value = Decimal(raw.replace(",", "."))
        except InvalidOperation:
            raise PolicyError(f"{key}: expected an amount like 1500.00, got {raw!r}") from None
        if value < 0:
            raise PolicyError(f"{key}: must not be negative")
        return key, value
    if kind is list:
        items = [a.strip() for a in raw.split(",") if a.strip()]
        bad = [a for a in items if "@" not in a]
        if bad:
            raise PolicyError(f"{key}: not email addresses: {', '.join(bad)}")
        return key, items
    if key == "pay_link_template":
        try:
            return key, check_pay_link_template(raw)
        except ValueError as exc:
            raise PolicyError(str(exc)) from None
    if key == "mode":
        raw = raw.replace("-", "_")
    if key in CHOICES and raw not in CHOICES[key]:
        raise PolicyError(f"{key}: expected one of {' | '.join(CHOICES[key])}, got {raw!r}")
    return key, raw


def run(args: argparse.Namespace, store: Store, folder_id: int) -> int:
    policy = Policy(store)
    if args.command == "folder":  # folder set
        values = dict(parse_setting(s) for s in args.settings)
        policy.set_folder(folder_id, values)
        print(json.dumps(policy.folder_settings(folder_id), indent=2, default=str))
        return 0
    if args.command == "sender":
        if args.action == "list":
            for address in sorted(policy.approved_senders(folder_id)):
                print(address)
            return 0
        if "@" not in args.address:
            raise PolicyError(f"{args.address!r} is not an email address")
        if args.action == "approve":
            print(f"approved {policy.approve_sender(folder_id, args.address)} (counts only "
                  "when the message is DKIM-authenticated for its From domain)")
            return 0
        if not policy.revoke_sender(folder_id, args.address):
            print(f"{args.address} was not approved")
            return 4
        print(f"revoked {args.address}")
        return 0
    # partner
    if args.action == "list":
        for p in policy.partners(folder_id):
            print(f"{p.id:>4} {p.name:<30} {p.vat or p.siren:<15} "
                  f"{'trusted' if p.trusted else '-':<8} {', '.join(p.sending_domains)}")
        return 0
    if args.action == "add":
        vat = ""
        if args.partner_vat:
            try:
                vat = normalize_vat(args.partner_vat)
            except InvalidVat as exc:
                raise PolicyError(str(exc)) from None
        siren = args.siren or (vat[4:] if vat.startswith("FR") and len(vat) == 13 else "")
        if args.email:
            try:
                mailer.addr_spec(args.email.strip())
            except ValueError:
                raise PolicyError(f"--email: {args.email!r} is not one e-mail address "
                                  "(invoices to this customer are sent there)") from None
        p = policy.add_partner(folder_id, args.name, vat=vat, siren=siren, email=args.email,
                               domains=tuple(args.domain), trusted=args.trusted,
                               language=args.language, pay_button=args.pay_button)
        print(f"partner {p.id} {p.name} {p.vat or p.siren}"
              + (" (trusted)" if p.trusted else "") + (" (pay button)" if p.pay_button else ""))
        return 0
    found = policy.partner(folder_id, args.partner)
    if found is None:
        print(f"no partner {args.partner}")
        return 4
    changed = policy.set_partner(found, trusted=args.action == "trust",
                                 add_domains=tuple(args.domain))
    if changed.trusted and not changed.sending_domains:
        print("note: no authenticated sending domain recorded (--domain); this partner's "
              "invoices cannot be recognized as trusted until one is")
    print(f"partner {changed.id} {changed.name}: "
          f"{'trusted' if changed.trusted else 'not trusted'}; domains "
          f"{', '.join(changed.sending_domains) or '-'}")
    return 0
