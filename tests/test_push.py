"""Provider push over real HTTP: POST /callbacks/{provider} moves the job on at once, the
status is read again from the provider before any result is used, and polling stays the net.

Everything runs against local emulators on 127.0.0.1: the KIE emulator, the Replicate and
fal emulators, a JWKS server with a key generated here, and a callback receiver.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support import emu_fal, emu_gemini, emu_replicate, kie_declarative
from tests.support import kie_emulator as kie
from tests.support.servers import serve_in_thread
from tests.support.service import CallbackReceiver, base_config, run_service, wait_for
from webhook_poller.adapters._signatures import fal_message, kie_signature
from webhook_poller.config import PollingSettings
from webhook_poller.interfaces import JobStore, PollResult, PollStatus
from webhook_poller.model import Job, JobState
from webhook_poller.policy import PollPolicy
from webhook_poller.push import push_callback_url
from webhook_poller.services import ProviderGate
from webhook_poller.stores.sqlite import SqliteJobStore

HMAC_KEY = "test-kie-webhook-hmac-key"
REPLICATE_SECRET = "whsec_" + base64.b64encode(b"replicate-webhook-test-secret!!").decode()
#: Polls that would never come within a test: only a push (or the fallback) moves a job.
SLOW = {"interval_s": 60, "first_poll_delay_s": 60, "push_fallback_interval_s": 60}


@pytest.fixture
def emulator():
    emu = kie.KieEmulator()
    with serve_in_thread(emu.app) as url:
        emu.url = url
        yield emu


def kie_push_config(tmp_path, emulator, *, polling=None, hmac_key=HMAC_KEY):
    kie_section = {"base_url": emulator.url}
    if hmac_key:
        kie_section["webhook_hmac_key"] = hmac_key
    return base_config(tmp_path, providers={"kie": kie_section}, polling=polling or SLOW)


def kie_push_body(task_id, urls):
    """A Veo generation callback as KIE documents it."""
    return json.dumps(
        {
            "code": 200,
            "msg": "Veo3 video generated successfully.",
            "data": {
                "taskId": task_id,
                "info": {"resultUrls": urls, "originUrls": [], "resolution": "1080p"},
                "fallbackFlag": False,
            },
        }
    ).encode()


def kie_headers(task_id, *, key=HMAC_KEY, timestamp=None):
    ts = str(int(timestamp if timestamp is not None else time.time()))
    return {
        "content-type": "application/json",
        "X-Webhook-Timestamp": ts,
        "X-Webhook-Signature": kie_signature(key, task_id, ts),
    }


def post_job(client, task_id, model="veo3_fast", **extra):
    body = {"sessionId": "s-push", "taskId": task_id, "model": model, **extra}
    resp = client.post("/poll-video", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["jobId"]


def job(client, job_id):
    return client.get(f"/jobs/{job_id}").json()


def test_signed_kie_push_stores_video_and_calls_back_within_a_second(tmp_path, emulator):
    """With a 60 s poll interval, a signed push ends in the stored video and the callback
    within a second, after one status read; the URL in the push body is never used."""
    real = f"{emulator.url}/files/real.mp4"
    emulator.script("push-1", [kie.veo_success([real])])
    receiver = CallbackReceiver()
    with receiver.serving() as hook, run_service(kie_push_config(tmp_path, emulator)) as url:
        with httpx.Client(base_url=url) as c:
            job_id = post_job(c, "push-1", expectPush=True, callbackUrl=f"{hook}/done")
            time.sleep(0.3)
            assert emulator.calls_for("push-1") == [], "nothing polls before the push"
            # the pushed URL is not a video: were it trusted, the download would fail
            body = kie_push_body("push-1", [f"{emulator.url}/files/not-video"])
            started = time.monotonic()
            resp = c.post("/callbacks/kie", content=body, headers=kie_headers("push-1"))
            assert resp.status_code == 200 and resp.json() == {"ok": True}
            wait_for(lambda: receiver.events("video.succeeded"), timeout=5)
            elapsed = time.monotonic() - started
            done = wait_for(lambda: (b := job(c, job_id))["status"] == "succeeded" and b, 5)
    assert elapsed < 1.0, f"the push took {elapsed:.2f} s to reach the callback"
    assert done["status"] == "succeeded" and done["metadata"][0]["codec"] == "h264"
    assert done["expectPush"] is True
    assert len(emulator.calls_for("push-1")) == 1, "the status is read again, once"
    [event] = receiver.events()
    assert event["verified"] and event["body"]["taskId"] == "push-1"


def test_forged_kie_push_changes_nothing(tmp_path, emulator):
    """Wrong key, missing headers, another task's signature, a stale timestamp: 401, and
    the job is neither polled nor rescheduled."""
    emulator.script("push-2", [kie.veo_success([f"{emulator.url}/files/a.mp4"])])
    with run_service(kie_push_config(tmp_path, emulator)) as url, httpx.Client(base_url=url) as c:
        job_id = post_job(c, "push-2", expectPush=True)
        before = job(c, job_id)
        body = kie_push_body("push-2", [f"{emulator.url}/files/a.mp4"])
        forged = [
            kie_headers("push-2", key="not-the-key"),
            {"content-type": "application/json"},
            kie_headers("other-task"),
            kie_headers("push-2", timestamp=time.time() - 7200),
            {**kie_headers("push-2"), "X-Webhook-Signature": "%%%"},
        ]
        for headers in forged:
            resp = c.post("/callbacks/kie", content=body, headers=headers)
            assert resp.status_code == 401, resp.text
            assert resp.json()["error"]["code"] == "bad_signature"
            assert HMAC_KEY not in resp.text
        time.sleep(0.5)
        after = job(c, job_id)
    assert emulator.calls_for("push-2") == []
    assert after["status"] == "queued" and after["nextPollAt"] == before["nextPollAt"]


def test_unknown_task_and_bad_pushes_store_nothing(tmp_path, emulator):
    """An unknown task id answers 200 like a known one; unreadable bodies are 4xx, never
    5xx; the endpoint needs no bearer token even when the API has one."""
    cfg = kie_push_config(tmp_path, emulator)
    cfg["server"]["auth_token"] = "push-test-token-123"
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        body = kie_push_body("never-posted", [f"{emulator.url}/files/a.mp4"])
        resp = c.post("/callbacks/kie", content=body, headers=kie_headers("never-posted"))
        assert resp.status_code == 200 and resp.json() == {"ok": True}
        for bad in (b"", b"not json", b"[1,2]", b'{"data": {"taskId": 5}}', b"\xff\xfe"):
            resp = c.post("/callbacks/kie", content=bad)
            assert resp.status_code == 400, (bad, resp.text)
        assert c.post("/callbacks/nobody", content=body).status_code == 404
        huge = b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        assert c.post("/callbacks/kie", content=huge).status_code == 413
        listed = c.get("/jobs", headers={"Authorization": "Bearer push-test-token-123"}).json()
    assert listed["jobs"] == []
    assert emulator.calls_for("never-posted") == []


def test_missed_push_is_caught_by_the_fallback_poll(tmp_path, emulator):
    """No push ever comes: an expectPush job is polled at push_fallback_interval_s (short
    here), not at the 60 s interval and not faster, and finishes."""
    emulator.script(
        "push-3",
        [kie.veo_pending(), kie.veo_pending(), kie.veo_success([f"{emulator.url}/files/b.mp4"])],
    )
    polling = {"interval_s": 60, "first_poll_delay_s": 0, "push_fallback_interval_s": 0.4}
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        cfg = kie_push_config(tmp_path, emulator, polling=polling)
        with run_service(cfg) as url, httpx.Client(base_url=url) as c:
            job_id = post_job(c, "push-3", expectPush=True, callbackUrl=f"{hook}/done")
            wait_for(lambda: receiver.events("video.succeeded"), timeout=10)
            wait_for(lambda: job(c, job_id)["status"] == "succeeded", timeout=5)
    times = [call["time"] for call in emulator.calls_for("push-3")]
    assert len(times) == 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.35 <= gap < 5 for gap in gaps), gaps


def test_duplicate_late_and_out_of_order_pushes_give_one_callback(tmp_path, emulator):
    """Pushes sent at once, repeated after the end, and a stale "failed" claim: one
    callback, a bounded number of status reads, and the job stays succeeded."""
    emulator.script("push-4", [kie.veo_success([f"{emulator.url}/files/c.mp4"])])
    receiver = CallbackReceiver()
    with receiver.serving() as hook, run_service(kie_push_config(tmp_path, emulator)) as url:
        with httpx.Client(base_url=url) as c:
            job_id = post_job(c, "push-4", expectPush=True, callbackUrl=f"{hook}/done")
            body = kie_push_body("push-4", [f"{emulator.url}/files/c.mp4"])
            answers: list[int] = []

            def send() -> None:
                with httpx.Client(base_url=url) as own:
                    r = own.post("/callbacks/kie", content=body, headers=kie_headers("push-4"))
                    answers.append(r.status_code)

            threads = [threading.Thread(target=send) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=20)
            wait_for(lambda: job(c, job_id)["status"] == "succeeded", timeout=10)
            failed = json.dumps(
                {"code": 501, "msg": "failed", "data": {"taskId": "push-4", "info": None}}
            ).encode()
            for late in (body, failed, body):
                resp = c.post("/callbacks/kie", content=late, headers=kie_headers("push-4"))
                assert resp.status_code == 200
            time.sleep(0.5)
            final = job(c, job_id)
    assert answers == [200] * 4
    assert final["status"] == "succeeded"
    assert len(receiver.events("video.succeeded")) == 1 and len(receiver.events()) == 1
    assert 1 <= len(emulator.calls_for("push-4")) <= 4


def test_push_without_a_configured_key_is_a_hint_that_is_checked(tmp_path, emulator):
    """With no webhook_hmac_key an unsigned push is accepted, but it only makes the job be
    polled: a push claiming success for a task still generating finishes nothing."""
    emulator.script("push-5", [kie.veo_pending()])
    cfg = kie_push_config(tmp_path, emulator, hmac_key=None)
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        job_id = post_job(c, "push-5", expectPush=True)
        body = kie_push_body("push-5", [f"{emulator.url}/files/d.mp4"])
        assert c.post("/callbacks/kie", content=body).status_code == 200
        wait_for(lambda: emulator.calls_for("push-5"), timeout=5)
        time.sleep(0.3)
        after = job(c, job_id)
    assert after["status"] == "polling" and after["videoCount"] == 0
    assert len(emulator.calls_for("push-5")) == 1


def test_market_jobs_are_found_through_the_kie_family(tmp_path, emulator):
    """/callbacks/kie finds a Market (Sora, Kling ...) job as well as a Veo one."""
    emulator.script("push-6", [kie.market("success", [f"{emulator.url}/files/e.mp4"])])
    with run_service(kie_push_config(tmp_path, emulator)) as url, httpx.Client(base_url=url) as c:
        job_id = post_job(c, "push-6", model="sora-2-text-to-video")
        body = json.dumps(
            {
                "code": 200,
                "msg": "Playground task completed successfully.",
                "data": {"taskId": "push-6", "state": "success", "resultJson": None},
            }
        ).encode()
        resp = c.post("/callbacks/kie", content=body, headers=kie_headers("push-6"))
        assert resp.status_code == 200
        wait_for(lambda: job(c, job_id)["status"] == "succeeded", timeout=5)


def test_unsigned_family_push_and_minimax_url_check(tmp_path, emulator):
    """A family that signs nothing (MiniMax here, on a declarative section) still finds its
    job by task id and has it polled; MiniMax's challenge is echoed, and stores nothing."""
    emulator.script("mm-1", [kie.market("success", [f"{emulator.url}/files/g.mp4"])])
    section = kie_declarative.section(emulator.url, kie.API_KEY)
    cfg = base_config(
        tmp_path,
        providers={"minimax": section},
        models={"hailuo-direct*": "minimax", "veo*": "kie-veo"},
        polling=SLOW,
    )
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        check = c.post("/callbacks/minimax", json={"challenge": "abc-123"})
        assert check.status_code == 200 and check.json() == {"challenge": "abc-123"}
        job_id = post_job(c, "mm-1", model="hailuo-direct-02")
        assert emulator.calls_for("mm-1") == []
        push = {"task_id": "mm-1", "status": "Success", "file_id": "1", "base_resp": {}}
        assert c.post("/callbacks/minimax", json=push).status_code == 200
        wait_for(lambda: job(c, job_id)["status"] == "succeeded", timeout=5)
        assert c.post("/callbacks/pika", json={"id": "mm-1"}).status_code == 404


