"""Luma Dream Machine: every documented generation shape parsed, and the adapter over real
HTTP, alone and through the whole service (poll, download without the key, callback)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support import emu_luma as lu
from tests.support.emu_scripted import html, json_answer, truncated
from tests.support.service import (
    CallbackReceiver,
    base_config,
    run_service,
    wait_for,
    wait_status,
)
from webhook_poller.adapters.luma import LumaAdapter, parse_luma_generation
from webhook_poller.config import settings_from_mapping
from webhook_poller.errors import ProviderTaskFailed, ProviderUnavailable, UnrecognizedResponse
from webhook_poller.interfaces import PluginContext, PollStatus, ProviderTask
from webhook_poller.model import ErrorCode

A = "https://storage.cdn-luma.com/dream_machine/a/video_0.mp4"
B = "https://storage.cdn-luma.com/dream_machine/b/video_1.mp4"


@pytest.mark.parametrize(
    ("payload", "status", "urls", "code"),
    [
        ({"state": "queued", "assets": None}, PollStatus.PENDING, (), None),
        ({"state": "dreaming", "assets": {"progress_video": A}}, PollStatus.PENDING, (), None),
        (
            {
                "state": "completed",
                "assets": {"video": A, "image": "https://x/t.jpg"},
                "request": {"keyframes": {"frame0": {"type": "image", "url": B}}},
            },
            PollStatus.SUCCEEDED,
            (A,),
            None,
        ),
        ({"state": "completed", "assets": {"video": [A, B]}}, PollStatus.SUCCEEDED, (A, B), None),
        ({"state": "Completed", "assets": {"image": A}}, PollStatus.SUCCEEDED, (), None),
        ({"state": "completed", "assets": None}, PollStatus.SUCCEEDED, (), None),
        (
            {"state": "failed", "failure_reason": "400: prompt not allowed because advanced "},
            PollStatus.FAILED,
            (),
            ErrorCode.MODERATION_REJECTED,
        ),
        (
            {"state": "failed", "state_reason": "Content moderation failed"},
            PollStatus.FAILED,
            (),
            ErrorCode.MODERATION_REJECTED,
        ),
        (
            {"state": "failed", "failure_reason": "failed to fetch the image from url"},
            PollStatus.FAILED,
            (),
            ErrorCode.ASSET_FETCH_FAILED,
        ),
        (
            {"state": "failed", "failure_reason": "internal error"},
            PollStatus.FAILED,
            (),
            ErrorCode.UNKNOWN_PROVIDER_ERROR,
        ),
    ],
)
def test_parse_every_documented_generation_shape(payload, status, urls, code):
    """Each Luma state, asset form and failure reason maps to our status and code; the
    thumbnail, the progress video and the input keyframes are never results."""
    result = parse_luma_generation(payload)
    assert result.status is status
    assert result.video_urls == urls
    assert result.error_code is code


def test_unknown_state_is_unrecognized():
    """A state we do not know, or none, is unrecognized (the core treats it as transient)."""
    for payload in ({"state": "levitating"}, {"id": "x"}, []):
        with pytest.raises(UnrecognizedResponse):
            parse_luma_generation(payload)


@pytest.fixture
def emulator():
    with lu.LumaEmulator().serving() as emu:
        yield emu


def make_adapter(emu, **options):
    opts = {"base_url": emu.url, "api_key": lu.API_KEY, **options}
    return LumaAdapter(opts, PluginContext(settings_from_mapping({})))


async def poll(adapter, task_id, model="ray-2"):
    async with httpx.AsyncClient() as http:
        return await adapter.poll(ProviderTask(task_id, model, "luma"), http)


async def test_answers_over_http_are_normalized(emulator):
    """Running, one and several videos, moderation, other failure and no URL, over HTTP."""
    adapter = make_adapter(emulator)
    cases = {
        "run": (lu.dreaming(), PollStatus.PENDING, None, 0),
        "one": (lu.completed(A), PollStatus.SUCCEEDED, None, 1),
        "two": (lu.completed([A, B]), PollStatus.SUCCEEDED, None, 2),
        "mod": (lu.failed("prompt not allowed: moderation"), PollStatus.FAILED, "moderation", 0),
        "bad": (lu.failed("Internal server error"), PollStatus.FAILED, "unknown", 0),
        "nourl": (lu.completed(None), PollStatus.SUCCEEDED, None, 0),
    }
    for task_id, (answer, status, code, count) in cases.items():
        emulator.script(task_id, [answer])
        result = await poll(adapter, task_id)
        assert result.status is status, task_id
        assert len(result.video_urls) == count, task_id
        if code:
            assert result.error_code is not None and result.error_code.startswith(code)


@pytest.mark.parametrize(
    ("answer", "rate_limited", "retry_after"),
    [
        (json_answer({"detail": "Too many requests"}, 429, {"Retry-After": "5"}), True, 5),
        (json_answer({"detail": "Internal error"}, 500), False, None),
        (json_answer({"detail": "unavailable"}, 503), False, None),
    ],
)
async def test_http_trouble_is_transient(emulator, answer, rate_limited, retry_after):
    """429 (with Retry-After) and 5xx raise ProviderUnavailable, never a final failure."""
    emulator.script("t", [answer])
    with pytest.raises(ProviderUnavailable) as err:
        await poll(make_adapter(emulator), "t")
    assert err.value.rate_limited is rate_limited
    assert err.value.retry_after_s == retry_after


@pytest.mark.parametrize("answer", [html(), html(502), truncated('{"state": "dre')])
async def test_unreadable_bodies_are_transient(emulator, answer):
    """HTML pages and truncated JSON never crash nor fail the task."""
    emulator.script("t", [answer])
    with pytest.raises((UnrecognizedResponse, ProviderUnavailable)):
        await poll(make_adapter(emulator), "t")


async def test_refused_key_unknown_generation_and_env_fallback(emulator, monkeypatch):
    """A wrong key is auth_failed without the key in the error, an unknown id is final,
    and LUMAAI_API_KEY is read when the config has no key."""
    emulator.script("t", [lu.queued()])
    with pytest.raises(ProviderTaskFailed) as err:
        await poll(make_adapter(emulator, api_key="luma-wrong-secret"), "t")
    assert err.value.code is ErrorCode.AUTH_FAILED
    assert "wrong-secret" not in f"{err.value} {err.value.detail}"
    with pytest.raises(ProviderTaskFailed):
        await poll(make_adapter(emulator), "unknown-generation")
    monkeypatch.setenv("LUMAAI_API_KEY", lu.API_KEY)
    assert (await poll(make_adapter(emulator, api_key=None), "t")).status is PollStatus.PENDING


def test_defaults_are_the_adapters_own():
    """Luma's host and cadence are its Options defaults (no copy in core config)."""
    opts = LumaAdapter.Options()
    assert opts.base_url == "https://api.lumalabs.ai"
    assert (opts.min_interval_s, opts.max_requests_per_s) == (3.0, 5.0)


