"""Browser-facing guards in front of every route: the Host header and cross-site requests.

Both request checks apply while no ``server.auth_token`` is set, the default on loopback:
then nothing else stands between a browser and the API. With a token, the token is the
guard (a rebinding or cross-site page does not have it), and callers inside a Docker or
Kubernetes network may use whatever name reaches us; no URL we hand out is built from Host.

* **Host**: only loopback names, the ``server.public_url`` host, a specific ``server.host``
  and ``server.trusted_hosts`` are answered (Starlette's TrustedHostMiddleware rule, with a
  JSON error). A DNS-rebinding page reaches us under its own name and is refused, so it
  cannot read jobs or signed links. ``/healthz`` and ``/readyz`` are exempt, for probes
  that address the container by IP.
* **Cross-site**: a browser on another site could submit a form to us (CSRF). Unsafe
  methods marked ``Sec-Fetch-Site: cross-site``, or with an ``Origin`` that is not ours,
  are refused. Workflow tools send neither header.
* **Redirects to ourselves** (Starlette's trailing-slash redirect) are made relative, so
  the ``Location`` never reflects the Host header.

The edge (``routes/edge.py``) applies these checks first, then the bearer-token gate
(``routes/gate.py``); the response headers of the dashboard are the dashboard route's.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import ServerSettings

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
#: Host header values whose verdict the guard remembers before it starts afresh.
_MAX_REMEMBERED_HOSTS = 256


def host_of(value: str) -> str:
    """The host part of a Host header (``[::1]:8080`` -> ``::1``), lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value.rstrip(".")


