"""POST /generate over real HTTP with the KIE emulator: the cheap checks, submission, polling,
storage and the callback; the Idempotency-Key (also across a kill -9 between the create call
and its record); a 429 on create retried later; count tasks under one job; retry resubmits."""

from __future__ import annotations

import json
import re
import time
import zipfile
from io import BytesIO
from pathlib import Path

import httpx
import pytest

from tests.support import emu_fal as fal
from tests.support import emu_gemini as gem
from tests.support import emu_replicate as rep
from tests.support import kie_emulator as kie
from tests.support.servers import serve_in_thread
from tests.support.service import (
    CallbackReceiver,
    ServiceProcess,
    base_config,
    run_service,
    wait_for,
)


@pytest.fixture
def emulator():
    emu = kie.KieEmulator()
    with serve_in_thread(emu.app) as url:
        emu.url = url
        emu.base_url = url
        yield emu


def kie_config(tmp_path, emulator, **extra):
    return base_config(tmp_path, providers={"kie": {"base_url": emulator.url}}, **extra)


def finished(client, job_id, timeout=20.0):
    def check():
        body = client.get(f"/jobs/{job_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(check, timeout)


VEO = {"sessionId": "s1", "model": "veo3_fast", "prompt": "a red fox in the snow"}


def test_generate_submits_polls_stores_and_calls_back(tmp_path, emulator):
    """One request: the job is stored as submitting, the Veo task is created with the
    caller's fields, polled, its video stored, and the callback sent."""
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        cfg = kie_config(tmp_path, emulator)
        with run_service(cfg) as url, httpx.Client(base_url=url) as c:
            resp = c.post(
                "/generate",
                json={
                    **VEO,
                    "aspectRatio": "9:16",
                    "durationSeconds": 8,
                    "resolution": "1080p",
                    "imageUrls": ["https://example.com/a.png"],
                    "options": {"enableTranslation": False, "seeds": 12345},
                    "callbackUrl": f"{hook}/done",
                    "context": {"chatId": 7},
                },
            )
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["ok"] is True and body["status"] == "submitting"
            assert body["statusUrl"].endswith(f"/jobs/{body['jobId']}")
            job = finished(c, body["jobId"])
            wait_for(lambda: receiver.events("video.succeeded"))
    assert job["status"] == "succeeded", job
    assert job["videoCount"] == 1
    assert len(emulator.creates) == 1
    create = emulator.creates[0]
    assert create["path"] == "/api/v1/veo/generate"
    assert create["auth"] == f"Bearer {kie.API_KEY}"
    assert create["body"] == {
        "prompt": "a red fox in the snow",
        "model": "veo3_fast",
        "generationType": "FIRST_AND_LAST_FRAMES_2_VIDEO",
        "imageUrls": ["https://example.com/a.png"],
        "aspect_ratio": "9:16",
        "resolution": "1080p",
        "enableTranslation": False,
        "seeds": 12345,
    }
    assert job["taskId"] == create["task_id"] and job["taskIds"] == [create["task_id"]]
    assert job["retryOf"] is None and job["attemptNumber"] == 1
    event = receiver.events("video.succeeded")[0]["body"]
    assert event["jobId"] == body["jobId"] and event["context"] == {"chatId": 7}
    assert receiver.bad_signatures == 0


def test_market_count_makes_several_tasks_under_one_job(tmp_path, emulator):
    """count: 3 creates three Sora tasks; the job holds videos 0..2 and one ZIP of them."""
    cfg = kie_config(tmp_path, emulator)
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        resp = c.post(
            "/generate",
            json={
                "sessionId": "s2",
                "model": "sora-2-text-to-video",
                "prompt": "waves",
                "aspectRatio": "16:9",
                "durationSeconds": 15,
                "count": 3,
                "options": {"remove_watermark": True},
            },
        )
        assert resp.status_code == 200, resp.text
        job = finished(c, resp.json()["jobId"])
        archive = c.get(f"/jobs/{job['jobId']}/download.zip")
    assert job["status"] == "succeeded", job
    assert [v["index"] for v in job["videos"]] == [0, 1, 2]
    assert job["taskIds"] == emulator.created_tasks() and len(job["taskIds"]) == 3
    assert {c["path"] for c in emulator.creates} == {"/api/v1/jobs/createTask"}
    assert emulator.creates[0]["body"] == {
        "model": "sora-2-text-to-video",
        "input": {
            "prompt": "waves",
            "aspect_ratio": "landscape",
            "n_frames": "15",
            "remove_watermark": True,
        },
    }
    assert len(zipfile.ZipFile(BytesIO(archive.content)).namelist()) == 3


@pytest.mark.parametrize(
    ("change", "field", "allowed"),
    [
        ({"prompt": "   "}, "prompt", None),
        ({"prompt": None}, "prompt", None),
        ({"durationSeconds": 5}, "durationSeconds", [8]),
        ({"aspectRatio": "4:3"}, "aspectRatio", ["16:9", "9:16", "Auto"]),
        ({"resolution": "8k"}, "resolution", ["720p", "1080p", "4k"]),
        ({"imageUrls": ["https://e.com/1.png"] * 4}, "imageUrls", [0, 1, 2, 3]),
        ({"count": 5}, "count", [1, 2, 3, 4]),
        ({"model": "veo9"}, "model", ["veo3", "veo3_fast", "veo3_lite"]),
        ({"options": {"colour": "red"}}, "options.colour", None),
        ({"options": {"seeds": 3}}, "options.seeds", None),
        ({"promt": "typo"}, "promt", None),
    ],
)
def test_cheap_checks_refuse_before_any_paid_call(tmp_path, emulator, change, field, allowed):
    """Each bad field is a 422 naming it (and the allowed values); nothing reaches KIE."""
    cfg = kie_config(tmp_path, emulator)
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        resp = c.post("/generate", json={**VEO, **change})
        listed = c.get("/jobs").json()["jobs"]
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["field"] == field
    if allowed is not None:
        assert error["allowed"] == allowed
    assert emulator.creates == [] and listed == []


def test_image_count_of_an_image_model_and_models_that_cannot_be_generated(tmp_path, emulator):
    cfg = kie_config(tmp_path, emulator)
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        no_image = c.post("/generate", json={**VEO, "model": "sora-2-image-to-video"})
        demo = c.post("/generate", json={**VEO, "model": "demo"})
        bad_key = c.post("/generate", json=VEO, headers={"Idempotency-Key": "x" * 300})
    assert no_image.status_code == 422 and no_image.json()["error"]["allowed"] == [1]
    assert demo.status_code == 422 and demo.json()["error"]["field"] == "model"
    assert "veo3_fast" in demo.json()["error"]["allowed"]
    assert bad_key.status_code == 400
    assert emulator.creates == []


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_same_idempotency_key_gives_one_job_and_one_submission(
    tmp_path, emulator, backend, request
):
    """The same key and body twice: one job, one create call; another body: 409 conflict
    (on either store: the key is the job's dedupe key)."""
    cfg = kie_config(tmp_path, emulator)
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        server.flush()
        cfg["store"] = {"url": server.url, "lease_s": 5}
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        headers = {"Idempotency-Key": "order-42"}
        first = c.post("/generate", json=VEO, headers=headers).json()
        second = c.post("/generate", json=VEO, headers=headers).json()
        job = finished(c, first["jobId"])
        third = c.post("/generate", json=VEO, headers=headers).json()
        other = c.post("/generate", json={**VEO, "prompt": "a blue fox"}, headers=headers)
        fresh = c.post("/generate", json=VEO, headers={"Idempotency-Key": "order-43"}).json()
        finished(c, fresh["jobId"])
    assert job["status"] == "succeeded"
    assert first["jobId"] == second["jobId"] == third["jobId"] != fresh["jobId"]
    assert second["alreadyKnown"] is True and first["alreadyKnown"] is False
    assert other.status_code == 409 and other.json()["error"]["code"] == "conflict"
    assert len(emulator.creates) == 2, "one create per key"


def test_429_on_create_keeps_submitting_and_retries_later(tmp_path, emulator):
    """KIE rejects a create with 429 (not queued): the job stays submitting, tries again."""
    emulator.create_answers = [
        (429, {"code": 429, "msg": "Rate limit exceeded"}, {"Retry-After": "1"}),
        kie.envelope(429, "Rate limit exceeded"),
    ]
    cfg = kie_config(tmp_path, emulator)
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        job_id = c.post("/generate", json=VEO).json()["jobId"]
        wait_for(lambda: len(emulator.creates) >= 1)
        assert c.get(f"/jobs/{job_id}").json()["status"] == "submitting"
        job = finished(c, job_id)
    assert job["status"] == "succeeded", job
    assert len(emulator.creates) == 3
    assert emulator.creates[1]["time"] - emulator.creates[0]["time"] >= 1.0, "Retry-After"
    assert len(emulator.created_tasks()) == 1


def test_refused_create_fails_with_named_code_and_submitting_is_cancellable(tmp_path, emulator):
    emulator.create_answers = [kie.envelope(402, "Credits insufficient")]
    cfg = kie_config(tmp_path, emulator)
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        failed = finished(c, c.post("/generate", json=VEO).json()["jobId"])
        emulator.create_answers = [(429, {"code": 429, "msg": "slow"}, {"Retry-After": "30"})]
        job_id = c.post("/generate", json=VEO).json()["jobId"]
        wait_for(lambda: len(emulator.creates) >= 2)
        cancelled = c.post(f"/jobs/{job_id}/cancel")
    assert failed["status"] == "failed" and failed["error"]["code"] == "insufficient_credits"
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


def test_retry_of_a_generated_job_resubmits_as_a_new_job(tmp_path, emulator):
    """Retry means regenerate: a new job and a new provider task with the same parameters,
    linked by retryOf and counted by attemptNumber; a poll-only job is re-queued as before."""
    emulator.script("own-task", [kie.veo_failed(501, "generation failed")])
    cfg = kie_config(tmp_path, emulator)
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        first = finished(
            c, c.post("/generate", json={**VEO, "aspectRatio": "16:9"}).json()["jobId"]
        )
        again = c.post(f"/jobs/{first['jobId']}/retry")
        assert again.status_code == 200, again.text
        second = finished(c, again.json()["jobId"])
        third = c.post(f"/jobs/{second['jobId']}/retry").json()
        finished(c, third["jobId"])
        polled = c.post(
            "/poll-video", json={"sessionId": "s", "taskId": "own-task", "model": "veo3"}
        ).json()
        finished(c, polled["jobId"])
        requeued = c.post(f"/jobs/{polled['jobId']}/retry").json()
    assert again.json()["action"] == "resubmitted"
    assert second["jobId"] != first["jobId"] and second["status"] == "succeeded"
    assert second["retryOf"] == first["jobId"] and second["attemptNumber"] == 2
    assert third["retryOf"] == second["jobId"] and third["attemptNumber"] == 3
    assert len(emulator.creates) == 3
    assert [c["body"] for c in emulator.creates] == [emulator.creates[0]["body"]] * 3
    assert requeued["action"] == "requeued" and requeued["jobId"] == polled["jobId"]
    assert requeued["status"] == "queued"


@pytest.mark.crash
def test_kill_9_between_create_and_record_never_submits_twice(tmp_path, emulator):
    """Killed while KIE is still answering the create call: after the restart the same key
    gives the same job, no second create call goes out, and the job fails saying why."""
    emulator.create_delay_s = 30
    cfg = kie_config(tmp_path, emulator, store={"lease_s": 1})
    svc = ServiceProcess(cfg, tmp_path).start()
    headers = {"Idempotency-Key": "crash-1"}
    try:
        first = httpx.post(f"{svc.url}/generate", json=VEO, headers=headers).json()
        wait_for(lambda: len(emulator.creates) == 1)
        svc.kill()
        emulator.create_delay_s = 0
        svc.start()
        again = httpx.post(f"{svc.url}/generate", json=VEO, headers=headers).json()
        with httpx.Client(base_url=svc.url) as c:
            job = finished(c, first["jobId"])
        time.sleep(0.5)
    finally:
        svc.kill()
    assert again["jobId"] == first["jobId"] and again["alreadyKnown"] is True
    assert len(emulator.creates) == 1, "never a second paid submission"
    assert job["status"] == "failed"
    assert "not sent again" in job["error"]["reason"]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_create_calls_keep_to_kie_budget_of_20_per_10_s(tmp_path, emulator, backend, request):
    """24 tasks asked for at once: at most 20 create calls in any 10 s, the rest after. One
    process lets the first 20 go at once; on Redis the budget is every instance's, spaced."""
    cfg = kie_config(tmp_path, emulator)
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        server.flush()
        cfg["store"] = {"url": server.url, "lease_s": 5}
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        ids = [
            c.post("/generate", json={**VEO, "sessionId": f"b{i}", "count": 4}).json()["jobId"]
            for i in range(6)
        ]
        jobs = [finished(c, job_id, timeout=40) for job_id in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * 6, [j["error"] for j in jobs]
    times = sorted(c["time"] for c in emulator.creates)
    assert len(times) == 24
    for i in range(len(times) - 20):
        assert times[i + 20] - times[i] >= 10.0, "no 21 create calls within 10 s"
    if backend == "sqlite":
        assert times[19] - times[0] < 5, "the first 20 go at once"


def test_readme_n8n_example_runs_as_written(tmp_path, emulator):
    """The README's /generate body, with n8n's expressions filled in, goes end to end and
    resumes the Wait node (the callback) with the video."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Generating (POST /generate)", 1)[1]
    block = section.split("```json", 1)[1].split("```", 1)[0]
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        values = {
            "$json.sessionId": "n8n-1",
            "$json.prompt": "a lighthouse at dusk",
            "$execution.resumeUrl": f"{hook}/webhook-waiting/1",
            "$json.chatId": "99",
        }
        text = re.sub(r"\{\{ (\S+) \}\}", lambda m: values[m.group(1)], block)
        cfg = kie_config(tmp_path, emulator)
        with run_service(cfg) as url, httpx.Client(base_url=url) as c:
            resp = c.post("/generate", json=json.loads(text), headers={"Idempotency-Key": "e1"})
            assert resp.status_code == 200, resp.text
            job = finished(c, resp.json()["jobId"])
            wait_for(lambda: receiver.events("video.succeeded"))
    assert job["status"] == "succeeded"
    event = receiver.events("video.succeeded")[0]
    assert event["path"] == "/webhook-waiting/1" and event["body"]["videoUrls"]
    assert emulator.creates[0]["body"]["aspect_ratio"] == "9:16"


def test_replicate_generation_by_provider_field(tmp_path):
    """provider=replicate: predictions are created on the model's path with its input
    schema, a throttled create is tried again, two predictions make one job of two videos."""
    emu = rep.ReplicateEmulator()
    emu.create_answers = [
        (429, {"detail": "Request was throttled. Your rate limit resets in ~1s."}, {}),
    ]
    with emu.start():
        cfg = base_config(
            tmp_path,
            providers={
                "replicate": {"base_url": emu.url, "api_key": rep.API_TOKEN, "min_interval_s": 0}
            },
        )
        body = {
            "sessionId": "r1",
            "model": "google/veo-3-fast",
            "provider": "replicate",
            "prompt": "a paper boat",
            "aspectRatio": "9:16",
            "durationSeconds": 6,
            "resolution": "1080p",
            "count": 2,
            "options": {"generate_audio": False, "negative_prompt": "rain"},
        }
        with run_service(cfg) as url, httpx.Client(base_url=url) as c:
            wrong = c.post("/generate", json={**body, "durationSeconds": 5})
            job = finished(c, c.post("/generate", json=body).json()["jobId"], timeout=30)
    assert wrong.status_code == 422 and wrong.json()["error"]["allowed"] == [4, 6, 8]
    assert job["status"] == "succeeded", job
    assert [v["index"] for v in job["videos"]] == [0, 1]
    assert len(emu.creates) == 3 and emu.creates[0]["task_id"] is None
    assert emu.creates[1]["path"] == "/v1/models/google/veo-3-fast/predictions"
    assert emu.creates[1]["body"] == {
        "input": {
            "prompt": "a paper boat",
            "aspect_ratio": "9:16",
            "duration": 6,
            "resolution": "1080p",
            "generate_audio": False,
            "negative_prompt": "rain",
        }
    }
    assert job["taskIds"] == [c["task_id"] for c in emu.creates[1:]]


def test_form_body_as_zapier_sends_it(tmp_path, emulator):
    """A form-encoded body (Zapier's Form mode): numbers and the options object as strings."""
    emulator.create_answers = [(429, {"code": 429, "msg": "slow"}, {"Retry-After": "30"})]
    cfg = kie_config(tmp_path, emulator)
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        resp = c.post(
            "/generate",
            data={
                "sessionId": "z1",
                "model": "veo3",
                "prompt": "a snail race",
                "durationSeconds": "8",
                "count": "2",
                "imageUrls": "https://example.com/first.png",
                "options": '{"watermark": "zap"}',
            },
        )
        assert resp.status_code == 200, resp.text
        wait_for(lambda: emulator.creates)
        listed = c.get("/jobs", params={"status": "submitting"}).json()["jobs"]
    assert [j["jobId"] for j in listed] == [resp.json()["jobId"]]
    assert emulator.creates[0]["body"]["imageUrls"] == ["https://example.com/first.png"]
    assert emulator.creates[0]["body"]["watermark"] == "zap"


def test_gemini_generation_routed_by_model_name(tmp_path):
    """veo-3.1-generate-preview goes to Gemini: predictLongRunning with the key header and
    the parameters, the operation polled and its file fetched; images are refused up front."""
    emu = gem.GeminiEmulator()
    with emu.start():
        cfg = base_config(
            tmp_path,
            providers={
                "gemini": {"base_url": emu.url, "api_key": gem.API_KEY, "min_interval_s": 0}
            },
        )
        body = {
            "sessionId": "g1",
            "model": "veo-3.1-generate-preview",
            "prompt": "a kite over dunes",
            "aspectRatio": "16:9",
            "durationSeconds": 6,
            "resolution": "720p",
            "options": {"negativePrompt": "people", "personGeneration": "dont_allow"},
        }
        with run_service(cfg) as url, httpx.Client(base_url=url) as c:
            image = c.post("/generate", json={**body, "imageUrls": ["https://e.com/a.png"]})
            job = finished(c, c.post("/generate", json=body).json()["jobId"], timeout=30)
    assert image.status_code == 422 and image.json()["error"]["field"] == "imageUrls"
    assert job["status"] == "succeeded" and job["provider"] == "gemini", job
    assert len(emu.creates) == 1
    create = emu.creates[0]
    assert create["path"] == "/v1beta/models/veo-3.1-generate-preview:predictLongRunning"
    assert create["key"] == gem.API_KEY
    assert create["body"] == {
        "instances": [{"prompt": "a kite over dunes"}],
        "parameters": {
            "aspectRatio": "16:9",
            "resolution": "720p",
            "durationSeconds": 6,
            "negativePrompt": "people",
            "personGeneration": "dont_allow",
        },
    }
    assert job["taskId"] == create["task_id"]


def test_fal_generation_on_the_queue(tmp_path):
    """fal-ai/veo3/fast/image-to-video: queued with its input schema ("6s", image_url) and
    the Key header, polled on the app's path, stored; the image is required up front."""
    emu = fal.FalEmulator()
    with emu.start():
        cfg = base_config(
            tmp_path,
            providers={"fal": {"base_url": emu.url, "api_key": fal.API_KEY, "min_interval_s": 0}},
        )
        body = {
            "sessionId": "f1",
            "model": "fal-ai/veo3/fast/image-to-video",
            "prompt": "the statue waves",
            "imageUrls": ["https://example.com/statue.png"],
            "aspectRatio": "auto",
            "durationSeconds": 6,
            "options": {"generate_audio": True},
        }
        with run_service(cfg) as url, httpx.Client(base_url=url) as c:
            no_image = c.post("/generate", json={**body, "imageUrls": []})
            job = finished(c, c.post("/generate", json=body).json()["jobId"], timeout=30)
    assert no_image.status_code == 422 and no_image.json()["error"]["allowed"] == [1]
    assert job["status"] == "succeeded" and job["provider"] == "fal", job
    assert len(emu.creates) == 1
    create = emu.creates[0]
    assert create["path"] == "/fal-ai/veo3/fast/image-to-video"
    assert create["auth"] == f"Key {fal.API_KEY}"
    assert create["body"] == {
        "prompt": "the statue waves",
        "image_url": "https://example.com/statue.png",
        "aspect_ratio": "auto",
        "duration": "6s",
        "generate_audio": True,
    }
    assert job["taskId"] == create["task_id"]


def test_create_refused_with_429_until_the_deadline_fails_rate_limited(tmp_path, emulator):
    """KIE keeps answering 429: retried with backoff, then failed once give_up_after_s is
    spent, with provider_rate_limited; no task was ever created."""
    emulator.create_answers = [kie.envelope(429, "Rate limit exceeded")] * 1000
    cfg = kie_config(tmp_path, emulator, polling={"give_up_after_s": 1.5})
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        job = finished(c, c.post("/generate", json=VEO).json()["jobId"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "provider_rate_limited", job
    assert len(emulator.creates) >= 3 and emulator.created_tasks() == []


@pytest.mark.redis
def test_two_instances_on_one_redis_share_the_create_budget(tmp_path, emulator, redis_server):
    """Two instances on one Redis and one KIE key, 12 tasks each at once: their create calls
    together keep to 20 in any 10 s (each alone would have sent its 12 at once)."""
    redis_server.flush()
    configs = [
        kie_config(tmp_path / name, emulator, store={"url": redis_server.url, "lease_s": 5})
        for name in ("a", "b")
    ]
    with run_service(configs[0]) as url_a, run_service(configs[1]) as url_b:
        ids = []
        for i, url in enumerate([url_a, url_b] * 3):
            body = {**VEO, "sessionId": f"two{i}", "count": 4}
            ids.append((url, httpx.post(f"{url}/generate", json=body).json()["jobId"]))
        jobs = []
        for url, job_id in ids:
            with httpx.Client(base_url=url) as c:
                jobs.append(finished(c, job_id, timeout=45))
    assert [j["status"] for j in jobs] == ["succeeded"] * 6
    times = sorted(c["time"] for c in emulator.creates)
    assert len(times) == 24
    for i in range(len(times) - 20):
        assert times[i + 20] - times[i] >= 10.0, "no 21 create calls within 10 s"
