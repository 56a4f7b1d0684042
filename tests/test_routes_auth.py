"""Auth by default (issue 11, item 3): every route of the built app needs the bearer token
unless it is on one explicit public list, so a route added without a thought is protected."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Match, Mount, Route

from tests.support.servers import serve_in_thread
from tests.support.service import base_config
from webhook_poller.app import create_app
from webhook_poller.config import settings_from_mapping
from webhook_poller.routes import PUBLIC, Auth
from webhook_poller.routes.gate import find_route

TOKEN = "a-token-for-the-route-walk"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

#: What may be called without the token: (method, route template). Written out by hand,
#: so that opening a route takes a change here too.
EXPECTED_PUBLIC = {
    ("GET", "/"),
    ("HEAD", "/"),
    ("GET", "/healthz"),
    ("HEAD", "/healthz"),
    ("GET", "/readyz"),
    ("HEAD", "/readyz"),
    ("GET", "/openapi.json"),
    ("HEAD", "/openapi.json"),
    ("POST", "/callbacks/{provider}"),  # the provider's signature
    ("POST", "/telegram/webhook"),  # Telegram's secret-token header
    ("GET", "/providers/demo/sample.mp4"),  # a plug-in's own route
    ("HEAD", "/providers/demo/sample.mp4"),
}
#: Open with a signed link, else the token.
EXPECTED_SIGNED = {
    ("GET", "/jobs/{job_id}/videos/{index}"),
    ("HEAD", "/jobs/{job_id}/videos/{index}"),
    ("GET", "/jobs/{job_id}/download.zip"),
    ("HEAD", "/jobs/{job_id}/download.zip"),
}
PARAMS = {"job_id": "job_missing", "index": "0", "provider": "demo", "session_id": "s1"}


def walk(app: Starlette) -> list[tuple[str, str]]:
    """Every (method, path template) the app serves, plug-in mounts included."""
    found: list[tuple[str, str]] = []
    for route in app.routes:
        if isinstance(route, Mount):
            for sub in route.routes:
                assert isinstance(sub, Route)
                found += [(m, route.path + sub.path) for m in sorted(sub.methods or ())]
        else:
            assert isinstance(route, Route), route
            found += [(m, route.path) for m in sorted(route.methods or ())]
    return found


def concrete(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], template)


def asks_for_token(client: httpx.Client, method: str, path: str, **kwargs: object) -> bool:
    """Whether the answer is the gate's 401 (``WWW-Authenticate: Bearer``)."""
    with client.stream(method, path, **kwargs) as resp:  # type: ignore[arg-type]
        return resp.status_code == 401 and resp.headers.get("www-authenticate") == "Bearer"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Starlette, httpx.Client]]:
    """The real app with a token, served on 127.0.0.1, plus one route nobody declared."""
    tmp_path = tmp_path_factory.mktemp("routes")
    settings = settings_from_mapping(base_config(tmp_path, server={"auth_token": TOKEN}))
    app = create_app(settings, run_scheduler=False)

    async def undeclared(request: object) -> JSONResponse:
        return JSONResponse({"ok": True})

    app.router.routes.append(Route("/a-route-someone-forgot", undeclared, methods=["GET"]))
    with (
        serve_in_thread(app, port=settings.server.port) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield app, client


def test_every_route_but_the_public_list_answers_401_without_the_token(served):
    """Walk every route and method: all ask for the token except exactly the public list."""
    app, client = served
    routes = walk(app)
    assert len(routes) > 30, routes
    open_routes = {(m, t) for m, t in routes if not asks_for_token(client, m, concrete(t))}
    assert open_routes == EXPECTED_PUBLIC
    for method, template in EXPECTED_SIGNED:
        assert (method, template) in routes


def test_the_token_opens_every_protected_route(served):
    """With the token no route answers the gate's 401, so the walk above measures the gate."""
    app, client = served
    for method, template in walk(app):
        assert not asks_for_token(client, method, concrete(template), headers=AUTH), template


def test_a_valid_signed_link_passes_the_gate_without_the_token(served):
    """A signed link to a job that does not exist reaches the handler (404), not the 401."""
    app, client = served
    links = app.state.services.links
    video = httpx.URL(links.video_url("job_missing", 0, 120))
    resp = client.get(video.path, params=video.params)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    zipped = httpx.URL(links.path_url("/jobs/job_missing/download.zip", 120))
    resp = client.get(zipped.path, params=zipped.params)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    forged = client.get("/jobs/job_missing/download.zip", params={"expires": "1", "sig": "x"})
    assert forged.status_code == 401 and "www-authenticate" not in forged.headers


def test_the_gate_answers_with_the_error_envelope(served):
    """The gate's 401 is the same JSON body and header the handlers used to send."""
    _, client = served
    resp = client.post("/poll-video", json={"sessionId": "s", "taskId": "t", "model": "demo"})
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    assert resp.json() == {
        "ok": False,
        "error": {"code": "unauthorized", "message": "missing or wrong bearer token"},
    }
    wrong = client.get("/jobs", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and TOKEN not in wrong.text


def test_unknown_paths_and_methods_keep_the_routers_answers(served):
    """404 and 405 (with Allow) come before auth, as they did when handlers checked it."""
    _, client = served
    assert client.get("/no-such-path").status_code == 404
    resp = client.put("/jobs/job_missing")
    assert resp.status_code == 405 and resp.headers["allow"] == "DELETE, GET, HEAD"


def test_the_declared_public_list_is_the_expected_one():
    """``PUBLIC`` names exactly the public and signed paths the walk expects."""
    expected = {t for _, t in EXPECTED_PUBLIC | EXPECTED_SIGNED}
    expected = {t.replace("/demo/sample.mp4", "/{name}") for t in expected}
    assert set(PUBLIC) == expected
    signed = {t for t, auth in PUBLIC.items() if auth is Auth.SIGNED}
    assert signed == {t for _, t in EXPECTED_SIGNED}


def test_the_gates_fast_match_picks_the_routers_route(served):
    """The gate's regex shortcut finds the same route as Starlette's ``Route.matches``."""
    app, _ = served
    served_paths = [(m, concrete(t)) for m, t in walk(app)]
    unserved = [("PUT", "/jobs/job_x"), ("GET", "/nope"), ("GET", "/jobs/"), ("POST", "/")]
    for method, path in served_paths + unserved:
        for root_path in ("", "/behind-a-proxy"):
            scope = {"type": "http", "method": method, "path": root_path + path}
            scope.update(root_path=root_path, app=app)
            slow = next((r for r in app.routes if r.matches(scope)[0] is Match.FULL), None)
            found = find_route(scope)
            assert (found[0] if found else None) is slow, (method, root_path, path)
            assert (slow is not None) == ((method, path) in served_paths)


def test_the_spec_marks_public_exactly_the_public_routes(served):
    """``/openapi.json`` drops the bearer requirement on the same operations the gate opens."""
    _, client = served
    spec = client.get("/openapi.json").json()
    assert spec["security"] == [{"bearer": []}]
    in_spec = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if isinstance(operation, dict) and operation.get("security") == []
    }
    gate_open = {(m, t) for m, t in EXPECTED_PUBLIC if m != "HEAD" and "/providers/" not in t}
    assert in_spec == gate_open
