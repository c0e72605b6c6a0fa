"""The web role: approval pages behind the links of approval requests, and /healthz.

Job: ``GET /a/{token}`` shows what the link is about (supplier, number, amounts, reasons) and
a form for the one action the token grants, and changes nothing (mail scanners open every
link, B-APPR-01); ``POST /a/{token}`` checks the form's CSRF nonce (HMAC-SHA256 of the token
hash under an installation secret kept in the database, so every node agrees) and performs the
decision through daemon.decisions, which redeems the token in the decision's transaction.
Used, expired and stale tokens get a 410 page, unknown ones a 404 page, on GET and POST.

Every response: ``Cache-Control: no-store``, ``Referrer-Policy: no-referrer``,
``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and a CSP whose style nonce is
fresh per response. Requests for a Host other than the public_url host, localhost or
127.0.0.1 get 421 (400 without Host); a POST whose Origin is another site, or marked
``Sec-Fetch-Site: cross-site``/``same-site``, gets 403. No redirects, no static files, bodies
over 16 KB refused (413). Database work runs in threads, never on the event loop. The access
log shows a token hash prefix, never a token.

May touch: approvals, documents, events, outbox, setting (through daemon.decisions and
storage APIs). Nothing on disk besides a unix socket when asked to listen on one.

Known limits: no login (possession of the link is the authority, as in the mail); no rate
limit on failed tokens (B-APPR-09: 256-bit tokens make guessing moot; put a limit in the
reverse proxy); no cookie-bound nonce, so a scanner that submits forms could act.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import date
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from daemon import decisions, mailer
from daemon.decisions import ApprovalSettings, DecisionError, NotAllowed, NotPayable
from storage.approvals import Approvals, Grant, TokenRefused, hash_token
from storage.store import Store

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
CSRF_SETTING = "web_csrf_secret"
WEB_ACTIONS = ("approve", "reject", "paid")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_LANGS = ("fr", "en")
STATUS = {"done": 200, "unknown": 404, "used": 410, "expired": 410, "stale": 410,
          "decided": 410, "refused": 403, "invalid": 400}


@dataclass
class _State:
    store: Store
    settings: ApprovalSettings
    secret: bytes | None = None


STATE = web.AppKey("facturd_web_state", _State)
NONCE = web.RequestKey("facturd_csp_nonce", str)


def make_app(store: Store, settings: ApprovalSettings) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_guard])
    app[STATE] = _State(store, settings)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/a/{token}", show)
    app.router.add_post("/a/{token}", act)
    return app


# ---- headers, host check, errors --------------------------------------------------------------

def csp(nonce: str) -> str:
    return (f"default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")


def _host_of(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


@web.middleware
async def _guard(request: web.Request, handler: Any) -> web.StreamResponse:
    nonce = secrets.token_urlsafe(16)
    request[NONCE] = nonce
    state = request.app[STATE]
    host = request.headers.get("Host")
    if not host:
        response: web.StreamResponse = web.Response(status=400, text="400: Host required")
    elif _host_of(host).rstrip(".") not in (state.settings.public_host, *LOCAL_HOSTS):
        response = web.Response(status=421, text="421: Misdirected Request")
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # 404/405 from the router, 413 from the body limit
            response = web.Response(status=exc.status, text=f"{exc.status}: {exc.reason}")
        except Exception:
            log.exception("web: internal error on %s %s", request.method,
                          redact(request.path))
            response = web.Response(status=500, text="500: Internal Server Error")
    headers = response.headers
    headers["Cache-Control"] = "no-store"
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Content-Security-Policy"] = csp(nonce)
    headers["Server"] = "facturd"
    return response


def redact(path: str) -> str:
    """``/a/<token>`` -> ``/a/#<first 12 hex of its sha256>`` for logs."""
    if path.startswith("/a/"):
        return "/a/#" + hash_token(path[3:])[:12]
    return path


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %d %.3fs", request.method, redact(request.path),
                         response.status, time)


# ---- handlers ---------------------------------------------------------------------------------

async def healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


