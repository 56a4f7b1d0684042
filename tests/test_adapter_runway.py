"""Runway: every documented task shape parsed, and the adapter over real HTTP, alone and
through the whole service (poll, download without the key, callback)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support import emu_runway as rw
from tests.support.emu_scripted import html, json_answer, truncated
from tests.support.service import CallbackReceiver, base_config, run_service, wait_for, wait_status
from webhook_poller.adapters.runway import RunwayAdapter, parse_runway_task
from webhook_poller.config import settings_from_mapping
from webhook_poller.errors import (
    ConfigError,
    ProviderTaskFailed,
    ProviderUnavailable,
    UnrecognizedResponse,
)
from webhook_poller.interfaces import PluginContext, PollStatus, ProviderTask
from webhook_poller.model import ErrorCode
from webhook_poller.services import build_services

A = "https://dnznrvs05pmza.cloudfront.net/a.mp4?_jwt=x"
B = "https://dnznrvs05pmza.cloudfront.net/b.mp4?_jwt=y"


@pytest.mark.parametrize(
    ("payload", "status", "urls", "code"),
    [
        ({"status": "PENDING"}, PollStatus.PENDING, (), None),
        ({"status": "THROTTLED"}, PollStatus.PENDING, (), None),
        ({"status": "RUNNING", "progress": 0.5}, PollStatus.PENDING, (), None),
        ({"status": "running", "progress": "0.5"}, PollStatus.PENDING, (), None),
        ({"status": "SUCCEEDED", "output": [A]}, PollStatus.SUCCEEDED, (A,), None),
        ({"status": "SUCCEEDED", "output": [A, B, A]}, PollStatus.SUCCEEDED, (A, B), None),
        ({"status": "SUCCEEDED", "output": A}, PollStatus.SUCCEEDED, (A,), None),
        ({"status": "SUCCEEDED", "output": []}, PollStatus.SUCCEEDED, (), None),
        (
            {"status": "FAILED", "failureCode": "SAFETY.INPUT.TEXT", "failure": "x"},
            PollStatus.FAILED,
            (),
            ErrorCode.MODERATION_REJECTED,
        ),
        (
            {"status": "FAILED", "failureCode": "SAFETY.OUTPUT.VIDEO"},
            PollStatus.FAILED,
            (),
            ErrorCode.MODERATION_REJECTED,
        ),
        (
            {"status": "FAILED", "failureCode": "INPUT_PREPROCESSING.SAFETY.TEXT"},
            PollStatus.FAILED,
            (),
            ErrorCode.MODERATION_REJECTED,
        ),
        (
            {"status": "FAILED", "failureCode": "INPUT_PREPROCESSING.SAFETY.THIRD_PARTY"},
            PollStatus.FAILED,
            (),
            ErrorCode.MODERATION_REJECTED,
        ),
        (
            {"status": "FAILED", "failureCode": "THIRD_PARTY.INPUT_VALIDATION"},
            PollStatus.FAILED,
            (),
            ErrorCode.UNKNOWN_PROVIDER_ERROR,
        ),
        (
            {"status": "FAILED", "failureCode": "INTERNAL.BAD_OUTPUT.CODE01", "failure": "x"},
            PollStatus.FAILED,
            (),
            ErrorCode.UNKNOWN_PROVIDER_ERROR,
        ),
        (
            {"status": "FAILED", "failureCode": "ASSET.INVALID", "failure": "bad image"},
            PollStatus.FAILED,
            (),
            ErrorCode.ASSET_FETCH_FAILED,
        ),
        (
            {"status": "FAILED", "failure": "Content moderation flagged the prompt"},
            PollStatus.FAILED,
            (),
            ErrorCode.MODERATION_REJECTED,
        ),
        ({"status": "CANCELLED"}, PollStatus.FAILED, (), ErrorCode.UNKNOWN_PROVIDER_ERROR),
    ],
)
def test_parse_every_documented_task_shape(payload, status, urls, code):
    """Each Runway status, output form and failureCode family maps to our status and code."""
    result = parse_runway_task(payload)
    assert result.status is status
    assert result.video_urls == urls
    assert result.error_code is code


def test_running_progress_and_unknown_status():
    """RUNNING carries progress 0..1; a status we do not know is unrecognized (transient)."""
    assert parse_runway_task({"status": "RUNNING", "progress": 0.25}).progress == 0.25
    with pytest.raises(UnrecognizedResponse):
        parse_runway_task({"status": "LEVITATING"})
    with pytest.raises(UnrecognizedResponse):
        parse_runway_task({"id": "x"})


@pytest.fixture
def emulator():
    with rw.RunwayEmulator().serving() as emu:
        yield emu


def make_adapter(emu, **options):
    settings = settings_from_mapping({})
    opts = {"base_url": emu.url, "api_key": rw.API_KEY, **options}
    return RunwayAdapter(opts, PluginContext(settings))


async def poll(adapter, task_id, model="gen4_turbo"):
    async with httpx.AsyncClient() as http:
        return await adapter.poll(ProviderTask(task_id, model, "runway"), http)


async def test_answers_over_http_are_normalized(emulator):
    """Running, one and several videos, moderation, other failure and no URL, over HTTP."""
    adapter = make_adapter(emulator)
    cases = {
        "run": (rw.running(0.3), PollStatus.PENDING, None, 0),
        "one": (rw.succeeded([A]), PollStatus.SUCCEEDED, None, 1),
        "two": (rw.succeeded([A, B]), PollStatus.SUCCEEDED, None, 2),
        "mod": (rw.failed("SAFETY.INPUT.IMAGE", "nsfw"), PollStatus.FAILED, "moderation", 0),
        "bad": (rw.failed("INTERNAL.BAD_OUTPUT.CODE01"), PollStatus.FAILED, "unknown", 0),
        "nourl": (rw.succeeded([]), PollStatus.SUCCEEDED, None, 0),
    }
    for task_id, (answer, status, code, count) in cases.items():
        emulator.script(task_id, [answer])
        result = await poll(adapter, task_id)
        assert result.status is status, task_id
        assert len(result.video_urls) == count, task_id
        if code:
            assert result.error_code is not None and result.error_code.startswith(code)
    assert emulator.calls_for("run")[0]["headers"]["x-runway-version"] == rw.VERSION


@pytest.mark.parametrize(
    ("answer", "rate_limited", "retry_after"),
    [
        (json_answer({"error": "Too many requests"}, 429, {"Retry-After": "7"}), True, 7),
        (json_answer({"error": "Bad gateway"}, 502), False, None),
        (json_answer({"error": "Service unavailable"}, 503, {"Retry-After": "3"}), False, 3),
    ],
)
async def test_http_trouble_is_transient(emulator, answer, rate_limited, retry_after):
    """429 (with Retry-After) and 5xx raise ProviderUnavailable, never a final failure."""
    emulator.script("t", [answer])
    with pytest.raises(ProviderUnavailable) as err:
        await poll(make_adapter(emulator), "t")
    assert err.value.rate_limited is rate_limited
    assert err.value.retry_after_s == retry_after


@pytest.mark.parametrize("answer", [html(), html(502), truncated(), (200, "[]", {})])
async def test_unreadable_bodies_are_transient(emulator, answer):
    """HTML pages, truncated JSON and non-objects never crash nor fail the task."""
    emulator.script("t", [answer])
    with pytest.raises((UnrecognizedResponse, ProviderUnavailable)):
        await poll(make_adapter(emulator), "t")


async def test_refused_key_and_unknown_task_are_final_and_key_stays_secret(emulator):
    """A wrong key is auth_failed without the key in the error; an unknown task is final."""
    wrong = make_adapter(emulator, api_key="key_wrong-secret")
    emulator.script("t", [rw.pending()])
    with pytest.raises(ProviderTaskFailed) as err:
        await poll(wrong, "t")
    assert err.value.code is ErrorCode.AUTH_FAILED
    assert "wrong-secret" not in f"{err.value} {err.value.detail}"
    with pytest.raises(ProviderTaskFailed) as missing:
        await poll(make_adapter(emulator), "never-created")
    assert missing.value.code is ErrorCode.UNKNOWN_PROVIDER_ERROR


async def test_refused_connection_and_no_key(emulator, monkeypatch):
    """A closed port is transient; no key at all (and no env fallback) is auth_failed."""
    closed = make_adapter(emulator, base_url="http://127.0.0.1:9")
    with pytest.raises(ProviderUnavailable):
        await poll(closed, "t")
    monkeypatch.delenv("RUNWAYML_API_SECRET", raising=False)
    with pytest.raises(ProviderTaskFailed) as err:
        await poll(make_adapter(emulator, api_key=None), "t")
    assert err.value.code is ErrorCode.AUTH_FAILED


async def test_env_fallback_key_and_quoted_task_id(emulator, monkeypatch):
    """RUNWAYML_API_SECRET is used when the config has no key; a task id is one segment."""
    monkeypatch.setenv("RUNWAYML_API_SECRET", rw.API_KEY)
    emulator.script("odd/id?x", [rw.throttled()])
    result = await poll(make_adapter(emulator, api_key=None), "odd/id?x")
    assert result.status is PollStatus.PENDING
    assert emulator.calls_for("odd/id?x")[0]["query"] == {}


def test_defaults_are_the_adapters_own():
    """Runway's dev host and cadence are its Options defaults (no copy in core config)."""
    opts = RunwayAdapter.Options()
    assert opts.base_url == "https://api.dev.runwayml.com"
    assert (opts.min_interval_s, opts.max_requests_per_s) == (5.0, 5.0)
    assert settings_from_mapping({}).provider_options("runway") == {}
    assert RunwayAdapter.result_link_ttl_s == 86400


