"""systemd units (``systemd/``) and the service behaviour they rely on.

* ``systemd-analyze verify`` and ``security --offline`` on every unit, when the binary exists
  (Debian package ``systemd``); the units are copied with ExecStart pointing at this venv's
  ``facturd``, because verify insists that the binary exists.
* The settings every service unit must keep (plain text, no systemd needed).
* Type=notify without systemd: ``facturd serve`` with NOTIFY_SOCKET on a datagram socket the
  test binds sends READY=1, WATCHDOG=1 every WATCHDOG_USEC/2 and STOPPING=1 on SIGTERM, all
  from the main process (NotifyAccess=main).
* MemoryDenyWriteExecute=yes: the daemon runs, and processes a Factur-X invoice, under the
  kernel's equivalent (prctl PR_SET_MDWE), so the unit's setting cannot break it.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import smtplib
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DOMAIN, ROOT, VAT, Facturd
from tests.factories import make_facturx_pdf
from tests.mails import crlf, invoice_mail

UNITS = ROOT / "systemd"
INSTALLED_BIN = "/opt/facturd/bin/facturd"
# unit file -> the facturd command its ExecStart runs
SERVICES = {
    "facturd.service": "serve",
    "facturd-receive.service": "receive",
    "facturd-work.service": "work",
    "facturd-web.service": "web",
    "facturd-send.service": "send",
}
ALL_UNITS = [*SERVICES, "facturd.target"]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze not installed (Debian package: systemd); units not verified")


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value in order (keys like Environment= repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key=value: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture
def unit_copies(tmp_path: Path) -> Path:
    """The units with ExecStart rewritten to this venv's facturd (verify wants it to exist)."""
    venv_bin = Path(sys.executable).with_name("facturd")
    assert venv_bin.exists(), f"{venv_bin} missing: is facturd installed in this venv?"
    out = tmp_path / "units"
    out.mkdir()
    for name in ALL_UNITS:
        text = (UNITS / name).read_text()
        (out / name).write_text(text.replace(INSTALLED_BIN, str(venv_bin)))
    return out


@needs_analyze
@pytest.mark.parametrize("name", ALL_UNITS)
def test_systemd_analyze_verify(unit_copies: Path, name: str) -> None:
    assert SYSTEMD_ANALYZE is not None
    res = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(unit_copies / name)],
                         capture_output=True, text=True, cwd=unit_copies, timeout=60)
    # verify exits 0 on unknown keys and bad values, it only warns: any output is a finding
    assert (res.returncode, res.stdout + res.stderr) == (0, "")


@needs_analyze
@pytest.mark.parametrize("name", list(SERVICES))
def test_systemd_analyze_security_exposure(unit_copies: Path, name: str) -> None:
    assert SYSTEMD_ANALYZE is not None
    res = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager",
                          str(unit_copies / name)],
                         capture_output=True, text=True, cwd=unit_copies, timeout=60)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout + res.stderr)
    assert found, res.stdout + res.stderr
    # 0 = fully locked down, 10 = no sandbox; the units score 1.4 with systemd 252
    assert float(found.group(1)) <= 2.0, res.stdout


@pytest.mark.parametrize("name", list(SERVICES))
def test_service_units_keep_the_required_settings(name: str) -> None:
    unit = parse_unit(UNITS / name)
    service = {k: v[-1] for k, v in unit["Service"].items()}
    assert service["ExecStart"] == f"{INSTALLED_BIN} {SERVICES[name]}"
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "60",
        "Restart": "on-failure", "User": "facturd", "Group": "facturd",
        "StateDirectory": "facturd", "ConfigurationDirectory": "facturd",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "PrivateDevices": "yes", "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "RestrictNamespaces": "yes",
        "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes",
        "ProtectHostname": "yes", "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes",
        "SystemCallArchitectures": "native", "CapabilityBoundingSet": "",
        "AmbientCapabilities": "", "UMask": "0077",
    }
    assert {k: service.get(k) for k in expected} == expected
    assert unit["Service"]["SystemCallFilter"][0] == "@system-service"
    assert "FACTURD_CONFIG=/etc/facturd/facturd.toml" in unit["Service"]["Environment"]
    # /run/facturd holds the LMTP socket: only the units running the receive role own it
    # (systemd deletes a RuntimeDirectory when its unit stops)
    owns_run = SERVICES[name] in ("serve", "receive")
    assert service.get("RuntimeDirectory") == ("facturd" if owns_run else None)
    if name != "facturd.service":
        assert unit["Unit"]["PartOf"] == ["facturd.target"]
        assert unit["Unit"]["Conflicts"] == ["facturd.service"]
        assert unit["Install"]["WantedBy"] == ["facturd.target"]
    else:
        assert unit["Install"]["WantedBy"] == ["multi-user.target"]


