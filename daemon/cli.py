"""The ``facturd`` command (also ``python -m daemon``).

Exit codes (documented in README and ``facturd --help``):
  0 success            1 runtime failure      2 usage error (bad arguments or values)
  3 configuration error  4 not found          5 another instance holds the role lock
  6 installation problem (foreign package owns an import name)   7 storage error
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daemon import config as config_mod
from daemon import logs, selfcheck
from daemon.docjson import document_json
from daemon.service import ALL_ROLES, AlreadyRunning, RoleFailed, open_store, run
from daemon.vat import InvalidVat, normalize_vat
from storage.db import StorageError
from storage.records import IntakeItem, Recipient
from storage.store import Store

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CONFIG, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
EXIT_RUNNING, EXIT_INSTALL, EXIT_STORAGE = 5, 6, 7

EPILOG = """exit codes: 0 ok, 1 failure, 2 usage, 3 configuration error, 4 not found,
5 already running, 6 installation problem, 7 storage error"""


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facturd", epilog=EPILOG,
                                description="Invoice mailbox daemon.")
    p.add_argument("--config", metavar="FILE",
                   help=f"TOML configuration (default: ${config_mod.ENV_CONFIG}, "
                        "else built-in defaults)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run every role in one process")
    for role in ALL_ROLES:
        sub.add_parser(role, help=f"run the {role} role only")
    sub.add_parser("check-config", help="validate the configuration and print it")

    folder = sub.add_parser("folder", help="hosted companies").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    add = folder.add_parser("add", help="host a company at <VAT>@<domain>")
    add.add_argument("vat")
    add.add_argument("--name", required=True)
    add.add_argument("--notify", default="", metavar="EMAIL")
    add.add_argument("--accountant", default="", metavar="EMAIL")
    add.add_argument("--mode", default="manual",
                     choices=("manual", "except-trusted", "automatic"))
    add.add_argument("--language", default="fr", choices=("fr", "en"))
    folder.add_parser("list", help="list hosted companies").add_argument("--json",
                                                                        action="store_true")
    show = folder.add_parser("show", help="one company")
    show.add_argument("vat")
    show.add_argument("--json", action="store_true")

    from daemon import cli_digest, cli_operator, cli_policy, cli_recognize

    cli_policy.add_parsers(sub)
    cli_recognize.add_parser(sub)
    cli_digest.add_parsers(sub)
    cli_operator.add_parsers(sub)

    imp = sub.add_parser("import", help="import invoice files into a folder")
    imp.add_argument("files", nargs="+", metavar="FILE")
    imp.add_argument("--folder", required=True, metavar="VAT")
    imp.add_argument("--sales", action="store_true", help="the company's own sales invoices")

    msgs = sub.add_parser("messages", help="received mail and its processing jobs"
                          ).add_subparsers(dest="action", required=True, metavar="ACTION")
    ml = msgs.add_parser("list", help="jobs, newest first, with their state and last error")
    ml.add_argument("--state", choices=("queued", "running", "done", "quarantined",
                                        "duplicate"))
    ml.add_argument("--json", action="store_true")
    mr = msgs.add_parser("retry", help="try a quarantined job again")
    mr.add_argument("job", type=int)

    docs = sub.add_parser("documents", help="invoices").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    dl = docs.add_parser("list", help="list documents, newest first")
    dl.add_argument("--folder", metavar="VAT")
    dl.add_argument("--state")
    dl.add_argument("--json", action="store_true")
    dp = docs.add_parser("paid", help="mark an archived purchase invoice as paid")
    dp.add_argument("id", type=int)
    dp.add_argument("--date", help="payment date YYYY-MM-DD (default: today)")
    dsend = docs.add_parser("send", help="send a draft sales invoice to its customer")
    dsend.add_argument("id", type=int)
    dsend.add_argument("--to", metavar="ADDRESS",
                       help="mail it to this address (default: the customer's folder here, "
                            "else the partner's e-mail address)")
    ds = docs.add_parser("show", help="one document: fields, state, trace and events")
    ds.add_argument("id", type=int)
    ds.add_argument("--json", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print(f"facturd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.setup(cfg.log_level)
    problems = selfcheck.problems()
    if problems:
        for problem in problems:
            print(f"facturd: installation problem: {problem}", file=sys.stderr)
        return EXIT_INSTALL
    try:
        return dispatch(args, cfg)
    except CliError as exc:
        print(f"facturd: {exc}", file=sys.stderr)
        return exc.code
    except AlreadyRunning as exc:
        print(f"facturd: {exc}", file=sys.stderr)
        return EXIT_RUNNING
    except StorageError as exc:
        print(f"facturd: storage error: {exc}", file=sys.stderr)
        return EXIT_STORAGE
    except RoleFailed as exc:
        print(f"facturd: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return EXIT_FAIL


def dispatch(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    command = args.command
    if command == "check-config":
        return cmd_check_config(cfg)
    if command in ("recognize", "check"):
        from daemon import cli_recognize

        return cli_recognize.run(args, cfg) if command == "recognize" else \
            cli_recognize.run_check(args)
    if command == "serve" or command in ALL_ROLES:
        from daemon.service import lock_role

        roles = ALL_ROLES if command == "serve" else (command,)
        # serve holds every role's lock: `serve` and `work` on one state folder exclude
        # each other exactly like two `work` processes do.
        locks = [lock_role(cfg.state_path, role) for role in roles]
        try:
            asyncio.run(run(cfg, roles))
        finally:
            for lock in locks:
                lock.close()
        return EXIT_OK
    store = open_store(cfg)
    try:
        if command in ("sender", "partner") or (command == "folder" and args.action == "set"):
            from daemon import cli_policy

            try:
                return cli_policy.run(args, store, _folder_or_fail(store, args.vat))
            except cli_policy.PolicyError as exc:
                raise CliError(str(exc), EXIT_USAGE) from None
        if command == "operator":
            from daemon import cli_operator

            try:
                return cli_operator.run(args, store)
            except cli_operator.OperatorError as exc:
                raise CliError(str(exc), exc.code) from None
        if command == "folder":
            return cmd_folder(args, cfg, store)
        if command == "import":
            return cmd_import(args, cfg, store)
        if command == "documents":
            return cmd_documents(args, store, cfg)
        if command == "messages":
            return cmd_messages(args, store)
        if command in ("digest", "share"):
            from datetime import timedelta

            from daemon import cli_digest

            folder_id = _folder_or_fail(store, args.folder) if args.folder else None
            try:
                ds = cli_digest.digest_settings(cfg, cfg.public_url,
                                                timedelta(days=cfg.web.token_ttl_days))
            except ValueError as exc:
                raise CliError(f"configuration: {exc}", EXIT_CONFIG) from None
            return cli_digest.run(args, store, folder_id, ds, cli_digest.share_settings(cfg))
    finally:
        store.close()
    raise CliError(f"unknown command {command}", EXIT_USAGE)  # pragma: no cover


def cmd_check_config(cfg: config_mod.Config) -> int:
    print(f"configuration OK ({cfg.source})")
    print(f"  state_dir      {cfg.state_path}")
    print(f"  domain         {cfg.domain}")
    from storage.db import redact

    print(f"  database       {redact(cfg.database_url)}")
    print(f"  blobs          {cfg.blob_backend}"
          + (f" in {cfg.blob_path}" if cfg.blob_backend == "files" else ""))
    print(f"  smtp.listen    {cfg.smtp_listen or 'off'}")
    print(f"  lmtp.listen    {cfg.lmtp_listen or 'off'}")
    print(f"  web.listen     {cfg.web_listen or 'off'}")
    print(f"  outgoing       {cfg.outgoing.mode}"
          + (f" to {cfg.outbox_path}" if cfg.outgoing.mode == "file" else ""))
    return EXIT_OK


def _folder_or_fail(store: Store, vat_text: str) -> int:
    try:
        vat = normalize_vat(vat_text)
    except InvalidVat as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    folder = store.folder_by_vat(vat)
    if folder is None:
        raise CliError(f"no folder {vat} (facturd folder list shows them)", EXIT_NOT_FOUND)
    return folder.id


def cmd_folder(args: argparse.Namespace, cfg: config_mod.Config, store: Store) -> int:
    if args.action == "add":
        try:
            vat = normalize_vat(args.vat)
        except InvalidVat as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        if store.folder_by_vat(vat):
            raise CliError(f"folder {vat} already exists", EXIT_USAGE)
        siren = vat[4:] if vat.startswith("FR") and len(vat) == 13 else ""
        store.add_folder(vat, args.name, mode=args.mode.replace("-", "_"),
                         notify_email=args.notify, accountant_email=args.accountant,
                         siren=siren, language=args.language)
        print(f"folder {vat} ({args.name}) receives invoices at {vat}@{cfg.domain}")
        return EXIT_OK
    if args.action == "list":
        folders = store.folders()
        if args.json:
            print(json.dumps([{"vat": f.vat, "name": f.name, "mode": f.mode,
                               "address": f"{f.vat}@{cfg.domain}"} for f in folders], indent=2))
        for f in [] if args.json else folders:
            print(f"{f.vat:<16} {f.mode:<15} {f.vat}@{cfg.domain}  {f.name}")
        return EXIT_OK
    folder = store.folder(_folder_or_fail(store, args.vat))
    assert folder is not None
    info = {"vat": folder.vat, "name": folder.name, "address": f"{folder.vat}@{cfg.domain}",
            "siren": folder.siren, "mode": folder.mode,
            "identify_duplicates": folder.identify_duplicates,
            "block_duplicates": folder.block_duplicates,
            "auto_accept_approved_senders": folder.auto_accept_approved_senders,
            "notify_email": folder.notify_email, "notify_frequency": folder.notify_frequency,
            "accountant_email": folder.accountant_email, "language": folder.language,
            "deliveries": len(store.deliveries(folder.id)),
            "documents": len(store.documents.find(folder.id))}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:<30} {value}")
    return EXIT_OK


def cmd_import(args: argparse.Namespace, cfg: config_mod.Config, store: Store) -> int:
    folder_id = _folder_or_fail(store, args.folder)
    paths = [Path(f) for f in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise CliError(f"not a file: {', '.join(missing)}", EXIT_NOT_FOUND)
    total, failed = len(paths), 0
    for n, path in enumerate(paths, 1):
        data = path.read_bytes()
        if len(data) > cfg.intake.max_message_bytes:
            print(f"[{n}/{total}] {path.name}: skipped, larger than intake.max_message_bytes",
                  file=sys.stderr)
            failed += 1
            continue
        item = IntakeItem(raw=data, sha256=hashlib.sha256(data).hexdigest(), mail_from="",
                          recipients=(Recipient(folder_id, "", "sales" if args.sales else ""),),
                          protocol="import", peer="cli", helo="", filename=path.name)
        result = store.record_intake([item])[0]
        delivery = result.deliveries[0]
        note = (f"already imported (same bytes as job {delivery.duplicate_of})"
                if delivery.duplicate_of else f"queued as job {delivery.delivery_id}")
        print(f"[{n}/{total}] {path.name}: {note}", file=sys.stderr, flush=True)
    logging.getLogger(__name__).info("imported %d of %d file(s)", total - failed, total)
    return EXIT_FAIL if failed else EXIT_OK


def cmd_documents(args: argparse.Namespace, store: Store, cfg: config_mod.Config) -> int:
    if args.action == "paid":
        return cmd_paid(args, store, cfg)
    if args.action == "send":
        return cmd_send(args, store, cfg)
    folders = {f.id: f.vat for f in store.folders()}
    if args.action == "list":
        folder_id = _folder_or_fail(store, args.folder) if args.folder else None
        docs = store.documents.find(folder_id, args.state)
        if args.json:
            print(json.dumps([document_json(d, folders) for d in docs], indent=2))
            return EXIT_OK
        for d in docs:
            print(f"{d.id:>6} {folders.get(d.folder_id, '?'):<15} {d.direction:<8} "
                  f"{d.state:<17} {d.number or '-':<16} {d.issue_date or '-':<10} "
                  f"{d.total_gross if d.total_gross is not None else '-':>12} "
                  f"{d.currency or ''} {d.seller_name or ''}")
        return EXIT_OK
    doc = store.documents.get(args.id)
    if doc is None:
        raise CliError(f"no document {args.id}", EXIT_NOT_FOUND)
    data = document_json(doc, folders)
    events = store.events(document_id=doc.id)
    if args.json:
        data["events"] = [{"at": e.at.isoformat(), "actor": e.actor, "kind": e.kind,
                           "detail": e.detail} for e in events]
        print(json.dumps(data, indent=2))
        return EXIT_OK
    for key, value in data.items():
        if key in ("trace", "vat_breakdown", "confidence", "reasons", "notes"):
            continue
        print(f"{key:<18} {value if value is not None else '-'}")
    print("vat_breakdown     " + (", ".join(
        f"{b.get('rate')}%: {b.get('base')} + {b.get('tax')}" for b in doc.vat_breakdown) or "-"))
    print("reasons           " + (", ".join(doc.reasons) or "-"))
    print("notes             " + ("; ".join(data["notes"]) or "-"))
    print("trace:")
    for step in doc.trace:
        print(f"  {step['stage']:<12} {step['outcome']:<28} {step['ms']:>7} ms")
    print("events:")
    for e in events:
        print(f"  {e.at:%Y-%m-%d %H:%M:%S} {e.actor:<8} {e.kind:<20} {e.detail}")
    return EXIT_OK


def cmd_messages(args: argparse.Namespace, store: Store) -> int:
    if args.action == "retry":
        from storage.queue import Queue

        if not Queue(store).requeue(args.job):
            raise CliError(f"job {args.job} is not quarantined", EXIT_NOT_FOUND)
        print(f"job {args.job} queued again")
        return EXIT_OK
    folders = {f.id: f.vat for f in store.folders()}
    rows: list[dict[str, Any]] = []
    for d in reversed(store.deliveries(state=args.state)):
        msg = store.message(d.message_id)
        assert msg is not None
        rows.append({"job": d.id, "message": f"M{d.message_id}",
                     "folder": folders.get(d.folder_id), "state": d.state,
                     "attempts": d.attempts, "protocol": msg.protocol,
                     "from": msg.mail_from, "received_at": msg.received_at.isoformat(),
                     "duplicate_of": d.duplicate_of, "last_error": d.last_error})
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for r in rows:
        print(f"{r['job']:>6} {r['message']:>7} {r['folder']:<15} {r['state']:<12} "
              f"{r['attempts']:>2} {r['received_at'][:19]} {r['from'] or r['protocol']}"
              + (f"  ({r['last_error']})" if r["last_error"] else ""))
    return EXIT_OK


def cmd_paid(args: argparse.Namespace, store: Store, cfg: config_mod.Config) -> int:
    from datetime import date

    from daemon.decisions import DecisionError, mark_paid
    from daemon.settings import approval_settings

    try:
        on = date.fromisoformat(args.date) if args.date else store.clock().date()
    except ValueError:
        raise CliError(f"--date: expected YYYY-MM-DD, got {args.date!r}", EXIT_USAGE) from None
    try:
        state = mark_paid(store, approval_settings(cfg), args.id, by="cli", on=on)
    except DecisionError as exc:
        raise CliError(str(exc), EXIT_FAIL) from None
    print(f"document {args.id}: {state} on {on.isoformat()}")
    return EXIT_OK


def cmd_send(args: argparse.Namespace, store: Store, cfg: config_mod.Config) -> int:
    """``documents send ID [--to ADDRESS]``: 4 no such document, 2 bad address, 1 not a
    sendable draft (already sent, a purchase invoice, no customer address: the message says)."""
    from daemon.sales import NotSendable, UnknownDocument, send_document
    from daemon.settings import sales_settings

    try:
        outcome = send_document(store, sales_settings(cfg), args.id, to=args.to, by="cli")
    except UnknownDocument as exc:
        raise CliError(str(exc), EXIT_NOT_FOUND) from None
    except NotSendable as exc:
        raise CliError(str(exc), EXIT_FAIL) from None
    except ValueError as exc:
        raise CliError(f"--to: {exc}", EXIT_USAGE) from None
    print(f"document {args.id}: {outcome.detail}")
    return EXIT_OK
