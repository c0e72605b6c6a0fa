"""daemon.auth / daemon.dkimcheck: a forged From must never come out as "pass" (B-AUTH cases).

Keys are generated here and every signature is made here with dkimpy; public keys are served
by a real DNS server on 127.0.0.1 (tests/dnsstub.py) so the dnspython path — timeouts,
SERVFAIL, NXDOMAIN — is the one the daemon uses. The DKIM vectors of dkimpy and chasquid in
/work/shared/corpus are read in place; those tests skip with a reason when it is absent.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import dkim
import dns.exception
import pytest

from daemon.auth import AuthSettings, AuthVerdict, authenticate
from daemon.authresults import parse_authentication_results
from daemon.dkimcheck import check_alignment, parse_nameserver
from tests.corpus import CORPUS
from tests.dkimkeys import Key, make_key
from tests.dnsstub import StubDNS

CHASQUID = CORPUS / "chasquid/internal/dkim/testdata"
DKIMPY = CORPUS / "dkimpy/dkim/tests/data"
OUR_ID = "mx.invoices.test"

HAVE_NACL = importlib.util.find_spec("nacl") is not None  # dkimpy's ed25519 backend


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {"vendor": make_key(2048), "other": make_key(1024)}


@pytest.fixture
def dns_server(keys: dict[str, Key]) -> Iterator[StubDNS]:
    vendor, other = keys["vendor"].record, keys["other"].record
    records: dict[str, bytes | list[bytes]] = {
        "sel._domainkey.vendor.test": vendor,
        "wrong._domainkey.vendor.test": other,  # signatures made with the vendor key fail
        "sel._domainkey.evil.test": other,
        "sel._domainkey.example.co.uk": vendor,
        "sel._domainkey.co.uk": vendor,
    }
    with StubDNS(records, timeout={"slow._domainkey.vendor.test"},
                 servfail={"broken._domainkey.vendor.test"}) as server:
        yield server


def settings_for(server: StubDNS, **changes: object) -> AuthSettings:
    base: dict[str, object] = {"nameservers": (server.address,), "dns_timeout": 0.5,
                               "authserv_ids": (OUR_ID,)}
    base.update(changes)
    return AuthSettings(**base)  # type: ignore[arg-type]


def mail(sender: str = "Billing <billing@vendor.test>", headers: str = "",
         body: str = "Invoice 2024-001 attached.\r\nIBAN FR76 3000 6000 0112 3456 7890 189\r\n",
         top: str = "") -> bytes:
    """A small mail; ``top`` goes above From (where a sender's own extra headers land)."""
    return (f"{top}From: {sender}\r\nTo: in@invoices.test\r\nSubject: Invoice 2024-001\r\n"
            f"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <inv1@vendor.test>\r\n"
            f"{headers}\r\n{body}").encode()


def sign(raw: bytes, key: Key, domain: str = "vendor.test", selector: str = "sel",
         **options: object) -> bytes:
    return bytes(dkim.sign(raw, selector.encode(), domain.encode(), key.pem, **options)) + raw


def lines(verdict: AuthVerdict) -> str:
    return "\n".join(verdict.evidence)


# --- genuine mail, alignment -------------------------------------------------------------


def test_genuine_aligned_signature_passes(keys: dict[str, Key], dns_server: StubDNS) -> None:
    verdict = authenticate(sign(mail(), keys["vendor"]), settings_for(dns_server))
    assert (verdict.result, verdict.method) == ("pass", "dkim")
    assert verdict.from_address == "billing@vendor.test"
    assert verdict.aligned_domain == "vendor.test"
    assert verdict.signatures[0].result == "pass" and verdict.signatures[0].aligned
    assert "DKIM d=vendor.test s=sel: pass, aligned (relaxed)" in verdict.evidence
    assert dns_server.queries == ["sel._domainkey.vendor.test"]


def test_upper_case_from_is_lower_cased(keys: dict[str, Key], dns_server: StubDNS) -> None:
    """B-AUTH-11: domain and local part come out lower-case."""
    verdict = authenticate(sign(mail("BILLING@VENDOR.TEST"), keys["vendor"]),
                           settings_for(dns_server))
    assert verdict.result == "pass"
    assert (verdict.from_address, verdict.from_domain) == ("billing@vendor.test", "vendor.test")


def test_unicode_from_domain_is_an_a_label() -> None:
    verdict = authenticate(mail("Jörg <jorg@bücher.test>"), AuthSettings(), resolver=lambda n: None)
    assert verdict.from_address == "jorg@xn--bcher-kva.test"
    assert verdict.result == "none"


def test_subdomain_aligns_in_relaxed_mode_only(keys: dict[str, Key], dns_server: StubDNS) -> None:
    """B-AUTH-08: d=vendor.test, From billing@mail.vendor.test."""
    raw = sign(mail("billing@mail.vendor.test"), keys["vendor"])
    assert authenticate(raw, settings_for(dns_server)).result == "pass"
    strict = authenticate(raw, settings_for(dns_server, alignment="strict"))
    assert strict.result == "fail"
    assert strict.signatures[0].result == "pass" and not strict.signatures[0].aligned
    assert "not aligned (strict)" in lines(strict)


def test_multi_label_public_suffix(keys: dict[str, Key], dns_server: StubDNS) -> None:
    """Organizational domain under co.uk; a signature by the public suffix never aligns."""
    raw = sign(mail("x@sub.example.co.uk"), keys["vendor"], domain="example.co.uk")
    assert authenticate(raw, settings_for(dns_server)).result == "pass"
    for sender in ("x@sub.example.co.uk", "x@co.uk"):
        raw = sign(mail(sender), keys["vendor"], domain="co.uk")
        verdict = authenticate(raw, settings_for(dns_server))
        assert verdict.signatures[0].result == "pass"
        assert verdict.result == "fail" and not verdict.signatures[0].aligned
    assert not check_alignment("co.uk", "co.uk", "strict")
    assert check_alignment("example.co.uk", "a.b.example.co.uk", "relaxed")
    assert not check_alignment("example.co.uk", "other.co.uk", "relaxed")


# --- From header attacks -----------------------------------------------------------------


def test_plain_from_spoof_without_signature(dns_server: StubDNS) -> None:
    """B-AUTH-01 / B-AUTH-18: no DKIM, no AR -> none, never pass."""
    verdict = authenticate(mail(), settings_for(dns_server))
    assert (verdict.result, verdict.method) == ("none", "")
    assert verdict.from_address == "billing@vendor.test"
    assert "no DKIM signature and no trusted Authentication-Results" in verdict.evidence
    assert dns_server.queries == []


def test_display_name_spoof_authenticates_the_real_address(keys: dict[str, Key],
                                                           dns_server: StubDNS) -> None:
    """B-AUTH-02: what passes is attacker@evil.test, never the vendor shown as a name."""
    raw = sign(mail('"billing@vendor.test" <attacker@evil.test>'), keys["other"],
               domain="evil.test")
    verdict = authenticate(raw, settings_for(dns_server))
    assert verdict.from_address == "attacker@evil.test"
    assert verdict.from_domain == "evil.test" and verdict.aligned_domain == "evil.test"
    assert "vendor.test" not in (verdict.from_domain or "")


@pytest.mark.parametrize("sender", [
    "billing@vendor.test <attacker@evil.test>",  # the stdlib reads billing@vendor.test here
    "<billing@vendor.test>@evil.test",
    "Billing <billing@vendor.test> <attacker@evil.test>",
])
def test_ambiguous_from_is_not_authenticated(keys: dict[str, Key], dns_server: StubDNS,
                                             sender: str) -> None:
    verdict = authenticate(sign(mail(sender), keys["vendor"]), settings_for(dns_server))
    assert verdict.result == "fail" and verdict.from_address is None
    assert "cannot be read unambiguously" in lines(verdict)


def test_two_from_headers(keys: dict[str, Key], dns_server: StubDNS) -> None:
    """B-AUTH-04: a second From above the signed one."""
    raw = b"From: mallory@evil.test\r\n" + sign(mail(), keys["vendor"])
    verdict = authenticate(raw, settings_for(dns_server))
    assert verdict.result == "fail" and verdict.from_address is None
    assert "2 From headers: not authenticated" in verdict.evidence


@pytest.mark.parametrize("sender", ["billing@vendor.test, mallory@evil.test",
                                    "Vendor: billing@vendor.test;", "undisclosed:;"])
def test_from_without_exactly_one_mailbox(keys: dict[str, Key], dns_server: StubDNS,
                                          sender: str) -> None:
    """B-AUTH-05: several mailboxes (or a group) in From."""
    verdict = authenticate(sign(mail(sender), keys["vendor"]), settings_for(dns_server))
    assert verdict.result == "fail" and verdict.from_address is None


def test_missing_from_header(dns_server: StubDNS) -> None:
    raw = b"To: in@invoices.test\r\nSubject: x\r\n\r\nbody\r\n"
    verdict = authenticate(raw, settings_for(dns_server))
    assert verdict.result == "fail" and "no From header: not authenticated" in verdict.evidence


def test_bare_cr_in_headers_is_not_authenticated(keys: dict[str, Key],
                                                 dns_server: StubDNS) -> None:
    """The stdlib sees a second From after a bare CR; dkimpy sees one X-Note header."""
    raw = b"X-Note: hi\rFrom: mallory@evil.test\r\n" + sign(mail(), keys["vendor"])
    verdict = authenticate(raw, settings_for(dns_server))
    assert verdict.result == "fail"
    assert "bare CR in the header section: not authenticated" in verdict.evidence


def test_oversized_from_header(dns_server: StubDNS) -> None:
    verdict = authenticate(mail("a" * 3000 + "@vendor.test"), settings_for(dns_server))
    assert verdict.result == "fail" and "longer than" in lines(verdict)


def test_duplicate_singleton_header_prevents_pass(keys: dict[str, Key],
                                                  dns_server: StubDNS) -> None:
    raw = b"Subject: Updated bank details\r\n" + sign(mail(), keys["vendor"])
    verdict = authenticate(raw, settings_for(dns_server))
    assert verdict.signatures[0].result == "pass"  # the signature itself still verifies
    assert verdict.result == "fail" and verdict.aligned_domain is None
    assert "2 Subject headers: not authenticated" in verdict.evidence


# --- DKIM signatures ---------------------------------------------------------------------


def test_unaligned_valid_signature(keys: dict[str, Key], dns_server: StubDNS) -> None:
    """B-AUTH-07: valid d=evil.test on a vendor.test From."""
    raw = sign(mail(), keys["other"], domain="evil.test")
    verdict = authenticate(raw, settings_for(dns_server))
    assert verdict.result == "fail"
    assert verdict.signatures[0].result == "pass" and not verdict.signatures[0].aligned
    assert "DKIM d=evil.test s=sel: pass, not aligned (relaxed)" in verdict.evidence
    assert "no DKIM signature aligned with vendor.test (DMARC would fail)" in verdict.evidence


def test_dkimpy_plain_verify_ignores_alignment(keys: dict[str, Key],
                                               dns_server: StubDNS) -> None:
    """Pin: dkim.verify() says True for the unaligned message above (why we check d=)."""
    raw = sign(mail(), keys["other"], domain="evil.test")
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: keys["other"].record)


