"""The contract every provider adapter passes, over real HTTP against its emulator.

Cases live in tests/support/provider_cases.py (one ``ProviderCase`` per adapter; its module
docstring says how to add one). Poll-level scenarios call the adapter directly; the
end-to-end ones run the whole service from POST /poll-video (with ``provider`` set) to the
stored video and the signed callback.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import kie_emulator as kie
from tests.support.provider_cases import CASES, CaseEmulator, ProviderCase, case_ids
from tests.support.servers import serve_in_thread
from tests.support.service import CallbackReceiver, base_config, run_service, wait_for
from webhook_poller import plugins
from webhook_poller.config import settings_from_mapping
from webhook_poller.errors import ProviderUnavailable, UnrecognizedResponse
from webhook_poller.interfaces import PluginContext, PollResult, PollStatus, ProviderTask
from webhook_poller.model import ErrorCode


@pytest.fixture(scope="module", params=CASES, ids=case_ids)
def running_case(request: pytest.FixtureRequest) -> Iterator[tuple[ProviderCase, CaseEmulator]]:
    case: ProviderCase = request.param
    with case.start() as emu:
        yield case, emu


def _provider_config(case: ProviderCase, emu: CaseEmulator) -> dict[str, Any]:
    return {case.section: {"base_url": emu.url, "api_key": case.api_key, "min_interval_s": 0}}


def _adapter(case: ProviderCase, emu: CaseEmulator) -> Any:
    settings = settings_from_mapping({"providers": _provider_config(case, emu)})
    cls = plugins.load("adapter", case.adapter)
    return cls(settings.provider_options(case.section), PluginContext(settings))


async def _poll(case: ProviderCase, emu: CaseEmulator, scenario: str) -> PollResult:
    task_id = emu.task_id(scenario)
    emu.scenario(task_id, scenario)
    adapter = _adapter(case, emu)
    async with httpx.AsyncClient() as http:
        task = ProviderTask(task_id, case.model, case.adapter)
        result: PollResult = await adapter.poll(task, http)
    return result


def _is_video_url(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def test_adapter_declares_its_family_and_link_lifetime(running_case):
    case, _ = running_case
    cls = plugins.load("adapter", case.adapter)
    assert cls.name == case.adapter and cls.config_section == case.section
    assert isinstance(cls.result_link_ttl_s, float) and cls.result_link_ttl_s > 0


async def test_running_is_pending(running_case):
    result = await _poll(*running_case, "running")
    assert result.status is PollStatus.PENDING and not result.video_urls


async def test_success_with_one_video(running_case):
    result = await _poll(*running_case, "success_one")
    assert result.status is PollStatus.SUCCEEDED
    assert len(result.video_urls) == 1 and _is_video_url(result.video_urls[0])


async def test_success_with_several_videos(running_case):
    if not running_case[0].multi_video:
        pytest.skip("the provider's documented answer holds one video per task")
    result = await _poll(*running_case, "success_many")
    assert result.status is PollStatus.SUCCEEDED
    assert len(result.video_urls) == 2 and len(set(result.video_urls)) == 2
    assert all(_is_video_url(u) for u in result.video_urls)


async def test_moderation_is_moderation_rejected(running_case):
    result = await _poll(*running_case, "moderation")
    assert result.status is PollStatus.FAILED
    assert result.error_code is ErrorCode.MODERATION_REJECTED


async def test_other_failure_has_another_code(running_case):
    result = await _poll(*running_case, "failure")
    assert result.status is PollStatus.FAILED
    assert result.error_code is not None
    assert result.error_code is not ErrorCode.MODERATION_REJECTED


async def test_429_is_rate_limited_with_retry_after(running_case):
    with pytest.raises(ProviderUnavailable) as err:
        await _poll(*running_case, "rate_limited")
    assert err.value.rate_limited and err.value.retry_after_s == 7


async def test_5xx_is_transient(running_case):
    with pytest.raises(ProviderUnavailable):
        await _poll(*running_case, "server_error")


@pytest.mark.parametrize("scenario", ["html", "truncated"])
async def test_unreadable_bodies_are_transient(running_case, scenario):
    with pytest.raises((ProviderUnavailable, UnrecognizedResponse)):
        await _poll(*running_case, scenario)


async def test_success_without_url_has_no_url(running_case):
    result = await _poll(*running_case, "success_no_url")
    assert result.status in (PollStatus.SUCCEEDED, PollStatus.PENDING)
    assert result.video_urls == ()


# --- end to end through the service --------------------------------------------------------


def _run_job(tmp_path, case: ProviderCase, emu: CaseEmulator, scenario: str) -> dict[str, Any]:
    task_id = emu.task_id(scenario)
    emu.scenario(task_id, scenario)
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        config = base_config(tmp_path, providers=_provider_config(case, emu))
        with run_service(config) as url, httpx.Client(base_url=url) as client:
            resp = client.post(
                "/poll-video",
                json={
                    "sessionId": "s-contract",
                    "taskId": task_id,
                    "model": case.model,
                    "provider": case.adapter,
                    "callbackUrl": f"{hook}/cb",
                },
            )
            assert resp.status_code == 200, resp.text
            job_id = resp.json()["jobId"]

            def finished() -> dict[str, Any] | None:
                body: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
                return body if body["status"] in ("succeeded", "failed") else None

            body = wait_for(finished, 30)
            wait_for(lambda: receiver.events(), 15)
    return {"job": body, "callbacks": receiver.events()}


def test_end_to_end_several_videos_stored_and_called_back(tmp_path, running_case):
    case, emu = running_case
    scenario, count = ("success_many", 2) if case.multi_video else ("success_one", 1)
    out = _run_job(tmp_path, case, emu, scenario)
    job = out["job"]
    assert job["status"] == "succeeded", job
    assert job["provider"] == case.adapter
    assert len(job["metadata"]) == count
    callback = out["callbacks"][0]
    assert callback["verified"] and callback["body"]["event"] == "video.succeeded"


def test_expired_link_is_refreshed_once(tmp_path, running_case):
    """The first result link answers 410: the provider is polled again for a fresh one."""
    case, emu = running_case
    before = emu.expired_fetches()
    out = _run_job(tmp_path, case, emu, "expired_link")
    assert out["job"]["status"] == "succeeded", out["job"]
    assert emu.expired_fetches() == before + 1
    assert out["callbacks"][0]["body"]["event"] == "video.succeeded"


def test_a_link_that_stays_dead_fails_with_download_failed_after_one_refresh(tmp_path):
    """One more poll and one more download, no loop: then download_failed."""
    emu = kie.KieEmulator()
    with serve_in_thread(emu.app) as base:
        dead = kie.market("success", [f"{base}/files/expired/dead.mp4"])
        emu.script("dead-1", [dead])
        config = base_config(tmp_path, providers={"kie": {"base_url": base}})
        with run_service(config) as url, httpx.Client(base_url=url) as client:
            resp = client.post(
                "/poll-video",
                json={"sessionId": "s", "taskId": "dead-1", "model": "sora-2-text-to-video"},
            )
            job_id = resp.json()["jobId"]

            def finished() -> dict[str, Any] | None:
                body: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
                return body if body["status"] in ("succeeded", "failed") else None

            body = wait_for(finished, 30)
    assert body["status"] == "failed" and body["error"]["code"] == "download_failed"
    assert len(emu.expired_fetches) == 2
    assert len(emu.calls_for("dead-1")) == 2
