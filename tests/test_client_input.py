"""Odd client input is a clear 4xx on every endpoint, never a 5xx (issue 12, items 5 to 9)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.service import base_config, run_service
from webhook_poller.errors import RequestRejected
from webhook_poller.inputs import MAX_JSON_DEPTH, client_int, load_json

INTAKE = {"sessionId": "s1", "taskId": "t1", "model": "demo"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One real service for the module; jobs wait an hour before their first poll."""
    tmp_path = tmp_path_factory.mktemp("input")
    cfg = base_config(tmp_path, polling={"first_poll_delay_s": 3600})
    with run_service(cfg) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def job(client: httpx.Client, task_id: str) -> str:
    resp = client.post("/poll-video", json={**INTAKE, "taskId": task_id})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["jobId"])


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# --- item 5: content types --------------------------------------------------------------


def test_json_body_sent_as_form_is_read_as_json(client):
    """curl -d without a content type says form-urlencoded; a JSON body is still JSON."""
    resp = client.post(
        "/poll-video",
        content=json.dumps({**INTAKE, "taskId": "curl-d"}),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "queued"
    plain = client.post(
        "/poll-video",
        content=json.dumps({**INTAKE, "taskId": "text-plain"}),
        headers={"content-type": "text/plain"},
    )
    assert plain.status_code == 200, plain.text


def test_multipart_form_is_accepted_like_urlencoded(client):
    """multipart/form-data (n8n's form option) works, context included."""
    resp = client.post(
        "/poll-video",
        files={
            "sessionId": (None, "s1"),
            "taskId": (None, "multi-1"),
            "model": (None, "demo"),
            "attempt": (None, "2"),
            "context": (None, '{"chatId": "9"}'),
        },
    )
    assert resp.status_code == 200, resp.text
    status = client.get(f"/jobs/{resp.json()['jobId']}").json()
    assert status["context"] == {"chatId": "9"} and status["attempts"] == 1


def test_multipart_file_part_is_refused(client):
    """A file upload is not a field: a 400, not a crash."""
    resp = client.post(
        "/poll-video", data={"sessionId": "s"}, files={"taskId": ("t.txt", b"x", "text/plain")}
    )
    assert resp.status_code == 400


# --- item 6: numbers a client sends ------------------------------------------------------


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "9" * 5000, "1e3", True, 1.5, [1]])
def test_attempt_that_is_no_whole_number_is_refused(client, value):
    """ "²" passes str.isdigit() but not int(); it is a 422 naming attempt, JSON or form."""
    resp = client.post("/poll-video", json={**INTAKE, "taskId": "att", "attempt": value})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "attempt"
    if isinstance(value, str):
        form = client.post("/poll-video", data={**INTAKE, "taskId": "att", "attempt": value})
        assert form.status_code == 422 and form.json()["error"]["field"] == "attempt"


@pytest.mark.parametrize("value", ["\u00b2", "9" * 5000, "-1", "1.0"])
def test_limit_and_expires_in_refuse_odd_numbers(client, value):
    """GET /jobs?limit= and POST /jobs/{id}/links expiresIn answer 422, not 500."""
    resp = client.get("/jobs", params={"limit": value})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "limit"
    job_id = job(client, "links-odd")
    links = client.post(f"/jobs/{job_id}/links", json={"expiresIn": value})
    assert links.status_code == 422 and links.json()["error"]["field"] == "expiresIn"


@pytest.mark.parametrize(
    "query",
    [
        "expires=%C2%B2&sig=x",
        "expires=9999999999&sig=%C3%A9",
        "expires=" + "9" * 5000 + "&sig=x",
        "expires=9999999999&sig=x&once=%C2%B2",
    ],
)
def test_signed_link_with_odd_query_is_refused(client, query):
    """Video and ZIP links with odd expires/sig are 401/404, never 500."""
    job_id = job(client, "links-q")
    for path in (f"/jobs/{job_id}/videos/0", f"/jobs/{job_id}/download.zip"):
        resp = client.get(f"{path}?{query}")
        assert 400 <= resp.status_code < 500, (path, resp.status_code)


@pytest.mark.parametrize("index", ["9" * 5000, "\u00b2", "-1"])
def test_video_index_out_of_range_is_404(client, index):
    """A video index with thousands of digits used to overflow int() in the router."""
    resp = client.get(f"/jobs/x/videos/{index}")
    assert resp.status_code == 404


# --- item 7: deep nesting ----------------------------------------------------------------


