"""Property-based fuzzing of every HTTP endpoint: no input answers 5xx (issue 12).

Hypothesis draws methods, paths with odd segments, query strings, JSON values of odd shapes,
raw text, forms and content types, and sends them over real HTTP to the running service.
Jobs stored before the fuzzing (and never named to it) must come out unchanged, their videos
still served. Derandomized with no example database, so CI sees the same inputs every run.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.servers import free_port
from tests.support.service import base_config, run_service, wait_status

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

ODD = [
    "",
    " ",
    "\u00b2",
    "\u0663",
    "-1",
    "0",
    "1.5",
    "1e999",
    "NaN",
    "Infinity",
    "null",
    "true",
    "9" * 25,
    "9" * 5000,
    "\x00",
    "\u00e9",
    "\U0001f600",
    "..",
    "%2e%2e",
    "a/b",
    "\\ud800",
    "\ud800",
    "<script>",
    "job_" + "0" * 24,
]
RAW_BODIES = [
    "NaN",
    '{"context": {"a": NaN}}',
    '{"sessionId": "s", "taskId": "t", "model": "demo", "context": {"a": 1e999}}',
    '{"sessionId": "s", "taskId": "t", "model": "demo", "context": {"a": "\\ud800"}}',
    '{"sessionId": "s", "taskId": "t", "model": "demo", "context": {"\\udbff": 1}}',
    '{"sessionId": "s", "taskId": "t", "model": "demo", "context": ' + "[" * 975 + "]" * 975 + "}",
    "[" * 975 + "]" * 975,
    "{" * 3000,
    '{"a": ' + "9" * 5000 + "}",
    '{"expiresIn": "\u00b2", "singleUse": "yes"}',
    "sessionId=s&taskId=t&model=demo&context=" + quote('{"a": NaN}'),
    "sessionId=s&taskId=t&model=demo&context=" + quote("[" * 975 + "]" * 975),
    "sessionId=s&taskId=t&model=demo&attempt=%C2%B2",
    "%ff%fe=%ed%a0%80",
    "\ufeff{}",
    "--xyz\r\nContent-Disposition: form-data; name=taskId\r\n\r\nt\r\n--xyz--\r\n",
    "--xyz\r\nContent-Disposition: form-data\r\n\r\nt\r\n",
]
CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=latin-1",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "text/plain",
    "application/octet-stream",
    "garbage",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]
QUERY_KEYS = [
    "limit",
    "cursor",
    "expires",
    "sig",
    "once",
    "status",
    "since",
    "sessionId",
    "model",
    "group",
    "x",
]

odd_text = st.sampled_from(ODD) | st.text(max_size=12)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and Infinity too: json.dumps writes them as bare tokens
    | odd_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=12,
)
odd_values = (
    st.sampled_from(ODD)
    | st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 2**64, True, [], {}])
    | json_values
)
odd_objects = st.dictionaries(odd_text, odd_values, min_size=1, max_size=3)
ids = st.text(min_size=1, max_size=16) | st.sampled_from(["s", "t", "x" * 300]) | json_values
odd_fields = st.fixed_dictionaries(
    {},
    optional={
        "sessionId": ids,
        "taskId": ids,
        "model": st.sampled_from(["demo", "veo3", "nope", "DEMO"]) | json_values,
        "attempt": odd_values,
        "callbackUrl": st.sampled_from(
            ["http://127.0.0.1:9/x", "ftp://a", "http://[::1", "http://a:99999", "http://"]
        )
        | json_values,
        "context": odd_objects | odd_values | odd_objects.map(json.dumps),
        "expiresIn": odd_values,
        "singleUse": odd_values,
    },
)
#: A valid intake body with a few fields replaced, so the odd value is the one checked.
intake_objects = st.builds(
    lambda task, odd: {"sessionId": "fz", "taskId": f"fz-{task}", "model": "demo", **odd},
    st.uuids(),
    odd_fields,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Seed finished jobs on a fast service, then fuzz a service that never polls new jobs.

    Yields (client, victim job id the fuzzer may use, protected jobs as first seen).
    """
    tmp_path = tmp_path_factory.mktemp("fuzz")
    seed_cfg = base_config(tmp_path)
    seeded: dict[str, str] = {}
    with run_service(seed_cfg) as url, httpx.Client(base_url=url, timeout=10) as client:
        for task in ("keep-1", "keep-2", "victim"):
            body = {"sessionId": "fuzz", "taskId": task, "model": "demo", "context": {"k": 1}}
            seeded[task] = client.post("/poll-video", json=body).json()["jobId"]
        for job_id in seeded.values():
            wait_status(client, job_id, {"succeeded"})
    cfg = base_config(tmp_path, port=free_port(), polling={"first_poll_delay_s": 3600})
    with run_service(cfg) as url, httpx.Client(base_url=url, timeout=10) as client:
        before = {t: client.get(f"/jobs/{seeded[t]}").json() for t in ("keep-1", "keep-2")}
        yield client, seeded["victim"], before