# --- Replicate: Standard Webhooks -----------------------------------------------------------


def test_replicate_push_is_verified_with_standard_webhooks(tmp_path):
    """A Standard Webhooks-signed prediction push finishes the job; a wrong signature is 401."""
    emu = emu_replicate.ReplicateEmulator()
    with emu.start():
        video = emu.video_url("r-out")
        emu.script("pred-1", [emu_replicate.prediction("pred-1", "succeeded", video)])
        providers = {
            "replicate": {
                "base_url": emu.url,
                "api_key": emu_replicate.API_TOKEN,
                "min_interval_s": 0,
                "webhook_secret": REPLICATE_SECRET,
            }
        }
        cfg = base_config(tmp_path, providers=providers, polling=SLOW)
        with run_service(cfg) as url, httpx.Client(base_url=url) as c:
            job_id = post_job(c, "pred-1", model="google/veo-3", provider="replicate")
            body = json.dumps(emu_replicate.prediction("pred-1", "succeeded", video)[1]).encode()
            stamp = datetime.now(UTC)
            signed = Webhook(REPLICATE_SECRET).sign("msg_1", stamp, body.decode())
            headers = {
                "webhook-id": "msg_1",
                "webhook-timestamp": str(int(stamp.timestamp())),
                "webhook-signature": signed,
            }
            bad = {**headers, "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()}
            assert c.post("/callbacks/replicate", content=body, headers=bad).status_code == 401
            time.sleep(0.3)
            assert emu.calls_for("pred-1") == []
            resp = c.post("/callbacks/replicate", content=body, headers=headers)
            assert resp.status_code == 200
            wait_for(lambda: job(c, job_id)["status"] == "succeeded", timeout=5)


def standard_headers(secret: str, body: bytes, msg_id: str = "msg_1") -> dict[str, str]:
    stamp = datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, stamp, body.decode()),
    }


