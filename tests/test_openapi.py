"""The OpenAPI document covers every route, and schemathesis finds no 5xx (nor a status code,
content type or body the document does not declare) against the running service."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from tests.support.service import base_config, run_service
from webhook_poller.app import create_app
from webhook_poller.config import settings_from_mapping
from webhook_poller.openapi import openapi_document

TOKEN = "openapi-token-0123456789"
DOC_SETTINGS = settings_from_mapping(
    base_config(Path("/nonexistent"), port=8080, server={"auth_token": TOKEN})
)
schema = schemathesis.openapi.from_dict(openapi_document(DOC_SETTINGS)).exclude(
    path_regex=r"events$"  # event streams never end; tests/test_lifecycle.py covers them
)


def _openapi_path(path: str) -> str:
    path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: "{" + m.group(1) + "}", path)
    return path.replace("{job_id}", "{jobId}").replace("{session_id}", "{sessionId}")


def test_every_route_is_documented(tmp_path):
    app = create_app(settings_from_mapping(base_config(tmp_path)))
    doc = openapi_document(DOC_SETTINGS)
    for route in app.routes:
        if not isinstance(route, Route):
            continue  # provider mounts (the demo sample) are not part of the API
        path = _openapi_path(route.path)
        assert path in doc["paths"], f"{route.path} is missing from /openapi.json"
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in doc["paths"][path], f"{method} {route.path}"


def test_served_document_is_the_same(tmp_path):
    cfg = base_config(tmp_path, server={"auth_token": TOKEN})
    with run_service(cfg) as url:
        served = httpx.get(f"{url}/openapi.json")
        assert served.status_code == 200
        assert served.json()["openapi"].startswith("3.1")
        assert set(served.json()["paths"]) == set(openapi_document(DOC_SETTINGS)["paths"])


@pytest.fixture(scope="module")
def service_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openapi")
    cfg = base_config(
        tmp, server={"auth_token": TOKEN}, providers={"demo": {"polls_until_done": 2}}
    )
    with run_service(cfg) as url:
        yield url


#: Headers that frame the HTTP message itself, left to the server (see the test below).
_FRAMING = frozenset(
    {"transfer-encoding", "content-length", "connection", "upgrade", "expect", "te", "trailer"}
)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_api_conforms_and_never_answers_5xx(case, service_url):
    if case.headers:
        # Undocumented extra headers are fine, but a generated framing header (a garbage
        # Transfer-Encoding) is judged by uvicorn's HTTP parser before the app runs, and
        # answered with its own plain-text 400: that is the server's, not the API's.
        case.headers = {k: v for k, v in case.headers.items() if k.lower() not in _FRAMING}
    case.call_and_validate(
        base_url=service_url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