def pct(text: str) -> str:
    """Percent-encode any text, lone surrogates included (as the bytes they would be)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def path_for(template: str, segment: str, victim: str, use_victim: bool) -> str:
    value = victim if use_victim else pct(segment)
    return template.replace("{id}", value).replace("{seg}", pct(segment))


ROUTES = [
    ("POST", "/poll-video"),
    ("POST", "/webhook/poll-video"),
    ("GET", "/"),
    ("GET", "/jobs"),
    ("GET", "/jobs/"),
    ("GET", "/events"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/jobs/{id}"),
    ("DELETE", "/jobs/{id}"),
    ("POST", "/jobs/{id}/cancel"),
    ("POST", "/jobs/{id}/retry"),
    ("POST", "/jobs/{id}/extend"),
    ("POST", "/jobs/{id}/upscale"),
    ("POST", "/telegram/webhook"),
    ("GET", "/jobs/{id}/download.zip"),
    ("POST", "/jobs/{id}/links"),
    ("GET", "/jobs/{id}/events"),
    ("GET", "/jobs/{id}/videos/{seg}"),
    ("HEAD", "/jobs/{id}/videos/0"),
    ("PUT", "/sessions/{seg}"),
    ("GET", "/providers/demo/{seg}"),
    ("GET", "/{seg}"),
]


def send(
    client: httpx.Client,
    method: str,
    path: str,
    params: list[tuple[str, str]],
    content: bytes | None,
    content_type: str | None,
) -> int:
    """Send one request; for event streams only the status line is read."""
    headers = {"content-type": content_type} if content_type else {}
    if params:
        path += "?" + "&".join(f"{pct(k)}={pct(v)}" for k, v in params)
    with client.stream(method, path, content=content, headers=headers) as resp:
        if not resp.headers.get("content-type", "").startswith("text/event-stream"):
            resp.read()
        return resp.status_code


def check(status: int, what: Any) -> None:
    assert status < 500, f"{status} for {what!r}"


@FUZZ
@given(
    route=st.sampled_from(ROUTES),
    other_method=st.none() | st.sampled_from(METHODS),
    segment=odd_text,
    use_victim=st.booleans(),
    params=st.lists(
        st.tuples(st.sampled_from(QUERY_KEYS), st.sampled_from(ODD) | odd_text), max_size=4
    ),
    body=st.none()
    | st.sampled_from(RAW_BODIES)
    | json_values.map(json.dumps)
    | intake_objects.map(json.dumps)
    | st.text(max_size=40),
    content_type=st.sampled_from(CONTENT_TYPES),
)
def test_no_request_answers_5xx(
    world, route, other_method, segment, use_victim, params, body, content_type
):
    """Any method, path, query and body on any route: a 2xx, 3xx or 4xx."""
    client, victim, _ = world
    method, template = route
    method = other_method or method
    path = path_for(template, segment, victim, use_victim)
    content = body.encode("utf-8", "surrogatepass") if body is not None else None
    if method in ("GET", "HEAD", "OPTIONS", "DELETE") and content is not None and use_victim:
        content = None  # keep some bodiless requests on the victim's read routes
    status = send(client, method, path, params, content, content_type)
    check(status, (method, path, params, body, content_type))


@FUZZ
@given(
    data=intake_objects,
    as_form=st.sampled_from(["json", "form", "multipart", "json-as-form"]),
)
def test_intake_fields_of_any_shape_answer_4xx_or_200(world, data, as_form):
    """Intake bodies with every field of any JSON shape, as JSON, form or multipart."""
    client, _victim, _ = world
    if as_form in ("json", "json-as-form"):
        ctype = "application/json" if as_form == "json" else "application/x-www-form-urlencoded"
        resp = client.post("/poll-video", content=json.dumps(data), headers={"content-type": ctype})
    else:
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
        fields = {
            k: v.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
            for k, v in fields.items()
        }
        if as_form == "form":
            resp = client.post("/poll-video", data=fields)
        else:
            resp = client.post("/poll-video", files={k: (None, v) for k, v in fields.items()})
    check(resp.status_code, data)
    if resp.status_code == 200:
        job = client.get(f"/jobs/{resp.json()['jobId']}")
        check(job.status_code, data)
        listed = client.get("/jobs", params={"limit": 200})
        check(listed.status_code, data)


@FUZZ
@given(session=odd_text, data=json_values, cursor=odd_text, limit=odd_text)
def test_sessions_and_listing_answer_4xx_or_200(world, session, data, cursor, limit):
    """PUT /sessions/... with any JSON value, and /jobs with any cursor and limit."""
    client, _victim, _ = world
    body = json.dumps(data).encode("utf-8", "surrogatepass")
    put = client.put(
        f"/sessions/{pct(session) or 'x'}",
        content=body,
        headers={"content-type": "application/json"},
    )
    check(put.status_code, (session, data))
    listed = client.get(f"/jobs?cursor={pct(cursor)}&limit={pct(limit)}")
    check(listed.status_code, (cursor, limit))
    assert client.get("/readyz").status_code == 200


def test_jobs_stored_before_the_fuzzing_are_intact(world):
    """Run last in this module: the protected jobs read back as before, videos served."""
    client, _victim, before = world
    for task, old in before.items():
        now = client.get(f"/jobs/{old['jobId']}").json()
        for key in ("status", "taskId", "sessionId", "attempts", "metadata", "context"):
            assert now[key] == old[key], (task, key)
        video = client.get(now["videoUrls"][0])
        assert video.status_code == 200
        assert len(video.content) == old["metadata"][0]["size_bytes"]