def _page(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/html", charset="utf-8")


async def show(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    token = request.match_info["token"]
    lang = _accept_language(request)
    if not _TOKEN.match(token):
        return _page(*_result(state, "unknown", lang, request[NONCE]))
    secret = await _secret(state)
    return _page(*await asyncio.to_thread(_show, state, token, secret, lang, request[NONCE]))


async def act(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    token = request.match_info["token"]
    nonce, lang = request[NONCE], _accept_language(request)
    if not _TOKEN.match(token):
        return _page(*_result(state, "unknown", lang, nonce))
    if not _same_site(request, state.settings):
        return _page(*_result(state, "refused", lang, nonce))
    form = await request.post()
    fields = {k: v for k in ("csrf", "action", "reason", "note", "paid_on")
              if isinstance(v := form.get(k), str)}
    secret = await _secret(state)
    return _page(*await asyncio.to_thread(_act, state, token, fields, secret, lang, nonce))


def _same_site(request: web.Request, settings: ApprovalSettings) -> bool:
    """Refuse a POST another site's page made (Origin "null" is what no-referrer yields)."""
    if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return True
    host = _host_of(origin.partition("://")[2].partition("/")[0])
    return host in (settings.public_host, *LOCAL_HOSTS)


def _accept_language(request: web.Request) -> str:
    first = request.headers.get("Accept-Language", "").split(",")[0].strip()[:2].lower()
    return first if first in _LANGS else "en"


async def _secret(state: _State) -> bytes:
    if state.secret is None:
        state.secret = await asyncio.to_thread(decisions.installation_secret, state.store,
                                               CSRF_SETTING)
    return state.secret


def csrf_token(secret: bytes, token: str) -> str:
    return hmac.new(secret, hash_token(token).encode(), hashlib.sha256).hexdigest()


# ---- the work (runs in a thread) ---------------------------------------------------------------

def _look(store: Store, token: str) -> Grant:
    grant = Approvals(store).look(token)
    if grant.action not in WEB_ACTIONS:  # reply tokens are for the reply address only
        raise TokenRefused("unknown")
    return grant


def _refused_outcome(store: Store, exc: TokenRefused) -> str:
    """unknown/used/expired, or for a stale token "decided" when the invoice no longer waits."""
    if exc.reason == "stale" and exc.grant is not None and decisions.already_decided(
            store, exc.grant.document_id, exc.grant.action):
        return "decided"
    return exc.reason if exc.reason in STATUS else "unknown"


def _show(state: _State, token: str, secret: bytes, lang: str, nonce: str) -> tuple[int, str]:
    store = state.store
    try:
        grant = _look(store, token)
    except TokenRefused as exc:
        return _result(state, _refused_outcome(store, exc), _lang_of(store, exc.grant, lang),
                       nonce, exc.grant)
    doc = store.documents.get(grant.document_id)
    folder = store.folder(doc.folder_id) if doc else None
    if doc is None or folder is None:
        return _result(state, "unknown", lang, nonce)
    lang = folder.language or lang
    context: dict[str, object] = {
        "csp_nonce": nonce, "folder_name": folder.name, "supplier": decisions.supplier_of(doc),
        "number": doc.number, "issue_date": doc.issue_date, "due_date": doc.due_date,
        "currency": doc.currency, "total_gross": doc.total_gross, "amount_due": doc.amount_due,
        "reasons": list(doc.reasons), "expires_at": grant.expires_at,
        "action_url": f"/a/{token}", "csrf_token": csrf_token(secret, token),
        "reason_codes": mailer.reason_choices(lang), "action": grant.action,
        "today": store.clock().date().isoformat(),
    }
    return 200, mailer.render_page(state.settings.environment(), "approve", lang, context)


def _act(state: _State, token: str, fields: dict[str, str], secret: bytes, lang: str,
         nonce: str) -> tuple[int, str]:
    store, settings = state.store, state.settings
    try:
        grant = _look(store, token)
    except TokenRefused as exc:
        return _result(state, _refused_outcome(store, exc), _lang_of(store, exc.grant, lang),
                       nonce, exc.grant)
    lang = _lang_of(store, grant, lang)
    if not hmac.compare_digest(fields.get("csrf", ""), csrf_token(secret, token)):
        return _result(state, "refused", lang, nonce, grant)  # B-APPR-02
    if fields.get("action") != grant.action:  # B-APPR-06: a reject link cannot approve
        return _result(state, "refused", lang, nonce, grant)
    common: dict[str, Any] = {"by": grant.approver, "version": grant.document_version,
                              "note": fields.get("note", ""), "token": token, "via": "link"}
    try:
        if grant.action == "approve":
            decisions.approve(store, settings, grant.document_id, **common)
        elif grant.action == "reject":
            if not fields.get("reason"):
                return _result(state, "invalid", lang, nonce, grant)
            decisions.reject(store, settings, grant.document_id, code=fields["reason"],
                             **common)
        else:
            decisions.mark_paid(store, settings, grant.document_id,
                                on=_paid_on(fields.get("paid_on"), store), **common)
    except TokenRefused as exc:
        return _result(state, _refused_outcome(store, exc), lang, nonce, grant)
    except (NotAllowed, NotPayable, ValueError):
        return _result(state, "invalid", lang, nonce, grant)
    except DecisionError:
        return _result(state, "decided", lang, nonce, grant)
    log.info("document %d: %s by %s via link #%s", grant.document_id, grant.action,
             grant.approver, hash_token(token)[:12])
    decision = {"approve": "approved", "reject": "rejected"}.get(grant.action, "paid")
    return _result(state, "done", lang, nonce, grant, decision)


def _paid_on(value: str | None, store: Store) -> date:
    if not value:
        return store.clock().date()
    return date.fromisoformat(value.strip())  # ValueError -> "invalid"


def _lang_of(store: Store, grant: Grant | None, fallback: str) -> str:
    if grant is None:
        return fallback
    doc = store.documents.get(grant.document_id)
    folder = store.folder(doc.folder_id) if doc is not None else None
    return (folder.language or fallback) if folder is not None else fallback


def _result(state: _State, outcome: str, lang: str, nonce: str, grant: Grant | None = None,
            decision: str | None = None) -> tuple[int, str]:
    """The result page; supplier and number only when the token was a real one."""
    supplier = number = None
    if grant is not None:
        doc = state.store.documents.get(grant.document_id)
        if doc is not None:
            supplier, number = decisions.supplier_of(doc), doc.number
    page = mailer.render_page(state.settings.environment(), "result", lang, {
        "csp_nonce": nonce, "outcome": outcome, "decision": decision, "supplier": supplier,
        "number": number})
    return STATUS.get(outcome, 400), page


# ---- running ----------------------------------------------------------------------------------

async def run_web(store: Store, settings: ApprovalSettings, listen_host: str,
                  listen_port_or_path: int | str, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set: TCP when given a port, a unix socket when given a path."""
    runner = web.AppRunner(make_app(store, settings), access_log_class=AccessLogger,
                           handle_signals=False)
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