def test_gemini_push_matches_the_operation_however_it_is_spelled(tmp_path):
    """A signed Gemini operation push finds the job even when the caller posted the name
    with ``v1beta/``; without the signature it is 401."""
    emu = emu_gemini.GeminiEmulator()
    with emu.start():
        name = emu_gemini.op_name("g-1")
        emu.script(name, [emu_gemini.done(name, [emu.file_uri("g-file")])])
        providers = {
            "gemini": {
                "base_url": emu.url,
                "api_key": emu_gemini.API_KEY,
                "min_interval_s": 0,
                "webhook_secret": REPLICATE_SECRET,
            }
        }
        cfg = base_config(tmp_path, providers=providers, polling=SLOW)
        with run_service(cfg) as url, httpx.Client(base_url=url) as c:
            job_id = post_job(c, f"v1beta/{name}", model=emu_gemini.MODEL, expectPush=True)
            body = json.dumps({"name": name, "done": True}).encode()
            assert c.post("/callbacks/gemini", content=body).status_code == 401
            headers = standard_headers(REPLICATE_SECRET, body)
            assert c.post("/callbacks/gemini", content=body, headers=headers).status_code == 200
            wait_for(lambda: job(c, job_id)["status"] == "succeeded", timeout=5)


# --- fal: ED25519 against a JWKS -------------------------------------------------------------


