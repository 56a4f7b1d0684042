"""MiniMax (Hailuo): query and files answers parsed, the two-step download URL, and the
adapter over real HTTP, alone and through the whole service."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support import emu_minimax as mm
from tests.support.emu_scripted import html, json_answer, truncated
from tests.support.service import (
    CallbackReceiver,
    base_config,
    run_service,
    wait_for,
    wait_status,
)
from webhook_poller.adapters.minimax import (
    MinimaxAdapter,
    parse_minimax_file,
    parse_minimax_query,
)
from webhook_poller.config import DEFAULT_MODELS, settings_from_mapping
from webhook_poller.errors import ProviderTaskFailed, ProviderUnavailable, UnrecognizedResponse
from webhook_poller.interfaces import PluginContext, PollStatus, ProviderTask
from webhook_poller.model import ErrorCode
from webhook_poller.services import ModelRouter

A = "https://video-product.cdn.minimax.io/inference_output/video/a.mp4?Expires=1"
OK = {"status_code": 0, "status_msg": "success"}


@pytest.mark.parametrize(
    ("payload", "status", "file_id", "code"),
    [
        ({"status": "Preparing", "file_id": "", "base_resp": OK}, PollStatus.PENDING, None, None),
        ({"status": "Queueing", "base_resp": OK}, PollStatus.PENDING, None, None),
        ({"status": "Processing", "base_resp": OK}, PollStatus.PENDING, None, None),
        ({"status": "Success", "file_id": "205258526306433"}, PollStatus.SUCCEEDED, "2052", None),
        ({"status": "success", "file_id": 205258526306433}, PollStatus.SUCCEEDED, "2052", None),
        ({"status": "Success", "file_id": ""}, PollStatus.SUCCEEDED, None, None),
        ({"status": "Fail", "base_resp": OK}, PollStatus.FAILED, None, "unknown"),
        (
            {"status": "", "base_resp": {"status_code": 1026, "status_msg": "input sensitive"}},
            PollStatus.FAILED,
            None,
            "moderation",
        ),
        (
            {"status": "Fail", "base_resp": {"status_code": "1027", "status_msg": "output"}},
            PollStatus.FAILED,
            None,
            "moderation",
        ),
    ],
)
def test_parse_every_documented_query_shape(payload, status, file_id, code):
    """Capitalised states, file_id as string or int, and 1026/1027 (even as a string code)
    as moderation."""
    result, found = parse_minimax_query(payload)
    assert result.status is status
    assert (found or "")[:4] == (file_id or "")
    if code:
        assert result.error_code is not None and result.error_code.startswith(code)


def test_video_agent_answer_with_direct_url():
    """The deprecated Video Agent shape gives video_url directly: no second call needed."""
    result, found = parse_minimax_query({"status": "Success", "video_url": A, "base_resp": OK})
    assert result.video_urls == (A,) and found is None


@pytest.mark.parametrize(
    ("code", "kind", "error"),
    [
        (1004, ProviderTaskFailed, ErrorCode.AUTH_FAILED),
        (1008, ProviderTaskFailed, ErrorCode.INSUFFICIENT_CREDITS),
        (1002, ProviderUnavailable, None),
        (1041, ProviderUnavailable, None),
        (1024, ProviderUnavailable, None),
        (1033, ProviderUnavailable, None),
        (2013, ProviderTaskFailed, ErrorCode.UNKNOWN_PROVIDER_ERROR),
    ],
)
def test_base_resp_errors_inside_http_200(code, kind, error):
    """base_resp codes: refused key, empty balance, rate limits, outages, bad task id."""
    with pytest.raises(kind) as raised:
        parse_minimax_query({"status": "", "base_resp": {"status_code": code, "status_msg": ""}})
    if error is not None:
        assert raised.value.code is error


def test_files_answer_and_unreadable_bodies():
    """file.download_url is the video; no URL is an empty tuple; garbage is unrecognized."""
    assert parse_minimax_file({"file": {"file_id": 1, "download_url": A}, "base_resp": OK}) == (A,)
    assert parse_minimax_file({"file": {"file_id": 1}, "base_resp": OK}) == ()
    for payload in ([], "x"):
        with pytest.raises(UnrecognizedResponse):
            parse_minimax_file(payload)
    with pytest.raises(UnrecognizedResponse):
        parse_minimax_query({"status": "Levitating"})


def test_minimax_model_names_route_to_minimax():
    """MiniMax's own model names route to minimax; hailuo-* stays with KIE Market."""
    router = ModelRouter(DEFAULT_MODELS)
    for model in ("MiniMax-Hailuo-02", "T2V-01-Director", "I2V-01", "S2V-01", "video-01"):
        assert router.adapter_for(model) == "minimax", model
    assert router.adapter_for("hailuo-2-3") == "kie-market"
    assert MinimaxAdapter.Options().base_url == "https://api.minimax.io"
    assert MinimaxAdapter.result_link_ttl_s == 9 * 3600


@pytest.fixture
def emulator():
    with mm.MinimaxEmulator().serving() as emu:
        yield emu


def make_adapter(emu, **options):
    opts = {"base_url": emu.url, "api_key": mm.API_KEY, **options}
    return MinimaxAdapter(opts, PluginContext(settings_from_mapping({})))


async def poll(adapter, task_id, model="MiniMax-Hailuo-02"):
    async with httpx.AsyncClient() as http:
        return await adapter.poll(ProviderTask(task_id, model, "minimax"), http)


