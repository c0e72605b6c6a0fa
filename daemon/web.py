"""The web role: approval pages behind the links of approval requests, /healthz, and the
operators' status page (daemon/status.py, behind a login).

Job: ``GET /a/{token}`` shows what the link is about (supplier, number, amounts, reasons) and
a form for the one action the token grants, and changes nothing (mail scanners open every
link, B-APPR-01); ``POST /a/{token}`` performs the decision through daemon.decisions, which
redeems the token in the decision's transaction. Used, expired and stale tokens get a 410
page, unknown ones a 404 page, on GET and POST.

CSRF (B-APPR-02): the GET that shows a form sets a cookie ``facturd_form`` (random, with its
issue time; ``HttpOnly; SameSite=Strict; Path=/a/<token>``, ``Secure`` when public_url is
https, ``COOKIE_TTL`` long) and the form's nonce is HMAC-SHA256(installation secret, token
hash + cookie value), the secret kept in the database so every node agrees. A POST needs
both: without a fresh cookie it gets 403 and a page saying to open the link again. The
cookie's Path is the link itself rather than ``/a/``: a digest's links opened in several tabs
each keep their own cookie (with one cookie for ``/a/``, the last tab opened would void the
forms of the others, a SameSite=Strict cookie not being sent on the navigation from the mail).

Expired links (B-APPR-04): the 410 page of an expired approve/reject link of an invoice that
still waits offers "send me a new link", a POST (same cookie + nonce) that sends the token's
approver, and nobody else, a fresh approval request (daemon.approval), at most one per
document and person per ``RENEW_EVERY``, and only while they are still one of the folder's
people.

Token guessing (B-APPR-09): failed look-ups (404) are counted per client (daemon/webguard.py:
the peer, or X-Forwarded-For from ``web.trusted_proxies``); over the limit the client gets 429
with ``Retry-After`` on every ``/a/`` request until its window ends. Every token is hashed and
looked up, well-formed or not, so a 404 costs the same whatever was asked.

Every response (daemon/webbase.py): ``Cache-Control: no-store``, ``Referrer-Policy:
no-referrer``, ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and a CSP whose
style nonce is fresh per response. Requests for a Host other than the public_url host, localhost or
127.0.0.1 get 421 (400 without Host); a POST whose Origin is another site, or marked
``Sec-Fetch-Site: cross-site``/``same-site``, gets 403. No redirects, no static files, bodies
over 16 KB refused (413). Database work runs in threads, never on the event loop. The access
log shows a token hash prefix, never a token.

May touch: approvals, documents, events, outbox, setting (through daemon.decisions,
daemon.approval and storage APIs). Nothing on disk besides a unix socket when asked to listen
on one.

Known limits: no login (possession of the link is the authority, as in the mail); the failure
counters live in this process (several web nodes each allow FAIL_LIMIT; a restart forgets
them), and clients behind one NAT address share a counter; two "new link" POSTs at the same
instant on PostgreSQL may both send a request (the per-hour check is not a lock).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web

from daemon import approval, decisions, mailer, status
from daemon.decisions import ApprovalSettings, DecisionError, NotAllowed, NotPayable
from daemon.webbase import (
    NONCE,
    STATE,
    AccessLogger,
    WebState,
    client,
    form_secret,
    guard,
    same_site,
)
from daemon.webguard import FailedLookups, parse_proxies
from storage.approvals import Approvals, Grant, TokenRefused, hash_token
from storage.store import Store

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
WEB_ACTIONS = ("approve", "reject", "paid")
RENEWABLE = ("approve", "reject")
COOKIE = "facturd_form"
COOKIE_TTL = timedelta(hours=2)
RENEW_EVERY = timedelta(hours=1)
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_COOKIE_VALUE = re.compile(r"^(\d{1,12})\.([A-Za-z0-9_-]{32})$")
_LANGS = ("fr", "en")
STATUS = {"done": 200, "renewed": 200, "unknown": 404, "used": 410, "expired": 410,
          "stale": 410, "decided": 410, "refused": 403, "no-cookie": 403, "invalid": 400,
          "throttled": 429, "renew-wait": 429}


def make_app(store: Store, settings: ApprovalSettings, *, trusted_proxies: Sequence[str] = (),
             failures: FailedLookups | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[guard])
    app[STATE] = WebState(store, settings, parse_proxies(trusted_proxies),
                          failures or FailedLookups())
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/a/{token}", show)
    app.router.add_post("/a/{token}", act)
    status.add_routes(app)
    return app


# ---- handlers ---------------------------------------------------------------------------------

async def healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


@dataclass(frozen=True)
class _View:
    status: int
    body: str
    cookie: str | None = None  # set this form cookie on the response


def _page(view: _View, request: web.Request, token: str) -> web.Response:
    response = web.Response(status=view.status, text=view.body, content_type="text/html",
                            charset="utf-8")
    if view.cookie is not None:
        response.set_cookie(COOKIE, view.cookie, max_age=int(COOKIE_TTL.total_seconds()),
                            path=f"/a/{token}", httponly=True, samesite="Strict",
                            secure=request.app[STATE].settings.public_url.startswith("https:"))
    return response


async def show(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    token = request.match_info["token"]
    lang = _accept_language(request)
    who = client(request)
    wait = state.failures.retry_after(who)
    if wait is not None:
        return _throttled(state, lang, request[NONCE], wait)
    secret = await form_secret(state)
    cookie = _fresh(request.cookies.get(COOKIE), state.store.clock()) or new_cookie(
        state.store.clock())
    view = await asyncio.to_thread(_show, state, token, secret, cookie, lang, request[NONCE])
    if view.status == 404:
        state.failures.failed(who)
    return _page(view, request, token)


async def act(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    token = request.match_info["token"]
    nonce, lang = request[NONCE], _accept_language(request)
    who = client(request)
    wait = state.failures.retry_after(who)
    if wait is not None:
        return _throttled(state, lang, nonce, wait)
    if not same_site(request, state.settings):
        return _page(_View(*_result(state, "refused", lang, nonce)), request, token)
    form = await request.post()
    fields = {k: v for k in ("csrf", "action", "reason", "note", "paid_on")
              if isinstance(v := form.get(k), str)}
    secret = await form_secret(state)
    cookie = _fresh(request.cookies.get(COOKIE), state.store.clock())
    view = await asyncio.to_thread(_act, state, token, fields, secret, cookie, lang, nonce)
    if view.status == 404:
        state.failures.failed(who)
    return _page(view, request, token)


def _throttled(state: WebState, lang: str, nonce: str, wait: int) -> web.Response:
    page = mailer.render_page(state.settings.environment(), "result", lang, _page_context(
        nonce, "throttled"))
    response = web.Response(status=429, text=page, content_type="text/html", charset="utf-8")
    response.headers["Retry-After"] = str(wait)
    return response


def _accept_language(request: web.Request) -> str:
    first = request.headers.get("Accept-Language", "").split(",")[0].strip()[:2].lower()
    return first if first in _LANGS else "en"


# ---- the form cookie and nonce ----------------------------------------------------------------

def new_cookie(now: datetime) -> str:
    """``<issued, unix seconds>.<random>``: the value of the form cookie."""
    return f"{int(now.replace(tzinfo=UTC).timestamp())}.{secrets.token_urlsafe(24)}"


def _fresh(value: str | None, now: datetime) -> str | None:
    """The cookie value when well formed and issued within COOKIE_TTL, else None."""
    match = _COOKIE_VALUE.match(value or "")
    if match is None:
        return None
    age = now.replace(tzinfo=UTC).timestamp() - int(match.group(1))
    return value if -300 <= age <= COOKIE_TTL.total_seconds() else None


def csrf_token(secret: bytes, token: str, cookie: str) -> str:
    """The form nonce: bound to the token and to the browser's form cookie."""
    message = f"{hash_token(token)}.{cookie}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _form_refusal(fields: dict[str, str], secret: bytes, token: str,
                  cookie: str | None) -> str | None:
    """Why a POST is not the page's own form (B-APPR-02), or None: "no-cookie" without the
    page's form cookie (another site, a scanner, a stale page), "refused" for a wrong nonce."""
    if cookie is None:
        return "no-cookie"
    if not hmac.compare_digest(fields.get("csrf", ""), csrf_token(secret, token, cookie)):
        return "refused"
    return None


