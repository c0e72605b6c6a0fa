"""Sender authentication: is the From address of a received message really the sender's?

Job: from the raw stored bytes of one message return an ``AuthVerdict``: ``pass`` only when
the message has exactly one From header with exactly one mailbox, no duplicated singleton
header, and either a DKIM signature that verifies with ``d=`` aligned to the From domain
(``daemon.dkimcheck``), or a pass for that domain in the Authentication-Results header our own
MTA added. ``temperror`` means a key lookup for an aligned signature failed for now (timeout,
SERVFAIL): keep the document auth-pending and call again later. ``fail``/``none`` never
reject mail: the document waits for a person, and ``evidence`` tells them why.

May touch: the bytes given and DNS (through ``daemon.dkimcheck``). Synchronous and blocking
(DNS timeouts): run it on a worker thread, never on the event loop. No filesystem, database
or logging of message content.

Authentication-Results trust rule (mode A, behind Postfix + OpenDKIM/OpenDMARC/rspamd): only
the **topmost** Authentication-Results header of the message is considered, and only when its
authserv-id is in ``AuthSettings.authserv_ids`` and at most one Received header (the one our
MTA prepends) lies above it. OpenDKIM and OpenDMARC insert their header at index 1, i.e. just
below Postfix's own Received header; anything a sender wrote lies below our MTA's header, so
a forged header naming our authserv-id is never topmost while the milter adds its own.
Every other AR header is ignored and noted as untrusted in the evidence. In it, ``dkim=pass``
counts when ``header.d`` (or the domain of ``header.i``) aligns with the From domain, and
``dmarc=pass`` when ``header.from`` (or ``header.d``) equals the From domain.

Known limits: with several milters only the last-inserted (topmost) header is read. If the
milter adds nothing (crashed with ``milter_default_action = accept``, rspamd's
``skip_local``) and the MTA does not strip inbound AR headers, a sender's forged header
becomes the topmost one: the Postfix ``header_checks`` rule in docs/postfix.md is required,
and ``authserv_ids`` must stay empty when facturd receives mail directly (mode B). ARC and
SPF are not evaluated. DKIM replay (a genuine old signed mail re-sent) passes here: dedupe
and the signed To/Cc are the rules' job.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from email import policy
from typing import Any

from daemon.authresults import check_authentication_results
from daemon.dkimcheck import (
    KeyLookup,
    SignatureCheck,
    adapt_resolver,
    check_signatures,
    make_dns_lookup,
    normalize_domain,
    parse_nameserver,
)
from daemon.logs import clean

__all__ = ["AuthSettings", "AuthVerdict", "SignatureCheck", "authenticate",
           "authenticate_delivery"]

RESULTS = ("pass", "fail", "none", "temperror")
METHODS = ("dkim", "authentication-results", "internal", "")
SIGNATURE_RESULTS = ("pass", "fail", "temperror", "permerror", "policy")
# RFC 5322 §3.6 fields that may appear at most once, plus the MIME headers that decide what a
# reader sees: an extra copy above a signed one is not covered by the signature.
SINGLETONS = ("from", "sender", "reply-to", "to", "cc", "bcc", "subject", "date", "message-id",
              "in-reply-to", "references", "mime-version", "content-type",
              "content-transfer-encoding")
MAX_FROM_CHARS = 2000
_HEADER_NAME = re.compile(rb"([\x21-\x7e]+?):")


@dataclass(frozen=True)
class AuthSettings:
    nameservers: tuple[str, ...] = ()  # empty -> system resolver; "ip", "ip:port", "[v6]:port"
    dns_timeout: float = 5.0  # seconds for one key lookup, all servers and retries included
    authserv_ids: tuple[str, ...] = ()  # our MTA's authserv-ids; empty = trust no AR header
    alignment: str = "relaxed"  # relaxed (same organizational domain) | strict (same name)
    dkim_max_signatures: int = 5

    def __post_init__(self) -> None:
        if self.alignment not in ("relaxed", "strict"):
            raise ValueError(f"alignment must be relaxed or strict, not {self.alignment!r}")
        if not 0 < self.dns_timeout <= 60:
            raise ValueError("dns_timeout must be between 0 and 60 seconds")
        if not 1 <= self.dkim_max_signatures <= 50:
            raise ValueError("dkim_max_signatures must be between 1 and 50")
        for entry in self.nameservers:
            parse_nameserver(entry)


@dataclass(frozen=True)
class AuthVerdict:
    result: str  # pass | fail | none | temperror
    method: str  # dkim | authentication-results | internal | ""
    from_address: str | None  # the single From mailbox, lower-case, A-label domain
    from_domain: str | None
    aligned_domain: str | None  # d= (or AR header.d/header.from) that passed and aligned
    signatures: tuple[SignatureCheck, ...]
    evidence: tuple[str, ...]  # readable lines for people

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["signatures"] = [asdict(s) for s in self.signatures]
        data["evidence"] = list(self.evidence)
        data["version"] = 1
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> AuthVerdict:
        """Read what ``to_json`` stored; ValueError when it is not such a record."""
        sigs = data.get("signatures")
        evidence = data.get("evidence")
        if not isinstance(sigs, list) or not isinstance(evidence, list):
            raise ValueError("auth verdict: signatures and evidence must be lists")
        verdict = cls(
            result=_choice(data, "result", RESULTS), method=_choice(data, "method", METHODS),
            from_address=_opt_str(data, "from_address"), from_domain=_opt_str(data, "from_domain"),
            aligned_domain=_opt_str(data, "aligned_domain"),
            signatures=tuple(_read_signature(s) for s in sigs),
            evidence=tuple(_str_item(e) for e in evidence))
        return verdict


def authenticate(raw: bytes, settings: AuthSettings,
                 resolver: Callable[[str], bytes | None] | None = None) -> AuthVerdict:
    """Authenticate the From address of ``raw``; ``resolver`` replaces DNS (tests).

    ``resolver`` gets the key name without the final dot and returns the TXT record or None
    (no key); it may raise ``dkimcheck.KeyLookupError``, ``dns.exception.Timeout`` or
    ``dkim.DnsTimeoutError`` (both temporary)."""
    lookup: KeyLookup = (adapt_resolver(resolver) if resolver is not None
                         else make_dns_lookup(settings.nameservers, settings.dns_timeout))
    headers, header_problem = split_headers(raw)
    evidence: list[str] = []
    problems = [header_problem] if header_problem else []
    from_address, from_domain, from_problem = find_from_address(headers)
    if from_problem:
        problems.append(from_problem)
    else:
        evidence.append(f"From: {clean(from_address or '', 200)}")
    problems += find_duplicate_singletons(headers)
    if from_domain is None:  # nothing to align with: no DNS traffic for this message
        return _verdict("fail", "", None, None, None, (), evidence, problems)

    checks, skipped = check_signatures(raw, from_domain, settings.alignment,
                                       settings.dkim_max_signatures, lookup)
    evidence += [describe_signature(c, settings.alignment) for c in checks]
    if skipped:
        evidence.append(f"{skipped} more DKIM signature(s) not checked (limit "
                        f"{settings.dkim_max_signatures})")
    ar_domain, ar_lines = check_authentication_results(headers, from_domain,
                                                       settings.authserv_ids, settings.alignment)
    evidence += ar_lines

    dkim_pass = next((c for c in checks if c.result == "pass" and c.aligned), None)
    if dkim_pass is not None:
        return _verdict("pass", "dkim", from_address, from_domain, dkim_pass.domain, checks,
                        evidence, problems)
    if ar_domain is not None:
        return _verdict("pass", "authentication-results", from_address, from_domain, ar_domain,
                        checks, evidence, problems)
    if any(c.result == "temperror" and c.aligned for c in checks):
        return _verdict("temperror", "dkim", from_address, from_domain, None, checks, evidence,
                        problems)
    if checks:
        if not any(c.aligned for c in checks):
            evidence.append(f"no DKIM signature aligned with {from_domain} (DMARC would fail)")
        return _verdict("fail", "dkim", from_address, from_domain, None, checks, evidence,
                        problems)
    evidence.append("no DKIM signature and no trusted Authentication-Results")
    return _verdict("none", "", from_address, from_domain, None, checks, evidence, problems)


def authenticate_delivery(raw: bytes, settings: AuthSettings, *, protocol: str,
                          envelope_from: str) -> AuthVerdict:
    """The verdict for one stored delivery: ``authenticate`` for mail that came over SMTP or
    LMTP; for protocol ``internal`` (a sales invoice one hosted folder sent to another,
    written by daemon/sales.py: no listener or command can store that protocol) a pass for
    the From address, which must be exactly the envelope sender facturd recorded
    (``<seller VAT>@<domain>``). Nothing is looked up in DNS for internal mail."""
    if protocol != "internal":
        return authenticate(raw, settings)
    headers, header_problem = split_headers(raw)
    from_address, from_domain, from_problem = find_from_address(headers)
    problems = [p for p in (header_problem, from_problem) if p]
    problems += find_duplicate_singletons(headers)
    expected = envelope_from.strip().lower()
    evidence = [f"delivered internally by facturd from {clean(expected, 200)}"]
    if from_address != expected:
        problems.append(f"From {clean(from_address or '?', 200)} is not the sending folder's "
                        "address")
    if problems or from_domain is None:
        return _verdict("fail", "", from_address, from_domain, None, (), evidence, problems)
    return _verdict("pass", "internal", from_address, from_domain, from_domain, (), evidence,
                    [])


def _verdict(result: str, method: str, from_address: str | None, from_domain: str | None,
             aligned_domain: str | None, checks: list[SignatureCheck] | tuple[()],
             evidence: list[str], problems: list[str]) -> AuthVerdict:
    if problems:  # structural doubt about who the author is: never a pass, never a wait
        evidence += [f"{p}: not authenticated" for p in problems]
        if result in ("pass", "temperror", "none"):
            result, method, aligned_domain = "fail", "", None
    evidence.append(f"result: {result}" + (f" via {method}" if result == "pass" else ""))
    return AuthVerdict(result, method, from_address, from_domain, aligned_domain, tuple(checks),
                       tuple(evidence))


def split_headers(raw: bytes) -> tuple[list[tuple[str, str]], str | None]:
    """Unfold the top-level header section the way dkimpy reads it; (headers, problem)."""
    headers: list[tuple[str, str]] = []
    problem = None
    for line in _header_lines(raw):
        if b"\r" in line:  # the stdlib splits lines there, dkimpy does not: two views
            problem = problem or "bare CR in the header section"
        if line[:1] in (b" ", b"\t"):
            if headers:
                name, value = headers[-1]
                headers[-1] = (name, value + "\r\n" + line.decode("utf-8", "replace"))
            else:
                problem = problem or "header section starts with a continuation line"
            continue
        match = _HEADER_NAME.match(line)
        if match:
            headers.append((match.group(1).decode("ascii").lower(),
                            line[match.end():].decode("utf-8", "replace")))
        elif not line.startswith(b"From "):  # an mbox separator is skipped, as dkimpy does
            problem = problem or "malformed header line"
    return headers, problem


def _header_lines(raw: bytes) -> list[bytes]:
    lines = []
    start = 0
    while start < len(raw):
        end = raw.find(b"\n", start)
        end = len(raw) if end < 0 else end
        line = raw[start:end].removesuffix(b"\r")
        if not line:
            break
        lines.append(line)
        start = end + 1
    return lines


def find_from_address(headers: list[tuple[str, str]]) -> tuple[str | None, str | None, str | None]:
    """Return (address, domain, problem) for the single From mailbox."""
    values = [v for n, v in headers if n == "from"]
    if not values:
        return None, None, "no From header"
    if len(values) > 1:
        return None, None, f"{len(values)} From headers"
    if len(values[0]) > MAX_FROM_CHARS:
        return None, None, f"From header longer than {MAX_FROM_CHARS} characters"
    try:
        parsed: Any = policy.default.header_factory("from", values[0].strip())
    except Exception:  # the stdlib parser on hostile input: unreadable, never a pass
        return None, None, "From header cannot be parsed"
    if parsed.defects:  # parsers disagree on such headers: "a@vendor <b@evil>" reads as a@vendor
        return None, None, f"From header cannot be read unambiguously ({clean(values[0], 120)})"
    if any(g.display_name is not None for g in parsed.groups):
        return None, None, "From header uses group syntax"
    if len(parsed.addresses) != 1:
        return None, None, f"From header names {len(parsed.addresses)} addresses"
    mailbox = parsed.addresses[0]
    domain = normalize_domain(mailbox.domain)
    if not mailbox.username or domain is None:
        return None, None, f"From address has no valid domain ({clean(mailbox.addr_spec, 120)})"
    return f"{mailbox.username.lower()}@{domain}", domain, None


def find_duplicate_singletons(headers: list[tuple[str, str]]) -> list[str]:
    """Name every singleton header (other than From) that appears more than once."""
    counts: dict[str, int] = {}
    for name, _ in headers:
        counts[name] = counts.get(name, 0) + 1
    return [f"{counts[n]} {n.title()} headers" for n in SINGLETONS
            if n != "from" and counts.get(n, 0) > 1]


def describe_signature(check: SignatureCheck, alignment: str) -> str:
    """One evidence line for one signature."""
    where = f"DKIM d={check.domain or '?'} s={check.selector or '?'}"
    if check.result == "pass":
        how = f"aligned ({alignment})" if check.aligned else f"not aligned ({alignment})"
        return f"{where}: pass, {how}"
    return f"{where}: {check.result} ({check.reason})" + ("" if check.aligned else ", unaligned")


def _choice(data: dict[str, object], key: str, allowed: tuple[str, ...]) -> str:
    value = data.get(key)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"auth verdict: bad {key} {value!r}")
    return value


def _opt_str(data: dict[str, object], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"auth verdict: {key} must be a string or null")
    return value


def _str_item(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("auth verdict: evidence lines must be strings")
    return value


def _read_signature(item: object) -> SignatureCheck:
    if not isinstance(item, dict):
        raise ValueError("auth verdict: a signature must be an object")
    fields = {k: item.get(k) for k in ("domain", "selector", "algorithm", "reason")}
    if not all(isinstance(v, str) for v in fields.values()) or \
            not isinstance(item.get("aligned"), bool):
        raise ValueError("auth verdict: bad signature record")
    return SignatureCheck(str(fields["domain"]), str(fields["selector"]),
                          str(fields["algorithm"]),
                          _choice(item, "result", SIGNATURE_RESULTS), bool(item["aligned"]),
                          str(fields["reason"]))
