"""Authentication-Results written by our own MTA: which header to believe, and what it says.

Job: ``check_authentication_results`` applies the trust rule of daemon/auth.py (mode A, behind
Postfix + OpenDKIM/OpenDMARC/rspamd): only the topmost Authentication-Results header counts,
only when its authserv-id is one of ours and at most MAX_RECEIVED_ABOVE_AR Received header
(our MTA's own) stands above it; a dkim pass for a domain aligned with the From domain, or a
dmarc pass for the From domain itself, gives that domain. ``parse_authentication_results``
reads one RFC 8601 header value (comments dropped, quoted strings kept).

May touch: nothing (pure functions over header values).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from daemon.dkimcheck import check_alignment, normalize_domain
from daemon.logs import clean

MAX_RECEIVED_ABOVE_AR = 1  # our MTA's own Received header
ArResult = tuple[str, str, dict[str, str]]  # method, result, properties (header.d=...)


def check_authentication_results(headers: list[tuple[str, str]], from_domain: str,
                                 authserv_ids: Sequence[str], alignment: str
                                 ) -> tuple[str | None, list[str]]:
    """Apply the trust rule (module docstring) to the message's headers (lower-case names,
    top first); return (passing domain or None, evidence lines)."""
    trusted_ids = {a.strip().lower() for a in authserv_ids if a.strip()}
    lines: list[str] = []
    passing: str | None = None
    received_above = 0
    seen_ar = False
    for name, value in headers:
        if name == "received":
            received_above += 1
        if name != "authentication-results":
            continue
        parsed = parse_authentication_results(value)
        authserv = clean(parsed[0], 80) if parsed else "?"
        why = None
        if parsed is None:
            why = "unreadable"
        elif parsed[0] not in trusted_ids:
            why = "authserv-id not trusted"
        elif seen_ar:
            why = "not the topmost Authentication-Results header (may be forged)"
        elif received_above > MAX_RECEIVED_ABOVE_AR:
            why = f"{received_above} Received headers above it (not added by our MTA)"
        seen_ar = True
        if why or parsed is None:
            lines.append(f"Authentication-Results from {authserv} ignored: {why}")
            continue
        passing, found = _read_trusted_results(parsed[1], from_domain, alignment)
        lines.append(f"Authentication-Results from {authserv} (trusted): {found}")
    return passing, lines


def _read_trusted_results(results: list[ArResult], from_domain: str,
                          alignment: str) -> tuple[str | None, str]:
    notes = []
    for method, result, props in results:
        if method == "dkim":
            domain_text = props.get("header.d") or props.get("header.i", "").rpartition("@")[2]
            domain = normalize_domain(domain_text)
            ok = result == "pass" and domain is not None and \
                check_alignment(domain, from_domain, alignment)
            notes.append(f"dkim={clean(result, 20)} header.d={clean(domain_text, 80)}"
                         + (" aligned" if ok else ""))
            if ok:
                return domain, "; ".join(notes)
        elif method == "dmarc":
            domain_text = props.get("header.from") or props.get("header.d", "")
            ok = result == "pass" and normalize_domain(domain_text) == from_domain
            notes.append(f"dmarc={clean(result, 20)} header.from={clean(domain_text, 80)}")
            if ok:
                return from_domain, "; ".join(notes)
        else:
            notes.append(f"{clean(method, 20)}={clean(result, 20)}")
    return None, ("; ".join(notes) or "no results") + f": no pass for {from_domain}"


def parse_authentication_results(value: str) -> tuple[str, list[ArResult]] | None:
    """Parse an RFC 8601 header value into (authserv-id, [(method, result, properties)])."""
    segments = _split_segments(value)
    if segments is None or not segments[0].split():
        return None
    authserv_id = segments[0].split()[0].strip('"').lower()
    results = []
    for segment in segments[1:]:
        pairs = re.findall(r'([A-Za-z0-9][A-Za-z0-9._/-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s"]+)',
                           segment)
        if not pairs:
            continue  # "none"
        (method, result), props = pairs[0], pairs[1:]
        results.append((method.split("/")[0].lower(), _unquote(result).lower(),
                        {k.lower(): _unquote(v) for k, v in props}))
    return authserv_id, results


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _split_segments(value: str) -> list[str] | None:
    """Drop (nested) comments and split at semicolons outside quoted strings; None if unclosed."""
    segments: list[str] = []
    current: list[str] = []
    depth, quoted, escaped = 0, False, False
    for char in value:
        if escaped:
            escaped = False
            if not depth:
                current.append(char)
        elif char == "\\":
            escaped = True
            if not depth:
                current.append(char)
        elif quoted:
            quoted = char != '"'
            current.append(char)
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth:
            continue
        elif char == ";":
            segments.append("".join(current).strip())
            current = []
        else:
            quoted = char == '"'
            current.append(char)
    if depth or quoted:
        return None
    segments.append("".join(current).strip())
    return segments
