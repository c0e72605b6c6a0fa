"""The web role's approval pages over real HTTP on loopback (B-APPR-01..10, F-19).

``make_app`` is served by aiohttp's TestServer on 127.0.0.1 and driven by a real client whose
cookie jar behaves as a browser's on a loopback origin (it keeps the form cookie, ``Secure``
included, and sends it back to the page's path); the Store is a real SQLite database in
tmp_path with a clock the tests move. Tokens come from the approval request mails
(daemon.approval), exactly as a person would get them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from daemon import decisions
from daemon.decisions import AlreadyDecided
from daemon.web import csrf_token, make_app, run_web
from daemon.webbase import CSRF_SETTING
from daemon.webguard import FAIL_LIMIT, FAIL_WINDOW, FailedLookups, client_of, parse_proxies
from storage.approvals import Approvals, TokenRefused, hash_token
from storage.outbox import OutboxStore
from storage.policy import Policy
from storage.store import Store
from tests.conftest import Clock, free_port
from tests.test_approval import (
    BOSS,
    NOTIFY,
    SETTINGS,
    make_document,
    make_folder,
    notices,
    parse,
    request,
    state_of,
    text_of,
)

Client = TestClient[Any, Any]
SECURITY = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def serve(store: Store, scenario: Callable[[Client], Awaitable[None]], **app: Any) -> None:
    """Run ``scenario`` against the web app (``app``: make_app keywords) with a client that
    keeps cookies as a browser does for http://127.0.0.1 (a secure context)."""
    async def main() -> None:
        port = free_port()
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[f"http://127.0.0.1:{port}"])
        server = TestServer(make_app(store, SETTINGS, **app), host="127.0.0.1", port=port)
        async with TestClient(server, cookie_jar=jar) as client:
            await scenario(client)
    asyncio.run(main())


