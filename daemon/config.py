"""Configuration: TOML file -> validated, typed, frozen dataclasses.

Job: read one TOML file (or none: embedded defaults), check every key against the schema
below, and hand the rest of the daemon typed values. Unknown keys, wrong types and bad values
are errors that name the key (``smtp.listen: expected host:port or a socket path``).

The dataclasses *are* the schema: code can only read a key that is a field here, and
``tests/test_config.py`` checks that every field is documented in ``config.example.toml``
and that the example documents nothing else.

Known limits: no include files, no environment overrides except ``$FACTURD_CONFIG`` (the file)
and ``$FACTURD_STATE`` (``state_dir``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_CONFIG = "FACTURD_CONFIG"
ENV_STATE = "FACTURD_STATE"


class ConfigError(Exception):
    """A configuration problem; the message names the key and says what is expected."""


@dataclass(frozen=True)
class Listen:
    """Where a listener binds: TCP ``host:port`` or a unix socket ``path``."""

    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    def __str__(self) -> str:
        if self.path:
            return self.path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen(key: str, value: str) -> Listen | None:
    """``""`` -> None (off); ``/run/x.sock`` or ``./x.sock`` -> unix; ``host:port`` -> TCP."""
    value = value.strip()
    if not value:
        return None
    if value.startswith(("/", "./", "../")) or value.endswith(".sock"):
        return Listen(path=value)
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(
            f"{key}: expected host:port (e.g. 127.0.0.1:2525), [::1]:2525 or a unix socket path "
            f"starting with / or ./, got {value!r}"
        )
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"{key}: port must be between 1 and 65535, got {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return Listen(host=host, port=port)


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = ""


@dataclass(frozen=True)
class BlobsConfig:
    backend: str = "auto"
    path: str = ""


@dataclass(frozen=True)
class IntakeConfig:
    max_message_bytes: int = 25 * 1024 * 1024
    max_recipients: int = 10
    max_sessions: int = 20
    max_sessions_per_ip: int = 5
    timeout_seconds: int = 300
    command_limit: int = 50
    min_free_mb: int = 200
    hostname: str = ""


@dataclass(frozen=True)
class SmtpConfig:
    listen: str = "127.0.0.1:2525"


@dataclass(frozen=True)
class LmtpConfig:
    listen: str = ""


@dataclass(frozen=True)
class WebConfig:
    listen: str = "127.0.0.1:8080"
    public_url: str = ""
    token_ttl_days: float = 14.0
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutgoingConfig:
    mode: str = "file"
    outbox_dir: str = ""
    from_address: str = ""
    operator_email: str = ""
    relay_host: str = ""
    relay_port: int = 587
    relay_security: str = "starttls"
    relay_username: str = ""
    relay_password_file: str = ""
    relay_ca_file: str = ""
    timeout_seconds: float = 60.0
    backoff_seconds: float = 60.0
    max_backoff_seconds: float = 3600.0
    max_age_hours: float = 48.0
    dkim_domain: str = ""
    dkim_selector: str = ""
    dkim_private_key_file: str = ""
    poll_seconds: float = 1.0


@dataclass(frozen=True)
class WorkerConfig:
    lease_seconds: int = 300
    max_attempts: int = 6
    backoff_seconds: float = 30.0
    poll_seconds: float = 1.0
    batch_size: int = 32
    batch_seconds: float = 0.5
    schedule_seconds: float = 60.0
    schematron_per_tick: int = 100


@dataclass(frozen=True)
class AuthConfig:
    nameservers: tuple[str, ...] = ()
    dns_timeout_seconds: float = 5.0
    authserv_ids: tuple[str, ...] = ()
    alignment: str = "relaxed"
    reverify_seconds: float = 600.0


@dataclass(frozen=True)
class OcrConfig:
    languages: tuple[str, ...] = ("fra", "eng")
    timeout_seconds: float = 180.0
    memory_mb: int = 2048
    max_pages: int = 50


@dataclass(frozen=True)
class EnrichConfig:
    enabled: bool = True
    schematron_timeout_seconds: float = 30.0


@dataclass(frozen=True)
class Config:
    state_dir: str = "./var"
    domain: str = "invoices.localhost"
    log_level: str = "info"
    templates_dir: str = ""
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    blobs: BlobsConfig = field(default_factory=BlobsConfig)
    intake: IntakeConfig = field(default_factory=IntakeConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    lmtp: LmtpConfig = field(default_factory=LmtpConfig)
    web: WebConfig = field(default_factory=WebConfig)
    outgoing: OutgoingConfig = field(default_factory=OutgoingConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    ocr: OcrConfig = field(default_factory=OcrConfig)
    enrich: EnrichConfig = field(default_factory=EnrichConfig)
    source: str = field(default="(built-in defaults)", compare=False, metadata={"internal": True})

    # ---- derived values -------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).absolute()

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.state_path / 'facturd.sqlite3'}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def blob_backend(self) -> str:
        """``files`` or ``database``; ``auto`` = files on SQLite, database on PostgreSQL."""
        if self.blobs.backend != "auto":
            return self.blobs.backend
        return "files" if self.is_sqlite else "database"

    @property
    def blob_path(self) -> Path:
        return Path(self.blobs.path).absolute() if self.blobs.path else self.state_path / "blobs"

    @property
    def outbox_path(self) -> Path:
        out = self.outgoing.outbox_dir
        return Path(out).absolute() if out else self.state_path / "outbox"

    @property
    def smtp_listen(self) -> Listen | None:
        return parse_listen("smtp.listen", self.smtp.listen)

    @property
    def lmtp_listen(self) -> Listen | None:
        return parse_listen("lmtp.listen", self.lmtp.listen)

    @property
    def web_listen(self) -> Listen | None:
        return parse_listen("web.listen", self.web.listen)

    @property
    def hostname(self) -> str:
        return self.intake.hostname or self.domain

    @property
    def public_url(self) -> str:
        """Base URL of approval links; "" = the web listener's own address."""
        if self.web.public_url:
            return self.web.public_url.rstrip("/")
        listen = self.web_listen
        return f"http://{listen}" if listen and not listen.is_unix else "http://127.0.0.1:8080"

    @property
    def from_address(self) -> str:
        return self.outgoing.from_address or f"facturd@{self.domain}"