def test_every_signature_is_checked(keys: dict[str, Key], dns_server: StubDNS) -> None:
    """The first signature fails (wrong key), the second is genuine: pass."""
    genuine = sign(mail(), keys["vendor"])
    raw = sign(genuine, keys["vendor"], selector="wrong")
    verdict = authenticate(raw, settings_for(dns_server))
    assert [s.result for s in verdict.signatures] == ["fail", "pass"]
    assert verdict.result == "pass" and verdict.aligned_domain == "vendor.test"


def test_signature_limit(keys: dict[str, Key], dns_server: StubDNS) -> None:
    raw = sign(sign(sign(mail(), keys["vendor"]), keys["vendor"], selector="wrong"),
               keys["vendor"], selector="wrong")
    verdict = authenticate(raw, settings_for(dns_server, dkim_max_signatures=2))
    assert [s.result for s in verdict.signatures] == ["fail", "fail"]
    assert verdict.result == "fail"
    assert "1 more DKIM signature(s) not checked (limit 2)" in verdict.evidence


def test_body_modified_after_signing(keys: dict[str, Key], dns_server: StubDNS) -> None:
    raw = sign(mail(), keys["vendor"]).replace(b"FR76 3000", b"DE89 3704")
    verdict = authenticate(raw, settings_for(dns_server))
    assert verdict.result == "fail"
    assert verdict.signatures[0].result == "fail"
    assert "body changed after signing" in verdict.signatures[0].reason


