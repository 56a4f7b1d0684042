"""Outbound HTTP for URLs that come from outside, behind a server-side request forgery guard.

Two layers:

* :func:`check_url` is a cheap syntax check (no DNS) used at intake: http(s) only, no
  credentials in the URL, and no loopback/private IP literals or local names.
* The guarded transport checks the address actually connected to. It is an aiohttp pool
  behind the httpx API (``httpx-aiohttp``: a third of httpcore's CPU per request) whose
  resolver refuses a name if any resolved address is forbidden; aiohttp connects to the
  addresses the resolver returned, so a DNS answer that changes between check and connect
  (rebinding) cannot slip through. IP literals, which aiohttp does not resolve, are checked
  before the request is handed over. TLS still verifies the certificate against the host
  name: aiohttp starts TLS with ``server_hostname`` taken from the URL, not from the
  address connected to (aiohttp/connector.py ``_create_direct_connection``).

Redirects are followed by :func:`open_stream` by hand, each hop checked again. What this
module leaves to others: what to do with the bytes (blob storage) and what counts as a
retryable failure for a job (the pipeline).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import re
import socket
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import SplitResult, urljoin, urlsplit

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from httpx_aiohttp import AiohttpTransport

from .errors import DownloadError, UnsafeURL


def retry_after_s(response: httpx.Response, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (never negative), from delta-seconds or an HTTP date; None
    when absent or unreadable. The one parser every adapter and notifier uses."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain")
MAX_URL_LENGTH = 2048
#: The config key that lets named private hosts through; every refusal names it.
ALLOW_KEY = "security.allowed_hosts"
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)", re.I)


class HostAllowlist:
    """``security.allowed_hosts``: private targets the operator named (self-hosted n8n).

    Entries are host names (``n8n``, any port), ``host:port`` (``localhost:5678``, that
    port only) or CIDR ranges (``10.0.0.0/8``, any port). A name entry lets that name
    resolve to a private address; a CIDR entry lets any resolved address inside it through.
    Cloud-metadata addresses stay refused whatever is listed.
    """

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.names: dict[str, int | None] = {}
        self.pairs: set[tuple[str, int]] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for raw in entries:
            self._add(str(raw).strip().lower())

    def _add(self, entry: str) -> None:
        if not entry:
            raise ValueError("an empty entry")
        if "/" in entry:
            self.networks.append(ipaddress.ip_network(entry, strict=False))
            return
        host, port = entry, None
        if entry.startswith("["):  # [::1]:8080 or [::1]
            host, _, rest = entry[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else None
        elif entry.count(":") == 1:
            host, _, text = entry.partition(":")
            port = int(text)
        host = host.rstrip(".")
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range")
        if port is None:
            self.names[host] = None
        else:
            self.pairs.add((host, port))

    def __bool__(self) -> bool:
        return bool(self.names or self.pairs or self.networks)

    def permits(self, host: str, port: int, ip: IPAddress | None = None) -> bool:
        """Whether ``host:port`` (resolved to ``ip``, when known) was named by the operator."""
        if ip is not None and _unwrap(ip) in _METADATA:
            return False
        name = host.rstrip(".").lower().strip("[]")
        if name in self.names or (name, port) in self.pairs:
            return True
        if ip is None:
            try:
                ip = ipaddress.ip_address(name)
            except ValueError:
                return False
        return any(_unwrap(ip) in net or ip in net for net in self.networks)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _unwrap(ip: IPAddress) -> IPAddress:
    """See through IPv6 forms that carry an IPv4 address (mapped, 6to4, NAT64)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in ipaddress.ip_network("64:ff9b::/96"):
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def is_forbidden_address(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be reached from here, or None when it is a public address."""
    ip = _unwrap(ip)
    if ip in _METADATA:
        return "cloud metadata"
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "carrier-grade NAT"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


def redact_url(url: str) -> str:
    """scheme://host[:port]/path: no user-info, query or fragment (for logs and errors)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if _safe_port(parts) else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _safe_port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


def _check_numeric_host(host: str) -> None:
    """Refuse IPv4 spellings other than the canonical dotted quad (``0177.0.0.1``,
    ``127.000.000.001``, ``①②⑦.0.0.1``, ``0x7f.1``): resolvers and URL parsers disagree on
    them, so they are refused rather than guessed. A host "is numeric" when its last label
    is a number, as in the WHATWG URL standard (no DNS top-level name is one)."""
    folded = unicodedata.normalize("NFKC", host).lower()
    last = folded.rstrip(".").rsplit(".", 1)[-1]
    if not _NUMERIC_LABEL.fullmatch(last):
        return
    try:
        canonical = str(ipaddress.IPv4Address(folded))
    except ValueError:
        canonical = ""
    if canonical != host:
        raise UnsafeURL(f"{host!r} is not a canonical IP address; write it as a dotted quad")


def check_url(url: str, *, allow_private: bool, allowed: HostAllowlist | None = None) -> None:
    """Refuse URLs we will never call; raises UnsafeURL naming the host, never the query.

    Also refuses what httpx cannot send (an invalid host, a non-canonical IP), so such a URL
    is turned away at intake instead of failing every delivery attempt later.
    """
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURL(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise UnsafeURL("the URL cannot be parsed") from None
    if parts.hostname and ":" not in parts.hostname:
        _check_numeric_host(parts.hostname.rstrip(".").lower())
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError, UnicodeError):
        raise UnsafeURL("the URL cannot be parsed") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL(f"only http and https URLs are allowed, not {parts.scheme or 'none'!r}")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UnsafeURL("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL(f"the URL for {host} carries credentials; they are not allowed")
    if allow_private:
        return
    port = _safe_port(parts) or _default_port(parts.scheme)
    if allowed is not None and allowed.permits(host, port):
        return
    if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES):
        raise UnsafeURL(f"{host} is a local name; {_allow_hint(host, port)}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return
    reason = is_forbidden_address(ip)
    if reason:
        raise UnsafeURL(f"{host} is a {reason} address; {_allow_hint(host, port)}")


def _allow_hint(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"to call it anyway, add {shown}:{port} to {ALLOW_KEY}"


class RefusedAddress(Exception):
    """Raised inside the transport when the guard refuses a host; :func:`open_stream` turns
    it into UnsafeURL, and a notifier posting through the guarded client tells it from a
    plain connection failure by this class."""


class GuardedResolver(AbstractResolver):
    """aiohttp's threaded resolver, refusing a name when any address it resolves to is
    forbidden. aiohttp connects to the addresses this returns (and caches them), so the
    address checked is the address connected to."""

    def __init__(self, allowed: HostAllowlist | None = None) -> None:
        self.allowed = allowed or HostAllowlist()
        self._inner: ThreadedResolver | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = ThreadedResolver()  # needs the running loop
        results = await self._inner.resolve(host, port, family)
        # Refuse when ANY answer is forbidden: a name that also points inward is not one we
        # want to half-trust, and it keeps the rule independent of address order.
        for result in results:
            ip = ipaddress.ip_address(result["host"].split("%")[0])
            _check_address(host, port, ip, self.allowed)
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def _check_address(host: str, port: int, ip: IPAddress, allowed: HostAllowlist) -> None:
    reason = is_forbidden_address(ip)
    if reason and not allowed.permits(host, port, ip):
        raise RefusedAddress(f"{host} resolves to a {reason} address; {_allow_hint(host, port)}")


class GuardedTransport(AiohttpTransport):
    """An aiohttp connection pool behind the httpx API (``httpx-aiohttp``), whose names
    resolve through :class:`GuardedResolver`. aiohttp skips the resolver for IP literals,
    so those are checked here before the request is handed over. TLS verifies the
    certificate against the URL's host name (aiohttp's ``server_hostname``), not the IP."""

    def __init__(
        self, *, allow_private: bool, limits: httpx.Limits, allowed: HostAllowlist | None = None
    ) -> None:
        self.allow_private = allow_private
        self.allowed = allowed or HostAllowlist()
        super().__init__(limits=limits, trust_env=False, client=self._new_session)

    def _new_session(self) -> aiohttp.ClientSession:
        resolver = None if self.allow_private else GuardedResolver(self.allowed)
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
            resolver=resolver,
        )
        # httpx keeps the cookie jar (if any); a second one in aiohttp is pure cost
        return aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        refused: RefusedAddress | None = None
        try:
            if not self.allow_private:
                self._check_literal(request.url)
            return await super().handle_async_request(request)
        except RefusedAddress as exc:
            refused = exc
        except httpx.TransportError as exc:
            better = _httpx_class(exc.__cause__)
            if better is None or isinstance(exc, better):
                raise
            raise better(str(exc), request=request) from exc.__cause__
        # raised outside the except block so the refusal is the only thing chained to it
        raise httpx.ConnectError(str(refused), request=request) from refused

    def _check_literal(self, url: httpx.URL) -> None:
        host = url.host
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return
        port = url.port or _default_port(url.scheme)
        _check_address(host, port, ip, self.allowed)


def _httpx_class(cause: BaseException | None) -> type[httpx.TransportError] | None:
    """The httpx error httpcore would have raised. httpx-aiohttp maps every
    ``ClientConnectionError`` (a refused connection, a server that hung up) to
    ``ConnectTimeout``; messages and retry decisions name the real failure."""
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return None  # a timeout: the mapping already says so
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError
    if isinstance(cause, aiohttp.ClientConnectionError):
        return httpx.ReadError
    return None


def build_client(
    *,
    allow_private: bool,
    timeout_s: float = 30.0,
    user_agent: str = "webhook-poller",
    allowed: HostAllowlist | None = None,
) -> httpx.AsyncClient:
    """The shared client for outside URLs: guarded, redirects not followed automatically."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    return httpx.AsyncClient(
        transport=GuardedTransport(allow_private=allow_private, limits=limits, allowed=allowed),
        timeout=httpx.Timeout(timeout_s, connect=10.0),
        follow_redirects=False,
        headers={"User-Agent": user_agent},
    )


def build_provider_client(*, concurrency: int, timeout_s: float = 30.0) -> httpx.AsyncClient:
    """The client for the configured providers' APIs (operator-chosen URLs, so unguarded):
    an aiohttp pool sized to the polls that can run at once."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(
        transport=GuardedTransport(allow_private=True, limits=limits),
        timeout=httpx.Timeout(timeout_s, connect=10.0),
        headers={"User-Agent": "webhook-poller"},
    )


def is_video_content_type(content_type: str | None) -> bool:
    """True for video/* and the generic binary types CDNs often use (or none at all)."""
    if not content_type:
        return True
    base = content_type.split(";")[0].strip().lower()
    return base.startswith("video/") or base in (
        "application/octet-stream",
        "binary/octet-stream",
        "application/mp4",
    )


@dataclass
class Download:
    """An open response: its facts and a byte iterator that enforces the size cap."""

    content_type: str | None
    content_length: int | None
    final_url: str
    _response: httpx.Response
    _max_bytes: int

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        seen = 0
        try:
            async for chunk in self._response.aiter_bytes(65536):
                seen += len(chunk)
                if seen > self._max_bytes:
                    raise DownloadError(
                        f"the video is larger than the {self._max_bytes}-byte limit",
                        transient=False,
                    )
                yield chunk
        except httpx.TransportError as exc:
            raise DownloadError(
                f"the download from {redact_url(self.final_url)} broke off: {type(exc).__name__}",
                transient=True,
            ) from exc


_REDIRECTS = (301, 302, 303, 307, 308)


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    deadline_s: float,
    allow_private: bool,
    max_redirects: int = 5,
    headers: Mapping[str, str] | None = None,
    accept: Callable[[str | None], bool] | None = None,
    allowed: HostAllowlist | None = None,
) -> AsyncIterator[Download]:
    """GET ``url`` with every hop checked; yield a :class:`Download` to stream from.

    Raises UnsafeURL when the guard refuses, DownloadError(transient=True) for timeouts,
    connection errors, 5xx and 429, and DownloadError(transient=False) for other 4xx, too
    large or unwanted content. The whole thing, body included, must finish in
    ``deadline_s``.
    """
    try:
        async with asyncio.timeout(deadline_s):
            current = url
            for _hop in range(max_redirects + 1):
                check_url(current, allow_private=allow_private, allowed=allowed)
                request = client.build_request("GET", current, headers=dict(headers or {}))
                try:
                    response = await client.send(request, stream=True)
                except RefusedAddress as exc:
                    raise UnsafeURL(str(exc)) from None
                except httpx.TransportError as exc:
                    cause = exc.__context__ or exc.__cause__
                    if isinstance(cause, RefusedAddress):
                        raise UnsafeURL(str(cause)) from None
                    raise DownloadError(
                        f"could not fetch {redact_url(current)}: {type(exc).__name__}",
                        transient=True,
                    ) from exc
                try:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        current = urljoin(current, response.headers["location"])
                        continue
                    _raise_for_status(response, current)
                    ctype = response.headers.get("content-type")
                    length = response.headers.get("content-length")
                    size = int(length) if length and length.isdigit() else None
                    if size is not None and size > max_bytes:
                        raise DownloadError(
                            f"the video is {size} bytes, over the {max_bytes}-byte limit",
                            transient=False,
                        )
                    if accept is not None and not accept(ctype):
                        raise DownloadError(
                            f"{redact_url(current)} answered {ctype}, not a video",
                            transient=False,
                        )
                    yield Download(ctype, size, current, response, max_bytes)
                    return
                finally:
                    await response.aclose()
            raise DownloadError(f"more than {max_redirects} redirects", transient=False)
    except TimeoutError:
        raise DownloadError(
            f"the download from {redact_url(url)} took longer than {deadline_s:g} s",
            transient=True,
        ) from None


def _raise_for_status(response: httpx.Response, url: str) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    where = redact_url(url)
    if status in (408, 425, 429) or status >= 500:
        raise DownloadError(f"{where} answered HTTP {status}", transient=True, status=status)
    raise DownloadError(f"{where} answered HTTP {status}", transient=False, status=status)
