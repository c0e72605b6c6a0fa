"""Configuration: every key documented, errors name the key, CLI reports them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from daemon import config
from tests.conftest import ROOT

EXAMPLE = ROOT / "config.example.toml"


def flatten(data: dict[str, object], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for key, value in data.items():
        if isinstance(value, dict):
            keys.extend(flatten(value, f"{prefix}{key}."))
        else:
            keys.append(f"{prefix}{key}")
    return keys


def test_example_documents_exactly_the_keys_the_code_reads() -> None:
    documented = flatten(tomllib.loads(EXAMPLE.read_text()))
    readable = config.schema_keys()
    assert sorted(set(readable) - set(documented)) == [], "keys read but not documented"
    assert sorted(set(documented) - set(readable)) == [], "keys documented but not read"


def test_example_is_valid_and_equals_the_defaults(tmp_path: Path) -> None:
    loaded = config.load(EXAMPLE, environ={})
    assert loaded == config.load(None, environ={})


def test_embedded_defaults() -> None:
    cfg = config.load(None, environ={})
    assert cfg.state_dir == "./var"
    assert cfg.domain == "invoices.localhost"
    assert cfg.is_sqlite and cfg.blob_backend == "files"
    assert str(cfg.smtp_listen) == "127.0.0.1:2525"
    assert cfg.lmtp_listen is None
    assert str(cfg.web_listen) == "127.0.0.1:8080"
    assert cfg.outgoing.mode == "file"
    assert cfg.outbox_path == Path("var/outbox").absolute()


def test_environment_names_config_and_state(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('domain = "invoices.example.com"\n')
    cfg = config.load(None, environ={"FACTURD_CONFIG": str(f), "FACTURD_STATE": "/srv/f"})
    assert cfg.domain == "invoices.example.com"
    assert cfg.state_dir == "/srv/f"


@pytest.mark.parametrize(("text", "message"), [
    ("[smtp]\nlisten = 'nowhere'\n", "smtp.listen: expected host:port"),
    ("[smtp]\nlisten = '127.0.0.1:99999'\n", "smtp.listen: port must be between"),
    ("[smtp]\nlistn = '127.0.0.1:25'\n", "smtp.listn: unknown key"),
    ("[intake]\nmax_recipients = 'ten'\n", "intake.max_recipients: expected an integer"),
    ("[intake]\nmax_recipients = 0\n", "intake.max_recipients: must be at least 1"),
    ("[outgoing]\nmode = 'carrier-pigeon'\n", "outgoing.mode: expected one of file | relay"),
    ("domain = 'localhost'\n", "domain: expected a mail domain"),
    ("smtp = 3\n", "smtp: expected a [smtp] table"),
    ("[database]\nurl = 'mysql://x'\n", "database.url: expected sqlite"),
    ("[database]\nurl = 'postgresql://x@h/db'\n[blobs]\nbackend = 'files'\n", "blobs.path:"),
    ("state_dir = \n", "not valid TOML"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load(f, environ={})
    assert message in str(err.value)


def test_check_config_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[lmtp]\nlisten = 'x:y'\n")
    res = subprocess.run([sys.executable, "-m", "daemon", "--config", str(bad), "check-config"],
                         capture_output=True, text=True)
    assert res.returncode == 3
    assert "lmtp.listen" in res.stderr
    res = subprocess.run([sys.executable, "-m", "daemon", "--config", str(EXAMPLE),
                          "check-config"], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "127.0.0.1:2525" in res.stdout
