"""The dashboard's guard: host check, token, cross-site protection and security headers, as ASGI middleware.

The model (docs/dashboard.md says the same for users):

- Every request's ``Host`` must be one of the names the server serves: the address it is bound to (with
  ``localhost`` for 127.0.0.1 and ::1), for a wildcard bind (0.0.0.0, ::) this machine's interface
  addresses and host name, plus any ``--allow-host``. Not "any loopback name": a server bound to
  127.0.0.1 refuses ``Host: 127.0.0.2`` or ``[::1]``. Any local process could talk to the port anyway;
  the check stops a web page the user visits from reaching it through DNS rebinding (``evil.example``
  re-resolved to the server's address).
- With a token (always, when bound beyond loopback) every request needs it: ``Authorization: Bearer``,
  or the cookie set when the page is first opened with ``?token=`` (HttpOnly, SameSite=Strict, so page
  scripts cannot read it and other sites' requests do not carry it). Comparison is constant-time.
  A token that is empty (an unset ``$TOKEN``), shorter than :data:`MIN_TOKEN_LENGTH` or holding
  characters a cookie cannot carry is a usage error, never "no authentication".
- A state-changing request (Cancel is the only one) must carry the ``X-Parallelrun-CSRF`` header, which a
  cross-site form cannot send and a cross-site script can only send after a CORS preflight we never
  grant; ``Origin`` and ``Sec-Fetch-Site``, when the browser sends them, must say same-origin.
- Every response forbids framing (no click-jacking the Cancel button), sniffing and inline scripts.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ..errors import UsageError

CSRF_HEADER = "x-parallelrun-csrf"
MIN_TOKEN_LENGTH = 16  # generated tokens have 43 characters (32 random bytes)
# What a token may hold: it travels in a header, a query string and a cookie value unquoted.
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=")
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server on this machine (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def new_token() -> str:
    return secrets.token_urlsafe(32)


def check_token(token: str | None) -> str | None:
    """``token`` if it is fit to guard the dashboard; a :class:`UsageError` saying why otherwise."""
    if token is None:
        return None
    fix = f"give one of at least {MIN_TOKEN_LENGTH} characters, or leave --token out to have one generated"
    if not token.strip():
        raise UsageError(f"--token is empty (an unset environment variable?): {fix}")
    if len(token) < MIN_TOKEN_LENGTH:
        raise UsageError(f"--token is too short ({len(token)} characters) to guard the dashboard: {fix}")
    bad = sorted(set(token) - _TOKEN_CHARS)
    if bad:
        raise UsageError(f"--token holds characters a cookie cannot carry ({''.join(bad)!r}): use letters, "
                         "digits and - . _ ~ + / = only, or leave --token out to have one generated")
    return token


def _bare(host: str) -> str:
    return host.strip().strip("[]").split("%", 1)[0].lower()


def served_names(host: str) -> frozenset[str]:
    """The ``Host`` names a server bound to ``host`` answers to (no DNS query leaves this machine).

    An address: itself, and ``localhost`` for 127.0.0.1 and ::1 (the addresses that name conventionally
    means). A wildcard (0.0.0.0, ::): every address of this machine's interfaces, its host name, and
    localhost. Any other name: only that name, as given.
    """
    name = _bare(host)
    if name in ("", "0.0.0.0", "::"):
        import psutil

        # Not getfqdn(): it may ask a DNS server. A DNS name other than the host name needs --allow-host.
        names = {"localhost", "127.0.0.1", "::1", socket.gethostname().lower()}
        for addrs in psutil.net_if_addrs().values():
            names.update(_bare(a.address) for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6))
        return frozenset(n for n in names if n)
    if name == "localhost":
        return frozenset({"localhost", "127.0.0.1", "::1"})
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return frozenset({name})
    canonical = str(address)
    return frozenset({canonical, "localhost"} if canonical in ("127.0.0.1", "::1") else {canonical})


@dataclass(frozen=True)
class Policy:
    """Who may talk to the dashboard: the token (None: none needed) and the ``Host`` names served."""

    token: str | None = None
    allowed_hosts: frozenset[str] = frozenset({"127.0.0.1", "localhost"})
    cookie_name: str = "parallelrun_token"

    @classmethod
    def for_bind(cls, host: str, port: int, token: str | None, allow_hosts: tuple[str, ...] = ()) -> Policy:
        """The policy for serving on ``host``: a token is mandatory beyond loopback (made if not given).

        Raises :class:`UsageError` for an empty, short or malformed ``token``.
        """
        token = check_token(token)
        if token is None and not is_loopback(host):
            token = new_token()
        hosts = served_names(host) | {_bare(h) for h in allow_hosts if _bare(h)}
        return cls(token=token, allowed_hosts=hosts, cookie_name=f"parallelrun_token_{port}")


def _host_name(host_header: str) -> str:
    try:
        return (urlsplit(f"//{host_header}").hostname or "").lower()
    except ValueError:
        return ""


class Guard:
    """ASGI middleware enforcing a :class:`Policy` on every HTTP request, static files included."""

    def __init__(self, app: Any, policy: Policy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal, set_cookie = self._check(request)
        if refusal is None and set_cookie and request.method == "GET" and not request.url.path.startswith("/api/"):
            # Opened with ?token=: keep it out of the address bar, history and bookmarks from now on.
            query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            refusal = RedirectResponse(request.url.path + (f"?{query}" if query else ""), status_code=303)
        if refusal is not None:
            if set_cookie:
                self._set_cookie(refusal.headers)
            _secure(refusal.headers)
            await refusal(scope, receive, send)
            return

        async def send_secured(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                _secure(headers)
                if set_cookie:
                    self._set_cookie(headers)
            await send(message)

        await self.app(scope, receive, send_secured)

    def _check(self, request: Request) -> tuple[Response | None, bool]:
        """(a refusal or None, whether to set the token cookie)."""
        p = self.policy
        host = _host_name(request.headers.get("host", ""))
        if host not in p.allowed_hosts:
            shown = ", ".join(sorted(p.allowed_hosts)[:8])
            return _refuse(request, 400, f"Host {host!r} is not a name this dashboard serves ({shown}): open "
                                         "the address it printed, or start it with --allow-host NAME"), False
        set_cookie = False
        if p.token is not None:
            given, via_query = _presented_token(request, p.cookie_name)
            # compare_digest takes time independent of where the strings differ (not of their lengths,
            # which the generated token's fixed length makes public anyway).
            if not given or not secrets.compare_digest(given.encode(), p.token.encode()):
                return _refuse(request, 401, "a token is required: open the address printed by "
                                             "'parallelrun dashboard' (it ends in ?token=...)"), False
            set_cookie = via_query
        if request.method in _UNSAFE:
            problem = _cross_site_problem(request)
            if problem:
                return _refuse(request, 403, problem), False
        return None, set_cookie

    def _set_cookie(self, headers: Any) -> None:
        assert self.policy.token is not None
        headers.append("set-cookie", f"{self.policy.cookie_name}={self.policy.token}; Path=/; HttpOnly; "
                                     "SameSite=Strict")


def _presented_token(request: Request, cookie_name: str) -> tuple[str | None, bool]:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), False
    if "token" in request.query_params:
        return request.query_params["token"], True
    return request.cookies.get(cookie_name), False


def _cross_site_problem(request: Request) -> str | None:
    if not request.headers.get(CSRF_HEADER):
        return f"a state-changing request needs the {CSRF_HEADER} header (the dashboard page sends it)"
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = request.headers.get("origin")
    if origin is not None:
        netloc = urlsplit(origin).netloc.lower()
        if origin == "null" or netloc != request.headers.get("host", "").lower():
            return f"cross-origin request refused (Origin: {origin})"
    return None


def _refuse(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"detail": message}, status_code=status)
    from html import escape

    return HTMLResponse(f"<!doctype html><title>parallelrun dashboard</title><h1>{status}</h1><p>{escape(message)}</p>",
                        status_code=status)


def _secure(headers: Any) -> None:
    for k, v in _HEADERS.items():
        if k not in headers:
            headers[k] = v
