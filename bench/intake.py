"""Durable intake throughput: facturd's receive role against a bare aiosmtpd baseline.

What it measures
    Messages per second that reach *durable* storage and get their ``250`` back, over SMTP
    on loopback, for two servers measured in the same run, interleaved round by round:

    * ``facturd``: ``python -m daemon --config X receive`` (SQLite, blobs as files, the
      default backends) in a fresh state folder per round, one folder added through the
      CLI. A ``250`` means: blob fsynced, message row and delivery row committed (WAL,
      synchronous=FULL) by daemon/writer.py's group commit.
    * ``bare``: this script's ``--bare-server PORT DIR`` mode: aiosmtpd's ``SMTP`` class on
      its own asyncio loop (no threaded Controller, like facturd) whose ``handle_DATA``
      writes ``envelope.original_content`` to a new file, fsyncs it, fsyncs the directory,
      and only then answers ``250 OK``. The file work runs in asyncio's default thread pool,
      so the baseline is the cheapest *honest* durable SMTP server one can write with the
      same library - not a no-op sink.

    Both get the same client: ``--clients`` threads (smtplib) sharing ``--messages``
    distinct ~100 KB invoice mails (a real, small PDF attachment with an incompressible
    image, base64, CRLF line ends), 20 messages per connection then QUIT and reconnect
    (facturd closes a session after intake.command_limit = 50 uses of one command). The time
    runs from the first connect to the last ``250``. Every message must be accepted, and
    afterwards the facturd database must hold exactly one ``delivery`` row per message sent
    (the bare server: one file per message); anything else fails the run (exit status 1).

    facturd's config raises intake.max_sessions / max_sessions_per_ip to 2 x clients:
    every client connects from 127.0.0.1, and the default of 5 per address would turn the
    benchmark into a test of the 421 reply (a relay such as Postfix is one peer too).

How to read it
    ``intake_ratio`` (last line) = median facturd msg/s / median bare msg/s. It is the
    share of the durable-SMTP ceiling that facturd keeps on this machine: 1.0 means
    facturd's database work costs nothing over "fsync the bytes and answer"; the target
    is >= 0.7. The absolute msg/s depend on the machine (CPU count: the client, the event
    loop and the writer share it; the disk's fsync latency), the ratio much less so.
    Medians of ``--rounds`` rounds, with the order alternating each round, damp drift
    (page cache, disk state, noisy neighbours). The temporary folder must be on a real disk:
    fsync on tmpfs is free and would make the comparison meaningless, so tmpfs is refused.

Usage
    .venv/bin/python bench/intake.py [--messages 2000] [--clients 20] [--rounds 3]
                                     [--tmp DIR] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import os
import platform
import random
import shutil
import signal
import smtplib
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
VAT = "FR40303265045"
DOMAIN = "invoices.bench"
RCPT = f"{VAT}@{DOMAIN}"
PER_CONNECTION = 20  # facturd closes a session after 50 MAIL/RCPT/DATA (intake.command_limit)
DATA_SIZE_LIMIT = 25 * 1024 * 1024  # facturd's intake.max_message_bytes default
ROUND_LIMIT = 600.0  # seconds: a round that takes longer aborts the run
READY_TIMEOUT = 60.0
SMTP_TIMEOUT = 120.0
BARE_READY = "bare ready"
FACTURD_READY = "facturd ready"


class BenchError(Exception):
    """The run cannot give a trustworthy number (lost message, refused mail, timeout)."""


# ---- the messages ------------------------------------------------------------------------


def make_pdf(number: int, amount: str, image: bytes, width: int) -> bytes:
    """A small, valid one-page PDF: invoice text plus an uncompressed grey-scale image
    (random pixels, so the bytes are incompressible and unique per message)."""
    height = len(image) // width
    text = (f"BT /F1 16 Tf 72 770 Td (Facture BENCH-{number:06d}) Tj "
            f"0 -24 Td (Montant TTC {amount} EUR) Tj ET\n"
            f"q {width} 0 0 {height} 72 360 cm /Im1 Do Q\n").encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> /XObject << /Im1 6 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text),
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
        b"/BitsPerComponent 8 /Length %d >>\nstream\n%s\nendstream"
        % (width, height, len(image), image),
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for num, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (num, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def make_message(number: int, size: int, rnd: random.Random) -> bytes:
    """One invoice mail of about ``size`` bytes, CRLF line ends, PDF attached in base64."""
    width = 256
    # base64 turns 57 raw bytes into a 78-byte CRLF line; ~1.8 KB go to headers and the PDF
    # skeleton.
    raw = max(width, (size - 1800) * 57 // 78)
    image = rnd.randbytes(raw - raw % width)
    amount = f"{rnd.randint(1_000, 9_999_999) / 100:.2f}"
    pdf = make_pdf(number, amount, image, width)
    boundary = f"=_bench_{rnd.getrandbits(64):016x}"
    b64 = base64.encodebytes(pdf).replace(b"\n", b"\r\n")
    head = (
        f"From: Fournisseur {number % 97} <factures-{number % 97}@supplier{number % 13}.test>\r\n"
        f"To: {RCPT}\r\n"
        f"Subject: Facture BENCH-{number:06d}\r\n"
        f"Date: {formatdate(localtime=False)}\r\n"
        f"Message-ID: <bench-{number:06d}-{rnd.getrandbits(48):012x}@supplier.test>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        f"Bonjour,\r\n\r\nVeuillez trouver ci-joint la facture BENCH-{number:06d} "
        f"d'un montant de {amount} EUR.\r\n\r\nCordialement\r\n"
        f"--{boundary}\r\n"
        f'Content-Type: application/pdf; name="facture-{number:06d}.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="facture-{number:06d}.pdf"\r\n'
        "\r\n"
    ).encode()
    return head + b64 + f"--{boundary}--\r\n".encode("ascii")


def make_messages(count: int, size: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    messages = [make_message(n, size, rnd) for n in range(1, count + 1)]
    if len({hashlib.sha256(m).digest() for m in messages}) != count:
        raise BenchError("generated messages are not all distinct")
    return messages


# ---- the client ------------------------------------------------------------------------


@dataclass
class ClientRun:
    sent: int = 0
    first_connect: float = float("inf")
    last_ok: float = 0.0
    errors: list[str] = field(default_factory=list)


def _client(port: int, messages: list[bytes], chunks: Iterator[range], lock: threading.Lock,
            start: threading.Event, out: ClientRun, stop: threading.Event) -> None:
    start.wait()
    while not stop.is_set():
        with lock:
            chunk = next(chunks, None)
        if chunk is None:
            return
        t_connect = time.perf_counter()
        try:
            smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="client.bench",
                                timeout=SMTP_TIMEOUT)
        except (OSError, smtplib.SMTPException) as exc:
            out.errors.append(f"connect: {type(exc).__name__}: {exc}")
            return
        out.first_connect = min(out.first_connect, t_connect)
        try:
            smtp.ehlo("client.bench")
            for index in chunk:
                if stop.is_set():
                    return
                # sendmail raises on any refusal (MAIL, RCPT or a non-250 DATA reply).
                smtp.sendmail(f"factures-{index % 97}@supplier.test", [RCPT], messages[index])
                out.last_ok = time.perf_counter()
                out.sent += 1
            smtp.quit()
        except (OSError, smtplib.SMTPException) as exc:
            out.errors.append(f"{type(exc).__name__}: {exc}")
            return
        finally:
            smtp.close()


@dataclass
class LoadResult:
    sent: int
    seconds: float
    errors: list[str]

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def run_load(port: int, messages: list[bytes], clients: int, label: str,
             server: subprocess.Popen[bytes]) -> LoadResult:
    """All messages through ``clients`` threads, ``PER_CONNECTION`` per connection."""
    chunks = iter([range(i, min(i + PER_CONNECTION, len(messages)))
                   for i in range(0, len(messages), PER_CONNECTION)])
    lock = threading.Lock()
    start, stop = threading.Event(), threading.Event()
    runs = [ClientRun() for _ in range(clients)]
    threads = [threading.Thread(target=_client, args=(port, messages, chunks, lock, start, r,
                                                      stop), name=f"client-{n}", daemon=True)
               for n, r in enumerate(runs)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + ROUND_LIMIT
    start.set()
    for t in threads:
        while t.is_alive():
            t.join(1.0)
            if server.poll() is not None:
                stop.set()
                raise BenchError(f"{label} server exited with {server.returncode} mid-run")
            if time.monotonic() > deadline:
                stop.set()
                raise BenchError(f"{label}: round took more than {ROUND_LIMIT:.0f} s; aborted "
                                 f"({sum(r.sent for r in runs)}/{len(messages)} sent)")
    errors = [e for r in runs for e in r.errors]
    sent = sum(r.sent for r in runs)
    first = min(r.first_connect for r in runs)
    last = max(r.last_ok for r in runs)
    return LoadResult(sent, max(0.0, last - first), errors)


# ---- servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


class Server:
    """A server subprocess whose log goes to a file; ready when ``marker`` shows in it."""

    def __init__(self, label: str, cmd: list[str], cwd: Path, log: Path, marker: str,
                 env: dict[str, str] | None = None) -> None:
        self.label = label
        self.log = log
        self._log_fh: IO[bytes] = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=self._log_fh,
                                     stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_ready(marker)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, marker: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while marker not in self.logs():
            if self.proc.poll() is not None:
                raise BenchError(f"{self.label} exited {self.proc.returncode} before ready:\n"
                                 f"{self.logs()[-3000:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.label} not ready after {READY_TIMEOUT:.0f} s:\n"
                                 f"{self.logs()[-3000:]}")
            time.sleep(0.05)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_fh.close()
        return self.proc.returncode


def child_env(facturd_root: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FACTURD_CONFIG", None)
    env.pop("FACTURD_STATE", None)
    if facturd_root is not None:  # run another source tree's daemon (a scratch copy)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(facturd_root), env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class Measured:
    label: str
    rate: float
    seconds: float
    sent: int
    server_cpu: float  # CPU seconds of the server process during the timed window
    client_cpu: float  # CPU seconds of this process (the client threads) in the same window
    detail: str = ""


def measure_bare(work: Path, messages: list[bytes], clients: int) -> Measured:
    work.mkdir(parents=True)
    spool = work / "spool"
    spool.mkdir()
    port = free_port()
    server = Server("bare", [sys.executable, str(Path(__file__).resolve()), "--bare-server",
                             str(port), str(spool)],
                    work, work / "bare.log", BARE_READY, child_env(None))
    try:
        cpu0, mine0 = cpu_seconds(server.proc.pid), own_cpu()
        load = run_load(port, messages, clients, "bare", server.proc)
        cpu, mine = cpu_seconds(server.proc.pid) - cpu0, own_cpu() - mine0
    finally:
        code = server.stop()
    check_load("bare", load, len(messages))
    stored = sum(1 for _ in spool.iterdir())
    if stored != len(messages):
        raise BenchError(f"bare: {stored} files in the spool for {len(messages)} messages sent")
    if code != 0:
        raise BenchError(f"bare server exited {code}:\n{server.logs()[-3000:]}")
    return Measured("bare", load.rate, load.seconds, load.sent, cpu, mine,
                    f"{stored} files fsynced")


def facturd_config(work: Path, port: int, clients: int, extra: str) -> Path:
    config = work / "facturd.toml"
    config.write_text(
        f'state_dir = "{work / "state"}"\n'
        f'domain = "{DOMAIN}"\n'
        'log_level = "info"\n'
        f'[smtp]\nlisten = "127.0.0.1:{port}"\n'
        '[lmtp]\nlisten = ""\n'
        f"[intake]\nmax_sessions = {2 * clients}\nmax_sessions_per_ip = {2 * clients}\n"
        + extra
    )
    return config


def measure_facturd(work: Path, messages: list[bytes], clients: int, extra_config: str,
                    facturd_root: Path | None) -> Measured:
    work.mkdir(parents=True)
    port = free_port()
    config = facturd_config(work, port, clients, extra_config)
    env = child_env(facturd_root)
    base = [sys.executable, "-m", "daemon", "--config", str(config)]
    res = subprocess.run([*base, "folder", "add", VAT, "--name", "Bench"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise BenchError(f"facturd folder add exited {res.returncode}:\n{res.stdout}"
                         f"{res.stderr}")
    server = Server("facturd", [*base, "receive"], work, work / "facturd.log", FACTURD_READY,
                    env)
    try:
        cpu0, mine0 = cpu_seconds(server.proc.pid), own_cpu()
        load = run_load(port, messages, clients, "facturd", server.proc)
        cpu, mine = cpu_seconds(server.proc.pid) - cpu0, own_cpu() - mine0
    finally:
        code = server.stop()
    check_load("facturd", load, len(messages))
    if code != 0:
        raise BenchError(f"facturd exited {code}:\n{server.logs()[-3000:]}")
    db_path = work / "state" / "facturd.sqlite3"
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        deliveries = db.execute("SELECT COUNT(*) FROM delivery").fetchone()[0]
        states = dict(db.execute("SELECT state, COUNT(*) FROM delivery GROUP BY state"))
        # record_intake stamps one received_at per batch: distinct values = commits.
        commits = db.execute("SELECT COUNT(DISTINCT received_at) FROM message").fetchone()[0]
    if deliveries != len(messages):
        raise BenchError(f"facturd LOST MESSAGES: {deliveries} deliveries in {db_path} for "
                         f"{len(messages)} messages accepted with 250")
    errors = sum(1 for line in server.logs().splitlines() if " ERROR " in line)
    per_commit = deliveries / commits if commits else 0.0
    detail = (f"{deliveries} deliveries {states}, {commits} commits "
              f"({per_commit:.1f} msg/commit), {errors} error lines in log")
    return Measured("facturd", load.rate, load.seconds, load.sent, cpu, mine, detail)


def check_load(label: str, load: LoadResult, expected: int) -> None:
    if load.errors or load.sent != expected:
        shown = "\n  ".join(load.errors[:10])
        raise BenchError(f"{label}: {load.sent}/{expected} messages accepted, "
                         f"{len(load.errors)} client errors:\n  {shown}")


# ---- the bare server (a mode of this script) -----------------------------------------------


class BareHandler:
    """Accept anything; 250 only after the bytes and the directory entry are fsynced."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.counter = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content
        path = self.spool / f"{next(self.counter):08d}-{os.getpid()}.eml"
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._write, path, data)
        return "250 OK"

    def _write(self, path: Path, data: bytes) -> None:
        with open(path, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        fd = os.open(self.spool, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


async def bare_server(port: int, spool: Path) -> None:
    from aiosmtpd.smtp import SMTP

    handler = BareHandler(spool)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def factory() -> SMTP:
        return SMTP(handler, data_size_limit=DATA_SIZE_LIMIT, enable_SMTPUTF8=True,
                    decode_data=False, hostname=DOMAIN, ident="ESMTP")

    server = await loop.create_server(factory, "127.0.0.1", port, reuse_address=True)
    print(f"{BARE_READY} on 127.0.0.1:{port}, spool {spool}", flush=True)
    await stop.wait()
    server.close()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 10)


# ---- machine context ----------------------------------------------------------------------


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def filesystem_of(path: Path) -> tuple[str, str, str]:
    """(source, fstype, options) of the mount holding ``path``."""
    out = _run(["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T", str(path)]).split()
    if len(out) >= 3:
        return out[0], out[1], out[2]
    # No findmnt: the longest mount point that is a prefix of the path.
    best = ("?", "?", "?", "")
    real = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        src, target, fstype, opts = line.split()[:4]
        inside = real == target or real.startswith(target.rstrip("/") + "/")
        if inside and len(target) > len(best[3]):
            best = (src, fstype, opts, target)
    return best[0], best[1], best[2]


def machine_context(tmp: Path) -> list[str]:
    import aiosmtpd

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    src, fstype, opts = filesystem_of(tmp)
    disk = _run(["lsblk", "-d", "-n", "-o", "NAME,ROTA,SIZE,MODEL", src]) if src else ""
    mem = ""
    with contextlib.suppress(OSError, IndexError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":")[1].strip()
    return [
        f"machine: nproc={os.cpu_count()} cpu={cpu!r} mem={mem} "
        f"python={platform.python_version()} aiosmtpd={aiosmtpd.__version__} "
        f"kernel={platform.release()}",
        f"tmp: {tmp} on {src} ({fstype}, {opts})"
        + (f"; disk: {' '.join(disk.split())} (NAME ROTA SIZE MODEL)" if disk else ""),
    ]


def default_tmp_parent() -> Path:
    """/var/tmp unless it is memory-backed, else the repository's var/bench."""
    var_tmp = Path("/var/tmp")
    if var_tmp.is_dir() and filesystem_of(var_tmp)[1] not in ("tmpfs", "ramfs"):
        return var_tmp
    return ROOT / "var" / "bench"


# ---- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--messages", type=int, default=2000, help="messages per server per round")
    p.add_argument("--clients", type=int, default=20, help="concurrent SMTP client threads")
    p.add_argument("--rounds", type=int, default=3, help="rounds (each: bare and facturd)")
    p.add_argument("--size", type=int, default=100_000, help="approximate bytes per message")
    p.add_argument("--seed", type=int, default=20240611, help="seed of the message contents")
    p.add_argument("--tmp", type=Path, default=None,
                   help="parent of the run's temporary folder (default /var/tmp, or var/bench "
                        "in the repository when /var/tmp is tmpfs); must not be tmpfs")
    p.add_argument("--keep", action="store_true", help="keep state folders and logs")
    p.add_argument("--only", choices=("bare", "facturd"), default=None,
                   help="measure one server only (no ratio; for investigations)")
    p.add_argument("--facturd-config", default="",
                   help="TOML appended to facturd's config (experiments, e.g. blobs backend)")
    p.add_argument("--facturd-root", type=Path, default=None,
                   help="run the daemon from this source tree (a scratch copy) via PYTHONPATH")
    p.add_argument("--bare-server", nargs=2, metavar=("PORT", "DIR"),
                   help="internal: run the bare aiosmtpd baseline server")
    args = p.parse_args(argv)
    if args.messages < 1 or args.clients < 1 or args.rounds < 1:
        p.error("--messages, --clients and --rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare_server:
        port, spool = args.bare_server
        asyncio.run(bare_server(int(port), Path(spool)))
        return 0

    parent = args.tmp or default_tmp_parent()
    parent.mkdir(parents=True, exist_ok=True)
    fstype = filesystem_of(parent)[1]
    if fstype in ("tmpfs", "ramfs"):
        print(f"error: {parent} is on {fstype}: fsync is free there, the numbers would be "
              "meaningless; pass --tmp on a real disk", file=sys.stderr)
        return 2
    run_dir = Path(tempfile.mkdtemp(prefix="facturd-bench-", dir=parent))
    for line in machine_context(run_dir):
        print(line)
    t0 = time.perf_counter()
    messages = make_messages(args.messages, args.size, args.seed)
    avg = sum(map(len, messages)) / len(messages)
    print(f"load: {len(messages)} distinct messages of {avg / 1000:.1f} kB on average (PDF "
          f"attachment, base64, CRLF), {args.clients} client threads, {PER_CONNECTION} "
          f"messages per connection; generated in {time.perf_counter() - t0:.1f} s")
    if args.facturd_config or args.facturd_root:
        print(f"facturd variant: root={args.facturd_root} extra config={args.facturd_config!r}")
    print(flush=True)

    results: dict[str, list[Measured]] = {"bare": [], "facturd": []}
    try:
        for rnd in range(1, args.rounds + 1):
            order = ["bare", "facturd"] if rnd % 2 else ["facturd", "bare"]
            if args.only:
                order = [args.only]
            for label in order:
                work = run_dir / f"round{rnd}-{label}"
                if label == "bare":
                    m = measure_bare(work, messages, args.clients)
                else:
                    m = measure_facturd(work, messages, args.clients, args.facturd_config,
                                        args.facturd_root)
                results[label].append(m)
                cpu_pct = 100 * m.server_cpu / m.seconds if m.seconds else 0.0
                print(f"round {rnd} {label:<7} {m.rate:7.1f} msg/s  {m.sent} msgs in "
                      f"{m.seconds:6.2f} s  CPU: server {m.server_cpu:5.1f} s ({cpu_pct:3.0f}%) "
                      f"client {m.client_cpu:5.1f} s  {m.detail}", flush=True)
                if not args.keep:
                    shutil.rmtree(work, ignore_errors=True)
    except BenchError as exc:
        print(f"\nBENCH FAILED: {exc}", file=sys.stderr)
        print(f"(state kept in {run_dir})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)

    print()
    medians = {k: statistics.median(m.rate for m in v) for k, v in results.items() if v}
    for label, value in medians.items():
        rates = ", ".join(f"{m.rate:.1f}" for m in results[label])
        print(f"median {label:<7} {value:8.1f} msg/s  (rounds: {rates})")
    if args.only:
        return 0
    ratio = medians["facturd"] / medians["bare"]
    verdict = "meets" if ratio >= 0.7 else "BELOW"
    print(f"facturd keeps {100 * ratio:.1f}% of the bare durable-SMTP rate ({verdict} the "
          "0.7 target)")
    print(f"intake_ratio={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