def test_deeply_nested_json_body_is_400(client):
    """About 975 levels fit in 64 KB and made json.loads recurse into a RecursionError."""
    resp = client.post(
        "/poll-video",
        content=json.dumps(INTAKE)[:-1] + ', "context": {"a": ' + nested(975) + "}}",
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 400 and "nests deeper" in resp.json()["error"]["message"]


def test_deeply_nested_form_context_is_400(client):
    """The same inside a form's context field."""
    resp = client.post(
        "/poll-video", data={**INTAKE, "taskId": "deep", "context": '{"a": ' + nested(975) + "}"}
    )
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "context"


def test_deep_session_body_is_400(client):
    """PUT /sessions/... uses the same loader."""
    resp = client.put(
        "/sessions/s-deep",
        content='{"a": ' + nested(975) + "}",
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 400


# --- item 8: cursors and lone surrogates are client errors, not outages ----------------------


@pytest.mark.parametrize("cursor", ["\u00b2", "99999999999999999999999", "-5", "abc"])
def test_bad_cursor_is_400_not_503(client, cursor):
    """A cursor we never gave out is the client's mistake: 400, no Retry-After."""
    resp = client.get("/jobs", params={"cursor": cursor})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["field"] == "cursor" and "retry-after" not in resp.headers


def test_lone_surrogate_in_context_or_session_is_400(client):
    """A "\\ud800" escape decodes to text no store can write: 400, not store_unreachable."""
    body = '{"sessionId": "s1", "taskId": "sur", "model": "demo", "context": {"a": "\\ud800"}}'
    resp = client.post("/poll-video", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "surrogate" in resp.json()["error"]["message"]
    key = client.post(
        "/poll-video",
        content='{"sessionId": "s1", "taskId": "sur2", "model": "demo", "context": {"\\udfff": 1}}',
        headers={"content-type": "application/json"},
    )
    assert key.status_code == 400
    form = client.post("/poll-video", data={**INTAKE, "context": '{"a": "\\ud800"}'})
    assert form.status_code == 400
    session = client.put(
        "/sessions/s-sur", content='{"a": "\\ud800"}', headers={"content-type": "application/json"}
    )
    assert session.status_code == 400
    assert client.get("/readyz").status_code == 200


# --- item 9: non-finite numbers ------------------------------------------------------------


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_number_is_refused_at_intake_and_sessions(client, number):
    """NaN/Infinity/1e999 would make GET /jobs/{id} a 500 for ever; they are a 422."""
    context = '{"x": ' + number + "}"
    body = '{"sessionId": "s1", "taskId": "nan", "model": "demo", "context": ' + context + "}"
    resp = client.post("/poll-video", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    form = client.post("/poll-video", data={**INTAKE, "context": context})
    assert form.status_code == 422 and form.json()["error"]["field"] == "context"
    session = client.put(
        "/sessions/s-nan",
        content='{"x": [' + number + "]}",
        headers={"content-type": "application/json"},
    )
    assert session.status_code == 422
    listed = client.get("/jobs", params={"limit": 200})
    assert listed.status_code == 200
    assert all(j["taskId"] != "nan" for j in listed.json()["jobs"])


# --- the helpers themselves ----------------------------------------------------------------


def test_load_json_limits():
    """Depth up to the limit passes; one more level, NaN and surrogates are refused."""
    assert load_json(nested(MAX_JSON_DEPTH)) == json.loads(nested(MAX_JSON_DEPTH))
    assert load_json('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}')["a"].startswith("[")
    assert load_json('"\\ud83d\\ude00"') == "\U0001f600"
    for bad in (nested(MAX_JSON_DEPTH + 1), "NaN", "[1e400]", '"\\udc00"', b"\xff", "{"):
        with pytest.raises(RequestRejected):
            load_json(bad)


def test_client_int_accepts_only_ascii_whole_numbers():
    """ASCII digits and JSON ints within range; nothing else."""
    assert client_int(" 42 ", "n", default=0, low=0, high=100) == 42
    assert client_int(None, "n", default=7, low=0, high=100) == 7
    assert client_int(3.0, "n", default=0, low=0, high=9, allow_integral_float=True) == 3
    for bad in ("\u00b2", "4\u0662", "9" * 30, "0x10", True, 3.0, float("nan"), 101, "1_0"):
        with pytest.raises(RequestRejected):
            client_int(bad, "n", default=0, low=0, high=100)