# ---- loading -------------------------------------------------------------------------------

_CHOICES: dict[str, tuple[str, ...]] = {
    "log_level": ("debug", "info", "warning", "error"),
    "blobs.backend": ("auto", "files", "database"),
    "outgoing.mode": ("file", "relay"),
    "auth.alignment": ("relaxed", "strict"),
    "outgoing.relay_security": ("starttls", "tls", "none"),
}
_MINIMUM: dict[str, float] = {
    "intake.max_message_bytes": 1024,
    "intake.max_recipients": 1,
    "intake.max_sessions": 1,
    "intake.max_sessions_per_ip": 1,
    "intake.timeout_seconds": 5,
    "intake.command_limit": 10,
    "intake.min_free_mb": 0,
    "worker.lease_seconds": 5,
    "worker.max_attempts": 1,
    "worker.backoff_seconds": 0,
    "worker.poll_seconds": 0.01,
    "worker.schedule_seconds": 0.1,
    "worker.schematron_per_tick": 0,
    "worker.batch_size": 1,
    "worker.batch_seconds": 0,
    "auth.dns_timeout_seconds": 0.1,
    "outgoing.relay_port": 1,
    "web.token_ttl_days": 0.0001,
    "ocr.timeout_seconds": 1,
    "ocr.memory_mb": 256,
    "ocr.max_pages": 1,
    "enrich.schematron_timeout_seconds": 1,
    "outgoing.timeout_seconds": 1,
    "outgoing.backoff_seconds": 0,
    "outgoing.max_backoff_seconds": 1,
    "outgoing.max_age_hours": 0.001,
    "outgoing.poll_seconds": 0.01,
    "auth.reverify_seconds": 1,
}


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _check_scalar(key: str, value: Any, tp: Any) -> Any:
    if typing.get_origin(tp) is tuple:  # tuple[str, ...]: a TOML array of strings
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return tuple(v.strip() for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
    elif tp is str and not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if key in _MINIMUM and value < _MINIMUM[key]:
        raise ConfigError(f"{key}: must be at least {_MINIMUM[key]:g}, got {value!r}")
    if key in _CHOICES and value not in _CHOICES[key]:
        choices = " | ".join(_CHOICES[key])
        raise ConfigError(f"{key}: expected one of {choices}, got {value!r}")
    return value


def _build(cls: type[Any], data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for name in data:
        if name not in known:
            where = f"{prefix}{name}"
            raise ConfigError(f"{where}: unknown key (see config.example.toml for every key)")
    kwargs: dict[str, Any] = {}
    for name in known:
        if name not in data:
            continue
        key = f"{prefix}{name}"
        tp = hints[name]
        value = data[name]
        if _is_section(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a [{key}] table, got {value!r}")
            kwargs[name] = _build(tp, value, f"{key}.")
        else:
            if isinstance(tp, types.UnionType):  # pragma: no cover - no optional keys today
                raise ConfigError(f"{key}: unsupported type")
            kwargs[name] = _check_scalar(key, value, tp)
    return cls(**kwargs)


def schema_keys(cls: type[Any] = Config, prefix: str = "") -> list[str]:
    """Every dotted key the code can read, in declaration order."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        if _is_section(tp):
            keys.extend(schema_keys(tp, f"{prefix}{f.name}."))
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _validate(cfg: Config) -> None:
    cfg.smtp_listen  # noqa: B018 - parse for errors
    cfg.lmtp_listen  # noqa: B018
    cfg.web_listen  # noqa: B018
    domain = cfg.domain.strip().lower()
    if not domain or " " in domain or "@" in domain or "." not in domain:
        raise ConfigError(f"domain: expected a mail domain like invoices.example.com, got "
                          f"{cfg.domain!r}")
    if cfg.blob_backend == "files" and not cfg.is_sqlite and not cfg.blobs.path:
        raise ConfigError(
            "blobs.path: with PostgreSQL and backend = \"files\", set a path that every node "
            "shares (or use backend = \"database\")"
        )
    if cfg.web.public_url and not cfg.web.public_url.startswith(("https://", "http://")):
        raise ConfigError(f"web.public_url: expected https://host[/path], got "
                          f"{cfg.web.public_url!r}")
    for proxy in cfg.web.trusted_proxies:
        try:
            if proxy != "unix":
                ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"web.trusted_proxies: expected IP addresses or networks (or "
                              f"\"unix\"), got {proxy!r}") from None
    if cfg.outgoing.mode == "relay" and not cfg.outgoing.relay_host:
        raise ConfigError("outgoing.relay_host: required when outgoing.mode = \"relay\"")
    if cfg.outgoing.relay_username and not cfg.outgoing.relay_password_file:
        raise ConfigError("outgoing.relay_password_file: required with relay_username")
    url = cfg.database_url
    if not url.startswith(("sqlite://", "postgres://", "postgresql://")):
        raise ConfigError(
            f"database.url: expected sqlite:///PATH or postgresql://USER@HOST:PORT/DB, got {url!r}"
        )


def load(path: str | os.PathLike[str] | None = None,
         environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate the configuration.

    ``path`` None -> ``$FACTURD_CONFIG`` if set, else built-in defaults. ``$FACTURD_STATE``
    overrides ``state_dir`` when the file does not set it.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get(ENV_CONFIG):
        path = env[ENV_CONFIG]
    data: dict[str, Any] = {}
    source = "(built-in defaults)"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if "state_dir" not in data and env.get(ENV_STATE):
        data["state_dir"] = env[ENV_STATE]
    cfg: Config = _build(Config, data, "")
    cfg = dataclasses.replace(cfg, source=source, domain=cfg.domain.strip().lower())
    _validate(cfg)
    return cfg