class JwksServer:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        self.doc = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "test"}]}
        self.hits = 0
        self.app = Starlette(routes=[Route("/.well-known/jwks.json", self.jwks)])

    async def jwks(self, request: Request) -> Response:
        self.hits += 1
        return JSONResponse(self.doc)


def fal_headers(key: Ed25519PrivateKey, body: bytes, request_id: str) -> dict[str, str]:
    timestamp = str(int(time.time()))
    signature = key.sign(fal_message(request_id, "user-7", timestamp, body)).hex()
    return {
        "content-type": "application/json",
        "x-fal-webhook-request-id": request_id,
        "x-fal-webhook-user-id": "user-7",
        "x-fal-webhook-timestamp": timestamp,
        "x-fal-webhook-signature": signature,
    }


def test_fal_push_is_verified_against_its_jwks(tmp_path):
    """fal's ED25519 signature checks out against the (cached) JWKS; a push signed with
    another key is 401 and changes nothing."""
    signer, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    jwks = JwksServer(signer)
    emu = emu_fal.FalEmulator()
    with emu.start(), serve_in_thread(jwks.app) as jwks_url:
        emu.script_status("req-1", [emu_fal.completed("req-1")])
        emu.script_result("req-1", [emu_fal.result(emu.video_url("f-out"))])
        providers = {
            "fal": {
                "base_url": emu.url,
                "api_key": emu_fal.API_KEY,
                "min_interval_s": 0,
                "jwks_url": f"{jwks_url}/.well-known/jwks.json",
            }
        }
        cfg = base_config(tmp_path, providers=providers, polling=SLOW)
        with run_service(cfg) as url, httpx.Client(base_url=url) as c:
            job_id = post_job(c, "req-1", model=emu_fal.MODEL, expectPush=True)
            body = json.dumps(
                {
                    "request_id": "req-1",
                    "gateway_request_id": "req-1",
                    "status": "OK",
                    "payload": {"video": {"url": "https://elsewhere.example/x.mp4"}},
                }
            ).encode()
            forged = fal_headers(stranger, body, "req-1")
            assert c.post("/callbacks/fal", content=body, headers=forged).status_code == 401
            tampered = fal_headers(signer, body, "req-1")
            resp = c.post("/callbacks/fal", content=body + b" ", headers=tampered)
            assert resp.status_code == 401
            time.sleep(0.3)
            assert emu.calls_for("status:req-1") == []
            resp = c.post(
                "/callbacks/fal", content=body, headers=fal_headers(signer, body, "req-1")
            )
            assert resp.status_code == 200
            wait_for(lambda: job(c, job_id)["status"] == "succeeded", timeout=5)
            again = c.post(
                "/callbacks/fal", content=body, headers=fal_headers(signer, body, "req-1")
            )
            assert again.status_code == 200
    # fetched once and cached: a signature matching no key refetches at most once a minute
    assert jwks.hits == 1


