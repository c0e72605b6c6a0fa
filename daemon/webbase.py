"""What every page of the web role shares: its state, security headers, host and origin checks.

Job: the middleware every response goes through (daemon/web.py's approval pages and
daemon/status.py's status page): a fresh CSP nonce per response, ``Cache-Control: no-store``,
``Referrer-Policy: no-referrer``, ``X-Content-Type-Options: nosniff``, ``X-Frame-Options:
DENY``; 400 without Host, 421 for a Host other than the public_url host, localhost or
127.0.0.1; router and body-limit errors as short text; unexpected errors logged with the
path redacted and answered 500. Also the same-site check every POST must pass, the
installation's form secret (kept in the database so every node agrees) and the access log,
which never shows a token.

May touch: the ``setting`` table (through Store.secret).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from daemon.decisions import ApprovalSettings
from daemon.webguard import FailedLookups, Proxy, client_of
from storage.approvals import hash_token
from storage.store import Store

log = logging.getLogger("daemon.web")

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
CSRF_SETTING = "web_csrf_secret"


@dataclass
class WebState:
    store: Store
    settings: ApprovalSettings
    proxies: tuple[Proxy, ...] = ()
    failures: FailedLookups = field(default_factory=FailedLookups)
    secret: bytes | None = None


STATE = web.AppKey("facturd_web_state", WebState)
NONCE = web.RequestKey("facturd_csp_nonce", str)


def csp(nonce: str) -> str:
    return (f"default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")


def host_of(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    nonce = secrets.token_urlsafe(16)
    request[NONCE] = nonce
    state = request.app[STATE]
    host = request.headers.get("Host")
    if not host:
        response: web.StreamResponse = web.Response(status=400, text="400: Host required")
    elif host_of(host).rstrip(".") not in (state.settings.public_host, *LOCAL_HOSTS):
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


def client(request: web.Request) -> str:
    state = request.app[STATE]
    return client_of(request.remote, request.headers.get("X-Forwarded-For"), state.proxies)


def same_site(request: web.Request, settings: ApprovalSettings) -> bool:
    """Refuse a POST another site's page made (Origin "null" is what no-referrer yields)."""
    if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return True
    host = host_of(origin.partition("://")[2].partition("/")[0])
    return host in (settings.public_host, *LOCAL_HOSTS)


async def form_secret(state: WebState) -> bytes:
    if state.secret is None:
        state.secret = await asyncio.to_thread(state.store.secret, CSRF_SETTING)
    return state.secret
