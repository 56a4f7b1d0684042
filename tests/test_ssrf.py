"""The SSRF guard and the streaming fetcher, against real local servers (loopback only)."""

from __future__ import annotations

import asyncio
import ipaddress

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.servers import serve_in_thread
from webhook_poller.errors import DownloadError, UnsafeURL
from webhook_poller.net import (
    build_client,
    check_url,
    is_forbidden_address,
    is_video_content_type,
    open_stream,
    redact_url,
)

FORBIDDEN = [
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "127.0.0.1",
    "127.8.8.8",
    "::1",
    "fe80::1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "fd00::1",
    "2002:7f00:1::",
    "64:ff9b::a00:1",
    "fd00:ec2::254",
    "198.18.0.1",
    "240.0.0.1",
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "100.128.0.1"]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_forbidden_addresses(address):
    """Private, loopback, link-local, CGNAT, metadata and wrapped IPv4 forms are refused."""
    assert is_forbidden_address(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_allowed(address):
    """Ordinary public addresses pass (no connection is made to them here)."""
    assert is_forbidden_address(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a",
        "http://user:pw@example.com/a",
        "http:///nohost",
        "http://localhost/x",
        "http://api.localhost/x",
        "http://db.internal/x",
        "http://printer.local/",
        "http://[::1]:80/",
        "http://10.0.0.1/x?token=SECRET",
        "https://example.com/" + "a" * 2100,
        "http://example.com:99999/",
    ],
)
def test_check_url_refuses(url):
    """Wrong schemes, credentials, local names and private literals are refused at intake."""
    with pytest.raises(UnsafeURL) as err:
        check_url(url, allow_private=False)
    assert "SECRET" not in str(err.value) and "pw" not in str(err.value)


def test_check_url_accepts_public_and_private_when_allowed():
    """Public URLs pass; private ones pass only when the config allows them."""
    check_url("https://n8n.example.com/webhook-waiting/5?signature=a%2Fb", allow_private=False)
    check_url("http://127.0.0.1:8080/x", allow_private=True)


def test_redact_url_drops_secrets():
    """Logged URLs lose user-info, query and fragment."""
    assert redact_url("https://u:p@h.io:8443/a/b?sig=x#f") == "https://h.io:8443/a/b"


def test_video_content_types():
    """Video and generic binary types are accepted, HTML, JSON and images are not."""
    assert is_video_content_type("video/mp4") and is_video_content_type(None)
    assert is_video_content_type("application/octet-stream")
    assert not is_video_content_type("text/html; charset=utf-8")
    assert not is_video_content_type("image/png")


async def _drip(request: Request) -> StreamingResponse:
    async def body():
        for _ in range(50):
            yield b"x" * 10
            await asyncio.sleep(0.1)

    return StreamingResponse(body(), media_type="video/mp4")


async def _chunked(request: Request) -> StreamingResponse:
    async def body():
        for _ in range(20):
            yield b"\x00" * 1000

    return StreamingResponse(body(), media_type="video/mp4")


def _app() -> Starlette:
    def status(code: int):
        async def handler(request: Request) -> Response:
            return Response(b"x", status_code=code, media_type="video/mp4")

        return handler

    async def loop(request: Request) -> Response:
        n = int(request.path_params["n"])
        return Response(status_code=302, headers={"location": f"/loop/{n + 1}"})

    async def to_metadata(request: Request) -> Response:
        return Response(status_code=302, headers={"location": "http://169.254.169.254/x"})

    async def ok(request: Request) -> Response:
        return Response(b"\x00" * 5000, media_type="video/mp4")

    async def html(request: Request) -> Response:
        return Response("<html></html>", media_type="text/html")

    return Starlette(
        routes=[
            Route("/ok", ok),
            Route("/html", html),
            Route("/drip", _drip),
            Route("/chunked", _chunked),
            Route("/loop/{n}", loop),
            Route("/meta", to_metadata),
            Route("/404", status(404)),
            Route("/500", status(500)),
        ]
    )


@pytest.fixture(scope="module")
def server():
    with serve_in_thread(_app()) as url:
        yield url


async def fetch(
    url: str, *, allow_private: bool = True, max_bytes: int = 10**6, deadline_s: float = 10
) -> bytes:
    async with build_client(allow_private=allow_private) as client:
        async with open_stream(
            client,
            url,
            max_bytes=max_bytes,
            deadline_s=deadline_s,
            allow_private=allow_private,
            accept=is_video_content_type,
        ) as download:
            return b"".join([c async for c in download.iter_bytes()])


async def test_loopback_refused_unless_allowed(server):
    """The same local server is refused by default and reachable when allowed."""
    assert len(await fetch(f"{server}/ok")) == 5000
    with pytest.raises(UnsafeURL):
        await fetch(f"{server}/ok", allow_private=False)


async def test_connect_level_guard_catches_names_that_resolve_inward(server):
    """A name resolving to loopback is refused when connecting, even past the syntax check."""
    port = server.rsplit(":", 1)[1]
    async with build_client(allow_private=False) as client:
        with pytest.raises(httpx.ConnectError, match="loopback"):
            await client.get(f"http://localhost:{port}/ok")


async def test_redirect_hops_are_checked_and_bounded(server):
    """A redirect to a metadata address is refused; endless redirects stop at the limit."""
    with pytest.raises(UnsafeURL):
        async with build_client(allow_private=False) as client:
            # the first hop is checked too: loopback itself is refused before any request
            async with open_stream(
                client, f"{server}/meta", max_bytes=10, deadline_s=5, allow_private=False
            ):
                pass
    with pytest.raises(DownloadError, match="redirects"):
        await fetch(f"{server}/loop/0")


async def test_size_cap_by_header_and_by_stream(server):
    """Too-large bodies are refused by Content-Length and while streaming a chunked body."""
    with pytest.raises(DownloadError) as declared:
        await fetch(f"{server}/ok", max_bytes=100)
    assert not declared.value.transient
    with pytest.raises(DownloadError) as streamed:
        await fetch(f"{server}/chunked", max_bytes=5000)
    assert "limit" in str(streamed.value)


async def test_status_and_type_classification(server):
    """404 is final, 500 transient, HTML refused as not a video."""
    with pytest.raises(DownloadError) as missing:
        await fetch(f"{server}/404")
    assert not missing.value.transient
    with pytest.raises(DownloadError) as broken:
        await fetch(f"{server}/500")
    assert broken.value.transient
    with pytest.raises(DownloadError, match="not a video"):
        await fetch(f"{server}/html")


async def test_whole_download_deadline(server):
    """A body that drips slower than the deadline allows is cut off as transient."""
    with pytest.raises(DownloadError) as slow:
        await fetch(f"{server}/drip", deadline_s=0.5)
    assert slow.value.transient