def test_l_tag_with_appended_content_is_refused(keys: dict[str, Key],
                                                dns_server: StubDNS) -> None:
    """B-AUTH-06 (a): dkimpy passes, our policy refuses."""
    raw = sign(mail(), keys["vendor"], length=True) + b"Pay to IBAN DE89 3704 0044 0532 0130 00\r\n"
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: keys["vendor"].record)
    verdict = authenticate(raw, settings_for(dns_server))
    assert verdict.result == "fail"
    check = verdict.signatures[0]
    assert check.result == "policy" and check.aligned
    assert "content outside l= is unsigned" in check.reason
    assert "cryptographic check: pass" in check.reason


def test_l_tag_with_new_content_type_is_refused(keys: dict[str, Key],
                                                dns_server: StubDNS) -> None:
    """B-AUTH-06 (c): a second Content-Type above the signed one makes the appendix visible."""
    signed = sign(mail(headers="MIME-Version: 1.0\r\nContent-Type: text/plain\r\n"),
                  keys["vendor"], length=True)
    raw = (b'Content-Type: multipart/mixed; boundary="b"\r\n' + signed
           + b"--b\r\nContent-Type: text/plain\r\n\r\nnew IBAN\r\n--b--\r\n")
    verdict = authenticate(raw, settings_for(dns_server))
    assert verdict.result == "fail"
    assert verdict.signatures[0].result == "policy"
    assert "2 Content-Type headers: not authenticated" in verdict.evidence