# ---- sd_notify without systemd ---------------------------------------------------------


def _recv_notify(sock: socket.socket, timeout: float) -> tuple[str, int] | None:
    """One datagram and the sender's pid (SCM_CREDENTIALS), or None on timeout."""
    sock.settimeout(timeout)
    try:
        data, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    except TimeoutError:
        return None
    pid = -1
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", payload[:12])[0]
    return data.decode(), pid


def test_sd_notify_ready_watchdog_stopping(facturd: Facturd, tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(path))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        facturd.add_folder()
        facturd.start(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
        assert facturd.proc is not None
        main_pid = facturd.proc.pid
        got: list[tuple[float, str, int]] = []
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            msg = _recv_notify(sock, max(0.05, deadline - time.monotonic()))
            if msg is None:
                break
            got.append((time.monotonic(), *msg))
            if sum(1 for _, m, _ in got if m == "WATCHDOG=1") >= 3:
                break
        states = [m for _, m, _ in got]
        assert states and states[0].startswith("READY=1\n"), states
        assert "\nSTATUS=facturd running: " in states[0]
        pings = [t for t, m, _ in got if m == "WATCHDOG=1"]
        assert len(pings) >= 3, f"watchdog pings in 6 s: {states}"
        # every WATCHDOG_USEC/2 = 1 s (systemd kills the service after WATCHDOG_USEC). The
        # first ping waited in the socket while start() polled the log: time the later ones.
        gaps = [b - a for a, b in itertools.pairwise(pings[1:])]
        assert all(0.7 < gap < 1.8 for gap in gaps), gaps
        assert facturd.stop() == 0
        rest = []
        while (msg := _recv_notify(sock, 0.5)) is not None:
            rest.append(msg)
            got.append((time.monotonic(), *msg))
        assert "STOPPING=1" in [m for m, _ in rest], rest
        # NotifyAccess=main: systemd only listens to the main process
        assert {pid for _, _, pid in got} == {main_pid}
    finally:
        sock.close()


def test_no_notify_socket_no_notifications(facturd: Facturd) -> None:
    """Outside systemd (no NOTIFY_SOCKET) the daemon starts and stops normally."""
    facturd.start(env={"WATCHDOG_USEC": "2000000"})
    assert facturd.stop() == 0


# ---- MemoryDenyWriteExecute=yes ----------------------------------------------------------

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
SITECUSTOMIZE = f"""\
import ctypes, sys
if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0):
    sys.exit("prctl(PR_SET_MDWE) failed")
print("MDWE on", file=sys.stderr, flush=True)
"""


def _mdwe_supported() -> bool:
    code = (f"import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl({PR_SET_MDWE}, "
            f"{PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0)")
    return subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_daemon_works_without_writable_executable_memory(facturd: Facturd,
                                                          tmp_path: Path) -> None:
    """The unit sets MemoryDenyWriteExecute=yes. systemd enforces it with seccomp; here the
    kernel's own switch (Linux >= 6.3, also used by systemd >= 254) refuses W+X mappings in
    the daemon, which must still start, receive and process a Factur-X invoice."""
    if not _mdwe_supported():
        pytest.skip("kernel without prctl(PR_SET_MDWE) (Linux < 6.3)")
    site = tmp_path / "mdwe"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    facturd.add_folder(VAT, "Acme SAS", "--mode", "automatic")
    facturd.start(env={"PYTHONPATH": str(site)})
    assert "MDWE on" in facturd.logs()
    pdf = make_facturx_pdf(number="F2026-0077")
    msg = invoice_mail(to=f"{VAT}@{DOMAIN}",
                       attachments=[("F2026-0077.pdf", "application/pdf", pdf)])
    with smtplib.SMTP("127.0.0.1", facturd.smtp_port, timeout=30) as smtp:
        smtp.sendmail("billing@vendor.test", [f"{VAT}@{DOMAIN}"], crlf(msg.as_bytes()))
    deadline = time.monotonic() + 60
    states: list[str] = []
    while time.monotonic() < deadline:
        rows = json.loads(facturd.cli("messages", "list", "--json").stdout)
        states = [r["state"] for r in rows]
        if states and states[0] in ("done", "quarantined"):
            break
        time.sleep(0.3)
    assert states == ["done"], facturd.logs()
    docs = json.loads(facturd.cli("documents", "list", "--json").stdout)
    assert [d["number"] for d in docs] == ["F2026-0077"]
    assert facturd.stop() == 0