def test_end_to_end_through_the_service(tmp_path, emulator):
    """gen4_turbo routes to runway: polled through THROTTLED and a 502, stored, called back;
    the key went to the API host only, never with the CDN download."""
    emulator.script(
        "rw-1",
        [
            rw.pending(),
            rw.throttled(),
            json_answer({"error": "Bad gateway"}, 502),
            rw.running(0.6),
            rw.succeeded([emulator.cdn_video("a"), emulator.cdn_video("b")]),
        ],
    )
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        cfg = base_config(
            tmp_path, providers={"runway": {"base_url": emulator.url, "api_key": rw.API_KEY}}
        )
        cfg["providers"]["runway"]["min_interval_s"] = 0
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            resp = client.post(
                "/poll-video",
                json={
                    "sessionId": "s",
                    "taskId": "rw-1",
                    "model": "gen4_turbo",
                    "callbackUrl": f"{hook}/cb",
                },
            )
            assert resp.status_code == 200, resp.text
            job_id = resp.json()["jobId"]
            job = wait_status(client, job_id, {"succeeded", "failed"})
            wait_for(lambda: receiver.events("video.succeeded"))
    assert job["status"] == "succeeded" and job["provider"] == "runway"
    assert len(job["videoUrls"]) == 2 and job["metadata"][0]["codec"] == "h264"
    event = receiver.events("video.succeeded")[0]["body"]
    assert event["provider"] == "runway" and len(event["videoUrls"]) == 2
    assert all(c["headers"]["authorization"] == f"Bearer {rw.API_KEY}" for c in emulator.calls)
    assert len(emulator.downloads) == 2
    assert all("authorization" not in d["headers"] for d in emulator.downloads)
    assert rw.API_KEY not in json.dumps(job)


def test_option_typo_is_one_clear_config_error():
    """A misspelt key in providers.runway fails at start-up naming the key, not the secret."""
    with pytest.raises(ConfigError) as err:  # at load, or at the latest when built
        build_services(
            settings_from_mapping(
                {"providers": {"runway": {"api_key": "key_secret-value", "min_intervl_s": 5}}}
            )
        )
    assert "providers.runway.min_intervl_s" in str(err.value)
    assert "secret-value" not in str(err.value)
