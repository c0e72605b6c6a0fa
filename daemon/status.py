"""The status page: what facturd is doing, for the people who run it. Behind a login.

Job: ``GET /status`` shows deliveries by state and the oldest one still waiting, documents
per folder and state, each company's open invoices by due date (the digests' buckets),
outgoing mail, the quarantine (each with a Retry button), invoices waiting for approval and
the latest events; ``GET /status/documents/{id}`` shows one document (fields, decision trail, stage
trace, events) with links to its original and enriched files, which are served by document
id from the database, never by a path (B-WEB-06). Every route but /healthz needs an operator
session (B-WEB-02): without one a GET gets 401 and the login form. Operators are made on the
server with ``facturd operator add NAME``; the page is in English (its readers run servers).

Login: ``POST /status/login`` (name, password; same-site check) opens a session: a random
token in the cookie ``facturd_operator`` (HttpOnly, SameSite=Strict, Path=/status, Secure
when public_url is https), only its hash in the database (storage/operators.py), valid
SESSION_TTL. Failed logins count with the failed link look-ups of daemon/webguard.py (429
over the limit) and are logged. ``POST /status/logout`` ends the session.

Actions (B-WEB-04): every POST but the login needs the session, the form nonce
HMAC(installation secret, "operator." + session hash) and the same-site check, else 403.
``POST /status/deliveries/{id}/retry`` puts a quarantined delivery back in the queue
(attempts reset, event by ``operator:<name>``); ``POST /status/documents/{id}/check`` runs
the full conformance check (XSD, PDF container, Schematron: daemon/conformance.py) on the
original and shows it, storing nothing (a POST because it costs a Saxon run). GET never
changes anything.

Text that came with mail (file names, reasons, event details) is shown with its control
characters written out (``\\r``, ``\\n``; B-WEB-07), then HTML-escaped by the templates.

May touch: operator sessions, deliveries (retry), events (through storage APIs).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from dataclasses import asdict
from datetime import date, timedelta
from typing import Any

from aiohttp import web

from daemon import digest, mailer
from daemon.conformance import Conformance, check, looks_like_pdf
from daemon.docjson import notes
from daemon.logs import clean
from daemon.webbase import NONCE, STATE, WebState, client, form_secret, same_site
from storage.blobs import BlobCorrupt, BlobMissing
from storage.operators import Operators, OperatorSession
from storage.queue import Queue
from storage.status import FolderCounts, Overview, overview

log = logging.getLogger("daemon.web")

COOKIE = "facturd_operator"
SESSION_TTL = timedelta(hours=8)
FILE_TYPES = {"application/pdf": "pdf", "application/xml": "xml", "text/xml": "xml",
              "image/jpeg": "jpg", "image/png": "png", "image/tiff": "tif"}
CHECKABLE = ("facturx", "cii", "ubl")  # sources with an e-invoice file to check
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]|\r|\n|\t")
_ESCAPES = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/status", dashboard)
    app.router.add_post("/status/login", login)
    app.router.add_post("/status/logout", logout)
    app.router.add_get(r"/status/documents/{id:\d{1,12}}", document)
    app.router.add_get(r"/status/documents/{id:\d{1,12}}/{which:original|enriched}", download)
    app.router.add_post(r"/status/deliveries/{id:\d{1,12}}/retry", retry)
    app.router.add_post(r"/status/documents/{id:\d{1,12}}/check", check_document)


def shown(value: object) -> str:
    """A value as one visible line: CR, LF, tab and other control characters written out."""
    return _CONTROL.sub(lambda m: _ESCAPES.get(m.group(0), f"\\x{ord(m.group(0)):02x}"),
                        "" if value is None else str(value))


def nonce_for(secret: bytes, session: OperatorSession) -> str:
    return hmac.new(secret, f"operator.{session.token_hash}".encode(),
                    hashlib.sha256).hexdigest()


# ---- pages ------------------------------------------------------------------------------------

def _render(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    state = request.app[STATE]
    page = mailer.render_page(state.settings.environment(), name, "en",
                              {"csp_nonce": request[NONCE], "shown": shown, **context})
    return web.Response(status=status, text=page, content_type="text/html", charset="utf-8")


def _login_page(request: web.Request, status: int = 401, error: str = "") -> web.Response:
    return _render(request, "status_login", status, error=error)


def _message(request: web.Request, status: int, title: str, text: str) -> web.Response:
    return _render(request, "status_message", status, title=title, text=text)


def _see_other(path: str) -> web.Response:
    """After a POST: back to a page of ours (a fixed local path, never one from the request)."""
    return web.Response(status=303, text="303: See Other", headers={"Location": path})


async def _session(request: web.Request) -> OperatorSession | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    state = request.app[STATE]
    return await asyncio.to_thread(Operators(state.store).session, token)


async def dashboard(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    if session is None:
        return _login_page(request)
    state = request.app[STATE]
    now = state.store.clock()
    view, aging = await asyncio.to_thread(_overview, now.date())
    secret = await form_secret(state)
    return _render(request, "status", operator=session.name, csrf=nonce_for(secret, session),
                   view=view, aging=aging, now=now)


def _overview(today: date) -> tuple[Overview, list[tuple[FolderCounts, digest.Buckets]]]:
    """The counts, and each company's open invoices in the digests' buckets (overdue, due
    within 30 days, later), by the UTC date."""
    view = overview()
    return view, [(f, b) for f in view.folders
                  if (b := digest.buckets(digest.open_invoices(f.id), today)).purchase
                  or b.sales]


async def document(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    if session is None:
        return _login_page(request)
    return await _document_page(request, session)


async def _document_page(request: web.Request, session: OperatorSession,
                         conformance: Conformance | None = None) -> web.Response:
    found = await asyncio.to_thread(_document, request.app[STATE], int(request.match_info["id"]))
    if found is None:
        return _message(request, 404, "No such document", "There is no document with this id.")
    doc, folder, events = found
    secret = await form_secret(request.app[STATE])
    return _render(request, "status_document", operator=session.name,
                   csrf=nonce_for(secret, session), doc=doc, fields=asdict(doc),
                   folder=folder, events=events, notes=notes(doc),
                   checkable=doc.source in CHECKABLE,
                   conformance=conformance)


def _document(state: WebState, doc_id: int) -> tuple[Any, Any, Any] | None:
    doc = state.store.documents.get(doc_id)
    if doc is None:
        return None
    return doc, state.store.folder(doc.folder_id), state.store.events(document_id=doc_id)


async def download(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    if session is None:
        return _login_page(request)
    state = request.app[STATE]
    doc_id, which = int(request.match_info["id"]), request.match_info["which"]
    doc = await asyncio.to_thread(state.store.documents.get, doc_id)
    sha = (doc.original_sha256 if which == "original" else doc.enriched_sha256) if doc else ""
    if doc is None or not sha:
        return _message(request, 404, "No such file", f"Document {doc_id} has no {which} file.")
    try:
        data = await asyncio.to_thread(state.store.blobs.get, sha)
    except (BlobMissing, BlobCorrupt) as exc:
        log.error("status page: document %d %s file %s unreadable: %s", doc_id, which,
                  sha[:12], clean(str(exc)))
        return _message(request, 404, "File unreadable",
                        f"The {which} file of document {doc_id} cannot be read; see the log.")
    media = doc.media_type if which == "original" else "application/pdf"
    ext = FILE_TYPES.get(media, "bin")
    return web.Response(body=data, headers={
        "Content-Type": media if media in FILE_TYPES else "application/octet-stream",
        "Content-Disposition": f'attachment; filename="facturd-{doc_id}-{which}.{ext}"'})


# ---- actions ----------------------------------------------------------------------------------

async def login(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    who = client(request)
    wait = state.failures.retry_after(who)
    if wait is not None:
        response = _message(request, 429, "Too many attempts",
                            f"Too many failed logins from here; try again in {wait} s.")
        response.headers["Retry-After"] = str(wait)
        return response
    if not same_site(request, state.settings):
        return _message(request, 403, "Request refused", "This form was not sent by this site.")
    form = await request.post()
    name, password = form.get("name"), form.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
        return _login_page(request, 400, "Enter your name and password.")
    operators = Operators(state.store)
    if not await asyncio.to_thread(operators.verify, name, password):
        state.failures.failed(who)
        log.warning("status page: failed login as %r from %s", clean(name[:64]), who)
        return _login_page(request, 401, "Wrong name or password.")
    try:
        token = await asyncio.to_thread(operators.open_session, name, SESSION_TTL)
    except ValueError:  # removed between the check and now
        return _login_page(request, 401, "Wrong name or password.")
    log.info("status page: %s logged in from %s", clean(name), who)
    response = _see_other("/status")
    response.set_cookie(COOKIE, token, max_age=int(SESSION_TTL.total_seconds()),
                        path="/status", httponly=True, samesite="Strict",
                        secure=state.settings.public_url.startswith("https:"))
    return response


async def _checked_post(request: web.Request) -> OperatorSession | web.Response:
    """The session of a POST that passed the same-site and nonce checks, or the refusal."""
    state = request.app[STATE]
    session = await _session(request)
    if session is None:
        return _login_page(request)
    form = await request.post()
    sent = form.get("csrf")
    secret = await form_secret(state)
    if not same_site(request, state.settings) or not isinstance(sent, str) or \
            not hmac.compare_digest(sent, nonce_for(secret, session)):
        log.warning("status page: %s %s refused (foreign origin or bad form nonce)",
                    request.method, request.path)
        return _message(request, 403, "Request refused",
                        "This form was not sent by this page; reload the page and try again.")
    return session


async def check_document(request: web.Request) -> web.StreamResponse:
    """Run the full conformance check (daemon/conformance.py, ~0.5 s of Saxon) on the
    document's original and show it: a POST because it costs, though it stores nothing."""
    checked = await _checked_post(request)
    if isinstance(checked, web.Response):
        return checked
    state = request.app[STATE]
    doc = await asyncio.to_thread(state.store.documents.get, int(request.match_info["id"]))
    if doc is None or doc.source not in CHECKABLE or not doc.original_sha256:
        return _message(request, 404, "Nothing to check",
                        "This document has no e-invoice file to check.")
    try:
        data = await asyncio.to_thread(state.store.blobs.get, doc.original_sha256)
    except (BlobMissing, BlobCorrupt):
        return _message(request, 404, "File unreadable",
                        f"The original file of document {doc.id} cannot be read; see the log.")
    result = await asyncio.to_thread(check, data, is_pdf=looks_like_pdf(data))
    return await _document_page(request, checked, result)


async def logout(request: web.Request) -> web.StreamResponse:
    checked = await _checked_post(request)
    if isinstance(checked, web.Response):
        return checked
    await asyncio.to_thread(Operators(request.app[STATE].store).close_session,
                            request.cookies.get(COOKIE, ""))
    response = _see_other("/status")
    response.del_cookie(COOKIE, path="/status")
    return response


async def retry(request: web.Request) -> web.StreamResponse:
    checked = await _checked_post(request)
    if isinstance(checked, web.Response):
        return checked
    delivery_id = int(request.match_info["id"])
    queue = Queue(request.app[STATE].store)
    done = await asyncio.to_thread(queue.requeue, delivery_id, f"operator:{checked.name}")
    if not done:
        return _message(request, 409, "Not in quarantine",
                        f"Delivery {delivery_id} is not quarantined (already retried?).")
    log.info("status page: %s put delivery %d back in the queue", checked.name, delivery_id)
    return _see_other("/status")