def test_l_tag_covering_the_whole_body_may_pass(keys: dict[str, Key],
                                                dns_server: StubDNS) -> None:
    raw = sign(mail(), keys["vendor"], length=True)
    assert b" l=" in raw.split(b"\r\n\r\n")[0] or b";l=" in raw
    assert authenticate(raw, settings_for(dns_server)).result == "pass"


def test_rsa_sha1_is_refused(keys: dict[str, Key], dns_server: StubDNS) -> None:
    """B-AUTH-14: aligned, cryptographically valid, but rsa-sha1."""
    raw = sign(mail(), keys["vendor"], signature_algorithm=b"rsa-sha1")
    verdict = authenticate(raw, settings_for(dns_server))
    assert verdict.result == "fail"
    assert verdict.signatures[0].result == "policy"
    assert "rsa-sha1" in verdict.signatures[0].reason


def test_small_rsa_key_is_refused(dns_server: StubDNS) -> None:
    """B-AUTH-14: a 512-bit key (dkimpy raises after a good signature; we refuse)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: cannot make a 512-bit key")
    small = make_key(512)
    dns_server.records["small._domainkey.vendor.test"] = small.record
    verdict = authenticate(sign(mail(), small, selector="small"), settings_for(dns_server))
    assert verdict.result == "fail"
    assert verdict.signatures[0].result == "policy"
    assert "under 1024 bits" in verdict.signatures[0].reason


def test_unsigned_from_is_refused(keys: dict[str, Key], dns_server: StubDNS) -> None:
    raw = mail()
    header = dkim.sign(raw, b"sel", b"vendor.test", keys["vendor"].pem,
                       include_headers=[b"from", b"subject"])
    # dkimpy refuses to sign without From; an attacker's signer does not: drop it from h=.
    forged = header.replace(b"h=from : subject", b"h=subject")
    verdict = authenticate(forged + raw, settings_for(dns_server))
    assert verdict.result == "fail"
    assert "From header not signed" in verdict.signatures[0].reason


def test_key_flags_and_several_records(keys: dict[str, Key], dns_server: StubDNS) -> None:
    """Key t=s (i= must be in d= itself), key h=, and a selector with two TXT records."""
    vendor = keys["vendor"].record
    dns_server.records["strict._domainkey.vendor.test"] = vendor.replace(b"k=rsa;", b"k=rsa; t=s;")
    dns_server.records["sha1._domainkey.vendor.test"] = vendor.replace(b"k=rsa;", b"k=rsa; h=sha1;")
    dns_server.records["multi._domainkey.vendor.test"] = [keys["other"].record, vendor]
    sub = sign(mail(), keys["vendor"], selector="strict", identity=b"billing@sub.vendor.test")
    check = authenticate(sub, settings_for(dns_server)).signatures[0]
    assert check.result == "permerror" and "t=s" in check.reason
    top = sign(mail(), keys["vendor"], selector="strict", identity=b"billing@vendor.test")
    assert authenticate(top, settings_for(dns_server)).result == "pass"
    check = authenticate(sign(mail(), keys["vendor"], selector="sha1"),
                         settings_for(dns_server)).signatures[0]
    assert check.result == "permerror" and "h= does not allow sha256" in check.reason
    assert authenticate(sign(mail(), keys["vendor"], selector="multi"),
                        settings_for(dns_server)).result == "pass"


# --- DNS ---------------------------------------------------------------------------------


def test_dns_timeout_is_temperror_and_quick(keys: dict[str, Key], dns_server: StubDNS) -> None:
    """B-AUTH-15: the key lookup never answers."""
    raw = sign(mail(), keys["vendor"], selector="slow")
    started = time.monotonic()
    verdict = authenticate(raw, settings_for(dns_server, dns_timeout=0.3))
    assert time.monotonic() - started < 3
    assert (verdict.result, verdict.method) == ("temperror", "dkim")
    assert verdict.signatures[0].result == "temperror"
    assert "timed out" in verdict.signatures[0].reason


def test_servfail_is_temperror(keys: dict[str, Key], dns_server: StubDNS) -> None:
    verdict = authenticate(sign(mail(), keys["vendor"], selector="broken"),
                           settings_for(dns_server))
    assert verdict.result == "temperror"
    assert "SERVFAIL" in verdict.signatures[0].reason


def test_nxdomain_key_is_permerror(keys: dict[str, Key], dns_server: StubDNS) -> None:
    verdict = authenticate(sign(mail(), keys["vendor"], selector="gone"),
                           settings_for(dns_server))
    assert verdict.result == "fail"
    assert verdict.signatures[0].result == "permerror"
    assert "NXDOMAIN" in verdict.signatures[0].reason


def test_no_txt_record_is_permerror(keys: dict[str, Key], dns_server: StubDNS) -> None:
    dns_server.nodata.add("empty._domainkey.vendor.test")
    verdict = authenticate(sign(mail(), keys["vendor"], selector="empty"),
                           settings_for(dns_server))
    assert verdict.signatures[0].result == "permerror" and verdict.result == "fail"


def test_temperror_then_pass_is_pass(keys: dict[str, Key], dns_server: StubDNS) -> None:
    raw = sign(sign(mail(), keys["vendor"]), keys["vendor"], selector="broken")
    verdict = authenticate(raw, settings_for(dns_server))
    assert [s.result for s in verdict.signatures] == ["temperror", "pass"]
    assert verdict.result == "pass"


def test_unaligned_temperror_does_not_hold_the_verdict(keys: dict[str, Key],
                                                       dns_server: StubDNS) -> None:
    """Retrying could only make an unaligned signature pass: useless for the From."""
    dns_server.servfail.add("sel._domainkey.esp.test")
    verdict = authenticate(sign(mail(), keys["other"], domain="esp.test"),
                           settings_for(dns_server))
    assert verdict.signatures[0].result == "temperror"
    assert verdict.result == "fail"


def test_temperror_with_two_from_headers_is_fail(keys: dict[str, Key],
                                                 dns_server: StubDNS) -> None:
    raw = b"From: mallory@evil.test\r\n" + sign(mail(), keys["vendor"], selector="broken")
    assert authenticate(raw, settings_for(dns_server)).result == "fail"


def test_dkimpy_swallows_dns_timeouts() -> None:
    """Pin (B-AUTH-15): a dnsfunc raising DnsTimeoutError gives False, not an exception."""
    key = make_key(1024)
    raw = sign(mail(), key)

    def timing_out(name: bytes, timeout: float = 5) -> bytes:
        raise dkim.DnsTimeoutError("stub timeout")

    assert dkim.DKIM(raw).verify(idx=0, dnsfunc=timing_out) is False
    assert dkim.verify(raw, dnsfunc=timing_out) is False


def test_resolver_override(keys: dict[str, Key]) -> None:
    raw = sign(mail(), keys["vendor"])
    records = {"sel._domainkey.vendor.test": keys["vendor"].record}
    assert authenticate(raw, AuthSettings(), resolver=records.get).result == "pass"

    def timing_out(name: str) -> bytes | None:
        raise dns.exception.Timeout

    assert authenticate(raw, AuthSettings(), resolver=timing_out).result == "temperror"
    assert authenticate(raw, AuthSettings(), resolver=lambda name: None).result == "fail"


# --- Authentication-Results --------------------------------------------------------------

RECEIVED = ("Received: from mail.vendor.test by mx.invoices.test with ESMTPS id 1;"
            " Mon, 1 Jan 2024\r\n")


def ar(authserv_id: str, results: str) -> str:
    return f"Authentication-Results: {authserv_id}; {results}\r\n"


@pytest.mark.parametrize("top", [
    RECEIVED + ar(OUR_ID, "dkim=pass header.d=vendor.test header.s=sel"),  # OpenDKIM: index 1
    ar(OUR_ID, "dkim=pass (2048-bit key) header.i=@vendor.test") + RECEIVED,
    RECEIVED + ar(OUR_ID.upper(), "dmarc=pass (p=reject dis=none) header.from=vendor.test"),
    RECEIVED + ar(OUR_ID, 'spf=pass smtp.mailfrom=vendor.test; dkim=pass header.d="vendor.test"'),
])
def test_trusted_topmost_authentication_results(dns_server: StubDNS, top: str) -> None:
    verdict = authenticate(mail(top=top), settings_for(dns_server))
    assert (verdict.result, verdict.method) == ("pass", "authentication-results")
    assert verdict.aligned_domain == "vendor.test"
    assert f"Authentication-Results from {OUR_ID} (trusted)" in lines(verdict)


@pytest.mark.parametrize("results", [
    "dkim=pass header.d=evil.test",  # unaligned
    "dkim=fail header.d=vendor.test",
    "dmarc=pass header.from=mail.vendor.test",  # dmarc must name the From domain itself
    "none",
])
def test_trusted_authentication_results_without_aligned_pass(dns_server: StubDNS,
                                                             results: str) -> None:
    verdict = authenticate(mail(top=RECEIVED + ar(OUR_ID, results)), settings_for(dns_server))
    assert verdict.result == "none"


def test_forged_authentication_results_below_ours_are_ignored(dns_server: StubDNS) -> None:
    """B-AUTH-16: the sender's copies (twice, the OpenDKIM ordinal bug) lie below ours."""
    forged = ar(OUR_ID, "dkim=pass header.d=vendor.test; dmarc=pass header.from=vendor.test")
    raw = mail(top=RECEIVED + ar(OUR_ID, "dkim=none") + forged + forged)
    verdict = authenticate(raw, settings_for(dns_server))
    assert verdict.result == "none"
    assert lines(verdict).count("not the topmost Authentication-Results header") == 2