def test_end_to_end_through_the_service(tmp_path, emulator):
    """ray-2 routes to luma: polled through queued, a 429 and HTML, stored and called back;
    the key went to the API host only, never with the CDN download."""
    emulator.script(
        "lu-1",
        [
            lu.queued(),
            json_answer({"detail": "slow down"}, 429, {"Retry-After": "0"}),
            html(),
            lu.dreaming(),
            lu.completed(emulator.cdn_video("a")),
        ],
    )
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        cfg = base_config(
            tmp_path,
            providers={"luma": {"base_url": emulator.url, "api_key": lu.API_KEY}},
        )
        cfg["providers"]["luma"]["min_interval_s"] = 0
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            resp = client.post(
                "/poll-video",
                json={
                    "sessionId": "s",
                    "taskId": "lu-1",
                    "model": "ray-2",
                    "callbackUrl": f"{hook}/cb",
                },
            )
            assert resp.status_code == 200, resp.text
            job = wait_status(client, resp.json()["jobId"], {"succeeded", "failed"})
            wait_for(lambda: receiver.events("video.succeeded"))
    assert job["status"] == "succeeded" and job["provider"] == "luma"
    assert len(job["videoUrls"]) == 1 and job["metadata"][0]["codec"] == "h264"
    assert receiver.events("video.succeeded")[0]["body"]["provider"] == "luma"
    assert all(c["headers"]["authorization"] == f"Bearer {lu.API_KEY}" for c in emulator.calls)
    assert emulator.downloads and all(
        "authorization" not in d["headers"] for d in emulator.downloads
    )
    assert lu.API_KEY not in json.dumps(job)
