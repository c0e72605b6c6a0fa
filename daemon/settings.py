"""Configuration -> the settings objects of each part (one place for the mapping)."""

from __future__ import annotations

from datetime import timedelta

from daemon.config import Config
from daemon.decisions import ApprovalSettings
from daemon.mailer import template_dirs
from daemon.ocr import OcrSettings
from daemon.outbox import SendSettings
from daemon.sales import SalesSettings


def approval_settings(cfg: Config) -> ApprovalSettings:
    return ApprovalSettings(domain=cfg.domain, public_url=cfg.public_url,
                            from_address=cfg.from_address,
                            token_ttl=timedelta(days=cfg.web.token_ttl_days),
                            template_dirs=template_dirs(cfg.templates_dir or None))


def send_settings(cfg: Config) -> SendSettings:
    o = cfg.outgoing
    return SendSettings(
        mode=o.mode, outbox_dir=cfg.outbox_path, relay_host=o.relay_host,
        relay_port=o.relay_port, relay_security=o.relay_security,
        relay_username=o.relay_username, relay_password_file=o.relay_password_file,
        relay_ca_file=o.relay_ca_file, timeout=o.timeout_seconds,
        backoff_seconds=o.backoff_seconds, max_backoff_seconds=o.max_backoff_seconds,
        max_age_hours=o.max_age_hours, operator_email=o.operator_email,
        from_address=cfg.from_address, helo_hostname=cfg.hostname,
        dkim_domain=o.dkim_domain, dkim_selector=o.dkim_selector,
        dkim_private_key_file=o.dkim_private_key_file,
        template_dirs=template_dirs(cfg.templates_dir or None), poll_seconds=o.poll_seconds)


def sales_settings(cfg: Config) -> SalesSettings:
    return SalesSettings(domain=cfg.domain,
                         template_dirs=template_dirs(cfg.templates_dir or None))


def ocr_settings(cfg: Config) -> OcrSettings:
    o = cfg.ocr
    return OcrSettings(languages=o.languages, timeout_seconds=o.timeout_seconds,
                       memory_mb=o.memory_mb, max_pages=o.max_pages)
