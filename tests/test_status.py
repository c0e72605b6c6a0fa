"""The operators' status page over real HTTP on loopback (B-WEB-02, 04, 05, 06, 07).

The web app is served by aiohttp's TestServer on 127.0.0.1 and driven by a real client whose
cookie jar behaves as a browser's; the Store is a real SQLite database in tmp_path with a
clock the tests move. Operators are made with storage.operators, as `facturd operator add`
does; quarantined deliveries come from the real queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from daemon.status import COOKIE
from daemon.webguard import FAIL_LIMIT
from storage import records
from storage.blobs import sha256_hex
from storage.operators import Operators
from storage.queue import Queue
from storage.records import IntakeItem, Recipient
from storage.store import Store
from tests.conftest import Clock
from tests.factories import make_facturx_pdf
from tests.test_approval import make_document, make_folder
from tests.test_web import assert_secure, csrf_of, serve

Client = TestClient[Any, Any]
NAME, PASSWORD = "alice", "correct horse battery staple"
ROUTES_GET = ("/status", "/status/documents/1", "/status/documents/1/original",
              "/status/documents/1/enriched")
ROUTES_POST = ("/status/logout", "/status/deliveries/1/retry")


def quarantine(store: Store, folder_id: int, reason: str) -> int:
    """A delivery the worker gave up on, through the real queue."""
    raw = b"Subject: broken\r\n\r\nnot an invoice\r\n"
    store.record_intake([IntakeItem(raw=raw, sha256=hashlib.sha256(raw).hexdigest(),
                                    mail_from="supplier@example.test",
                                    recipients=(Recipient(folder_id, "", ""),),
                                    protocol="smtp", peer="127.0.0.1", helo="mx")])
    queue = Queue(store)
    (job,) = queue.claim_many("test", 60, 1)
    with store.write_transaction():
        queue.finish(job, records.QUARANTINED, reason)
    return job.delivery.id


async def log_in(client: Client, password: str = PASSWORD) -> aiohttp.ClientResponse:
    return await client.post("/status/login", data={"name": NAME, "password": password},
                             allow_redirects=False)


@pytest.fixture
def operator(store: Store) -> str:
    Operators(store).add(NAME, PASSWORD)
    return NAME


def test_nothing_without_a_session_but_healthz(store: Store, operator: str) -> None:
    """B-WEB-02: every route answers 401 with the login form and no data; /healthz says ok."""
    folder_id = make_folder(store)
    make_document(store, folder_id)

    async def scenario(client: Client) -> None:
        for path in ROUTES_GET:
            resp = await client.get(path, allow_redirects=False)
            page = await resp.text()
            assert resp.status == 401, path
            assert 'action="/status/login"' in page and "FR40303265045" not in page, path
            assert_secure(resp)
        for path in ROUTES_POST:
            resp = await client.post(path, data={"csrf": "0" * 64}, allow_redirects=False)
            assert resp.status == 401, path
        resp = await client.get("/healthz")
        assert resp.status == 200 and await resp.text() == "ok"
        forged = client.session.cookie_jar
        forged.update_cookies({COOKIE: "A" * 43})  # a made-up session token
        resp = await client.get("/status")
        assert resp.status == 401
    serve(store, scenario)


def test_login_dashboard_and_logout(store: Store, operator: str, clock: Clock,
                                    caplog: pytest.LogCaptureFixture) -> None:
    folder_id = make_folder(store)
    doc_id = make_document(store, folder_id)
    make_document(store, folder_id, state="archived", part=1)  # due 2026-03-31: to pay
    quarantine(store, folder_id, "mime-depth: nested 60 levels deep")

    async def scenario(client: Client) -> None:
        resp = await log_in(client, "wrong password, twelve+")
        assert resp.status == 401 and "Wrong name or password" in await resp.text()
        assert COOKIE not in {c.key for c in client.session.cookie_jar}
        resp = await log_in(client)
        assert resp.status == 303 and resp.headers["Location"] == "/status"
        cookie = resp.cookies[COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert cookie["path"] == "/status"
        resp = await client.get("/status")
        page = await resp.text()
        assert resp.status == 200, page
        assert_secure(resp)  # B-WEB-05
        for part in ("FR40303265045", "<th>quarantined</th>", "Nothing sent yet.",
                     "mime-depth: nested 60 levels deep",
                     f'href="/status/documents/{doc_id}"', NAME):
            assert part in page, part
        aging = page.split('id="aging"')[1].split('id="outbox"')[0]
        assert re.search(r"to pay \(1\)</td><td>1234.56 EUR</td>\s*<td[^>]*>0 EUR \(0\)</td>\s*"
                         r"<td>1234.56 EUR</td><td>0 EUR</td>", aging), aging
        resp = await client.get(f"/status/documents/{doc_id}")
        page = await resp.text()
        assert resp.status == 200 and "F2026-0042" in page and "Fournitures Dupont" in page
        assert "Nouveau fournisseur" in page
        # Logout needs the form nonce; then the old cookie is worth nothing.
        token = next(c.value for c in client.session.cookie_jar if c.key == COOKIE)
        resp = await client.post("/status/logout", data={}, allow_redirects=False)
        assert resp.status == 403
        resp = await client.post("/status/logout", data={"csrf": csrf_of(page)},
                                 allow_redirects=False)
        assert resp.status == 303
        assert (await client.get("/status")).status == 401
        client.session.cookie_jar.update_cookies({COOKIE: token})
        assert (await client.get("/status")).status == 401
    with caplog.at_level(logging.INFO, logger="daemon.web"):
        serve(store, scenario)
    assert any("failed login as 'alice'" in r.getMessage() for r in caplog.records)
    assert PASSWORD not in caplog.text


def test_sessions_expire(store: Store, operator: str, clock: Clock) -> None:
    async def scenario(client: Client) -> None:
        assert (await log_in(client)).status == 303
        assert (await client.get("/status")).status == 200
        clock.advance(hours=8, minutes=1)
        assert (await client.get("/status")).status == 401
    serve(store, scenario)


def test_retry_needs_nonce_and_our_origin(store: Store, operator: str) -> None:
    """B-WEB-04: no nonce, a wrong one, or a foreign Origin -> 403 and nothing changes."""
    folder_id = make_folder(store)
    delivery_id = quarantine(store, folder_id, "gave up after 5 attempts: disk full")
    path = f"/status/deliveries/{delivery_id}/retry"

    def state() -> str:
        delivery = store.delivery(delivery_id)
        assert delivery is not None
        return delivery.state

    async def scenario(client: Client) -> None:
        await log_in(client)
        nonce = csrf_of(await (await client.get("/status")).text())
        for data, headers in (({}, {}), ({"csrf": "0" * 64}, {}),
                              ({"csrf": nonce}, {"Origin": "https://evil.example"}),
                              ({"csrf": nonce}, {"Sec-Fetch-Site": "cross-site"})):
            resp = await client.post(path, data=data, headers=headers, allow_redirects=False)
            assert resp.status == 403, (data, headers)
            assert await asyncio.to_thread(state) == records.QUARANTINED
        resp = await client.post(path, data={"csrf": nonce}, allow_redirects=False)
        assert resp.status == 303
        assert await asyncio.to_thread(state) == records.QUEUED
        resp = await client.post(path, data={"csrf": nonce}, allow_redirects=False)
        assert resp.status == 409  # not in quarantine any more: nothing done twice
    serve(store, scenario)
    events = [e for e in store.events(delivery_id=delivery_id) if e.kind == "requeued"]
    assert [e.actor for e in events] == [f"operator:{NAME}"]


def test_files_by_document_id_only(store: Store, operator: str, tmp_path: Path) -> None:
    """B-WEB-06: traversal paths are 404; files come by id from the database; a blob
    replaced by a symlink to another file is refused (its hash does not match)."""
    folder_id = make_folder(store)
    doc_id = make_document(store, folder_id)
    doc = store.documents.get(doc_id)
    assert doc is not None
    original = store.blobs.get(doc.original_sha256)

    async def scenario(client: Client) -> None:
        await log_in(client)
        for path in ("/status/files/../../etc/hostname", "/status/documents/..%2f..%2fetc",
                     "/status/documents/%2e%2e%2f%2e%2e%2fetc%2fhostname",
                     f"/status/documents/{doc_id}/../../../etc/hostname",
                     f"/status/documents/{doc_id}/original/../../x", "/status/documents/999"):
            resp = await client.get(path, allow_redirects=False)
            assert resp.status == 404, path
        resp = await client.get(f"/status/documents/{doc_id}/original")
        assert resp.status == 200 and await resp.read() == original
        assert resp.headers["Content-Type"] == "application/pdf"
        assert resp.headers["Content-Disposition"] == (
            f'attachment; filename="facturd-{doc_id}-original.pdf"')
        assert (await client.get(f"/status/documents/{doc_id}/enriched")).status == 404
        path = store.blobs.path_of(doc.original_sha256)  # type: ignore[attr-defined]
        os.chmod(path, 0o644)
        os.remove(path)
        secret = tmp_path / "secret.txt"
        secret.write_text("SECRET-CONTENT-OUTSIDE-THE-ARCHIVE")
        os.symlink(secret, path)
        resp = await client.get(f"/status/documents/{doc_id}/original")
        assert resp.status == 404
        assert "SECRET-CONTENT" not in await resp.text()
    serve(store, scenario)


def test_control_characters_are_written_out(store: Store, operator: str) -> None:
    """B-WEB-07: a forged log line in an event detail stays one visible line."""
    folder_id = make_folder(store)
    with store.write_transaction():
        store.add_event("received", "x\r\n2026-01-01 INFO approved id=1<script>",
                        folder_id=folder_id)

    async def scenario(client: Client) -> None:
        await log_in(client)
        page = await (await client.get("/status")).text()
        assert "x\\r\\n2026-01-01 INFO approved id=1&lt;script&gt;" in page
        assert "\r\n2026-01-01 INFO" not in page and "<script>" not in page
    serve(store, scenario)


def test_failed_logins_are_throttled(store: Store, operator: str) -> None:
    async def scenario(client: Client) -> None:
        for _ in range(FAIL_LIMIT):
            assert (await log_in(client, "not the password at all")).status == 401
        resp = await log_in(client)  # even the right password waits now
        assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
        assert (await client.get("/status")).status == 401
    serve(store, scenario)


def test_conformance_check_on_request(store: Store, operator: str) -> None:
    """The document page offers the full check (a POST with the nonce); it shows the
    Schematron verdict and the container problems, and stores nothing."""
    folder_id = make_folder(store)
    pdf = make_facturx_pdf(number="F-CHECK-1")
    sha = sha256_hex(pdf)
    store.blobs.put_many([(sha, pdf)])
    doc = records.Document(
        id=0, folder_id=folder_id, delivery_id=None, part=0, direction="purchase",
        state="archived", source="facturx", original_sha256=sha, enriched_sha256="",
        filename="F-CHECK-1.pdf", media_type="application/pdf", number="F-CHECK-1")
    with store.write_transaction():
        doc_id = store.documents.upsert(doc)[0]
    before = store.documents.get(doc_id)
    path = f"/status/documents/{doc_id}/check"

    async def scenario(client: Client) -> None:
        await log_in(client)
        page = await (await client.get(f"/status/documents/{doc_id}")).text()
        assert "Check conformance" in page and 'id="verdict"' not in page
        assert (await client.post(path, data={}, allow_redirects=False)).status == 403
        resp = await client.post(path, data={"csrf": csrf_of(page)}, allow_redirects=False)
        page = await resp.text()
        assert resp.status == 200, page
        verdict = page.split('id="verdict">')[1].split("</p>")[0]
        assert verdict == "Not conformant (EN 16931; Schematron valid)"
        assert "not PDF/A: the catalog has no OutputIntent" in page
    serve(store, scenario)
    assert store.documents.get(doc_id) == before
