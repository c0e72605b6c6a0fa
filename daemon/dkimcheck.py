"""DKIM checks for sender authentication: every signature, its key, our policy, alignment.

Job: for the raw bytes of one received message, check each DKIM-Signature header (topmost
first, up to a limit) with dkimpy's ``DKIM.verify(idx=i)``, and say for each one whether it
passed, failed, could not be checked *yet* (``temperror``) or is refused by our policy, and
whether its ``d=`` aligns with the From domain (DMARC identifier alignment, RFC 7489 §3.1).
``daemon.auth`` turns these into the verdict.

May touch: the bytes given and DNS (TXT lookups of ``<selector>._domainkey.<domain>``, with
the configured nameservers and timeout, or a lookup function passed in by the caller). No
filesystem, no database; dkimpy's own log lines are discarded (they quote attacker input).

How: the key is resolved here, before dkimpy runs, so a timeout or SERVFAIL is known as a
temporary error (dkimpy 1.1.8 turns a ``DnsTimeoutError`` from its ``dnsfunc`` into a plain
``False``); dkimpy then gets the record through ``dnsfunc``. With several TXT records each is
tried (RFC 6376 leaves this undefined; all of them are the domain owner's). Checks dkimpy does
not do: key type vs ``a=``, key flag ``t=s`` and key ``h=``. Policy refusals (``policy``):
``a=rsa-sha1`` (RFC 8301), ``From`` missing from ``h=``, an ``l=`` that is not the whole
canonicalized body (appended content would be unsigned), RSA keys under 1024 bits.

Known limits: ed25519 needs PyNaCl; without it such signatures are ``permerror`` with that
reason. Up to ``max_signatures`` distinct key lookups run one after another, so a message
whose keys all time out costs up to that many DNS timeouts. Time checks (``t=``, ``x=``) are
dkimpy's, with its 10-hour slop: verify once at receipt and store the result.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import dkim
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError
from dkim.util import InvalidTagValueList, parse_tag_value
from publicsuffixlist import PublicSuffixList

from daemon.logs import clean

MAX_KEY_RECORDS = 3  # TXT records tried per selector
KEY_TYPES = {b"rsa-sha256": b"rsa", b"rsa-sha1": b"rsa", b"ed25519-sha256": b"ed25519"}

# dkimpy logs exceptions that quote header values; a logger outside the hierarchy, disabled.
_DKIMPY_LOG = logging.Logger("dkimpy-quiet")
_DKIMPY_LOG.addHandler(logging.NullHandler())
_DKIMPY_LOG.disabled = True


class KeyLookupError(Exception):
    """No usable answer for a key name; ``temporary`` when asking again later may help.

    A ``resolver`` passed to ``daemon.auth.authenticate`` may raise it (or
    ``dns.exception.Timeout`` / ``dkim.DnsTimeoutError``, both taken as temporary)."""

    def __init__(self, reason: str, temporary: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.temporary = temporary


KeyLookup = Callable[[str], tuple[bytes, ...]]  # key name without final dot -> TXT records


@dataclass(frozen=True)
class SignatureCheck:
    domain: str  # d=, lower-case A-label when it is a valid name, else as found (cleaned)
    selector: str
    algorithm: str
    result: str  # pass | fail | temperror | permerror | policy
    aligned: bool
    reason: str  # readable, for people


def parse_nameserver(entry: str) -> tuple[str, int]:
    """Split ``ip``, ``ip:port``, ``[ipv6]:port`` or a bare IPv6 address; ValueError if bad."""
    host, port = entry.strip(), 53
    if host.startswith("["):
        inner, sep, rest = host[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad nameserver {entry!r}: expected [ipv6]:port")
        host, port = inner, int(rest[1:]) if rest else 53
    elif host.count(":") == 1:
        host, _, port_text = host.partition(":")
        port = int(port_text)
    ipaddress.ip_address(host)  # raises ValueError for names: nameservers are addresses
    if not 0 < port < 65536:
        raise ValueError(f"bad nameserver port in {entry!r}")
    return host, port


def make_dns_lookup(nameservers: tuple[str, ...], timeout: float) -> KeyLookup:
    """Return a TXT lookup through dnspython: the given servers, else the system resolver."""
    try:
        resolver = dns.resolver.Resolver(configure=not nameservers)
    except dns.resolver.NoResolverConfiguration:
        def unconfigured(name: str) -> tuple[bytes, ...]:
            raise KeyLookupError("no DNS configuration (resolv.conf) on this host", True)

        return unconfigured
    if nameservers:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(ns))
                                for ns in nameservers]
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.cache = None

    def lookup(name: str) -> tuple[bytes, ...]:
        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
            raise KeyLookupError(f"not a valid key name ({type(exc).__name__})", False) from None
        try:
            answer = resolver.resolve(qname, dns.rdatatype.TXT, search=False,
                                      raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            raise KeyLookupError("no key: the name does not exist (NXDOMAIN)", False) from None
        except dns.exception.Timeout:
            raise KeyLookupError(f"key lookup timed out after {timeout:g} s", True) from None
        except dns.resolver.NoNameservers:
            raise KeyLookupError("no nameserver answered (SERVFAIL/refused)", True) from None
        except dns.exception.DNSException as exc:
            raise KeyLookupError(f"key lookup failed ({type(exc).__name__})", True) from None
        records = tuple(b"".join(rd.strings) for rd in answer.rrset or ())
        if not records:
            raise KeyLookupError("no key: no TXT record at the name", False)
        return records

    return lookup


def adapt_resolver(resolver: Callable[[str], bytes | None]) -> KeyLookup:
    """Wrap a simple ``name -> record or None`` function (tests) as a ``KeyLookup``."""

    def lookup(name: str) -> tuple[bytes, ...]:
        try:
            record = resolver(name)
        except (dns.exception.Timeout, dkim.DnsTimeoutError) as exc:
            raise KeyLookupError(f"key lookup timed out ({exc})", True) from None
        if record is None:
            raise KeyLookupError("no key record", False)
        return (record,)

    return lookup


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()  # ICANN and private sections, list shipped with the package


def normalize_domain(domain: str) -> str | None:
    """Lower-case A-label form of a domain name (IDNA 2008 when available), None if invalid."""
    text = domain.strip()
    if not text or text.endswith(".") or text.startswith("[") or any(c.isspace() for c in text):
        return None
    try:
        name = dns.name.from_unicode(text) if not text.isascii() else dns.name.from_text(text)
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return None
    ascii_name: str = name.to_text(omit_final_dot=True).lower()
    if "." not in ascii_name or "\\" in ascii_name:
        return None
    return ascii_name


def organizational_domain(domain: str) -> str | None:
    """Registrable domain per the Public Suffix List; None when ``domain`` is a public suffix."""
    result = _psl().privatesuffix(domain)
    return result if isinstance(result, str) else None


def check_alignment(signing_domain: str, from_domain: str, mode: str) -> bool:
    """Tell whether ``signing_domain`` aligns with ``from_domain`` (both normalized)."""
    org = organizational_domain(signing_domain)  # a public suffix never aligns (d=co.uk)
    if org is None:
        return False
    if mode == "strict":
        return signing_domain == from_domain
    return org == organizational_domain(from_domain)


def check_signatures(raw: bytes, from_domain: str | None, alignment: str,
                     max_signatures: int, lookup: KeyLookup) -> tuple[list[SignatureCheck], int]:
    """Check the first ``max_signatures`` DKIM signatures; return them and how many were skipped."""
    try:
        verifier = dkim.DKIM(raw, logger=_DKIMPY_LOG, minkey=1024)
    except dkim.DKIMException as exc:
        count = sum(1 for line in raw.split(b"\n") if line[:15].lower() == b"dkim-signature:")
        if not count:
            return [], 0
        bad = SignatureCheck("", "", "", "permerror", False,
                             f"message cannot be read for DKIM: {clean(str(exc), 120)}")
        return [bad] * min(count, max_signatures), max(0, count - max_signatures)
    values = [v for k, v in verifier.headers if k.lower() == b"dkim-signature"]
    cache: dict[str, tuple[bytes, ...] | KeyLookupError] = {}

    def cached(name: str) -> tuple[bytes, ...]:
        if name not in cache:
            try:
                cache[name] = lookup(name)
            except KeyLookupError as exc:
                cache[name] = exc
        hit = cache[name]
        if isinstance(hit, KeyLookupError):
            raise hit
        return hit

    checks = [_check_one(verifier, i, values[i], from_domain, alignment, cached)
              for i in range(min(len(values), max_signatures))]
    return checks, max(0, len(values) - max_signatures)


def _text(value: bytes | None, limit: int = 80) -> str:
    return clean((value or b"").decode("utf-8", "replace").strip(), limit)


def _check_one(verifier: Any, idx: int, value: bytes, from_domain: str | None, alignment: str,
               lookup: KeyLookup) -> SignatureCheck:
    try:
        sig: dict[bytes, bytes] = parse_tag_value(value)
    except InvalidTagValueList as exc:
        return SignatureCheck("", "", "", "permerror", False,
                              f"malformed DKIM-Signature ({clean(str(exc), 80)})")
    raw_domain, selector = sig.get(b"d", b""), sig.get(b"s", b"")
    normalized = normalize_domain(_text(raw_domain, 255))
    aligned = bool(from_domain and normalized
                   and check_alignment(normalized, from_domain, alignment))
    found = (normalized or _text(raw_domain), _text(selector), _text(sig.get(b"a")).lower())
    try:
        dkim.validate_signature_fields(sig)
        refusals = _refuse_by_policy(sig, verifier.body)
    except dkim.DKIMException as exc:
        return SignatureCheck(*found, "permerror", aligned,
                              f"invalid signature: {clean(str(exc), 120)}")
    name = f"{_text(selector, 255)}._domainkey.{_text(raw_domain, 255)}"
    try:
        records = lookup(name)
    except KeyLookupError as exc:
        outcome, reason = ("temperror" if exc.temporary else "permerror"), exc.reason
    else:
        outcome, reason = _verify_with_keys(verifier, idx, sig, name, records)
    if "public key too small" in reason:
        refusals.append(f"RSA key under 1024 bits ({reason})")
    if refusals:  # never a pass, and never a reason to wait (temperror) either
        return SignatureCheck(*found, "policy", aligned,
                              f"refused: {'; '.join(refusals)} (cryptographic check: {outcome})")
    return SignatureCheck(*found, outcome, aligned, reason)


def _refuse_by_policy(sig: dict[bytes, bytes], body: bytes) -> list[str]:
    refusals = []
    if sig.get(b"a", b"").lower() == b"rsa-sha1":
        refusals.append("rsa-sha1 is retired (RFC 8301)")
    signed = [h.strip().lower() for h in re.split(rb"\s*:\s*", sig.get(b"h", b""))]
    if b"from" not in signed:
        refusals.append("From header not signed")
    if b"l" in sig:
        try:
            policy = CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
        except InvalidCanonicalizationPolicyError as exc:
            raise dkim.MessageFormatError(f"invalid c= value: {exc}") from None
        length = len(policy.canonicalize_body(body))
        if not sig[b"l"].isdigit():
            raise dkim.ValidationError("l= is not a number")
        signed_length = int(sig[b"l"])
        if signed_length != length:
            refusals.append(f"l={signed_length} but the body is {length} bytes "
                            "(content outside l= is unsigned)")
    return refusals


def _verify_with_keys(verifier: Any, idx: int, sig: dict[bytes, bytes], name: str,
                      records: tuple[bytes, ...]) -> tuple[str, str]:
    """Try each key record; the first that verifies wins, else the most telling failure."""
    failures: list[tuple[str, str]] = []
    for record in records[:MAX_KEY_RECORDS]:
        problem = _check_key_record(sig, name, record)
        if problem:
            failures.append(("permerror", problem))
            continue
        served: list[bytes] = []

        def dnsfunc(qname: bytes, timeout: float = 5, _r: bytes = record,
                    _s: list[bytes] = served) -> bytes | None:
            _s.append(qname)  # dkimpy builds the same name from the same tags
            return _r if qname.rstrip(b".").decode("utf-8", "replace") == name else None

        try:
            ok = verifier.verify(idx=idx, dnsfunc=dnsfunc)
        except dkim.DKIMException as exc:
            text = clean(str(exc), 120)
            if "body hash mismatch" in text:
                failures.append(("fail", "body hash mismatch: the body changed after signing"))
            else:
                failures.append(("permerror", text))
            continue
        except Exception as exc:  # dkimpy on hostile input: never a pass
            failures.append(("permerror", f"verifier error ({type(exc).__name__})"))
            continue
        if ok:
            return "pass", "signature verifies"
        failures.append(("fail", "signature does not verify" if served else
                         "dkimpy did not look up the key"))
    # most telling first: a real verification failure, then a key problem, last a key of
    # another type (a selector may publish an RSA and an ed25519 key side by side)
    failures.sort(key=lambda f: (f[0] != "fail", f[1].startswith("key type k=")))
    return failures[0] if failures else ("permerror", "no usable key record")


def _check_key_record(sig: dict[bytes, bytes], name: str, record: bytes) -> str | None:
    """What makes this key record unusable for this signature, or None."""
    try:
        key = parse_tag_value(record)
    except InvalidTagValueList as exc:
        return f"malformed key record ({clean(str(exc), 80)})"
    if not key.get(b"p", b"").strip():
        return "key revoked (empty p=)"
    want = KEY_TYPES.get(sig.get(b"a", b"").lower())
    if key.get(b"k", b"rsa").strip().lower() != want:
        return f"key type k={_text(key.get(b'k', b'rsa'))} does not match a={_text(sig.get(b'a'))}"
    try:
        dkim.evaluate_pk(name.encode(), record)
    except dkim.NaClNotFoundError:
        return "ed25519 key, but PyNaCl is not installed: cannot verify"
    except (dkim.DKIMException, ValueError, TypeError) as exc:
        return f"unusable key record ({clean(str(exc), 80)})"
    hashes = key.get(b"h")
    if hashes is not None:
        wanted_hash = sig.get(b"a", b"").lower().rpartition(b"-")[2]
        if wanted_hash not in [h.strip().lower() for h in hashes.split(b":")]:
            return f"key h= does not allow {wanted_hash.decode('ascii', 'replace')}"
    flags = [f.strip().lower() for f in key.get(b"t", b"").split(b":")]
    identity = sig.get(b"i")
    if b"s" in flags and identity is not None and \
            identity.rpartition(b"@")[2].lower() != sig.get(b"d", b"").lower():
        return "key has t=s but the i= domain differs from d="
    return None
