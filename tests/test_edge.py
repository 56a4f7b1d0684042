"""The HTTP edge in one ASGI pass (``routes/edge.py``, issue 15 aim 1): the answers Starlette's
layers gave (error envelope, 500 without traceback, exceptions after the answer started,
relative self-redirects, body reading), and the server's ``send`` reaching the handler."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support.service import base_config
from webhook_poller.app import create_app
from webhook_poller.config import settings_from_mapping
from webhook_poller.errors import RequestRejected

TOKEN = "edge-token"
HOST = (b"host", b"127.0.0.1:8000")
AUTH = (b"authorization", f"Bearer {TOKEN}".encode())
SEEN: dict[str, Any] = {}


async def crash(request: Request) -> Response:
    raise RuntimeError("a secret in the traceback")


async def reject(request: Request) -> Response:
    raise RequestRejected("refused here", field="f", code="edge_code", status_code=409)


async def teapot(request: Request) -> Response:
    raise HTTPException(418, "teapot")


async def to_self(request: Request) -> Response:
    return RedirectResponse(f"http://{request.headers['host']}/jobs?x=1", status_code=302)


async def elsewhere(request: Request) -> Response:
    return RedirectResponse("https://bucket.example/v.mp4?sig=1", status_code=302)


def sync_endpoint(request: Request) -> Response:
    return JSONResponse({"sync": True})


async def _one_then(exc: Exception) -> AsyncIterator[bytes]:
    yield b"one"
    raise exc


async def late_crash(request: Request) -> Response:
    return StreamingResponse(_one_then(RuntimeError("late")))


async def late_reject(request: Request) -> Response:
    return StreamingResponse(_one_then(RequestRejected("late")))


async def params(request: Request) -> Response:
    SEEN["send"] = request._send
    return JSONResponse({"params": request.path_params, "route": request.scope["route"].path})


async def echo(request: Request) -> Response:
    api = request.app.state.api
    return Response(await api.read_body(request, limit=8), media_type="text/plain")


EXTRA = [
    Route("/t/crash", crash),
    Route("/t/reject", reject),
    Route("/t/teapot", teapot),
    Route("/t/self", to_self),
    Route("/t/elsewhere", elsewhere),
    Route("/t/sync", sync_endpoint),
    Route("/t/late-crash", late_crash),
    Route("/t/late-reject", late_reject),
    Route("/t/p/{name}/{n:int}", params),
    Route("/t/echo", echo, methods=["POST"]),
]


def _app(tmp_path: Any, **server: Any) -> Starlette:
    settings = settings_from_mapping(base_config(tmp_path, port=8000, server=server))
    app = create_app(settings, run_scheduler=False)
    app.router.routes.extend(EXTRA)
    return app


async def call(
    app: ASGIApp,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes] | None = None,
    send: Send | None = None,
) -> tuple[list[dict[str, Any]], BaseException | None]:
    """The messages the app sent and what it raised to the server, if anything."""
    todo = list(chunks or [b""])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if todo:
            chunk = todo.pop(0)
            if chunk == b"<disconnect>":
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": chunk, "more_body": bool(todo)}
        await asyncio.sleep(5)
        return {"type": "http.disconnect"}

    async def record(message: dict[str, Any]) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    raised: BaseException | None = None
    try:
        await app(scope, receive, send or record)  # type: ignore[arg-type]
    except Exception as exc:
        raised = exc
    return sent, raised


def answer(sent: list[dict[str, Any]]) -> tuple[int, dict[bytes, bytes], bytes]:
    start, *bodies = sent
    body = b"".join(m.get("body", b"") for m in bodies)
    return start["status"], dict(start["headers"]), body


@pytest.fixture
async def app(tmp_path: Any) -> AsyncIterator[Starlette]:
    app = _app(tmp_path, auth_token=TOKEN)
    async with app.router.lifespan_context(app):
        yield app


async def test_a_crash_answers_the_json_500_and_goes_on_to_the_server(app, capsys):
    sent, raised = await call(app, "GET", "/t/crash", [HOST, AUTH])
    status, headers, body = answer(sent)
    assert status == 500 and headers[b"content-type"] == b"application/json"
    assert json.loads(body) == {
        "ok": False,
        "error": {"code": "internal_error", "message": "internal error"},
    }
    assert isinstance(raised, RuntimeError)  # the server logs it, as ServerErrorMiddleware let it
    assert "request_crashed" in capsys.readouterr().out


async def test_refusals_and_http_errors_answer_the_envelope(app):
    status, _, body = answer((await call(app, "GET", "/t/reject", [HOST, AUTH]))[0])
    assert status == 409
    assert json.loads(body)["error"] == {
        "code": "edge_code",
        "message": "refused here",
        "field": "f",
    }
    sent, raised = await call(app, "GET", "/t/teapot", [HOST, AUTH])
    assert raised is None and answer(sent)[0] == 418
    assert json.loads(answer(sent)[2])["error"] == {"code": "bad_request", "message": "teapot"}


async def test_an_error_after_the_answer_started_sends_no_second_answer(app):
    sent, raised = await call(app, "GET", "/t/late-crash", [HOST, AUTH])
    assert [m["type"] for m in sent].count("http.response.start") == 1
    assert answer(sent)[0] == 200 and isinstance(raised, RuntimeError)
    sent, raised = await call(app, "GET", "/t/late-reject", [HOST, AUTH])
    assert [m["type"] for m in sent].count("http.response.start") == 1
    assert isinstance(raised, RuntimeError)
    assert isinstance(raised.__cause__, RequestRejected)  # as wrap_app_handling_exceptions


async def test_a_handlers_redirect_to_our_host_is_made_relative(app):
    for host in (HOST, (b"host", b"[x")):  # "[x" is no URL netloc: it used to crash (500)
        sent, raised = await call(app, "GET", "/t/self", [host, AUTH])
        status, headers, _ = answer(sent)
        assert raised is None and status == 302 and headers[b"location"] == b"/jobs?x=1"
    status, headers, _ = answer((await call(app, "GET", "/t/elsewhere", [HOST, AUTH]))[0])
    assert headers[b"location"] == b"https://bucket.example/v.mp4?sig=1"


async def test_the_routers_answers_are_kept(app):
    status, headers, _ = answer((await call(app, "GET", "/jobs/", [HOST]))[0])
    assert status == 307 and headers[b"location"] == b"/jobs"
    status, headers, body = answer((await call(app, "PUT", "/jobs/job_x", [HOST]))[0])
    assert status == 405 and headers[b"allow"] == b"DELETE, GET, HEAD"
    assert json.loads(body)["error"]["code"] == "method_not_allowed"
    status, _, body = answer((await call(app, "GET", "/nowhere", [HOST]))[0])
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
    status, headers, _ = answer((await call(app, "GET", "/t/sync", [HOST]))[0])
    assert status == 401 and headers[b"www-authenticate"] == b"Bearer"
    status, _, body = answer((await call(app, "GET", "/t/sync", [HOST, AUTH]))[0])
    assert status == 200 and json.loads(body) == {"sync": True}


async def test_the_handler_gets_the_servers_send_and_converted_params(app):
    async def server_send(message: dict[str, Any]) -> None:
        sent.append(message)

    sent: list[dict[str, Any]] = []
    await call(app, "GET", "/t/p/a/42", [HOST, AUTH], send=server_send)  # type: ignore[arg-type]
    assert SEEN["send"] is server_send  # no layer wrapped it on the way
    status, _, body = answer(sent)
    assert status == 200
    assert json.loads(body) == {"params": {"name": "a", "n": 42}, "route": "/t/p/{name}/{n:int}"}


async def test_the_body_is_read_from_receive_with_the_streams_rules(app):
    sent, _ = await call(app, "POST", "/t/echo", [HOST, AUTH], [b"ab", b"", b"cd"])
    assert answer(sent)[0] == 200 and answer(sent)[2] == b"abcd"
    sent, _ = await call(app, "POST", "/t/echo", [HOST, AUTH], [b"abcde", b"fghij"])
    assert answer(sent)[0] == 413
    assert json.loads(answer(sent)[2])["error"]["code"] == "payload_too_large"
    sent, raised = await call(app, "POST", "/t/echo", [HOST, AUTH], [b"ab", b"<disconnect>"])
    assert isinstance(raised, ClientDisconnect)


async def test_guard_and_gate_hold_with_another_middleware_in_the_stack(tmp_path):
    """A middleware added to the app runs, and the guard still answers first."""
    app = _app(tmp_path)
    seen: list[str] = []

    class Note:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                seen.append(scope["path"])
            await self.app(scope, receive, send)

    app.add_middleware(Note)
    async with app.router.lifespan_context(app):
        status, _, body = answer((await call(app, "GET", "/healthz", [HOST]))[0])
        assert status == 200 and seen == ["/healthz"]
        evil = (b"host", b"evil.example")
        status, _, body = answer((await call(app, "GET", "/jobs", [evil]))[0])
        assert status == 400 and json.loads(body)["error"]["code"] == "host_not_allowed"
        status, _, _ = answer((await call(app, "GET", "/t/crash", [HOST]))[0])
        assert status == 500 and seen == ["/healthz", "/t/crash"]
