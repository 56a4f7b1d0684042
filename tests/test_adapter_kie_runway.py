"""KIE's Runway wrapper (``kie-runway``): record-detail shapes parsed, and the adapter over
real HTTP, alone and through the whole service."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support import kie_emulator as kie
from tests.support.emu_scripted import truncated
from tests.support.servers import serve_in_thread
from tests.support.service import (
    CallbackReceiver,
    base_config,
    run_service,
    wait_for,
    wait_status,
)
from webhook_poller.adapters.kie import (
    KieMarketAdapter,
    KieRunwayAdapter,
    KieVeoAdapter,
    parse_kie_runway_payload,
)
from webhook_poller.config import DEFAULT_MODELS, settings_from_mapping
from webhook_poller.errors import ProviderTaskFailed, ProviderUnavailable, UnrecognizedResponse
from webhook_poller.interfaces import PluginContext, PollStatus, ProviderTask
from webhook_poller.model import ErrorCode
from webhook_poller.services import ModelRouter

A = "https://file.aiquickdraw.com/r/a.mp4"


def record(**data):
    return {"code": 200, "msg": "success", "data": data}


@pytest.mark.parametrize(
    ("payload", "status", "urls", "code"),
    [
        (record(state="wait"), PollStatus.PENDING, (), None),
        (record(state="queueing"), PollStatus.PENDING, (), None),
        (record(state="generating"), PollStatus.PENDING, (), None),
        # The published example: "wait" with a videoUrl and a failCode filled in.
        (
            record(state="wait", videoInfo={"videoUrl": A}, failCode=400, failMsg="x"),
            PollStatus.PENDING,
            (),
            None,
        ),
        (
            record(state="success", videoInfo={"videoUrl": A, "imageUrl": "https://x/t.png"}),
            PollStatus.SUCCEEDED,
            (A,),
            None,
        ),
        (record(state="success", videoInfo={"videoUrl": ""}), PollStatus.SUCCEEDED, (), None),
        (
            record(state="success", videoInfo={"videoUrl": A}, expireFlag=1),
            PollStatus.FAILED,
            (),
            ErrorCode.OUTPUT_MISSING,
        ),
        (
            record(state="fail", failCode=400, failMsg="Your prompt was flagged as inappropriate"),
            PollStatus.FAILED,
            (),
            ErrorCode.MODERATION_REJECTED,
        ),
        (
            record(state="fail", failCode=400, failMsg="Generation failed, please retry"),
            PollStatus.FAILED,
            (),
            ErrorCode.UNKNOWN_PROVIDER_ERROR,
        ),
    ],
)
def test_parse_every_documented_record_shape(payload, status, urls, code):
    """States, the thumbnail, the contradictory example, failCode 400 for every failure
    (the text decides) and expireFlag."""
    result = parse_kie_runway_payload(payload)
    assert result.status is status
    assert result.video_urls == urls
    assert result.error_code is code
    assert parse_kie_runway_payload(json.dumps(payload)).status is status


def test_runway_models_route_to_kie_runway_and_direct_names_to_runway():
    """runway* is KIE's wrapper by default; Runway's own model names go to runway."""
    router = ModelRouter(DEFAULT_MODELS)
    assert router.adapter_for("runway-gen4") == "kie-runway"
    assert router.adapter_for("gen4_turbo") == "runway"
    assert router.adapter_for("gen3a_turbo") == "runway"
    with pytest.raises(UnrecognizedResponse):
        parse_kie_runway_payload('{"code": 200, "data": {"sta')


@pytest.fixture
def emulator():
    emu = kie.KieEmulator()
    with serve_in_thread(emu.app) as url:
        emu.url = url
        yield emu


def make_adapter(emu, key=kie.API_KEY):
    return KieRunwayAdapter(
        {"base_url": emu.url, "api_key": key}, PluginContext(settings_from_mapping({}))
    )


async def poll(adapter, task_id):
    async with httpx.AsyncClient() as http:
        return await adapter.poll(ProviderTask(task_id, "runway", "kie-runway"), http)


async def test_answers_over_http(emulator):
    """Running, success, moderation, other failure, no URL, envelope errors and HTTP
    trouble, over real HTTP on the record-detail path."""
    adapter = make_adapter(emulator)
    emulator.script("run", [kie.runway("generating")])
    assert (await poll(adapter, "run")).status is PollStatus.PENDING
    assert emulator.calls_for("run")[0]["path"] == "/api/v1/runway/record-detail"
    emulator.script("one", [kie.runway("success", A)])
    assert (await poll(adapter, "one")).video_urls == (A,)
    emulator.script("mod", [kie.runway("fail", fail_code=400, fail_msg="content policy")])
    assert (await poll(adapter, "mod")).error_code is ErrorCode.MODERATION_REJECTED
    emulator.script("bad", [kie.runway("fail", fail_code=400, fail_msg="failed")])
    assert (await poll(adapter, "bad")).error_code is ErrorCode.UNKNOWN_PROVIDER_ERROR
    emulator.script("nourl", [kie.runway("success", "")])
    assert (await poll(adapter, "nourl")).video_urls == ()
    emulator.script("credits", [kie.envelope(402, "Credits insufficient")])
    with pytest.raises(ProviderTaskFailed) as credits:
        await poll(adapter, "credits")
    assert credits.value.code is ErrorCode.INSUFFICIENT_CREDITS
    emulator.script("slow", [(429, {"code": 429, "msg": "slow"}, {"Retry-After": "8"})])
    with pytest.raises(ProviderUnavailable) as limited:
        await poll(adapter, "slow")
    assert limited.value.rate_limited and limited.value.retry_after_s == 8
    for answer in ((500, {"code": 500, "msg": "x"}, {}), (200, "<html>x</html>", {})):
        emulator.script("trouble", [answer])
        with pytest.raises((ProviderUnavailable, UnrecognizedResponse)):
            await poll(adapter, "trouble")
    emulator.script("cut", [truncated('{"code": 200, "data": {"state": "succ')])
    with pytest.raises(UnrecognizedResponse):
        await poll(adapter, "cut")


def test_end_to_end_through_the_service(tmp_path, emulator):
    """A runway* model goes to kie-runway with the kie section's key: polled through the
    wait and queueing states, stored from another host, and called back."""
    cdn = f"{emulator.url.replace('127.0.0.1', 'localhost')}/files/a.mp4"
    emulator.script(
        "kr-1",
        [kie.runway("wait"), kie.runway("queueing"), kie.runway("success", cdn)],
    )
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        cfg = base_config(tmp_path, providers={"kie": {"base_url": emulator.url}})
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            resp = client.post(
                "/poll-video",
                json={
                    "sessionId": "s",
                    "taskId": "kr-1",
                    "model": "runway-gen4",
                    "callbackUrl": f"{hook}/cb",
                },
            )
            assert resp.status_code == 200, resp.text
            job = wait_status(client, resp.json()["jobId"], {"succeeded", "failed"})
            wait_for(lambda: receiver.events("video.succeeded"))
    assert job["status"] == "succeeded" and job["provider"] == "kie-runway"
    assert job["attempts"] == 3 and job["metadata"][0]["codec"] == "h264"
    assert receiver.events("video.succeeded")[0]["body"]["provider"] == "kie-runway"
    assert all(c["auth"] == f"Bearer {kie.API_KEY}" for c in emulator.calls_for("kr-1"))


def test_every_kie_adapter_declares_its_link_lifetime():
    """KIE result URLs typically expire after 24 hours: kie-veo, kie-market and kie-runway."""
    for cls in (KieVeoAdapter, KieMarketAdapter, KieRunwayAdapter):
        assert cls.result_link_ttl_s == 86400
