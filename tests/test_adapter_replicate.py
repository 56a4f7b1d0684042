"""Replicate predictions: every status and output shape, the adapter over real HTTP, the
token only on the API host, and jobs end to end through the service (routed by
``provider``, since owner/name model ids are ambiguous)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support import emu_replicate as rep
from tests.support.emu_base import FileHost
from tests.support.service import CallbackReceiver, base_config, run_service, wait_for
from webhook_poller.adapters.replicate import ReplicateAdapter, parse_prediction
from webhook_poller.config import settings_from_mapping
from webhook_poller.errors import ProviderTaskFailed, ProviderUnavailable, UnrecognizedResponse
from webhook_poller.interfaces import PluginContext, PollStatus, ProviderTask
from webhook_poller.model import ErrorCode

A = "https://replicate.delivery/xezq/abc/output.mp4"
B = "https://replicate.delivery/xezq/def/output.mp4"
THUMB = "https://replicate.delivery/xezq/abc/thumb.jpg"


def body(status, output=None, **kw):
    return rep.prediction("p1", status, output, **kw)[1]


SHAPES = [
    ("starting", body("starting"), PollStatus.PENDING, (), None),
    ("processing", body("processing"), PollStatus.PENDING, (), None),
    ("capitalised", body("Processing"), PollStatus.PENDING, (), None),
    ("output string", body("succeeded", A), PollStatus.SUCCEEDED, (A,), None),
    ("output list", body("succeeded", [A, B]), PollStatus.SUCCEEDED, (A, B), None),
    (
        "output object with thumbnail",
        body("succeeded", {"video": A, "thumbnail": THUMB}),
        PollStatus.SUCCEEDED,
        (A,),
        None,
    ),
    ("output JSON string", body("succeeded", json.dumps([A])), PollStatus.SUCCEEDED, (A,), None),
    ("output null", body("succeeded", None), PollStatus.SUCCEEDED, (), None),
    (
        "data removed",
        body("succeeded", None, data_removed=True),
        PollStatus.SUCCEEDED,
        (),
        None,
    ),
    ("E005", body("failed", error=rep.E005), PollStatus.FAILED, (), ErrorCode.MODERATION_REJECTED),
    (
        "failed other",
        body("failed", error="CUDA out of memory"),
        PollStatus.FAILED,
        (),
        ErrorCode.UNKNOWN_PROVIDER_ERROR,
    ),
    (
        "failed timeout",
        body("failed", error="Prediction timed out"),
        PollStatus.FAILED,
        (),
        ErrorCode.PROVIDER_TIMEOUT,
    ),
    ("canceled", body("canceled"), PollStatus.FAILED, (), ErrorCode.UNKNOWN_PROVIDER_ERROR),
    ("aborted", body("aborted"), PollStatus.FAILED, (), ErrorCode.PROVIDER_TIMEOUT),
]


@pytest.mark.parametrize(
    ("name", "payload", "status", "urls", "code"), SHAPES, ids=[s[0] for s in SHAPES]
)
def test_parse_every_documented_shape(name, payload, status, urls, code):
    result = parse_prediction(payload)
    assert result.status is status
    assert result.video_urls == urls, "urls.get, urls.web and input images are never results"
    assert result.error_code is code


@pytest.mark.parametrize("payload", [[A], "succeeded", {"id": "x"}, {"status": "sleeping"}])
def test_bodies_that_are_not_predictions_are_unrecognized(payload):
    with pytest.raises(UnrecognizedResponse):
        parse_prediction(payload)


@pytest.fixture(scope="module")
def emulator():
    with rep.ReplicateEmulator().start() as emu:
        yield emu


def adapter(url, key=rep.API_TOKEN):
    return ReplicateAdapter(
        {"base_url": url, "api_key": key}, PluginContext(settings_from_mapping({}))
    )


async def poll(url, pid, key=rep.API_TOKEN):
    async with httpx.AsyncClient() as http:
        return await adapter(url, key).poll(ProviderTask(pid, "google/veo-3", "replicate"), http)


async def test_poll_sends_bearer_token_to_the_prediction_path(emulator):
    emulator.script("pa", [rep.prediction("pa", "starting")])
    assert (await poll(emulator.url, "pa")).status is PollStatus.PENDING
    call = emulator.calls_for("pa")[0]
    assert call["path"] == "/v1/predictions/pa"
    assert call["auth"] == {"authorization": f"Bearer {rep.API_TOKEN}"}


async def test_bad_token_and_unknown_prediction_are_final(emulator):
    emulator.script("pb", [rep.prediction("pb", "starting")])
    with pytest.raises(ProviderTaskFailed) as err:
        await poll(emulator.url, "pb", key="r8_wrong-secret")
    assert err.value.code is ErrorCode.AUTH_FAILED
    assert "r8_wrong-secret" not in f"{err.value} {err.value.detail}"
    with pytest.raises(ProviderTaskFailed) as missing:
        await poll(emulator.url, "never-made")
    assert missing.value.code is ErrorCode.UNKNOWN_PROVIDER_ERROR


async def test_http_trouble_is_transient(emulator):
    emulator.script("pc", [(429, {"detail": "throttled"}, {"Retry-After": "7"})])
    with pytest.raises(ProviderUnavailable) as limited:
        await poll(emulator.url, "pc")
    assert limited.value.rate_limited and limited.value.retry_after_s == 7
    throttled = {"detail": "Request was throttled. Your rate limit resets in ~30s."}
    emulator.script("pc", [(429, throttled, {})])
    with pytest.raises(ProviderUnavailable) as from_body:
        await poll(emulator.url, "pc")
    assert from_body.value.rate_limited and from_body.value.retry_after_s == 30
    emulator.script("pc", [(502, {"detail": "bad gateway"}, {})])
    with pytest.raises(ProviderUnavailable):
        await poll(emulator.url, "pc")
    for text in ["<html>oops</html>", '{"id": "pc", "status": "succ']:
        emulator.script("pc", [(200, text, {})])
        with pytest.raises(UnrecognizedResponse):
            await poll(emulator.url, "pc")


async def test_token_from_the_environment(emulator, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", rep.API_TOKEN)
    emulator.script("pd", [rep.prediction("pd", "processing")])
    assert (await poll(emulator.url, "pd", key=None)).status is PollStatus.PENDING


def _run(tmp_path, emulator, pid, **job):
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        config = base_config(
            tmp_path,
            providers={
                "replicate": {
                    "base_url": emulator.url,
                    "api_key": rep.API_TOKEN,
                    "min_interval_s": 0,
                }
            },
        )
        with run_service(config) as url, httpx.Client(base_url=url) as client:
            resp = client.post(
                "/poll-video",
                json={"sessionId": "s", "taskId": pid, "callbackUrl": f"{hook}/cb", **job},
            )
            assert resp.status_code == 200, resp.text
            job_id = resp.json()["jobId"]

            def finished():
                got = client.get(f"/jobs/{job_id}").json()
                return got if got["status"] in ("succeeded", "failed") else None

            got = wait_for(finished, 30)
            wait_for(receiver.events, 15)
    return got, receiver.events()


def test_provider_field_routes_an_ambiguous_model_and_the_cdn_gets_no_token(tmp_path, emulator):
    """google/veo-3 matches no default pattern; provider=replicate routes it. The output
    lives on another host (replicate.delivery), which never sees the token."""
    cdn = FileHost()
    with cdn.start():
        outputs = {"video": cdn.video_url("e2e"), "thumbnail": f"{cdn.url}/thumb.jpg"}
        emulator.script(
            "pe",
            [
                rep.prediction("pe", "starting"),
                rep.prediction("pe", "processing"),
                rep.prediction("pe", "succeeded", outputs),
            ],
        )
        got, events = _run(tmp_path, emulator, "pe", model="google/veo-3", provider="replicate")
    assert got["status"] == "succeeded" and got["provider"] == "replicate", got
    assert len(got["metadata"]) == 1
    assert events[0]["verified"] and events[0]["body"]["event"] == "video.succeeded"
    assert len(cdn.downloads) == 1 and cdn.downloads[0]["auth"] == {}


def test_moderation_fails_without_provider_text(tmp_path, emulator):
    emulator.script("pf", [rep.prediction("pf", "failed", error=rep.E005)])
    got, events = _run(tmp_path, emulator, "pf", model="google/veo-3", provider="replicate")
    assert got["status"] == "failed" and got["error"]["code"] == "moderation_rejected"
    assert "E005" not in json.dumps(got) and "E005" not in json.dumps(events)


def test_unknown_provider_is_422_naming_the_known_ones(tmp_path):
    with run_service(base_config(tmp_path)) as url, httpx.Client(base_url=url) as client:
        resp = client.post(
            "/poll-video",
            json={"sessionId": "s", "taskId": "t", "model": "google/veo-3", "provider": "nope"},
        )
        unrouted = client.post(
            "/poll-video", json={"sessionId": "s", "taskId": "t", "model": "google/veo-3"}
        )
        wrong_type = client.post(
            "/poll-video",
            json={"sessionId": "s", "taskId": "t", "model": "google/veo-3", "provider": 7},
        )
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["field"] == "provider"
    assert {"replicate", "gemini", "fal", "kie-market"} <= set(error["knownProviders"])
    assert unrouted.status_code == 422 and unrouted.json()["error"]["field"] == "model"
    assert wrong_type.status_code == 422
