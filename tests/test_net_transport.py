"""The aiohttp-backed guarded transport keeps every guarantee of the httpcore one it replaced.

aiohttp does not call its resolver for IP literals, so the transport checks those itself;
these tests call the client directly (no :func:`check_url` in front, as the webhook
notifier does) against a real server on 127.0.0.1 that counts what reaches it.
"""

from __future__ import annotations

import socket

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.support.servers import serve_in_thread
from webhook_poller.net import HostAllowlist, build_client, build_provider_client

hits: list[str] = []


async def ok(request: Request) -> PlainTextResponse:
    hits.append(request.url.path)
    return PlainTextResponse("ok", headers={"set-cookie": "session=abc; Path=/"})


@pytest.fixture
def server():
    hits.clear()
    with serve_in_thread(
        Starlette(routes=[Route("/{p:path}", ok, methods=["GET", "POST"])])
    ) as url:
        yield url


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]"])
async def test_ip_literal_pointing_inward_is_refused_before_any_byte_is_sent(server, host):
    """An IP literal (which aiohttp never resolves) is checked by the transport itself."""
    port = server.rsplit(":", 1)[1]
    async with build_client(allow_private=False) as client:
        with pytest.raises(httpx.ConnectError, match="loopback") as caught:
            await client.post(f"http://{host}:{port}/hook", content=b"{}")
    assert type(caught.value.__cause__).__name__ == "RefusedAddress"
    assert hits == []


async def test_allowlisted_host_and_port_reach_the_server(server):
    """security.allowed_hosts lets the named private host:port through, and only that one."""
    port = int(server.rsplit(":", 1)[1])
    allowed = HostAllowlist([f"127.0.0.1:{port}", f"localhost:{port}"])
    async with build_client(allow_private=False, allowed=allowed) as client:
        assert (await client.get(f"http://127.0.0.1:{port}/a")).text == "ok"
        assert (await client.get(f"http://localhost:{port}/b")).text == "ok"
        with pytest.raises(httpx.ConnectError, match=r"security\.allowed_hosts"):
            await client.get(f"http://127.0.0.2:{port}/c")
    assert hits == ["/a", "/b"]


async def test_a_refused_connection_is_a_connect_error_not_a_timeout():
    """httpx-aiohttp maps every connection error to ConnectTimeout; ours says what happened."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for client in (build_client(allow_private=True), build_provider_client(concurrency=4)):
        async with client:
            with pytest.raises(httpx.ConnectError) as caught:
                await client.get(f"http://127.0.0.1:{port}/")
        assert not isinstance(caught.value, httpx.TimeoutException)


async def test_provider_client_keeps_no_cookies_in_aiohttp(server):
    """A cookie a provider sets is not stored on aiohttp's side (httpx keeps its own jar)."""
    async with build_provider_client(concurrency=4) as client:
        response = await client.get(f"{server}/x")
        transport = client._transport
        session = transport.client  # type: ignore[attr-defined]
        assert response.text == "ok"
        assert (
            len(session.cookie_jar) == 0 and type(session.cookie_jar).__name__ == "DummyCookieJar"
        )