# --- the pieces ----------------------------------------------------------------------------


def test_push_callback_url_comes_from_public_url(tmp_path):
    cfg = base_config(tmp_path, server={"public_url": "https://poller.example.com/"})
    from webhook_poller.config import settings_from_mapping

    settings = settings_from_mapping(cfg)
    assert push_callback_url(settings, "kie") == "https://poller.example.com/callbacks/kie"
    assert push_callback_url(settings, "a/b") == "https://poller.example.com/callbacks/a%2Fb"


@pytest.mark.parametrize(
    ("polling", "family", "expected"),
    [
        ({}, {}, 300.0),  # neither set: the fallback default
        ({"interval_s": 10}, {}, 10.0),  # the user's interval rules over the default
        ({"interval_s": 10, "push_fallback_interval_s": 120}, {}, 120.0),  # both set
        ({"push_fallback_interval_s": 30}, {}, 30.0),
        ({}, {"interval_s": 20}, 20.0),  # a family's interval is the user's too
    ],
)
def test_push_interval_precedence(polling, family, expected):
    gate = ProviderGate("kie", {"min_interval_s": 30.0, **family}, PollingSettings(**polling))
    assert gate.push_interval_s == expected


async def test_store_finds_a_job_by_provider_task(store: JobStore):
    now = datetime.now(UTC)
    made = Job(
        id="job_find1",
        session_id="s",
        task_id="task/with:odd chars",
        model="veo3",
        provider="kie-veo",
        state=JobState.QUEUED,
        created_at=now,
        updated_at=now,
        due_at=now + timedelta(seconds=60),
        expect_push=True,
    )
    await store.create(made)
    found = await store.find_by_task("kie-veo", "task/with:odd chars")
    assert found is not None and found.id == "job_find1" and found.expect_push
    assert await store.find_by_task("kie-market", "task/with:odd chars") is None
    assert await store.find_by_task("kie-veo", "task/with") is None


