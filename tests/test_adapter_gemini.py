"""Gemini API Veo operations: every documented shape parsed, the adapter over real HTTP, the
key only on the API host, and a job end to end through the service."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support import emu_gemini as gem
from tests.support.emu_base import FileHost
from tests.support.service import CallbackReceiver, base_config, run_service, wait_for
from webhook_poller.adapters.gemini import GeminiAdapter, parse_operation
from webhook_poller.config import settings_from_mapping
from webhook_poller.errors import ProviderTaskFailed, ProviderUnavailable, UnrecognizedResponse
from webhook_poller.interfaces import PluginContext, PollStatus, ProviderTask
from webhook_poller.model import ErrorCode

U = "https://generativelanguage.googleapis.com/v1beta/files/abc:download?alt=media"
NAME = "models/veo-3.0-generate-001/operations/op1"

SHAPES = [
    ("running, done absent", {"name": NAME, "metadata": {}}, PollStatus.PENDING, None),
    ("done false", {"name": NAME, "done": False}, PollStatus.PENDING, None),
    ("done as string false", {"name": NAME, "done": "false"}, PollStatus.PENDING, None),
    ("success", gem.done(NAME, [U])[1], PollStatus.SUCCEEDED, None),
    ("sdk spelling", gem.done(NAME, [U], sdk_spelling=True)[1], PollStatus.SUCCEEDED, None),
    (
        "done as string, response as JSON string",
        {
            "name": NAME,
            "done": "true",
            "response": {
                "generateVideoResponse": json.dumps({"generatedSamples": [{"video": {"uri": U}}]})
            },
        },
        PollStatus.SUCCEEDED,
        None,
    ),
    ("safety count as string", gem.safety_block(NAME, "2")[1], PollStatus.FAILED, "moderation"),
    (
        "safety reasons only",
        {
            "done": True,
            "response": {"generateVideoResponse": {"raiMediaFilteredReasons": ["celebrity"]}},
        },
        PollStatus.FAILED,
        "moderation",
    ),
    (
        "grpc 3 with a safety message",
        gem.op_error(NAME, 3, "The prompt violates the usage guidelines (safety)")[1],
        PollStatus.FAILED,
        "moderation",
    ),
    ("grpc 4", gem.op_error(NAME, 4, "Deadline expired")[1], PollStatus.FAILED, "timeout"),
    ("grpc 8", gem.op_error(NAME, "8", "Quota exceeded")[1], PollStatus.FAILED, "rate"),
    ("grpc 13", gem.op_error(NAME, 13, "Internal error")[1], PollStatus.FAILED, "unknown"),
    ("done without samples", gem.done(NAME, [])[1], PollStatus.SUCCEEDED, None),
]
CODES = {
    "moderation": ErrorCode.MODERATION_REJECTED,
    "timeout": ErrorCode.PROVIDER_TIMEOUT,
    "rate": ErrorCode.PROVIDER_RATE_LIMITED,
    "unknown": ErrorCode.UNKNOWN_PROVIDER_ERROR,
}


@pytest.mark.parametrize(("name", "payload", "status", "code"), SHAPES, ids=[s[0] for s in SHAPES])
def test_parse_every_documented_shape(name, payload, status, code):
    result = parse_operation(payload)
    assert result.status is status
    if code:
        assert result.error_code is CODES[code]
    if name in ("success", "sdk spelling", "done as string, response as JSON string"):
        assert result.video_urls == (U,)
    else:
        assert result.video_urls == ()


@pytest.mark.parametrize("body", [[1, 2], "plain", {}, {"foo": "bar"}, None])
def test_bodies_that_are_not_operations_are_unrecognized(body):
    with pytest.raises(UnrecognizedResponse):
        parse_operation(body)


@pytest.fixture(scope="module")
def emulator():
    with gem.GeminiEmulator().start() as emu:
        yield emu


def adapter(url, key=gem.API_KEY, **extra):
    settings = settings_from_mapping({})
    return GeminiAdapter({"base_url": url, "api_key": key, **extra}, PluginContext(settings))


async def poll(emulator, task_id, key=gem.API_KEY):
    async with httpx.AsyncClient() as http:
        return await adapter(emulator.url, key).poll(
            ProviderTask(task_id, gem.MODEL, "gemini"), http
        )


async def test_operation_name_with_slashes_is_the_path_and_key_is_a_header(emulator):
    name = gem.op_name("slashes")
    emulator.script(name, [gem.running(name)])
    result = await poll(emulator, name)
    assert result.status is PollStatus.PENDING
    call = emulator.calls_for(name)[0]
    assert call["raw_path"] == f"/v1beta/{name}"
    assert call["auth"] == {"x-goog-api-key": gem.API_KEY}
    assert call["query"] == {}, "the key is never in the URL"


@pytest.mark.parametrize("bad", ["../../v1/other", "models/x/operations/..", "a//b", " "])
async def test_task_ids_that_leave_the_operation_path_are_refused(emulator, bad):
    before = len(emulator.calls)
    with pytest.raises(ProviderTaskFailed):
        await poll(emulator, bad)
    assert len(emulator.calls) == before


async def test_bad_key_is_auth_failed_and_never_echoed(emulator):
    name = gem.op_name("badkey")
    emulator.script(name, [gem.running(name)])
    with pytest.raises(ProviderTaskFailed) as err:
        await poll(emulator, name, key="wrong-secret-gemini")
    assert err.value.code is ErrorCode.AUTH_FAILED
    assert "wrong-secret-gemini" not in f"{err.value} {err.value.detail}"


async def test_unknown_operation_is_final(emulator):
    with pytest.raises(ProviderTaskFailed) as err:
        await poll(emulator, gem.op_name("never-created"))
    assert err.value.code is ErrorCode.UNKNOWN_PROVIDER_ERROR


async def test_http_trouble_is_transient(emulator):
    name = gem.op_name("trouble")
    emulator.script(name, [(429, {"error": {"code": 429}}, {"Retry-After": "7"})])
    with pytest.raises(ProviderUnavailable) as limited:
        await poll(emulator, name)
    assert limited.value.rate_limited and limited.value.retry_after_s == 7
    for answer in [
        gem.http_error(500, "Internal", "INTERNAL"),
        gem.http_error(503, "Unavailable", "UNAVAILABLE"),
    ]:
        emulator.script(name, [answer])
        with pytest.raises(ProviderUnavailable):
            await poll(emulator, name)
    for body in ["<html>bad gateway</html>", '{"name": "models/x", "do']:
        emulator.script(name, [(200, body, {})])
        with pytest.raises(UnrecognizedResponse):
            await poll(emulator, name)
    with pytest.raises(ProviderUnavailable):
        async with httpx.AsyncClient() as http:
            await adapter("http://127.0.0.1:9").poll(ProviderTask(name, gem.MODEL, "gemini"), http)


async def test_key_from_the_environment(emulator, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", gem.API_KEY)
    name = gem.op_name("envkey")
    emulator.script(name, [gem.running(name)])
    async with httpx.AsyncClient() as http:
        result = await adapter(emulator.url, key=None).poll(
            ProviderTask(name, gem.MODEL, "gemini"), http
        )
    assert result.status is PollStatus.PENDING
    monkeypatch.delenv("GEMINI_API_KEY")
    with pytest.raises(ProviderTaskFailed) as err:
        async with httpx.AsyncClient() as http:
            await adapter(emulator.url, key=None).poll(
                ProviderTask(name, gem.MODEL, "gemini"), http
            )
    assert err.value.code is ErrorCode.AUTH_FAILED


async def test_download_hook_keys_only_the_api_host(emulator):
    a = adapter(emulator.url)
    async with httpx.AsyncClient() as http:
        assert await a.download("https://cdn.example.com/v.mp4", http) is None
        chunks = await a.download(emulator.file_uri("direct"), http)
        assert chunks is not None
        data = b"".join([c async for c in chunks])
    assert data == emulator.video_bytes
    assert emulator.calls_for("file:direct")[0]["auth"] == {"x-goog-api-key": gem.API_KEY}


def _run(tmp_path, emulator, name, **job):
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        config = base_config(
            tmp_path,
            providers={"gemini": {"base_url": emulator.url, "api_key": gem.API_KEY}},
            polling={"interval_s": 0.05},
        )
        config["providers"]["gemini"]["min_interval_s"] = 0
        with run_service(config) as url, httpx.Client(base_url=url) as client:
            resp = client.post(
                "/poll-video",
                json={"sessionId": "s", "taskId": name, "callbackUrl": f"{hook}/cb", **job},
            )
            assert resp.status_code == 200, resp.text
            job_id = resp.json()["jobId"]

            def finished():
                body = client.get(f"/jobs/{job_id}").json()
                return body if body["status"] in ("succeeded", "failed") else None

            body = wait_for(finished, 30)
            wait_for(receiver.events, 15)
    return body, receiver.events()


def test_model_pattern_routes_to_gemini_and_the_job_completes(tmp_path, emulator):
    """veo-3.0-generate-001 goes to gemini by default (KIE's are veo3_fast ...)."""
    name = gem.op_name("e2e")
    uris = [emulator.file_uri("e2e-a"), emulator.file_uri("e2e-b")]
    emulator.script(name, [gem.running(name), gem.running(name), gem.done(name, uris)])
    body, events = _run(tmp_path, emulator, name, model="veo-3.0-generate-001")
    assert body["status"] == "succeeded" and body["provider"] == "gemini"
    assert len(body["metadata"]) == 2 and body["metadata"][0]["codec"] == "h264"
    assert events[0]["verified"] and events[0]["body"]["event"] == "video.succeeded"
    assert all(c["auth"] == {"x-goog-api-key": gem.API_KEY} for c in emulator.calls_for(name))


def test_redirect_to_another_host_drops_the_key(tmp_path, emulator):
    """Google redirects the file download to storage: that host never sees the key."""
    cdn = FileHost()
    with cdn.start():
        emulator.redirect_to = cdn.url
        try:
            name = gem.op_name("redirect")
            emulator.script(name, [gem.done(name, [emulator.file_uri("moved")])])
            body, _ = _run(tmp_path, emulator, name, model="veo-3.0-generate-001")
        finally:
            emulator.redirect_to = None
    assert body["status"] == "succeeded", body
    assert emulator.calls_for("file:moved")[0]["auth"] == {"x-goog-api-key": gem.API_KEY}
    assert cdn.downloads and all(d["auth"] == {} for d in cdn.downloads)


def test_safety_block_fails_with_moderation_and_no_provider_text(tmp_path, emulator):
    name = gem.op_name("blocked")
    emulator.script(name, [gem.safety_block(name)])
    body, events = _run(tmp_path, emulator, name, model="models/veo-3.0-generate-001")
    assert body["status"] == "failed"
    assert body["error"]["code"] == "moderation_rejected"
    assert "violate" not in json.dumps(body) and "violate" not in json.dumps(events)
