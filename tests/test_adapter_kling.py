"""Kling (official API): the envelope and task shapes parsed, JWT authentication, the
text/image endpoint choice, and the adapter over real HTTP, alone and through the service."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.support import emu_kling as kl
from tests.support.emu_scripted import html, json_answer, truncated
from tests.support.service import (
    CallbackReceiver,
    base_config,
    run_service,
    wait_for,
    wait_status,
)
from webhook_poller.adapters.kling import KlingAdapter, kling_jwt, parse_kling_payload
from webhook_poller.config import DEFAULT_MODELS, settings_from_mapping
from webhook_poller.errors import ProviderTaskFailed, ProviderUnavailable, UnrecognizedResponse
from webhook_poller.interfaces import PluginContext, PollStatus, ProviderTask
from webhook_poller.model import ErrorCode
from webhook_poller.services import ModelRouter

A = "https://cdn.klingai.com/bs2/upload-kling-api/a.mp4"
B = "https://cdn.klingai.com/bs2/upload-kling-api/b.mp4"


def env(data, code=0, message="SUCCEED"):
    return {"code": code, "message": message, "request_id": "r", "data": data}


@pytest.mark.parametrize(
    ("payload", "status", "urls", "code"),
    [
        (env({"task_status": "submitted"}), PollStatus.PENDING, (), None),
        (env({"task_status": "processing"}), PollStatus.PENDING, (), None),
        (
            env({"task_status": "succeed", "task_result": {"videos": [{"url": A}]}}),
            PollStatus.SUCCEEDED,
            (A,),
            None,
        ),
        (
            env(
                {
                    "task_status": "succeed",
                    "task_result": {"videos": [{"id": "1", "url": A, "duration": "5"}, {"url": B}]},
                }
            ),
            PollStatus.SUCCEEDED,
            (A, B),
            None,
        ),
        (
            {**env(None), "code": "0", "data": json.dumps({"task_status": "succeed"})},
            PollStatus.SUCCEEDED,
            (),
            None,
        ),
        (
            env({"task_status": "succeed", "task_result": json.dumps({"videos": [{"url": B}]})}),
            PollStatus.SUCCEEDED,
            (B,),
            None,
        ),
        (
            {"task_id": "1", "task_status": "succeed", "task_result": {"videos": [{"url": A}]}},
            PollStatus.SUCCEEDED,
            (A,),
            None,
        ),
        (
            env({"task_status": "failed", "task_status_msg": "Failure to pass the risk control"}),
            PollStatus.FAILED,
            (),
            ErrorCode.MODERATION_REJECTED,
        ),
        (
            env({"task_status": "failed", "task_status_msg": "internal error"}),
            PollStatus.FAILED,
            (),
            ErrorCode.UNKNOWN_PROVIDER_ERROR,
        ),
    ],
)
def test_parse_every_documented_shape(payload, status, urls, code):
    """Envelope, string code, JSON-string data, unwrapped callback and failures are read."""
    result = parse_kling_payload(payload)
    assert result.status is status
    assert result.video_urls == urls
    assert result.error_code is code


@pytest.mark.parametrize(
    ("code", "error", "kind"),
    [
        (1000, ErrorCode.AUTH_FAILED, ProviderTaskFailed),
        (1004, ErrorCode.AUTH_FAILED, ProviderTaskFailed),
        (1101, ErrorCode.INSUFFICIENT_CREDITS, ProviderTaskFailed),
        (1102, ErrorCode.INSUFFICIENT_CREDITS, ProviderTaskFailed),
        (1302, None, ProviderUnavailable),
        (1303, None, ProviderUnavailable),
        (5000, None, ProviderUnavailable),
        (1200, ErrorCode.UNKNOWN_PROVIDER_ERROR, ProviderTaskFailed),
    ],
)
def test_envelope_codes_inside_http_200(code, error, kind):
    """A non-zero code is an error even with HTTP 200: auth, credits, rate limits, outages."""
    with pytest.raises(kind) as raised:
        parse_kling_payload(env(None, code=code, message="x"))
    if error is not None:
        assert raised.value.code is error


def test_unknown_status_is_unrecognized():
    """A task_status we do not know, or no task at all, is unrecognized."""
    for payload in (env({"task_status": "levitating"}), env(None), {"hello": 1}, "[]"):
        with pytest.raises(UnrecognizedResponse):
            parse_kling_payload(payload)


def test_kling_patterns_stay_with_kie():
    """kling-* is ambiguous (KIE Market or Kling direct), so it keeps the KIE default."""
    assert ModelRouter(DEFAULT_MODELS).adapter_for("kling-v2-5-turbo") == "kie-market"
    assert KlingAdapter.Options().base_url == "https://api-singapore.klingai.com"


@pytest.fixture
def emulator():
    with kl.KlingEmulator().serving() as emu:
        yield emu


def make_adapter(emu, **options):
    opts = {"base_url": emu.url, "api_key": kl.API_TOKEN, **options}
    return KlingAdapter(opts, PluginContext(settings_from_mapping({})))


async def poll(adapter, task_id, model="kling-v2-5-turbo"):
    async with httpx.AsyncClient() as http:
        return await adapter.poll(ProviderTask(task_id, model, "kling"), http)


async def test_answers_over_http_are_normalized(emulator):
    """Running, one and several videos, moderation, other failure and no URL, over HTTP."""
    adapter = make_adapter(emulator)
    cases = {
        "run": (kl.processing(), PollStatus.PENDING, None, 0),
        "one": (kl.succeed([A]), PollStatus.SUCCEEDED, None, 1),
        "two": (kl.succeed([A, B]), PollStatus.SUCCEEDED, None, 2),
        "mod": (kl.failed("content security policy"), PollStatus.FAILED, "moderation", 0),
        "bad": (kl.failed("generation failed"), PollStatus.FAILED, "unknown", 0),
        "nourl": (kl.succeed([]), PollStatus.SUCCEEDED, None, 0),
    }
    for task_id, (answer, status, code, count) in cases.items():
        emulator.script(task_id, [answer])
        result = await poll(adapter, task_id)
        assert result.status is status, task_id
        assert len(result.video_urls) == count, task_id
        if code:
            assert result.error_code is not None and result.error_code.startswith(code)
    assert emulator.calls_for("run")[0]["path"] == "/v1/videos/text2video/run"


async def test_image_tasks_are_found_on_the_image_endpoint_and_remembered(emulator):
    """An image2video task is unknown to text2video; the adapter asks image2video and then
    asks it first."""
    emulator.script_kind("img-1", "image2video", [kl.processing()])
    adapter = make_adapter(emulator)
    assert (await poll(adapter, "img-1")).status is PollStatus.PENDING
    assert (await poll(adapter, "img-1")).status is PollStatus.PENDING
    paths = [c["path"] for c in emulator.calls_for("img-1")]
    assert paths == [
        "/v1/videos/text2video/img-1",
        "/v1/videos/image2video/img-1",
        "/v1/videos/image2video/img-1",
    ]
    with pytest.raises(ProviderTaskFailed) as missing:
        await poll(adapter, "nowhere")
    assert missing.value.code is ErrorCode.UNKNOWN_PROVIDER_ERROR


async def test_jwt_from_access_and_secret_key(emulator, monkeypatch):
    """With access_key + secret_key the adapter signs its own HS256 token, which the
    emulator verifies with an independent JOSE library; env variables work too."""
    emulator.script("t", [kl.submitted()])
    adapter = make_adapter(
        emulator, api_key=None, access_key=kl.ACCESS_KEY, secret_key=kl.SECRET_KEY
    )
    assert (await poll(adapter, "t")).status is PollStatus.PENDING
    wrong = make_adapter(emulator, api_key=None, access_key=kl.ACCESS_KEY, secret_key="nope")
    with pytest.raises(ProviderTaskFailed) as err:
        await poll(wrong, "t")
    assert err.value.code is ErrorCode.AUTH_FAILED
    monkeypatch.setenv("KLING_ACCESS_KEY", kl.ACCESS_KEY)
    monkeypatch.setenv("KLING_SECRET_KEY", kl.SECRET_KEY)
    assert (await poll(make_adapter(emulator, api_key=None), "t")).status is PollStatus.PENDING
    token = kling_jwt("ak", "sk", now=1000)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims == {"iss": "ak", "exp": 2800, "nbf": 995}


@pytest.mark.parametrize(
    ("answer", "kind", "rate_limited", "retry_after"),
    [
        (kl.envelope(1302, "Rate limit", None, 429), ProviderUnavailable, True, None),
        (
            json_answer({"code": 1303, "message": "busy"}, 429, {"Retry-After": "9"}),
            ProviderUnavailable,
            True,
            9,
        ),
        ((429, "", {"Retry-After": "4"}), ProviderUnavailable, True, 4),
        (kl.envelope(5000, "Server error", None, 500), ProviderUnavailable, False, None),
        (json_answer({"error": "bad gateway"}, 502), ProviderUnavailable, False, None),
    ],
)
async def test_http_trouble_is_transient(emulator, answer, kind, rate_limited, retry_after):
    """429 (with or without a body code) and 5xx raise ProviderUnavailable."""
    emulator.script("t", [answer])
    with pytest.raises(kind) as err:
        await poll(make_adapter(emulator), "t")
    assert err.value.rate_limited is rate_limited
    if retry_after is not None:
        assert err.value.retry_after_s == retry_after


async def test_empty_account_under_http_429_is_not_a_rate_limit(emulator):
    """Kling answers arrears with HTTP 429 and code 1101: that is insufficient_credits."""
    emulator.script("t", [kl.envelope(1101, "Account in arrears", None, 429)])
    with pytest.raises(ProviderTaskFailed) as err:
        await poll(make_adapter(emulator), "t")
    assert err.value.code is ErrorCode.INSUFFICIENT_CREDITS


@pytest.mark.parametrize("answer", [html(), html(504), truncated('{"code": 0, "data": {"ta')])
async def test_unreadable_bodies_are_transient(emulator, answer):
    """HTML pages and truncated JSON never crash nor fail the task."""
    emulator.script("t", [answer])
    with pytest.raises((UnrecognizedResponse, ProviderUnavailable)):
        await poll(make_adapter(emulator), "t")


async def test_no_credentials_at_all_is_auth_failed(emulator, monkeypatch):
    """Without a token or a key pair the poll fails with auth_failed naming the options."""
    for name in ("KLING_API_KEY", "KLING_ACCESS_KEY", "KLING_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ProviderTaskFailed) as err:
        await poll(make_adapter(emulator, api_key=None), "t")
    assert err.value.code is ErrorCode.AUTH_FAILED and "access_key" in (err.value.detail or "")
    assert not emulator.calls


async def test_refused_token_hides_it(emulator):
    """A refused token fails with auth_failed and the token is in no error text."""
    emulator.script("t", [kl.submitted()])
    with pytest.raises(ProviderTaskFailed) as err:
        await poll(make_adapter(emulator, api_key="kling-wrong-secret"), "t")
    assert err.value.code is ErrorCode.AUTH_FAILED
    assert "wrong-secret" not in f"{err.value} {err.value.detail}"


def test_end_to_end_through_the_service(tmp_path, emulator):
    """A models: entry routes kling-* to kling direct: polled through a 500 and HTML, two
    videos stored, called back; the key never went with the CDN downloads."""
    emulator.script(
        "kl-1",
        [
            kl.submitted(),
            kl.envelope(5000, "Server error", None, 500),
            html(),
            kl.processing(),
            kl.succeed([emulator.cdn_video("a"), emulator.cdn_video("b")]),
        ],
    )
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        cfg = base_config(
            tmp_path,
            providers={"kling": {"base_url": emulator.url, "api_key": kl.API_TOKEN}},
        )
        cfg["providers"]["kling"]["min_interval_s"] = 0
        cfg["models"] = {"kling-*": "kling", "demo": "demo"}
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            resp = client.post(
                "/poll-video",
                json={
                    "sessionId": "s",
                    "taskId": "kl-1",
                    "model": "kling-v2-5-turbo",
                    "callbackUrl": f"{hook}/cb",
                },
            )
            assert resp.status_code == 200, resp.text
            job = wait_status(client, resp.json()["jobId"], {"succeeded", "failed"})
            wait_for(lambda: receiver.events("video.succeeded"))
    assert job["status"] == "succeeded" and job["provider"] == "kling"
    assert len(job["videoUrls"]) == 2
    assert receiver.events("video.succeeded")[0]["body"]["provider"] == "kling"
    assert all(c["headers"]["authorization"] == f"Bearer {kl.API_TOKEN}" for c in emulator.calls)
    assert len(emulator.downloads) == 2
    assert all("authorization" not in d["headers"] for d in emulator.downloads)
    assert kl.API_TOKEN not in json.dumps(job)
