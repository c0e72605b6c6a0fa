"""The long-lived Saxon child (daemon/schematron_server.py): same verdicts as a child per run,
one process for many runs, and every failure a "not run" with the child killed and reaped.
Real saxonche, real processes, CII made here with tests/factories.py."""

from __future__ import annotations

import os
import signal

import pytest

from daemon.schematron import run_schematron
from daemon.schematron_server import SchematronServer
from tests.factories import make_cii_xml
from tests.test_conformance import wrong_total_cii

GOOD = make_cii_xml()
WRONG_TOTAL = wrong_total_cii()


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def server() -> SchematronServer:
    with SchematronServer() as s:
        yield s  # type: ignore[misc]


def test_same_verdicts_as_a_child_per_run_from_one_process(server: SchematronServer) -> None:
    one_shot = run_schematron(WRONG_TOTAL, "EN 16931")
    assert one_shot.valid is False
    pids = set()
    for _ in range(3):
        bad = server.run(WRONG_TOTAL, "EN 16931")
        assert (bad.valid, bad.errors, bad.warnings) == (
            one_shot.valid, one_shot.errors, one_shot.warnings)
        pids.add(server.pid)
        good = server.run(GOOD, "EN 16931")
        assert good.valid is True and good.fired_rules > 0
    basic = server.run(make_cii_xml(profile="basic"), "BASIC")  # a second stylesheet
    assert basic.valid is True
    pids.add(server.pid)
    assert len(pids) == 1 and None not in pids


def test_refused_before_any_child(server: SchematronServer) -> None:
    doctype = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]>' + GOOD.split(b"?>", 1)[1]
    for xml in (doctype, b"<Invoice/>", b"not xml"):
        result = server.run(xml, "EN 16931")
        assert result.valid is None and result.reason.startswith("XML refused")
    assert server.pid is None
    with pytest.raises(ValueError):
        server.run(GOOD, "NO SUCH PROFILE")


def test_timeout_kills_and_reaps_the_child_then_a_new_one_serves(
        server: SchematronServer) -> None:
    assert server.run(GOOD, "EN 16931").valid is True
    pid = server.pid
    assert pid is not None
    late = server.run(GOOD, "EXTENDED", timeout=0.001)  # compiling alone takes longer
    assert late.valid is None and "timed out" in late.reason
    assert server.pid is None and not alive(pid)
    again = server.run(GOOD, "EN 16931")
    assert again.valid is True and server.pid not in (None, pid)


def test_a_child_killed_between_or_during_runs(server: SchematronServer) -> None:
    assert server.run(GOOD, "EN 16931").valid is True
    first = server.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)  # between runs: the next run gets a new child
    assert server.run(WRONG_TOTAL, "EN 16931").valid is False
    second = server.pid
    assert second not in (None, first)
    assert not alive(first)


def test_the_child_is_replaced_after_max_runs() -> None:
    with SchematronServer(max_runs=2) as server:
        server.run(GOOD, "EN 16931")
        first = server.pid
        server.run(GOOD, "EN 16931")
        assert server.pid is None and first is not None and not alive(first)
        assert server.run(GOOD, "EN 16931").valid is True
        assert server.pid not in (None, first)
    assert server.pid is None