def test_forged_authentication_results_below_two_received_are_ignored(
        dns_server: StubDNS) -> None:
    sender_trace = "Received: from laptop by mail.evil.test; Mon, 1 Jan 2024\r\n"
    raw = mail(top=RECEIVED + sender_trace + ar(OUR_ID, "dkim=pass header.d=vendor.test"))
    verdict = authenticate(raw, settings_for(dns_server))
    assert verdict.result == "none"
    assert "2 Received headers above it" in lines(verdict)


def test_foreign_authserv_id_is_ignored(dns_server: StubDNS) -> None:
    """B-AUTH-17."""
    raw = mail(top=ar("mx.google.com", "dmarc=pass header.from=vendor.test"))
    verdict = authenticate(raw, settings_for(dns_server))
    assert verdict.result == "none"
    assert "Authentication-Results from mx.google.com ignored: authserv-id not trusted" \
        in verdict.evidence


def test_no_trusted_ids_means_no_ar_trust(dns_server: StubDNS) -> None:
    raw = mail(top=ar(OUR_ID, "dkim=pass header.d=vendor.test"))
    assert authenticate(raw, settings_for(dns_server, authserv_ids=())).result == "none"


def test_ar_pass_does_not_override_two_from_headers(dns_server: StubDNS) -> None:
    raw = mail(top=ar(OUR_ID, "dmarc=pass header.from=vendor.test") + "From: x@evil.test\r\n")
    assert authenticate(raw, settings_for(dns_server)).result == "fail"


