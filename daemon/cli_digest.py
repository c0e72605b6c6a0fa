"""``facturd digest`` and ``facturd share``: digests and accountant shares from the CLI.

Job: the same work as the daemon's scheduler (daemon/scheduler.py), once, for cron-like use
(``systemd/facturd-digest.timer``) or by hand:

  facturd digest [--folder VAT] [--now]   digests whose schedule is due (--now: regardless
                                          of the schedule; still none when nothing to say)
  facturd share [--folder VAT] [--now]    accountant shares that are due (--now: every
                                          archived, unshared document, whatever the
                                          folder's accountant_frequency)

May touch: what daemon/digest.py and daemon/sharing.py touch; prints one line per folder.
Exit codes: 0, or 1 when a folder's digest or share failed (bad settings: the line says why).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon import mailer
from daemon.config import Config
from daemon.digest import DigestSettings, send_digests
from daemon.sharing import ShareSettings, share_due
from storage.store import Store

DEFAULT_TOKEN_TTL = timedelta(days=8)  # a weekly digest's links outlive the next digest


def add_parsers(sub: Any) -> None:
    digest = sub.add_parser("digest", help="send the digests that are due")
    digest.add_argument("--folder", metavar="VAT", help="this folder only")
    digest.add_argument("--now", action="store_true",
                        help="send now, whatever the folder's schedule")
    share = sub.add_parser("share", help="send archived documents to the accountant")
    share.add_argument("--folder", metavar="VAT", help="this folder only")
    share.add_argument("--now", action="store_true",
                       help="share every archived, unshared document now, whatever the "
                            "folder's accountant_frequency")


def digest_settings(cfg: Config, public_url: str,
                    token_ttl: timedelta = DEFAULT_TOKEN_TTL) -> DigestSettings:
    """ValueError (a configuration error) when public_url or the From address is unusable."""
    return DigestSettings(public_url=public_url, from_address=cfg.from_address,
                          token_ttl=token_ttl, domain=cfg.domain,
                          template_dirs=mailer.template_dirs(cfg.templates_dir or None))


def share_settings(cfg: Config) -> ShareSettings:
    return ShareSettings(from_address=cfg.from_address,
                         template_dirs=mailer.template_dirs(cfg.templates_dir or None))


def run(args: argparse.Namespace, store: Store, folder_id: int | None,
        digests: DigestSettings | None, shares: ShareSettings,
        now: datetime | None = None) -> int:
    """``folder_id``: the folder named by --folder, already resolved (None = every folder);
    ``digests`` may be None for ``share`` (it needs no public_url)."""
    moment = now or datetime.now(UTC)
    if args.command == "digest":
        if digests is None:
            raise ValueError("digest: no digest settings (public_url missing?)")
        failed = False
        for vat, outcome in send_digests(store, digests, moment,
                                         folder_id=folder_id, force=args.now):
            print(f"{vat:<16} {outcome}")
            failed = failed or outcome.startswith("error")
        return 1 if failed else 0
    shared = share_due(store, shares, moment, folder_id=folder_id, force=args.now)
    for item in shared:
        print(f"{item.vat:<16} error: {item.error}" if item.error else
              f"{item.vat:<16} {item.documents} document(s) queued for the accountant "
              f"(outbox {item.outbox_id})")
    if not shared:
        print("nothing to share")
    return 1 if any(item.error for item in shared) else 0