async def test_answers_over_http_are_normalized(emulator):
    """Running, success via files/retrieve, moderation, other failure and no URL."""
    adapter = make_adapter(emulator, group_id="g-1")
    emulator.script("file:111", [mm.file(emulator.cdn_video("a"))])
    emulator.script("file:222", [mm.file(None)])
    cases = {
        "run": (mm.processing(), PollStatus.PENDING, None, 0),
        "one": (mm.success("111"), PollStatus.SUCCEEDED, None, 1),
        "mod": (mm.error(1026, "input new_sensitive"), PollStatus.FAILED, "moderation", 0),
        "bad": (mm.fail("unknown error"), PollStatus.FAILED, "unknown", 0),
        "nourl": (mm.success("222"), PollStatus.SUCCEEDED, None, 0),
    }
    for task_id, (answer, status, code, count) in cases.items():
        emulator.script(task_id, [answer])
        result = await poll(adapter, task_id)
        assert result.status is status, task_id
        assert len(result.video_urls) == count, task_id
        if code:
            assert result.error_code is not None and result.error_code.startswith(code)
    files = [c for c in emulator.calls if c["path"] == "/v1/files/retrieve"]
    assert files[0]["query"] == {"file_id": "111", "GroupId": "g-1"}
    assert emulator.calls_for("run")[0]["query"] == {"task_id": "run"}


@pytest.mark.parametrize(
    ("answer", "rate_limited", "retry_after"),
    [
        (json_answer({"base_resp": {"status_code": 1002}}, 429, {"Retry-After": "6"}), True, 6),
        (mm.error(1002, "rate limit exceeded(RPM)"), True, None),
        (json_answer({"error": "x"}, 500), False, None),
        (json_answer({"error": "x"}, 503, {"Retry-After": "2"}), False, 2),
    ],
)
async def test_http_trouble_is_transient(emulator, answer, rate_limited, retry_after):
    """429 (with Retry-After), a rate limit inside HTTP 200 and 5xx are transient."""
    emulator.script("t", [answer])
    with pytest.raises(ProviderUnavailable) as err:
        await poll(make_adapter(emulator), "t")
    assert err.value.rate_limited is rate_limited
    assert err.value.retry_after_s == retry_after


@pytest.mark.parametrize("answer", [html(), html(502), truncated('{"status": "Proc')])
async def test_unreadable_bodies_are_transient(emulator, answer):
    """HTML pages and truncated JSON, on the query or the files call, never crash."""
    emulator.script("t", [answer])
    with pytest.raises((UnrecognizedResponse, ProviderUnavailable)):
        await poll(make_adapter(emulator), "t")
    emulator.script("s", [mm.success("333")])
    emulator.script("file:333", [answer])
    with pytest.raises((UnrecognizedResponse, ProviderUnavailable)):
        await poll(make_adapter(emulator), "s")


async def test_refused_key_in_http_200_and_env_fallback(emulator, monkeypatch):
    """base_resp 1004 is auth_failed without the key in the error; MINIMAX_API_KEY works."""
    emulator.script("t", [mm.queueing()])
    with pytest.raises(ProviderTaskFailed) as err:
        await poll(make_adapter(emulator, api_key="mm-wrong-secret"), "t")
    assert err.value.code is ErrorCode.AUTH_FAILED
    assert "wrong-secret" not in f"{err.value} {err.value.detail}"
    monkeypatch.setenv("MINIMAX_API_KEY", mm.API_KEY)
    assert (await poll(make_adapter(emulator, api_key=None), "t")).status is PollStatus.PENDING


def test_end_to_end_through_the_service(tmp_path, emulator):
    """MiniMax-Hailuo-02 routes to minimax: polled through Preparing, a rate limit in HTTP
    200 and a 502, file_id resolved, stored, called back; no key on the CDN download."""
    emulator.script(
        "mm-1",
        [
            mm.preparing(),
            mm.error(1002, "rate limit"),
            json_answer({"error": "bad gateway"}, 502),
            mm.processing(),
            mm.success("444"),
        ],
    )
    emulator.script("file:444", [mm.file(emulator.cdn_video("a"))])
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        cfg = base_config(
            tmp_path,
            providers={"minimax": {"base_url": emulator.url, "api_key": mm.API_KEY}},
        )
        cfg["providers"]["minimax"]["min_interval_s"] = 0
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            resp = client.post(
                "/poll-video",
                json={
                    "sessionId": "s",
                    "taskId": "mm-1",
                    "model": "MiniMax-Hailuo-02",
                    "callbackUrl": f"{hook}/cb",
                },
            )
            assert resp.status_code == 200, resp.text
            job = wait_status(client, resp.json()["jobId"], {"succeeded", "failed"})
            wait_for(lambda: receiver.events("video.succeeded"))
    assert job["status"] == "succeeded" and job["provider"] == "minimax"
    assert len(job["videoUrls"]) == 1 and job["metadata"][0]["codec"] == "h264"
    assert receiver.events("video.succeeded")[0]["body"]["provider"] == "minimax"
    assert all(c["headers"]["authorization"] == f"Bearer {mm.API_KEY}" for c in emulator.calls)
    assert emulator.downloads
    assert all("authorization" not in d["headers"] for d in emulator.downloads)
    assert mm.API_KEY not in json.dumps(job)