def csrf_of(page: str) -> str:
    found = re.findall(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert found, "no csrf field on the page"
    return str(found[0])


def assert_secure(resp: aiohttp.ClientResponse) -> None:
    for name, value in SECURITY.items():
        assert resp.headers.get(name) == value, name
    policy = resp.headers["Content-Security-Policy"]
    assert re.fullmatch(r"default-src 'none'; style-src 'nonce-[A-Za-z0-9_-]{16,}'; "
                        r"form-action 'self'; frame-ancestors 'none'; base-uri 'none'", policy)
    assert "Location" not in resp.headers


def test_get_shows_and_changes_nothing(store: Store) -> None:
    """B-APPR-01: a scanner's HEAD and GET (no cookies, odd user agents) change nothing."""
    doc_id = make_document(store, make_folder(store))
    req = request(store, doc_id)[BOSS]
    before = Approvals(store).look(req.approve)

    async def scenario(client: Client) -> None:
        nonces = set()
        for ua in ("", "Mozilla/5.0 HeadlessChrome/120.0"):
            head = await client.head(f"/a/{req.approve}", headers={"User-Agent": ua})
            assert head.status == 200
            # B-APPR-08: the next= parameter is ignored, never a redirect
            resp = await client.get(f"/a/{req.approve}?next=https://evil.test/",
                                    headers={"User-Agent": ua}, allow_redirects=False)
            page = await resp.text()
            assert resp.status == 200
            assert_secure(resp)
            nonce = re.search(r"nonce-([A-Za-z0-9_-]+)'", resp.headers["Content-Security-Policy"])
            assert nonce and f'<style nonce="{nonce.group(1)}">' in page
            nonces.add(nonce.group(1))
            for shown in ("Fournitures Dupont", "F2026-0042", "1 234,56", "Nouveau fournisseur",
                          "Approuver la facture"):
                assert shown in page.replace("\u202f", " ").replace("\xa0", " ")
            assert "Rejeter la facture" not in page  # an approve link shows only Approve
            assert "evil.test" not in page
        assert len(nonces) == 2  # fresh per response
        # the form cookie: short-lived, script-proof, never sent cross-site, this link only
        cookie = resp.headers["Set-Cookie"]
        for attribute in ("HttpOnly", "Secure", "SameSite=Strict", f"Path=/a/{req.approve}",
                          "Max-Age=7200"):
            assert attribute in cookie, attribute
        reject = await (await client.get(f"/a/{req.reject}")).text()
        assert "Rejeter la facture" in reject and "Approuver la facture" not in reject
        assert '<option value="DOUBLON">' in reject

    serve(store, scenario)
    after = Approvals(store).look(req.approve)  # still valid: not used
    assert after == before and state_of(store, doc_id) == "pending_approval"
    assert notices(store) == []


def test_post_needs_the_csrf_nonce_and_our_origin(store: Store, clock: Clock) -> None:
    """B-APPR-02: no nonce, a wrong nonce, another site's Origin, no form cookie, a nonce
    made for another browser's cookie, an old cookie -> 403, nothing changes."""
    doc_id = make_document(store, make_folder(store))
    req = request(store, doc_id)[BOSS]

    async def scenario(client: Client) -> None:
        page = await (await client.get(f"/a/{req.approve}")).text()
        good = csrf_of(page)
        url = f"/a/{req.approve}"
        for form, headers in (
                ({"action": "approve"}, {}),
                ({"action": "approve", "csrf": "0" * 64}, {}),
                ({"action": "approve", "csrf": good}, {"Origin": "https://evil.test"}),
                ({"action": "approve", "csrf": good}, {"Sec-Fetch-Site": "cross-site"}),
        ):
            resp = await client.post(url, data=form, headers=headers)
            assert resp.status == 403, (form, headers)
            text = await resp.text()
            assert "Request refused" in text or "Demande refusée" in text
            assert_secure(resp)
        # a nonce for another token does not fit this one
        other = request(store, make_document(store, 1, part=1))[BOSS]
        other_page = await (await client.get(f"/a/{other.approve}")).text()
        resp = await client.post(url, data={"action": "approve", "csrf": csrf_of(other_page)})
        assert resp.status == 403
        # the right nonce, but the form cookie is gone: open the link again
        saved = list(client.session.cookie_jar)
        client.session.cookie_jar.clear()
        resp = await client.post(url, data={"action": "approve", "csrf": good})
        assert resp.status == 403 and "Rouvrez le lien" in await resp.text()
        # an attacker's own browser: its own cookie, the victim's nonce
        await client.get(url)
        resp = await client.post(url, data={"action": "approve", "csrf": good})
        assert resp.status == 403 and "Demande refusée" in await resp.text()
        client.session.cookie_jar.clear()
        for morsel in saved:
            client.session.cookie_jar.update_cookies({morsel.key: morsel}, client.make_url("/"))
        clock.advance(hours=2, seconds=1)  # the form cookie is short-lived (the link is not)
        resp = await client.post(url, data={"action": "approve", "csrf": good})
        assert resp.status == 403 and "Rouvrez le lien" in await resp.text()
        assert state_of(store, doc_id) == "pending_approval"
        Approvals(store).look(req.approve)
        clock.advance(seconds=-2)  # positive control: the same form a moment earlier works
        resp = await client.post(url, data={"action": "approve", "csrf": good})
        assert resp.status == 200

    serve(store, scenario)
    assert state_of(store, doc_id) == "archived"


def test_post_approves_once(store: Store) -> None:
    """B-APPR-03: the first POST decides (with its notice), the second is told 'already used'."""
    doc_id = make_document(store, make_folder(store))
    req = request(store, doc_id)[BOSS]

    async def scenario(client: Client) -> None:
        url = f"/a/{req.approve}"
        form = {"action": "approve", "csrf": csrf_of(await (await client.get(url)).text()),
                "note": "vu avec le fournisseur"}
        first = await client.post(url, data=form, headers={"Origin": "null"},
                                  allow_redirects=False)
        assert first.status == 200 and "Facture approuvée" in await first.text()
        assert_secure(first)
        second = await client.post(url, data=form)
        assert second.status == 410 and "Lien déjà utilisé" in await second.text()
        again = await client.get(url)
        assert again.status == 410 and "Lien déjà utilisé" in await again.text()

    serve(store, scenario)
    doc = store.documents.get(doc_id)
    assert doc is not None and doc.state == "archived"
    assert doc.extra["decision"] == {"decision": "approved", "by": BOSS, "via": "link",
                                     "at": "2026-03-05T12:00:00",
                                     "note": "vu avec le fournisseur"}
    [notice] = notices(store)
    assert sorted(notice.recipients) == sorted([NOTIFY, BOSS])


def test_reject_with_a_reason_code(store: Store) -> None:
    doc_id = make_document(store, make_folder(store, language="en"))
    req = request(store, doc_id)[BOSS]

    async def scenario(client: Client) -> None:
        url = f"/a/{req.reject}"
        csrf = csrf_of(await (await client.get(url)).text())
        wrong = await client.post(url, data={"action": "approve", "csrf": csrf})
        assert wrong.status == 403  # B-APPR-06: a reject link never approves
        missing = await client.post(url, data={"action": "reject", "csrf": csrf})
        assert missing.status == 400 and "choose a reason" in await missing.text()
        bad = await client.post(url, data={"action": "reject", "csrf": csrf, "reason": "NOPE"})
        assert bad.status == 400
        resp = await client.post(url, data={"action": "reject", "csrf": csrf,
                                            "reason": "MONTANTTOTAL_ERR", "note": "2 lignes"})
        assert resp.status == 200 and "Invoice rejected" in await resp.text()

    serve(store, scenario)
    doc = store.documents.get(doc_id)
    assert doc is not None and doc.state == "rejected"
    assert doc.extra["reason_code"] == "MONTANTTOTAL_ERR"
    assert len(notices(store)) == 1


def test_expired_unknown_foreign_and_stale_tokens(store: Store, clock: Clock) -> None:
    """B-APPR-04/05/09: expired -> 410, unknown or a reply token -> 404, stale -> 410."""
    folder_id = make_folder(store)
    doc_id = make_document(store, folder_id)
    reqs = request(store, doc_id)
    other = make_document(store, folder_id, part=1)
    other_req = request(store, other)[BOSS]

    async def scenario(client: Client) -> None:
        for token in ("A" * 43, "not-a-token!", reqs[BOSS].reply_tag[1:]):
            for method in ("GET", "POST"):
                resp = await client.request(method, f"/a/{token}", data={"csrf": "x"},
                                            headers={"Accept-Language": "fr-FR,fr;q=0.9"})
                assert resp.status == 404, (token, method)
                assert "Lien inconnu" in await resp.text()
                assert "Fournitures" not in await resp.text()  # reveals nothing
        # another document decided by its own link: this document's links are unaffected
        csrf = csrf_of(await (await client.get(f"/a/{other_req.approve}")).text())
        assert (await client.post(f"/a/{other_req.approve}",
                                  data={"action": "approve", "csrf": csrf})).status == 200
        assert (await client.get(f"/a/{reqs[BOSS].approve}")).status == 200
        # the notify address decides: the boss's links are now of a decided invoice
        await asyncio.to_thread(decisions.approve, store, SETTINGS, doc_id, by=NOTIFY,
                                version=1, token=reqs[NOTIFY].approve)
        for method in ("GET", "POST"):
            resp = await client.request(method, f"/a/{reqs[BOSS].reject}",
                                        data={"action": "reject", "csrf": "0" * 64})
            assert resp.status == 410 and "Déjà décidée" in await resp.text(), method

    serve(store, scenario)
    # stale without a decision: the document changed (a re-run) and still waits
    third = make_document(store, folder_id, part=2)
    third_req = request(store, third)[BOSS]
    with store.write_transaction():
        store.documents.set_state(third, "pending_approval")  # version + 1
    fourth = request(store, make_document(store, folder_id, part=3))[BOSS]

    async def later(client: Client) -> None:
        resp = await client.get(f"/a/{third_req.approve}")
        assert resp.status == 410 and "Lien périmé" in await resp.text()
        csrf = csrf_of(await (await client.get(f"/a/{fourth.approve}")).text())
        clock.advance(days=15)  # past the 14-day token lifetime
        for resp in (await client.get(f"/a/{fourth.approve}"),
                     await client.post(f"/a/{fourth.approve}",
                                       data={"action": "approve", "csrf": csrf})):
            assert resp.status == 410 and "Lien expiré" in await resp.text()
            assert_secure(resp)

    serve(store, later)
    assert state_of(store, third) == "pending_approval"


def test_host_allowlist_limits_and_no_redirects(store: Store) -> None:
    doc_id = make_document(store, make_folder(store))
    req = request(store, doc_id)[BOSS]

    async def scenario(client: Client) -> None:
        health = await client.get("/healthz")
        assert health.status == 200 and await health.text() == "ok"
        assert_secure(health)
        for host in ("evil.test", "factures.acme.test.evil.test", "127.0.0.2"):
            resp = await client.get("/healthz", headers={"Host": host})
            assert resp.status == 421, host
            assert_secure(resp)
        for host in ("factures.acme.test", "FACTURES.ACME.TEST:443", "localhost:8080",
                     "[::1]:8080"):
            assert (await client.get("/healthz", headers={"Host": host})).status == 200, host
        for path in (f"/a/{req.approve}/", "/a/", "/static/x.css", "/a//evil.test",
                     "/healthz/", "/favicon.ico"):
            resp = await client.get(path, allow_redirects=False)
            assert resp.status in (404, 405), path
            assert "Location" not in resp.headers
        big = await client.post(f"/a/{req.approve}", data={"note": "x" * 20_000})
        assert big.status == 413
        assert_secure(big)
        wrong_method = await client.put(f"/a/{req.approve}")
        assert wrong_method.status == 405

    serve(store, scenario)
    assert state_of(store, doc_id) == "pending_approval"


def test_paid_link(store: Store) -> None:
    doc_id = make_document(store, make_folder(store))
    decisions.approve(store, SETTINGS, doc_id, by=BOSS, version=1)
    with store.write_transaction():
        token = Approvals(store).issue(doc_id, NOTIFY, "paid", ttl=SETTINGS.token_ttl)

    async def scenario(client: Client) -> None:
        page = await (await client.get(f"/a/{token}")).text()
        assert 'name="paid_on" value="2026-03-05"' in page and "Approuver" not in page
        resp = await client.post(f"/a/{token}", data={"action": "paid", "csrf": csrf_of(page),
                                                      "paid_on": "2026-03-04"})
        assert resp.status == 200 and "marquée comme payée" in await resp.text()

    serve(store, scenario)
    doc = store.documents.get(doc_id)
    assert doc is not None and doc.state == "paid" and doc.extra["payment"]["on"] == "2026-03-04"


def test_csrf_secret_is_shared_through_the_database(store: Store) -> None:
    first = store.secret(CSRF_SETTING)
    assert len(first) == 32 and store.secret(CSRF_SETTING) == first
    assert csrf_token(first, "abc", "1.x") != csrf_token(b"\0" * 32, "abc", "1.x")
    assert csrf_token(first, "abc", "1.x") != csrf_token(first, "abc", "1.y")
    assert csrf_token(first, "abc", "1.x") != csrf_token(first, "abd", "1.x")


def test_concurrent_approve_and_reject_make_one_decision(store: Store) -> None:
    """F-19 / B-APPR-03: decisions in two threads, then the same race over HTTP."""
    folder_id = make_folder(store)
    doc_id = make_document(store, folder_id)
    reqs = request(store, doc_id)
    barrier = threading.Barrier(2)
    results: list[str] = []

    def run(fn: Callable[..., str], **kwargs: Any) -> None:
        barrier.wait()
        try:
            results.append(fn(store, SETTINGS, doc_id, version=1, **kwargs))
        except (AlreadyDecided, TokenRefused) as exc:
            results.append(f"lost: {exc}")
        finally:
            store.db.close()

    threads = [
        threading.Thread(target=run, args=(decisions.approve,),
                         kwargs={"by": BOSS, "token": reqs[BOSS].approve}),
        threading.Thread(target=run, args=(decisions.reject,),
                         kwargs={"by": NOTIFY, "token": reqs[NOTIFY].reject, "code": "DOUBLON"}),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.startswith("lost: already decided") for r in results) == [False, True]
    assert len(notices(store)) == 1

    second = make_document(store, folder_id, part=1)
    reqs2 = request(store, second)

    async def scenario(client: Client) -> None:
        forms = []
        for url, action in ((f"/a/{reqs2[BOSS].approve}", "approve"),
                            (f"/a/{reqs2[NOTIFY].reject}", "reject"),
                            (f"/a/{reqs2[BOSS].reject}", "reject")):
            csrf = csrf_of(await (await client.get(url)).text())
            forms.append((url, {"action": action, "csrf": csrf, "reason": "DOUBLON"}))
        responses = await asyncio.gather(*(client.post(u, data=f) for u, f in forms * 3))
        statuses = sorted(r.status for r in responses)
        assert statuses == [200] + [410] * 8, statuses

    serve(store, scenario)
    assert state_of(store, second) in ("archived", "rejected")
    assert len([n for n in OutboxStore(store).items(kind="decision_notice")
                if n.document_id == second]) == 1
    kinds = [e.kind for e in store.events(document_id=second)]
    assert kinds.count("approved") + kinds.count("rejected") == 1


def test_run_web_over_tcp_and_unix_socket_logs_no_token(store: Store, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """B-APPR-10: the access log names a token by a hash prefix only."""
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    req = request(store, make_document(store, make_folder(store)))[BOSS]
    sock = tmp_path / "web.sock"

    async def fetch(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
        for _ in range(200):
            try:
                return await session.get(url)
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        raise AssertionError(f"nothing listening for {url}")

    async def main() -> None:
        port = free_port()
        for listen, connector in ((port, None), (str(sock), aiohttp.UnixConnector(str(sock)))):
            stop = asyncio.Event()
            task = asyncio.create_task(run_web(store, SETTINGS, "127.0.0.1", listen, stop))
            async with aiohttp.ClientSession(connector=connector) as session:
                health = await fetch(session, f"http://127.0.0.1:{port}/healthz")
                assert health.status == 200 and await health.text() == "ok"
                page = await fetch(session, f"http://127.0.0.1:{port}/a/{req.approve}")
                assert page.status == 200 and "Approuver" in await page.text()
            stop.set()
            await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert req.approve not in caplog.text
    assert f"/a/#{hash_token(req.approve)[:12]}" in caplog.text


# ---- B-APPR-09: token guessing --------------------------------------------------------------

class Ticks:
    """A monotonic clock the test moves, for the failure counters."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_guessing_tokens_gets_404s_then_429_and_one_alert(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """B-APPR-09: random tokens from one client: 404 (well-formed or not, GET or POST) up to
    the limit, then 429 with Retry-After for every /a/ request, valid links included, until
    the window ends; one warning per window."""
    caplog.set_level(logging.WARNING, logger="daemon.web")
    req = request(store, make_document(store, make_folder(store)))[BOSS]
    ticks = Ticks()
    failures = FailedLookups(clock=ticks)

    async def scenario(client: Client) -> None:
        statuses = []
        for n in range(FAIL_LIMIT + 5):
            token = f"{n:04d}" + "Q" * 39 if n % 3 else f"bad!{n}"
            method = "POST" if n % 2 else "GET"
            resp = await client.request(method, f"/a/{token}", data={"csrf": "x"})
            statuses.append(resp.status)
            if resp.status == 429:
                assert resp.headers["Retry-After"] == str(int(FAIL_WINDOW))
                assert "Too many attempts" in await resp.text()
                assert_secure(resp)
        assert statuses == [404] * FAIL_LIMIT + [429] * 5
        assert (await client.get(f"/a/{req.approve}")).status == 429
        assert (await client.get("/healthz")).status == 200  # only the links are closed
        ticks.now += FAIL_WINDOW / 2
        resp = await client.get(f"/a/{req.approve}")
        assert resp.status == 429 and resp.headers["Retry-After"] == str(int(FAIL_WINDOW / 2))
        ticks.now += FAIL_WINDOW / 2
        assert (await client.get(f"/a/{req.approve}")).status == 200
        assert (await client.get(f"/a/{'Z' * 43}")).status == 404  # a new window

    serve(store, scenario, failures=failures)
    alerts = [r for r in caplog.records if "unknown approval links from 127.0.0.1" in r.message]
    assert len(alerts) == 1 and alerts[0].levelno == logging.WARNING
    assert req.approve not in caplog.text


def test_failures_are_counted_per_client_behind_a_trusted_proxy(store: Store) -> None:
    """X-Forwarded-For names the client only when the peer is a configured proxy; a client
    cannot escape its counter by sending its own X-Forwarded-For."""
    req = request(store, make_document(store, make_folder(store)))[BOSS]

    async def guess(client: Client, forwarded: str, times: int) -> list[int]:
        return [(await client.get(f"/a/{'Q' * 43}",
                                  headers={"X-Forwarded-For": forwarded})).status
                for _ in range(times)]

    async def behind_proxy(client: Client) -> None:
        assert await guess(client, "203.0.113.7", FAIL_LIMIT + 1) == [404] * FAIL_LIMIT + [429]
        # the same client lying about its address: the proxy appends the real one last
        assert await guess(client, "198.51.100.1, 203.0.113.7", 1) == [429]
        resp = await client.get(f"/a/{req.approve}", headers={"X-Forwarded-For": "203.0.113.8"})
        assert resp.status == 200  # another client is not blocked

    serve(store, behind_proxy, trusted_proxies=["127.0.0.0/8"])

    async def no_proxy(client: Client) -> None:
        # X-Forwarded-For from an untrusted peer is ignored: varying it does not help
        statuses = [(await guess(client, f"203.0.113.{n}", 1))[0] for n in range(FAIL_LIMIT + 1)]
        assert statuses == [404] * FAIL_LIMIT + [429]

    serve(store, no_proxy)


def test_client_of() -> None:
    proxies = parse_proxies(["10.0.0.0/8", "unix"])
    assert client_of("192.0.2.1", "203.0.113.9", proxies) == "192.0.2.1"
    assert client_of("10.1.2.3", "203.0.113.9, 10.0.0.5", proxies) == "203.0.113.9"
    assert client_of("10.1.2.3", "10.0.0.4, 10.0.0.5", proxies) == "10.0.0.4"
    assert client_of("10.1.2.3", "garbage", proxies) == "10.1.2.3"
    assert client_of("", "203.0.113.9:4711", proxies) == "203.0.113.9"  # unix socket proxy
    assert client_of("", "203.0.113.9", ()) == "unix"
    assert client_of("2001:db8:1:2:3:4:5:6", None, ()) == "2001:db8:1:2::/64"
    assert client_of("::ffff:192.0.2.7", None, ()) == "192.0.2.7"
    with pytest.raises(ValueError):
        parse_proxies(["proxy.example.com"])


def test_a_token_with_stray_characters_reveals_nothing(store: Store, clock: Clock) -> None:
    """The path must be the token exactly: ``<token>%20`` hashes like the token once
    stripped, yet is unknown (404), not the real token's 410."""
    req = request(store, make_document(store, make_folder(store)))[BOSS]
    clock.advance(days=15)

    async def scenario(client: Client) -> None:
        assert (await client.get(f"/a/{req.approve}")).status == 410
        resp = await client.get(f"/a/{req.approve}%20")
        assert resp.status == 404 and "Fournitures" not in await resp.text()

    serve(store, scenario)


# ---- B-APPR-04: a new link from an expired one ---------------------------------------------

def requests_to(store: Store, person: str, doc_id: int) -> int:
    return len([i for i in OutboxStore(store).items(kind="approval_request")
                if i.document_id == doc_id and i.recipients == (person,)])


def test_expired_link_offers_a_new_one_to_its_person_only(store: Store, clock: Clock) -> None:
    folder_id = make_folder(store)
    doc_id = make_document(store, folder_id)
    reqs = request(store, doc_id)
    decided = make_document(store, folder_id, part=1)
    decided_reqs = request(store, decided)
    clock.advance(days=15)
    decisions.approve(store, SETTINGS, decided, by="cli", version=None)

    async def scenario(client: Client) -> None:
        url = f"/a/{reqs[BOSS].reject}"
        page = await client.get(url)
        text = await page.text()
        assert page.status == 410 and "M'envoyer un nouveau lien" in text
        assert f"Path=/a/{reqs[BOSS].reject}" in page.headers["Set-Cookie"]
        csrf = csrf_of(text)
        # forged: no nonce / another site
        assert (await client.post(url, data={"action": "renew"})).status == 403
        assert (await client.post(url, data={"action": "renew", "csrf": csrf},
                                  headers={"Origin": "https://evil.test"})).status == 403
        resp = await client.post(url, data={"action": "renew", "csrf": csrf})
        assert resp.status == 200 and "Nouveau lien envoyé" in await resp.text()
        assert requests_to(store, BOSS, doc_id) == 2 and requests_to(store, NOTIFY, doc_id) == 1
        again = await client.post(url, data={"action": "renew", "csrf": csrf})
        assert again.status == 429 and "déjà envoyé" in await again.text()
        # the other link of the same request: also within the hour
        other = f"/a/{reqs[BOSS].approve}"
        other_csrf = csrf_of(await (await client.get(other)).text())
        assert (await client.post(other, data={"action": "renew", "csrf": other_csrf})
                ).status == 429
        assert requests_to(store, BOSS, doc_id) == 2
        # a decided invoice: a plain expired page, and a forged renew does nothing
        gone = f"/a/{decided_reqs[BOSS].approve}"
        page = await client.get(gone)
        assert page.status == 410 and "nouveau lien" not in await page.text()
        resp = await client.post(gone, data={"action": "renew", "csrf": csrf})
        assert resp.status == 403
        assert requests_to(store, BOSS, decided) == 1

    serve(store, scenario)
    # the new request's links work, the expired ones still do not
    outbox = OutboxStore(store)
    new = [i for i in outbox.items(kind="approval_request")
           if i.document_id == doc_id and i.recipients == (BOSS,)][-1]
    fresh = re.findall(r"/a/([A-Za-z0-9_-]{43})", text_of(parse(outbox.raw(new)), "plain"))
    assert fresh and reqs[BOSS].approve not in fresh
    assert Approvals(store).look(fresh[0]).approver == BOSS
    with pytest.raises(TokenRefused):
        Approvals(store).look(reqs[BOSS].approve)
    events = [e.kind for e in store.events(document_id=doc_id)]
    assert events.count("link-renewed") == 1
    assert state_of(store, doc_id) == "pending_approval"

    # an hour later the person may ask again; someone no longer an approver may not
    clock.advance(hours=1, seconds=1)
    Policy(store).set_folder(folder_id, {"approvers": []})

    async def later(client: Client) -> None:
        url = f"/a/{reqs[BOSS].reject}"
        page = await client.get(url)
        assert page.status == 410 and "nouveau lien" not in await page.text()
        url = f"/a/{reqs[NOTIFY].reject}"
        csrf = csrf_of(await (await client.get(url)).text())
        assert (await client.post(url, data={"action": "renew", "csrf": csrf})).status == 200

    serve(store, later)
    assert requests_to(store, BOSS, doc_id) == 2 and requests_to(store, NOTIFY, doc_id) == 2


def test_trusted_proxies_setting(tmp_path: Path) -> None:
    from daemon import config

    good = tmp_path / "good.toml"
    good.write_text('[web]\ntrusted_proxies = ["127.0.0.1", "10.0.0.0/8", "unix"]\n')
    assert config.load(good, environ={}).web.trusted_proxies == (
        "127.0.0.1", "10.0.0.0/8", "unix")
    bad = tmp_path / "bad.toml"
    bad.write_text('[web]\ntrusted_proxies = ["proxy.example.com"]\n')
    with pytest.raises(config.ConfigError, match=r"web\.trusted_proxies"):
        config.load(bad, environ={})