@dataclasses.dataclass(frozen=True, slots=True)
class SeveralTasksJob(Job):
    """A job that started several provider tasks itself, as POST /generate jobs do."""

    task_ids: tuple[str, ...] = ()


async def test_store_finds_each_task_of_a_job_that_started_several(store: JobStore):
    """Every task of a several-task job is found, after create and after a save adds one;
    a deleted job is found no more."""
    now = datetime.now(UTC)
    made = SeveralTasksJob(
        id="job_many",
        session_id="s",
        task_id="gen-a",
        model="veo3",
        provider="kie-veo",
        state=JobState.QUEUED,
        created_at=now,
        updated_at=now,
        due_at=now,
        task_ids=("gen-a", "gen-b"),
    )
    stored, created = await store.create(made)
    assert created
    grown = dataclasses.replace(made, task_ids=("gen-a", "gen-b", "gen-c"))
    await store.save(grown, expected_version=stored.version)
    for task in ("gen-b", "gen-c"):
        found = await store.find_by_task("kie-veo", task)
        assert found is not None and found.id == "job_many", task
    assert await store.find_by_task("kie-market", "gen-b") is None
    assert await store.delete("job_many")
    assert await store.find_by_task("kie-veo", "gen-c") is None


@pytest.mark.parametrize(
    ("expect_push", "state", "expected_s"),
    [
        (False, JobState.POLLING, 60.0),
        (True, JobState.POLLING, 300.0),
        (True, JobState.DELAYED, 300.0),  # max(delayed 120, fallback 300)
        (False, JobState.DELAYED, 120.0),
    ],
)
def test_pending_answer_schedules_push_jobs_at_the_fallback(expect_push, state, expected_s):
    polling = PollingSettings(jitter=0, delayed_interval_s=120, max_attempts=1000)
    policy = PollPolicy(polling, min_interval_s=0, push_interval_s=300.0)
    now = datetime.now(UTC)
    pending = Job(
        id="job_p",
        session_id="s",
        task_id="t",
        model="veo3",
        provider="kie-veo",
        state=state,
        created_at=now,
        updated_at=now,
        due_at=now,
        expect_push=expect_push,
    )
    outcome = policy.after_answer(pending, PollResult(PollStatus.PENDING), now)
    assert outcome.job.due_at == now + timedelta(seconds=expected_s)


async def test_push_for_a_job_held_by_a_stalled_worker_takes_it_over(tmp_path, emulator):
    """A worker took the job and never came back (its lease runs a minute): the push waits
    a few seconds for it, then takes the job back and has it polled; nothing is lost."""
    emulator.script("push-7", [kie.veo_success([f"{emulator.url}/files/h.mp4"])])
    cfg = kie_push_config(tmp_path, emulator)
    with run_service(cfg) as url:
        async with httpx.AsyncClient(base_url=url, timeout=20) as c:
            posted = await c.post(
                "/poll-video",
                json={"sessionId": "s", "taskId": "push-7", "model": "veo3", "expectPush": True},
            )
            job_id = posted.json()["jobId"]
            stalled = SqliteJobStore({"url": cfg["store"]["url"]})
            await stalled.open()
            try:
                later = datetime.now(UTC) + timedelta(seconds=61)
                [held] = await stalled.claim_due("stalled-worker", later, 0, 1)
                assert held.id == job_id
            finally:
                await stalled.close()
            started = time.monotonic()
            body = kie_push_body("push-7", [])
            resp = await c.post("/callbacks/kie", content=body, headers=kie_headers("push-7"))
            assert resp.status_code == 200
            waited = time.monotonic() - started
            for _ in range(100):
                if (await c.get(f"/jobs/{job_id}")).json()["status"] == "succeeded":
                    break
                await asyncio.sleep(0.05)
            final = (await c.get(f"/jobs/{job_id}")).json()
    assert final["status"] == "succeeded"
    assert waited >= 4.5, "the push first gives the worker holding the job a chance"
    assert len(emulator.calls_for("push-7")) == 1
