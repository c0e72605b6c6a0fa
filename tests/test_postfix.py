"""Postfix in front of facturd, configured as docs/postfix.md says.

The integration tests run a private Postfix instance (its own config, queue and data folders
in a temporary folder; smtpd on a free 127.0.0.1 port; started with ``postfix -c DIR start``,
nothing of /etc/postfix is changed) whose main.cf is a few instance lines plus exactly
``docs/postfix-main.cf``, and whose master.cf is Debian's plus the transport line quoted in
docs/postfix.md. facturd runs the receive role with LMTP on a unix socket that only the
postfix group can reach. They need root and the Debian package ``postfix``; otherwise they
skip, and the configuration checks below still run.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.config import IntakeConfig
from tests.conftest import DOMAIN, ROOT, VAT, VAT2, Facturd, free_port, wait_for
from tests.mails import crlf, fake_pdf, invoice_mail
from tests.test_intake import deliveries

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
DOC = ROOT / "docs" / "postfix.md"
SNIPPET = ROOT / "docs" / "postfix-main.cf"
# what the documented snippet says, and what the tests put in its place
DOC_DOMAIN = "invoices.example.com"
DOC_SOCKET = "/run/facturd/lmtp.sock"


def snippet(domain: str = DOC_DOMAIN, lmtp_socket: str = DOC_SOCKET) -> str:
    text = SNIPPET.read_text()
    assert DOC_DOMAIN in text and DOC_SOCKET in text
    return text.replace(DOC_SOCKET, lmtp_socket).replace(DOC_DOMAIN, domain)


def transport_line() -> str:
    """The master.cf line docs/postfix.md tells the reader to add."""
    lines = [line for line in DOC.read_text().splitlines() if re.match(r"facturd\s+unix\s", line)]
    assert len(lines) == 1, "docs/postfix.md must quote the facturd master.cf line once"
    return lines[0]


def parse_main_cf(text: str) -> dict[str, str]:
    """main.cf syntax: name = value, continued on lines that start with whitespace."""
    values: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            assert name, f"continuation without a parameter: {line!r}"
            values[name] += " " + line.strip()
            continue
        name, sep, value = line.partition("=")
        assert sep, f"not name = value: {line!r}"
        name = name.strip()
        values[name] = value.strip()
    return values


# ---- the documented configuration (no Postfix needed) -------------------------------------


def test_snippet_matches_facturd_limits() -> None:
    cf = parse_main_cf(snippet())
    intake = IntakeConfig()
    assert cf["virtual_transport"] == f"facturd:unix:{DOC_SOCKET}"
    assert cf["virtual_mailbox_domains"] == DOC_DOMAIN
    assert cf["recipient_delimiter"] == "+"
    # Postfix refuses what facturd would refuse after Postfix accepted it (a bounce)
    assert int(cf["message_size_limit"]) <= intake.max_message_bytes - 1024 * 1024
    # facturd answers 452 4.5.3 beyond max_recipients, 421 beyond max_sessions_per_ip
    assert 1 < int(cf["facturd_destination_recipient_limit"]) <= intake.max_recipients
    assert int(cf["facturd_destination_concurrency_limit"]) < intake.max_sessions_per_ip
    assert cf["unverified_recipient_reject_code"] == "550"
    assert "reject_unverified_recipient" in cf["smtpd_recipient_restrictions"]
    assert re.fullmatch(r"facturd\s+unix\s+-\s+-\s+n\s+-\s+-\s+lmtp", transport_line())
    assert "(postfix-main.cf)" in DOC.read_text()  # the doc points at the tested snippet


def _instance_main_cf(base: Path) -> str:
    """Instance-only lines of the test's private Postfix (not part of the documentation)."""
    return (
        "compatibility_level = 3.6\n"
        f"queue_directory = {base}/spool\n"
        f"data_directory = {base}/lib\n"
        "inet_interfaces = 127.0.0.1\n"
        "inet_protocols = ipv4\n"
        "myhostname = mx.invoices.test\n"
        "mydestination =\n"
        # the test client is not a trusted network: it is checked like the internet
        "mynetworks = 192.0.2.0/24\n"
        "alias_maps =\n"
        "alias_database =\n"
        f"maillog_file_prefixes = {base}\n"
        f"maillog_file = {base}/maillog\n"
    )