def test_parse_authentication_results() -> None:
    parsed = parse_authentication_results(
        ' mx.example.org 1 (comment; with "semicolons"); dkim/1 = pass (good (nested))'
        ' header.d=vendor.test header.b="ab;c"; spf=none; none')
    assert parsed == ("mx.example.org", [
        ("dkim", "pass", {"header.d": "vendor.test", "header.b": "ab;c"}),
        ("spf", "none", {})])
    assert parse_authentication_results("mx; dkim=pass (unclosed") is None


# --- settings and storage ----------------------------------------------------------------


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        AuthSettings(alignment="loose")
    with pytest.raises(ValueError):
        AuthSettings(nameservers=("dns.example",))
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("[::1]:53") == ("::1", 53)
    assert parse_nameserver("2001:db8::1") == ("2001:db8::1", 53)


def test_json_round_trip(keys: dict[str, Key], dns_server: StubDNS) -> None:
    raw = sign(sign(mail(), keys["vendor"]), keys["vendor"], selector="wrong")
    verdict = authenticate(raw, settings_for(dns_server))
    stored = json.loads(json.dumps(verdict.to_json()))
    assert AuthVerdict.from_json(stored) == verdict
    none = authenticate(mail("a@b.test, c@d.test"), settings_for(dns_server))
    assert AuthVerdict.from_json(json.loads(json.dumps(none.to_json()))) == none
    with pytest.raises(ValueError):
        AuthVerdict.from_json({**stored, "result": "maybe"})
    with pytest.raises(ValueError):
        AuthVerdict.from_json({**stored, "signatures": [{"domain": 1}]})


