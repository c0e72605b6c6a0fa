"""Who is asking the web role, and how often they asked for links that do not exist.

Job: ``client_of`` names the client a request comes from: the peer address, or, when the peer
is one of ``web.trusted_proxies`` (IP networks, or "unix" for the unix socket), the last
``X-Forwarded-For`` hop that is not a trusted proxy; IPv6 clients count per /64 (one host
usually holds a whole /64). ``FailedLookups`` counts failed token look-ups per client in fixed
windows: after ``FAIL_LIMIT`` in ``FAIL_WINDOW`` seconds ``retry_after`` says how long the
client must wait (the web role answers 429 meanwhile), and one warning is logged per client and
window (the alert of B-APPR-09).

May touch: nothing but its own memory (at most ``MAX_CLIENTS`` counters, oldest dropped).

Known limits: the counters live in this process: several web nodes each allow FAIL_LIMIT, a
restart forgets them, and clients behind one NAT address share a counter.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence

log = logging.getLogger("daemon.web")

FAIL_LIMIT = 20  # failed token look-ups per client ...
FAIL_WINDOW = 600.0  # ... per this many seconds, then 429
MAX_CLIENTS = 10_000  # failure counters kept at most

Proxy = ipaddress.IPv4Network | ipaddress.IPv6Network | str  # str: "unix"


class FailedLookups:
    """Failed token look-ups per client in fixed windows (in memory, this process only)."""

    def __init__(self, limit: int = FAIL_LIMIT, window: float = FAIL_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._seen: dict[str, tuple[float, int]] = {}  # client -> (window start, failures)

    def retry_after(self, client: str) -> int | None:
        """Seconds until this client may try again, None when it is not blocked."""
        seen = self._seen.get(client)
        if seen is None:
            return None
        left = seen[0] + self.window - self.clock()
        if left <= 0:
            del self._seen[client]
            return None
        return max(1, int(left + 0.999)) if seen[1] >= self.limit else None

    def failed(self, client: str) -> None:
        now = self.clock()
        start, count = self._seen.get(client, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        count += 1
        self._seen[client] = (start, count)
        if count == self.limit:  # the alert: once per client and window
            log.warning("web: %d unknown approval links from %s within %.0fs: answering 429 "
                        "until %.0fs from now (token guessing?)", count, client, self.window,
                        start + self.window - now)
        if len(self._seen) > MAX_CLIENTS:
            self._prune(now)

    def _prune(self, now: float) -> None:
        self._seen = {c: v for c, v in self._seen.items() if now - v[0] < self.window}
        if len(self._seen) > MAX_CLIENTS:  # still too many: keep the newest windows
            newest = sorted(self._seen.items(), key=lambda kv: kv[1][0])[-MAX_CLIENTS // 2:]
            self._seen = dict(newest)


def parse_proxies(values: Sequence[str]) -> tuple[Proxy, ...]:
    """``web.trusted_proxies`` -> networks (and "unix"); ValueError on anything else."""
    return tuple(v if v == "unix" else ipaddress.ip_network(v, strict=False) for v in values)


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address from a peer or X-Forwarded-For hop (``[v6]:port`` and ``v4:port`` too);
    None for anything else (a unix socket peer is "")."""
    text = (text or "").strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
             proxies: tuple[Proxy, ...]) -> bool:
    if ip is None:
        return "unix" in proxies
    return any(not isinstance(p, str) and ip in p for p in proxies)


def client_of(peer: str | None, forwarded: str | None, proxies: tuple[Proxy, ...]) -> str:
    """The key failures are counted under: the peer, or, when the peer is a trusted proxy,
    the last X-Forwarded-For hop that is not one; IPv6 per /64; "unix" for an untrusted unix
    socket peer."""
    ip = _address(peer)
    if forwarded and _trusted(ip, proxies):
        for hop in reversed(forwarded.split(",")):
            hop_ip = _address(hop.strip())
            if hop_ip is None:
                break  # garbage: keep the last trusted hop
            ip = hop_ip
            if not _trusted(hop_ip, proxies):
                break
    if ip is None:
        return "unix" if not peer else peer[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
