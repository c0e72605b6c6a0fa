"""A real DNS server for tests: UDP on 127.0.0.1, random port, TXT records from a dict.

``with StubDNS({"sel._domainkey.vendor.test": b"v=DKIM1; k=rsa; p=..."}) as dns_server:``
then point a resolver at ``dns_server.address`` ("127.0.0.1:PORT"). Names not in ``records``
get NXDOMAIN; names in ``timeout`` are never answered; names in ``servfail`` get SERVFAIL;
names in ``nodata`` get an empty NOERROR answer. A record may be a list (several TXT records
at one name). Records longer than 255 bytes are split into 255-byte strings as publishers do.
Every query name is appended to ``queries``. The dicts and sets may be changed while running.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset


def _key(name: str) -> str:
    return name.lower().rstrip(".")


class StubDNS:
    def __init__(self, records: dict[str, bytes | list[bytes]] | None = None, *,
                 timeout: set[str] | None = None, servfail: set[str] | None = None,
                 nodata: set[str] | None = None) -> None:
        self.records = {_key(k): v for k, v in (records or {}).items()}
        self.timeout = {_key(n) for n in timeout or ()}
        self.servfail = {_key(n) for n in servfail or ()}
        self.nodata = {_key(n) for n in nodata or ()}
        self.queries: list[str] = []
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> StubDNS:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="stub-dns", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self.answer(wire)
            if reply is not None:
                self._sock.sendto(reply, peer)

    def answer(self, wire: bytes) -> bytes | None:
        """The reply for one query, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        question = query.question[0]
        name = _key(question.name.to_text())
        self.queries.append(name)
        if name in self.timeout:
            return None
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name in self.nodata:
            pass
        elif name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT:
            found = self.records[name]
            rdatas = [dns.rdtypes.ANY.TXT.TXT(
                dns.rdataclass.IN, dns.rdatatype.TXT,
                [record[i:i + 255] for i in range(0, len(record), 255)] or [b""])
                for record in ([found] if isinstance(found, bytes) else found)]
            response.answer.append(dns.rrset.from_rdata_list(question.name, 60, rdatas))
        return response.to_wire(max_size=65535)