# --- corpus: dkimpy and chasquid vectors -------------------------------------------------


def corpus_file(folder: Path, name: str) -> Path:
    """chasquid vectors point at another vector's file by naming it as the only content."""
    if not folder.is_dir():
        pytest.skip(f"DKIM corpus not present: {folder}")
    path = folder / name
    text = path.read_bytes().strip() if path.exists() else b""
    if text and b"\n" not in text and (folder / text.decode()).is_file():
        return folder / text.decode()
    return path


def chasquid_dns(path: Path) -> tuple[dict[str, bytes | list[bytes]], set[str], set[str]]:
    records: dict[str, bytes | list[bytes]] = {}
    temporary: set[str] = set()
    permanent: set[str] = set()
    if not path.exists():
        return records, temporary, permanent
    for entry in path.read_text().replace("\\\n", " ").split("\n\n"):
        name, _, value = entry.strip().partition(":")
        if not name:
            continue
        value = " ".join(value.split())
        if value == "TEMPERROR":
            temporary.add(name)
        elif value == "PERMERROR":
            permanent.add(name)
        else:
            found = records.setdefault(name, [])
            assert isinstance(found, list)
            found.append(value.encode())
    return records, temporary, permanent


CHASQUID_CASES = ["01-rfc8463", "02-too_many_headers", "03-bad_message",
                  "04-bad_dkim_signature_header", "05-dns_temp_error", "06-dns_perm_error",
                  "07-algo_mismatch", "08-our_signature", "09-limited_body",
                  "10-strict_domain_check_pass", "11-strict_domain_check_fail"]