# ---- the work (runs in a thread) ---------------------------------------------------------------

def _look(store: Store, token: str) -> Grant:
    """The grant of a link token; anything else (a reply token, a malformed path) is
    "unknown". The hash is looked up in every case, so every 404 costs the same."""
    well_formed = _TOKEN.match(token) is not None
    try:
        grant = Approvals(store).look(token)
    except TokenRefused as exc:
        if exc.grant is not None and not (well_formed and _is_link(exc.grant)):
            raise TokenRefused("unknown") from None
        raise
    if not (well_formed and _is_link(grant)):
        raise TokenRefused("unknown")
    return grant


def _is_link(grant: Grant) -> bool:
    return grant.action in WEB_ACTIONS and grant.document_id is not None


def _doc_id(grant: Grant) -> int:
    assert grant.document_id is not None, "_look lets only document tokens through"
    return grant.document_id


def _refused_outcome(store: Store, exc: TokenRefused) -> str:
    """unknown/used/expired, or for a stale token "decided" when the invoice no longer waits."""
    if exc.reason == "stale" and exc.grant is not None and decisions.already_decided(
            store, _doc_id(exc.grant), exc.grant.action):
        return "decided"
    return exc.reason if exc.reason in STATUS else "unknown"


def _renewable(store: Store, grant: Grant) -> bool:
    """An expired approve/reject link of an invoice that still waits, whose person is still
    one of the folder's people."""
    if grant.action not in RENEWABLE or grant.document_id is None:
        return False
    doc = store.documents.get(grant.document_id)
    if doc is None or doc.state != decisions.PENDING:
        return False
    people = approval.request_recipients(store, doc.folder_id)
    return grant.approver.lower() in (p.lower() for p in people)