def _master_cf(port: int) -> str:
    """Debian's master.cf: smtpd on 127.0.0.1:<port>, nothing chrooted (the chroot would be
    the temporary queue folder), plus the documented facturd transport."""
    pristine = Path("/usr/share/postfix/master.cf.dist")  # not the local admin's edits
    source = pristine if pristine.exists() else Path("/etc/postfix/master.cf")
    out = []
    for line in source.read_text().splitlines():
        fields = line.split()
        if line[:1].strip() and not line.startswith("#") and len(fields) >= 8:
            if fields[0] == "smtp" and fields[1] == "inet":
                fields[0] = f"127.0.0.1:{port}"
            fields[4] = "n"
            line = "  ".join(fields)
        out.append(line)
    out.append(transport_line())
    return "\n".join(out) + "\n"


@pytest.mark.skipif(not Path(POSTCONF).exists(),
                    reason="postconf missing (Debian package: postfix)")
def test_postconf_reads_the_documented_values(tmp_path: Path) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "main.cf").write_text(_instance_main_cf(tmp_path) + snippet())
    (conf / "master.cf").write_text(_master_cf(free_port()))
    res = subprocess.run([POSTCONF, "-c", str(conf), "-n"], capture_output=True, text=True,
                         check=True, timeout=30)
    assert res.stderr == ""  # e.g. "unused parameter" when the transport line is missing
    got = dict(line.split(" = ", 1) if " = " in line else (line.rstrip(" ="), "")
               for line in res.stdout.splitlines())
    expected = {
        "virtual_mailbox_domains": DOC_DOMAIN,
        "virtual_transport": f"facturd:unix:{DOC_SOCKET}",
        "recipient_delimiter": "+",
        "smtpd_recipient_restrictions":
            f"check_recipient_access inline:{{ {DOC_DOMAIN}=reject_unverified_recipient }}",
        "unverified_recipient_reject_code": "550",
        "facturd_destination_recipient_limit": "10",
        "facturd_destination_concurrency_limit": "4",
        "message_size_limit": "25165824",
        "smtpd_forbid_bare_newline": "normalize",
        "smtpd_forbid_unauth_pipelining": "yes",
        "header_checks": "regexp:{ {/^Authentication-Results:/ IGNORE} }",
    }
    assert {k: got.get(k) for k in expected} == expected
    # this Postfix knows the value "normalize" (>= 3.7.10); older ones only know yes/no
    version = subprocess.run([POSTCONF, "-d", "-h", "mail_version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    parts = tuple(int(x) for x in version.split(".")[:3])
    if parts < (3, 7, 10):
        pytest.fail(f"Postfix {version} predates smtpd_forbid_bare_newline = normalize")


# ---- a real Postfix in front of a real facturd -------------------------------------------


def _skip_reason() -> str | None:
    if not Path(POSTFIX).exists():
        return f"{POSTFIX} missing (Debian package: postfix)"
    if os.geteuid() != 0:
        return "a private Postfix instance must be started as root"
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "no postfix user or postdrop group (is the postfix package configured?)"
    return None


@dataclass
class Stack:
    base: Path
    conf: Path
    port: int
    facturd: Facturd

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([POSTFIX, "-c", str(self.conf), *args], capture_output=True,
                             text=True, timeout=60)
        if res.returncode != 0:
            raise AssertionError(f"postfix {' '.join(args)} exited {res.returncode}:\n"
                                 f"{res.stdout}{res.stderr}\n{self.maillog()}")
        return res

    def maillog(self) -> str:
        log = self.base / "maillog"
        return log.read_text(errors="replace") if log.exists() else ""

    def master_pid(self) -> int | None:
        pid_file = self.base / "spool" / "pid" / "master.pid"
        try:
            return int(pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def queue(self) -> str:
        res = subprocess.run(["/usr/sbin/postqueue", "-c", str(self.conf), "-j"],
                             capture_output=True, text=True, timeout=30)
        return res.stdout

    def smtp(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
        smtp.ehlo("client.vendor.test")
        return smtp


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited (nobody reaps it here)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    # Not under pytest's tmp folder: that is 0700 root, and Postfix's non-root processes
    # reach the LMTP socket and their data folder by absolute path.
    base = Path(tempfile.mkdtemp(prefix="facturd-postfix-", dir="/tmp"))
    try:
        base.chmod(0o755)
        conf, lib, run = base / "etc", base / "lib", base / "run"
        for d in (conf, lib, base / "spool", run):
            d.mkdir()
        postfix_uid = pwd.getpwnam("postfix").pw_uid
        postfix_gid = grp.getgrnam("postfix").gr_gid
        os.chown(lib, postfix_uid, -1)
        # The socket's folder: group postfix, setgid, so the socket facturd creates (0660)
        # belongs to the postfix group and nobody else can connect. In production the same
        # is done by the facturd group with postfix as a member (docs/postfix.md).
        os.chown(run, 0, postfix_gid)
        run.chmod(0o2750)
        lmtp_socket = run / "lmtp.sock"

        ftmp = tmp_path_factory.mktemp("facturd")
        facturd = Facturd(ftmp, f"sqlite:///{ftmp / 'state' / 'facturd.sqlite3'}")
        facturd.lmtp_socket = lmtp_socket
        facturd.write_config()
        facturd.add_folder()
        facturd.add_folder(VAT2, "Beta SARL")

        port = free_port()
        (conf / "main.cf").write_text(_instance_main_cf(base)
                                      + snippet(DOMAIN, str(lmtp_socket)))
        (conf / "master.cf").write_text(_master_cf(port))
        st = Stack(base, conf, port, facturd)
        try:
            st.postfix("check")
            facturd.start("receive")
            assert lmtp_socket.stat().st_gid == postfix_gid
            st.postfix("start")
            yield st
        finally:
            pid = st.master_pid()
            if pid:
                subprocess.run([POSTFIX, "-c", str(conf), "stop"], capture_output=True,
                               timeout=60)
                deadline = time.monotonic() + 15
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)  # the master this fixture started
            facturd.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _rows_with(st: Stack, marker: str, count: int, timeout: float = 20
               ) -> list[dict[str, object]]:
    """Delivery rows whose raw message contains ``marker``, once there are ``count``."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        rows = [r for r in deliveries(st.facturd) if marker in str(r["raw"])]
        if len(rows) >= count:
            return rows
        time.sleep(0.2)
    raise AssertionError(f"{len(rows)} of {count} deliveries for {marker} after {timeout} s\n"
                         f"postfix queue: {st.queue()}\n{st.maillog()[-4000:]}\n"
                         f"{st.facturd.logs()[-2000:]}")


def _rcpt(smtp: smtplib.SMTP, rcpt: str, timeout: float = 20) -> tuple[int, bytes]:
    """RCPT TO until the answer is final. A first RCPT for an address waits for facturd's
    answer to Postfix's verification probe for at most 3 polls (3 s); on a loaded machine
    the probe may take longer and the client gets 450 "unverified address", as a real
    sender would, and tries again."""
    deadline = time.monotonic() + timeout
    while True:
        code, text = smtp.rcpt(rcpt)
        if code != 450 or b"unverified address" not in text or time.monotonic() > deadline:
            return code, text
        time.sleep(0.5)


def verified(st: Stack, *rcpts: str) -> None:
    """Put the addresses in Postfix's verification cache (see _rcpt)."""
    with st.smtp() as smtp:
        assert smtp.mail("billing@vendor.test")[0] == 250
        for rcpt in rcpts:
            code, text = _rcpt(smtp, rcpt)
            assert code == 250, (rcpt, code, text)


def _wait_queue_empty(st: Stack, timeout: float = 10) -> None:
    """Postfix's queue empties (address-verification probes and delivered mail leave it
    within a moment; a bounce or a deferred message would stay)."""
    deadline = time.monotonic() + timeout
    while (queue := st.queue().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert queue == "", queue


def _message(marker: str, to: str, extra_headers: str = "") -> bytes:
    msg = invoice_mail(to=to, subject=f"Invoice {marker}",
                       attachments=[("inv.pdf", "application/pdf", fake_pdf(seed=marker))])
    return crlf(extra_headers.encode() + msg.as_bytes())


def test_valid_folder_is_delivered_over_lmtp(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    verified(stack, f"{VAT}@{DOMAIN}")
    with stack.smtp() as smtp:
        assert smtp.sendmail("billing@vendor.test", [f"{VAT}@{DOMAIN}"],
                             _message(marker, f"{VAT}@{DOMAIN}")) == {}
    [row] = _rows_with(stack, marker, 1)
    assert (row["folder"], row["tag"], row["state"]) == (1, "", "queued")
    # Postfix's own trace is on top: the message really came through it
    assert str(row["raw"]).startswith("Received: from client.vendor.test")


def test_plus_tag_reaches_facturd(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    verified(stack, f"{VAT}+sales@{DOMAIN}")
    with stack.smtp() as smtp:
        smtp.sendmail("billing@vendor.test", [f"{VAT}+sales@{DOMAIN}"],
                      _message(marker, f"{VAT}+sales@{DOMAIN}"))
    [row] = _rows_with(stack, marker, 1)
    assert (row["folder"], row["tag"], row["direction"]) == (1, "sales", "sales")


@pytest.mark.parametrize("rcpt", [
    f"FR11111111111@{DOMAIN}",          # well-formed VAT, no such folder
    f"postmaster@{DOMAIN}",             # not a VAT
    f"{VAT}+../../etc@{DOMAIN}",        # hostile tag: facturd's own rules decide
])
def test_unknown_recipient_refused_by_postfix_at_rcpt(stack: Stack, rcpt: str) -> None:
    before = len(deliveries(stack.facturd))
    with stack.smtp() as smtp:
        assert smtp.mail("billing@vendor.test")[0] == 250
        code, text = _rcpt(smtp, rcpt)
        # the refusal happens in the SMTP dialogue: nothing is queued, nothing bounces
        assert (code, text[:5]) == (550, b"5.1.1"), text
        assert b"unknown mailbox" in text
        assert b"lmtp.sock" not in text  # no internal detail to the internet
        relay_code, _ = smtp.rcpt("someone@elsewhere.test")
        assert relay_code in (454, 554)  # and Postfix is no open relay
    # postlogd writes the log a moment later than the SMTP reply: wait for the line
    wait_for(lambda: "NOQUEUE: reject: RCPT" in stack.maillog(), "Postfix logs the refusal",
             timeout=30)
    assert len(deliveries(stack.facturd)) == before
    # no bounce, no deferred message: Postfix's queue holds nothing addressed to anyone
    _wait_queue_empty(stack)


def test_two_recipients_one_lmtp_transaction_two_deliveries(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    rcpts = [f"{VAT}@{DOMAIN}", f"{VAT2}@{DOMAIN}"]
    verified(stack, *rcpts)
    with stack.smtp() as smtp:
        assert smtp.sendmail("billing@vendor.test", rcpts, _message(marker, rcpts[0])) == {}
    rows = _rows_with(stack, marker, 2)
    assert sorted(int(str(r["folder"])) for r in rows) == [1, 2]
    assert len({r["sha"] for r in rows}) == 1
    # one LMTP DATA with both RCPTs, answered with one reply per recipient (RFC 2033)
    assert "for 2 recipient(s)" in stack.facturd.logs()


def test_forged_authentication_results_never_reach_facturd(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    verified(stack, f"{VAT}@{DOMAIN}")
    forged = ("Authentication-Results: mx.invoices.test; dkim=pass header.d=vendor.test\n"
              "Authentication-Results: mx.invoices.test;\n dmarc=pass header.from=vendor.test\n")
    with stack.smtp() as smtp:
        smtp.sendmail("billing@vendor.test", [f"{VAT}@{DOMAIN}"],
                      _message(marker, f"{VAT}@{DOMAIN}", forged))
    [row] = _rows_with(stack, marker, 1)
    assert "Authentication-Results" not in str(row["raw"])
    assert f"Subject: Invoice {marker}" in str(row["raw"])


def test_facturd_down_postfix_keeps_the_mail(stack: Stack) -> None:
    """While facturd restarts, Postfix accepts mail for addresses it has verified before and
    keeps it queued (unknown ones get 450, so senders retry); it delivers when facturd is
    back."""
    marker = uuid.uuid4().hex
    known = f"{VAT}@{DOMAIN}"
    verified(stack, known)
    stack.facturd.stop()
    try:
        with stack.smtp() as smtp:
            assert smtp.sendmail("billing@vendor.test", [known], _message(marker, known)) == {}
            assert smtp.mail("billing@vendor.test")[0] == 250
            code, text = smtp.rcpt(f"{VAT}+never-seen-{marker}@{DOMAIN}")
            assert (code, text[:5]) == (450, b"4.1.1"), text
        deadline = time.monotonic() + 10
        while '"queue_name": "deferred"' not in stack.queue():  # tried, refused, kept
            assert time.monotonic() < deadline, stack.maillog()[-2000:]
            time.sleep(0.2)
    finally:
        stack.facturd.start("receive")
    # Postfix retries by itself after minimal_backoff_time (300 s); ask it now. A flush that
    # lands while the failed attempt is still being written back is a no-op: repeat it.
    deadline = time.monotonic() + 20
    while True:
        stack.postfix("flush")
        rows = [r for r in deliveries(stack.facturd) if marker in str(r["raw"])]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert [r["state"] for r in rows] == ["queued"], stack.maillog()[-3000:]
    _wait_queue_empty(stack)