def expected_state(result: dict[str, str]) -> set[str]:
    """chasquid's state, as our results: l= is our policy, ed25519 needs PyNaCl."""
    header = result["SignatureHeader"]
    if result["State"] == "SUCCESS":
        if "l=" in header:
            return {"policy"}
        if "ed25519" in header and not HAVE_NACL:
            return {"permerror"}
        return {"pass"}
    return {"temperror"} if result["State"] == "TEMPFAIL" else {"fail", "permerror"}


@pytest.mark.parametrize("case", CHASQUID_CASES)
def test_chasquid_vectors(case: str) -> None:
    raw = corpus_file(CHASQUID, f"{case}.msg").read_bytes()
    records, temporary, _ = chasquid_dns(corpus_file(CHASQUID, f"{case}.dns"))
    result_path = corpus_file(CHASQUID, f"{case}.result")
    expected = json.loads(result_path.read_text()) if result_path.exists() else {"Results": []}
    with StubDNS(records, servfail=temporary) as server:
        verdict = authenticate(raw, AuthSettings(nameservers=(server.address,), dns_timeout=1))
    wanted = [expected_state(r) for r in expected["Results"]]
    got = [s.result for s in verdict.signatures]
    assert len(got) == len(wanted), verdict.evidence
    for state, check, result in zip(wanted, verdict.signatures, expected["Results"],
                                    strict=True):
        assert check.result in state, (check, result["Error"])
        if result["Domain"]:
            assert (check.domain, check.selector) == (result["Domain"], result["Selector"])
    if any(s == {"pass"} for s in wanted):
        assert verdict.result == "pass", verdict.evidence
    elif any(s == {"temperror"} for s in wanted):
        assert verdict.result == "temperror", verdict.evidence
    else:
        assert verdict.result == "fail", verdict.evidence


def test_dkimpy_vectors_sign_and_verify() -> None:
    """dkimpy's test key and message, signed here; its good and broken key records."""
    raw = corpus_file(DKIMPY, "test.message").read_bytes()
    private = corpus_file(DKIMPY, "test.private").read_bytes()
    signed = bytes(dkim.sign(raw, b"test", b"example.com", private)) + raw
    outcomes = {}
    for record in ("test.txt", "test_bad.txt", "badk.txt", "badversion.txt"):
        served = {"test._domainkey.example.com": corpus_file(DKIMPY, record).read_bytes().strip()}
        verdict = authenticate(signed, AuthSettings(), resolver=served.get)
        outcomes[record] = (verdict.result, verdict.signatures[0].result)
    assert outcomes["test.txt"] == ("pass", "pass")
    assert outcomes["test_bad.txt"][0] == "fail"
    assert outcomes["badk.txt"] == ("fail", "permerror")
    assert outcomes["badversion.txt"] == ("fail", "permerror")


def test_dkimpy_rfc6376_signed_message() -> None:
    raw = corpus_file(DKIMPY, "rfc6376.signed.msg").read_bytes()
    rsa_record = corpus_file(DKIMPY, "test.txt").read_bytes().strip()
    records = {"test._domainkey.football.example.com": rsa_record,
               "brisbane._domainkey.football.example.com":
                   b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="}
    verdict = authenticate(raw, AuthSettings(), resolver=records.get)
    assert [s.result for s in verdict.signatures] == \
        ["pass" if HAVE_NACL else "permerror", "pass"]
    assert verdict.result == "pass" and verdict.from_address == "joe@football.example.com"


def test_ed25519_verifies() -> None:
    if not HAVE_NACL:
        pytest.skip("PyNaCl not installed: ed25519 signatures come out permerror (dkimpy needs "
                    "it; install dkimpy[ed25519])")
    raw = corpus_file(CHASQUID, "01-rfc8463.msg").read_bytes()
    key = b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    verdict = authenticate(raw, AuthSettings(), resolver=lambda name: key)
    assert verdict.signatures[0].result == "pass" and verdict.result == "pass"