def _show(state: WebState, token: str, secret: bytes, cookie: str, lang: str,
          nonce: str) -> _View:
    store = state.store
    try:
        grant = _look(store, token)
    except TokenRefused as exc:
        outcome = _refused_outcome(store, exc)
        lang = _lang_of(store, exc.grant, lang)
        if outcome == "expired" and exc.grant is not None and _renewable(store, exc.grant):
            return _View(*_result(state, outcome, lang, nonce, exc.grant,
                                  renew=(f"/a/{token}", csrf_token(secret, token, cookie))),
                         cookie=cookie)
        return _View(*_result(state, outcome, lang, nonce, exc.grant))
    doc = store.documents.get(_doc_id(grant))
    folder = store.folder(doc.folder_id) if doc else None
    if doc is None or folder is None:
        return _View(*_result(state, "unknown", lang, nonce))
    lang = folder.language or lang
    context: dict[str, object] = {
        "csp_nonce": nonce, "folder_name": folder.name, "supplier": decisions.supplier_of(doc),
        "number": doc.number, "issue_date": doc.issue_date, "due_date": doc.due_date,
        "currency": doc.currency, "total_gross": doc.total_gross, "amount_due": doc.amount_due,
        "reasons": list(doc.reasons), "expires_at": grant.expires_at,
        "action_url": f"/a/{token}", "csrf_token": csrf_token(secret, token, cookie),
        "reason_codes": mailer.reason_choices(lang), "action": grant.action,
        "today": store.clock().date().isoformat(),
    }
    return _View(200, mailer.render_page(state.settings.environment(), "approve", lang, context),
                 cookie=cookie)


def _act(state: WebState, token: str, fields: dict[str, str], secret: bytes,
         cookie: str | None, lang: str, nonce: str) -> _View:
    store, settings = state.store, state.settings
    try:
        grant = _look(store, token)
    except TokenRefused as exc:
        if exc.reason == "expired" and exc.grant is not None and fields.get("action") == "renew":
            return _View(*_renew(state, token, exc.grant, fields, secret, cookie, lang, nonce))
        return _View(*_result(state, _refused_outcome(store, exc),
                              _lang_of(store, exc.grant, lang), nonce, exc.grant))
    lang = _lang_of(store, grant, lang)
    refusal = _form_refusal(fields, secret, token, cookie)
    if refusal is not None:
        return _View(*_result(state, refusal, lang, nonce, grant))
    if fields.get("action") != grant.action:  # B-APPR-06: a reject link cannot approve
        return _View(*_result(state, "refused", lang, nonce, grant))
    doc_id = _doc_id(grant)
    common: dict[str, Any] = {"by": grant.approver, "version": grant.document_version,
                              "note": fields.get("note", ""), "token": token, "via": "link"}
    try:
        if grant.action == "approve":
            decisions.approve(store, settings, doc_id, **common)
        elif grant.action == "reject":
            if not fields.get("reason"):
                return _View(*_result(state, "invalid", lang, nonce, grant))
            decisions.reject(store, settings, doc_id, code=fields["reason"], **common)
        else:
            decisions.mark_paid(store, settings, doc_id,
                                on=_paid_on(fields.get("paid_on"), store), **common)
    except TokenRefused as exc:
        return _View(*_result(state, _refused_outcome(store, exc), lang, nonce, grant))
    except (NotAllowed, NotPayable, ValueError):
        return _View(*_result(state, "invalid", lang, nonce, grant))
    except DecisionError:
        return _View(*_result(state, "decided", lang, nonce, grant))
    log.info("document %d: %s by %s via link #%s", doc_id, grant.action, grant.approver,
             hash_token(token)[:12])
    decision = {"approve": "approved", "reject": "rejected"}.get(grant.action, "paid")
    return _View(*_result(state, "done", lang, nonce, grant, decision))