def trusted_host_patterns(server: ServerSettings) -> list[str]:
    """Every host the service answers to, as exact names or ``*.suffix`` patterns."""
    names = set(LOOPBACK_NAMES)
    if server.public_url:
        names.add((urlsplit(server.public_url).hostname or "").lower())
    if server.host not in _WILDCARD_HOSTS:
        names.add(server.host.strip("[]").lower())
    names.update(p.strip().lower() for p in server.trusted_hosts if p.strip())
    return sorted(names)


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    if _is_loopback_ip(host):  # all of 127/8 and ::1, written as an IP (not a name)
        return True
    for pattern in patterns:
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin_netloc(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return f"{host}:{port or default}".lower()


class RequestGuard:
    """The request checks of the module docstring, applied by the edge (``routes/edge.py``)
    in its one pass before anything else runs."""

    def __init__(self, server: ServerSettings) -> None:
        self.patterns = trusted_host_patterns(server)
        self.token_set = server.auth_token is not None
        self.public_origin = _origin_netloc(server.public_url) if server.public_url else None
        self._host_verdicts: dict[str, bool] = {}

    def refusal(
        self, scope: Scope, host_header: str, fetch_site: str | None, origin: str | None
    ) -> Refusal | None:
        """The answer refusing this request, or ``None`` when it may go on."""
        if self.token_set:
            return None
        if scope["path"] not in _EXEMPT_PATHS and not self._host_ok(host_header):
            return HOST_REFUSED
        if self._cross_site(scope, fetch_site, origin, host_header):
            return CROSS_SITE_REFUSED
        return None

    def _host_ok(self, host_header: str) -> bool:
        """:func:`host_allowed` for a Host header, remembered per value: callers send the
        same few, and parsing one as an IP address each request costs a few microseconds."""
        verdict = self._host_verdicts.get(host_header)
        if verdict is None:
            verdict = host_allowed(host_of(host_header), self.patterns)
            if len(self._host_verdicts) >= _MAX_REMEMBERED_HOSTS:
                self._host_verdicts.clear()  # a caller cycling through names gets no memory
            self._host_verdicts[host_header] = verdict
        return verdict

    def _cross_site(
        self, scope: Scope, fetch_site: str | None, origin: str | None, host_header: str
    ) -> bool:
        if scope["method"] in _SAFE_METHODS:
            return False
        if fetch_site is not None and fetch_site.lower() == "cross-site":
            return True
        if origin is None:
            return False
        theirs = _origin_netloc(origin)
        scheme = "https" if scope.get("scheme") == "https" else "http"
        ours = _origin_netloc(f"{scheme}://{host_header}")
        return theirs is None or theirs not in (ours, self.public_origin)


def relative_self_redirect(message: Message, host_header: str) -> None:
    """Make a redirect's ``Location`` to ``host_header`` relative, in the start message."""
    headers = MutableHeaders(scope=message)
    location = headers.get("location")
    if location:
        netloc, path, query = _split_location(location)
        if netloc and netloc.lower() == host_header.strip().lower():
            # one leading slash: "//evil.example" would leave the site
            path = "/" + path.lstrip("/")
            headers["location"] = path + (f"?{query}" if query else "")


def _split_location(location: str) -> tuple[str, str, str]:
    """Netloc, path and query of a ``Location``; a netloc ``urlsplit`` refuses (a Host
    header such as ``[x`` reflected by the trailing-slash redirect) is split by hand."""
    try:
        parts = urlsplit(location)
    except ValueError:
        scheme, sep, rest = location.partition("://")
        if not sep or "/" in scheme:
            return "", location, ""
        netloc, _, tail = rest.partition("/")
        path, _, query = tail.partition("#")[0].partition("?")
        return netloc, "/" + path, query
    return parts.netloc, parts.path, parts.query


class RelativeRedirects:
    """ASGI middleware applying :func:`relative_self_redirect` to every answer: the edge's
    slow path (the router's own answers, plug-in mounts) runs behind it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host_header = edge_headers(scope["headers"])[0]

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                relative_self_redirect(message, host_header)
            await send(message)

        await self.app(scope, receive, wrapped)


def edge_headers(
    raw: Iterable[tuple[bytes, bytes]],
) -> tuple[str, str | None, str | None, str | None]:
    """The first ``Host``, ``Sec-Fetch-Site``, ``Origin`` and ``Authorization`` values, as
    Starlette's ``Headers.get`` reads them (ASGI names are lower case), in one pass."""
    host: str | None = None
    fetch_site: str | None = None
    origin: str | None = None
    authorization: str | None = None
    for name, value in raw:
        if name == b"host":
            if host is None:
                host = value.decode("latin-1")
        elif name == b"sec-fetch-site":
            if fetch_site is None:
                fetch_site = value.decode("latin-1")
        elif name == b"origin":
            if origin is None:
                origin = value.decode("latin-1")
        elif name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
    return host or "", fetch_site, origin, authorization


@dataclass(frozen=True)
class Refusal:
    """A guard's answer: its status and its JSON envelope, encoded once."""

    status: int
    code: str
    message: str

    @functools.cached_property
    def body(self) -> bytes:
        error = {"code": self.code, "message": self.message}
        return json.dumps({"ok": False, "error": error}).encode()

    async def __call__(self, send: Send) -> None:
        body = self.body
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


HOST_REFUSED = Refusal(
    400,
    "host_not_allowed",
    "the Host header names a host this service does not answer to; "
    "add it to server.trusted_hosts or set server.public_url",
)
CROSS_SITE_REFUSED = Refusal(
    403,
    "cross_site_refused",
    "cross-site browser requests are refused while server.auth_token is not set",
)


_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\ssrc=)(?:\s[^>]*)?>(.*?)</script>", re.S | re.I)
_INLINE_HANDLER = re.compile(r"""\son[a-z]+=(?:"([^"]*)"|'([^']*)')""", re.I)


def _sha256_source(code: str) -> str:
    digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
    return f"'sha256-{digest}'"


@functools.cache
def page_headers(path: Path) -> dict[str, str]:
    """:func:`page_security_headers` of a static page, read once."""
    return page_security_headers(path.read_text(encoding="utf-8"))


def page_security_headers(html: str) -> dict[str, str]:
    """Content-Security-Policy and framing headers for a page of ours.

    Only the page's own inline scripts (by hash) run; it may talk to this origin only and
    may not be framed (clickjacking of the cancel and delete buttons).
    """
    scripts = [_sha256_source(code) for code in _INLINE_SCRIPT.findall(html)]
    handlers = [_sha256_source(a or b) for a, b in _INLINE_HANDLER.findall(html)]
    script_src = " ".join(
        ["'self'", *scripts, *(["'unsafe-hashes'", *handlers] if handlers else [])]
    )
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src {script_src}",
            "style-src 'self' 'unsafe-inline'",
            "connect-src 'self'",
            "img-src 'self' data:",
            "media-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
