"""fal.ai queue: status then result, every documented answer over real HTTP, the key only on
the queue host, and a job end to end through the service (routed by the fal-ai/* pattern)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support import emu_fal as fal
from tests.support.emu_base import FileHost
from tests.support.service import CallbackReceiver, base_config, run_service, wait_for
from webhook_poller.adapters.fal import FalAdapter, app_path
from webhook_poller.config import settings_from_mapping
from webhook_poller.errors import ProviderTaskFailed, ProviderUnavailable, UnrecognizedResponse
from webhook_poller.interfaces import PluginContext, PollStatus, ProviderTask
from webhook_poller.model import ErrorCode


@pytest.fixture(scope="module")
def emulator():
    with fal.FalEmulator().start() as emu:
        yield emu


def adapter(url, key=fal.API_KEY):
    return FalAdapter({"base_url": url, "api_key": key}, PluginContext(settings_from_mapping({})))


async def poll(emulator, rid, key=fal.API_KEY, model=fal.MODEL):
    async with httpx.AsyncClient() as http:
        return await adapter(emulator.url, key).poll(ProviderTask(rid, model, "fal"), http)


def test_app_path_is_the_first_two_segments():
    assert app_path("fal-ai/kling-video/v2/master/text-to-video") == "fal-ai/kling-video"
    assert app_path("/fal-ai/veo3/") == "fal-ai/veo3"
    with pytest.raises(ProviderTaskFailed) as err:
        app_path("kling")
    assert err.value.code is ErrorCode.VALIDATION_FAILED


async def test_pending_answers_only_ask_the_status(emulator):
    for i, answer in enumerate([fal.in_queue("r1"), fal.in_progress("r1")]):
        emulator.script_status("r1", [answer])
        result = await poll(emulator, "r1")
        assert result.status is PollStatus.PENDING
        assert len(emulator.calls_for("status:r1")) == i + 1
    assert emulator.calls_for("result:r1") == []
    call = emulator.calls_for("status:r1")[0]
    assert call["path"] == "/fal-ai/kling-video/requests/r1/status"
    assert call["auth"] == {"authorization": f"Key {fal.API_KEY}"}


RESULTS = [
    (
        "raw output",
        fal.result("https://v3.fal.media/files/a.mp4"),
        ("https://v3.fal.media/files/a.mp4",),
    ),
    (
        "wrapped output",
        fal.result("https://v3.fal.media/files/a.mp4", wrapped=True),
        ("https://v3.fal.media/files/a.mp4",),
    ),
    (
        "several videos",
        fal.results(["https://v3.fal.media/a.mp4", "https://v3b.fal.media/b.mp4"]),
        ("https://v3.fal.media/a.mp4", "https://v3b.fal.media/b.mp4"),
    ),
    ("no url", fal.result(None), ()),
]


@pytest.mark.parametrize(("name", "answer", "urls"), RESULTS, ids=[r[0] for r in RESULTS])
async def test_completed_is_success_only_once_the_result_is_read(emulator, name, answer, urls):
    rid = f"ok-{name.replace(' ', '-')}"
    emulator.script_status(rid, [fal.completed(rid)])
    emulator.script_result(rid, [answer])
    result = await poll(emulator, rid)
    assert result.status is PollStatus.SUCCEEDED and result.video_urls == urls
    assert emulator.calls_for(f"result:{rid}")[0]["path"] == f"/fal-ai/kling-video/requests/{rid}"


FAILURES = [
    (
        "content policy",
        fal.error(422, "content_policy_violation", "flagged"),
        ErrorCode.MODERATION_REJECTED,
    ),
    ("file download", fal.error(422, "file_download_error", "x"), ErrorCode.ASSET_FETCH_FAILED),
    ("image too small", fal.error(422, "image_too_small", "x"), ErrorCode.VALIDATION_FAILED),
    ("generation timeout", fal.error(504, "generation_timeout", "x"), ErrorCode.PROVIDER_TIMEOUT),
    (
        "downstream",
        fal.error(400, "downstream_service_error", "x"),
        ErrorCode.UNKNOWN_PROVIDER_ERROR,
    ),
    (
        "detail as a string",
        (400, {"detail": "Unsafe content detected (nsfw)"}, {}),
        ErrorCode.MODERATION_REJECTED,
    ),
]


@pytest.mark.parametrize(("name", "answer", "code"), FAILURES, ids=[f[0] for f in FAILURES])
async def test_result_errors_are_normalized(emulator, name, answer, code):
    rid = f"bad-{name.replace(' ', '-')}"
    emulator.script_status(rid, [fal.completed(rid)])
    emulator.script_result(rid, [answer])
    result = await poll(emulator, rid)
    assert result.status is PollStatus.FAILED and result.error_code is code


async def test_request_level_failure_on_the_status(emulator):
    emulator.script_status(
        "rl", [fal.completed("rl", error="Request timed out", error_type="request_timeout")]
    )
    result = await poll(emulator, "rl")
    assert result.status is PollStatus.FAILED and result.error_code is ErrorCode.PROVIDER_TIMEOUT
    assert emulator.calls_for("result:rl") == []


async def test_http_trouble_is_transient(emulator):
    emulator.script_status("tr", [(429, {"detail": "slow"}, {"Retry-After": "7"})])
    with pytest.raises(ProviderUnavailable) as limited:
        await poll(emulator, "tr")
    assert limited.value.rate_limited and limited.value.retry_after_s == 7
    emulator.script_status("tr", [(502, "<html>bad gateway</html>", {})])
    with pytest.raises(ProviderUnavailable):
        await poll(emulator, "tr")
    # an internal error fal says it retries, and an untyped 500 on the result, say nothing final
    emulator.script_status("tr", [fal.completed("tr")])
    for answer in [
        fal.error(500, "internal_server_error", "x", retryable=True),
        (500, {"detail": "boom"}, {}),
    ]:
        emulator.script_result("tr", [answer])
        with pytest.raises(ProviderUnavailable):
            await poll(emulator, "tr")
    for text in ["<html>x</html>", '{"status": "COMPL']:
        emulator.script_status("tr", [(200, text, {})])
        with pytest.raises(UnrecognizedResponse):
            await poll(emulator, "tr")


async def test_bad_key_and_unknown_request_are_final(emulator):
    emulator.script_status("bk", [fal.in_queue("bk")])
    with pytest.raises(ProviderTaskFailed) as err:
        await poll(emulator, "bk", key="wrong:fal-secret")
    assert err.value.code is ErrorCode.AUTH_FAILED
    assert "fal-secret" not in f"{err.value} {err.value.detail}"
    with pytest.raises(ProviderTaskFailed):
        await poll(emulator, "never-queued")


async def test_key_from_the_environment(emulator, monkeypatch):
    monkeypatch.setenv("FAL_KEY", fal.API_KEY)
    emulator.script_status("ek", [fal.in_queue("ek")])
    assert (await poll(emulator, "ek", key=None)).status is PollStatus.PENDING


def test_job_end_to_end_and_the_media_host_gets_no_key(tmp_path, emulator):
    cdn = FileHost()
    receiver = CallbackReceiver()
    with cdn.start(), receiver.serving() as hook:
        emulator.script_status(
            "e2e", [fal.in_queue("e2e"), fal.in_progress("e2e"), fal.completed("e2e")]
        )
        emulator.script_result("e2e", [fal.results([cdn.video_url("a"), cdn.video_url("b")])])
        config = base_config(
            tmp_path,
            providers={
                "fal": {"base_url": emulator.url, "api_key": fal.API_KEY, "min_interval_s": 0}
            },
        )
        with run_service(config) as url, httpx.Client(base_url=url) as client:
            resp = client.post(
                "/poll-video",
                json={
                    "sessionId": "s",
                    "taskId": "e2e",
                    "model": fal.MODEL,
                    "callbackUrl": f"{hook}/cb",
                },
            )
            assert resp.status_code == 200, resp.text
            job_id = resp.json()["jobId"]

            def finished():
                got = client.get(f"/jobs/{job_id}").json()
                return got if got["status"] in ("succeeded", "failed") else None

            got = wait_for(finished, 30)
            events = wait_for(receiver.events, 15)
    assert got["status"] == "succeeded" and got["provider"] == "fal", got
    assert len(got["metadata"]) == 2
    assert events[0]["verified"] and events[0]["body"]["event"] == "video.succeeded"
    assert len(cdn.downloads) == 2 and all(d["auth"] == {} for d in cdn.downloads)
    assert "fal-secret" not in json.dumps(got)