def _renew(state: WebState, token: str, grant: Grant, fields: dict[str, str], secret: bytes,
           cookie: str | None, lang: str, nonce: str) -> tuple[int, str]:
    """B-APPR-04: a fresh approval request to the expired link's person (see the module
    docstring for the conditions)."""
    store = state.store
    lang = _lang_of(store, grant, lang)
    refusal = _form_refusal(fields, secret, token, cookie)
    if refusal is not None:
        return _result(state, refusal, lang, nonce, grant)
    doc_id = _doc_id(grant)
    with store.write_transaction():
        if not _renewable(store, grant):
            return _result(state, "expired", lang, nonce, grant)
        if Approvals(store).issued_since(doc_id, grant.approver,
                                         store.clock() - RENEW_EVERY):
            return _result(state, "renew-wait", lang, nonce, grant)
        sent = approval.request_approval(store, state.settings, doc_id, only=grant.approver)
        if sent:
            doc = store.documents.get(doc_id)
            store.add_event("link-renewed", f"new approval request to {grant.approver}, "
                            "asked from an expired link", actor=grant.approver,
                            folder_id=doc.folder_id if doc else None, document_id=doc_id)
    if not sent:
        return _result(state, "expired", lang, nonce, grant)
    log.info("document %d: new approval request to %s, asked from expired link #%s", doc_id,
             grant.approver, hash_token(token)[:12])
    return _result(state, "renewed", lang, nonce, grant)


def _paid_on(value: str | None, store: Store) -> date:
    if not value:
        return store.clock().date()
    return date.fromisoformat(value.strip())  # ValueError -> "invalid"


def _lang_of(store: Store, grant: Grant | None, fallback: str) -> str:
    if grant is None:
        return fallback
    folder = store.folder(grant.folder_id)
    return (folder.language or fallback) if folder is not None else fallback


def _page_context(nonce: str, outcome: str, **values: object) -> dict[str, object]:
    context: dict[str, object] = {"csp_nonce": nonce, "outcome": outcome, "decision": None,
                                  "supplier": None, "number": None, "renew_url": None,
                                  "renew_csrf": None}
    context.update(values)
    return context


def _result(state: WebState, outcome: str, lang: str, nonce: str, grant: Grant | None = None,
            decision: str | None = None,
            renew: tuple[str, str] | None = None) -> tuple[int, str]:
    """The result page; supplier and number only when the token was a real one. ``renew``:
    (URL, nonce) of the "send me a new link" form on an expired link's page."""
    supplier = number = None
    if grant is not None and grant.document_id is not None:
        doc = state.store.documents.get(grant.document_id)
        if doc is not None:
            supplier, number = decisions.supplier_of(doc), doc.number
    page = mailer.render_page(state.settings.environment(), "result", lang, _page_context(
        nonce, outcome, decision=decision, supplier=supplier, number=number,
        renew_url=renew[0] if renew else None, renew_csrf=renew[1] if renew else None))
    return STATUS.get(outcome, 400), page


# ---- running ----------------------------------------------------------------------------------

async def run_web(store: Store, settings: ApprovalSettings, listen_host: str,
                  listen_port_or_path: int | str, stop: asyncio.Event, *,
                  trusted_proxies: Sequence[str] = ()) -> None:
    """Serve until ``stop`` is set: TCP when given a port, a unix socket when given a path."""
    runner = web.AppRunner(make_app(store, settings, trusted_proxies=trusted_proxies),
                           access_log_class=AccessLogger, handle_signals=False)
    await runner.setup()
    try:
        site: web.BaseSite
        if isinstance(listen_port_or_path, str):
            site = web.UnixSite(runner, listen_port_or_path)
        else:
            site = web.TCPSite(runner, listen_host, listen_port_or_path)
        await site.start()
        log.info("web role listening on %s", site.name)
        await stop.wait()
    finally:
        await runner.cleanup()
