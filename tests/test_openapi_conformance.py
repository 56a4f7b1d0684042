"""Real answers of every endpoint, for jobs in every state, and every event we send, validate
against the service's own ``/openapi.json`` (issue 11, item 1).

The document is made strict for the check: an object schema with ``properties`` accepts no
other key (``ErrorDetail`` excepted, errors may add context keys), so a key an answer
carries that its schema does not list fails here instead of drifting.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.support import kie_emulator as kie
from tests.support.chat_servers import BOT_TOKEN, TelegramEmulator
from tests.support.servers import serve_in_thread
from tests.support.service import (
    CALLBACK_SECRET as SECRET,
)
from tests.support.service import (
    CallbackReceiver,
    base_config,
    run_service,
    wait_for,
)
from webhook_poller.model import (
    ErrorCode,
    Job,
    JobState,
    StoredVideo,
    VideoMetadata,
    new_job_id,
    utcnow,
)
from webhook_poller.stores.sqlite import SqliteJobStore

TOKEN = "conformance-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPEN = frozenset({"ErrorDetail"})
#: Every event, video.timed_out included (a video.failed whose error code is provider_timeout).
ALL = ["*"]


def _strict(doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    for name, schema in out["components"]["schemas"].items():
        if name not in OPEN:
            close(schema)
    return out


class Conformance:
    """Validates answers and events against one served document; counts what it checked."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = _strict(doc)
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry = Registry().with_resource("urn:openapi", resource)
        self.seen: set[tuple[str, str, int]] = set()
        self.events: set[str] = set()
        self.states: set[str] = set()

    def _validate(self, instance: Any, pointer: str, what: str) -> None:
        """``instance`` against the schema at ``pointer`` in the document (its refs resolve)."""
        schema = {"$ref": "urn:openapi#" + pointer}
        validator = Draft202012Validator(schema, registry=self.registry)
        try:
            validator.validate(instance)
        except ValidationError as exc:
            path = "/".join(str(p) for p in exc.absolute_path)
            raise AssertionError(f"{what}: {exc.message} at {path or '.'}") from None

    def answer(self, response: httpx.Response, path: str, method: str) -> httpx.Response:
        what = f"{method.upper()} {path} -> {response.status_code}"
        op = self.doc["paths"][path][method]
        declared = op["responses"].get(str(response.status_code))
        assert declared is not None, f"{what} is not declared"
        media = response.headers.get("content-type", "").split(";")[0].strip()
        content = declared.get("content", {})
        if response.status_code != 302:
            assert media in content, f"{what}: content type {media!r} not declared"
        if media == "application/json":
            parts = ["paths", path, method, "responses", str(response.status_code)]
            parts += ["content", media, "schema"]
            pointer = "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)
            self._validate(response.json(), pointer, what)
            body = response.json()
            if isinstance(body, dict) and isinstance(body.get("status"), str):
                self.states.add(body["status"])
        self.seen.add((path, method, response.status_code))
        return response

    def event(self, body: dict[str, Any]) -> None:
        self._validate(body, "/components/schemas/VideoEvent", body.get("event", "?"))
        self.events.add(body["event"])


TG_SECRET = "tg-hook_secret-42"
CHAT = 4242


@pytest.fixture
def telegram():
    emu = TelegramEmulator()
    with emu.serving() as url:
        emu.url = url
        yield emu


@pytest.fixture
def emulator():
    emu = kie.KieEmulator()
    with serve_in_thread(emu.app) as url:
        emu.url = url
        emu.base_url = url
        yield emu


def _seed(db: str, base: dict[str, Any]) -> dict[str, str]:
    """One job in every state, written through the real SQLite store, due in an hour (the
    running scheduler leaves them alone): state -> job id."""
    now = utcnow()
    later = now + timedelta(hours=1)
    meta = VideoMetadata(size_bytes=10, duration_s=1.5, width=64, height=36, codec="h264")
    ids: dict[str, str] = {}
    jobs = []
    for state in JobState:
        task = f"seed-{state.value}"
        extra: dict[str, Any] = {}
        if state in (JobState.DOWNLOADING, JobState.STORING, JobState.NOTIFYING):
            extra.update(lease_owner="elsewhere", lease_expires_at=later)
        if state is JobState.SUBMITTING:
            extra.update(request={"prompt": "p", "count": 1}, task_ids=(), attempt_number=1)
        if state is JobState.SUCCEEDED:
            extra.update(finished_at=now, videos=(StoredVideo(0, "seed/0.mp4", meta),))
        if state is JobState.FAILED:
            extra.update(finished_at=now, error_code=ErrorCode.PROVIDER_TIMEOUT)
        if state is JobState.CANCELLED:
            extra.update(finished_at=now)
        if state is JobState.DELAYED:
            extra.update(delayed_at=now)
        job = Job(
            id=new_job_id("demo", task),
            session_id="seed",
            task_id=task,
            model="demo",
            provider="demo",
            state=state,
            created_at=now,
            updated_at=now,
            due_at=later,
            context={"n": 1},
            **extra,
        )
        jobs.append(job)
        ids[state.value] = job.id

    async def write() -> None:
        store = SqliteJobStore({"url": db})
        await store.open()
        try:
            for job in jobs:
                await store.create(job)
        finally:
            await store.close()

    anyio.run(write)
    return ids


def test_every_answer_state_and_event_matches_the_openapi_document(tmp_path, emulator, telegram):
    """Every endpoint answered for real (successes and refusals), a job in every state, and
    every event a callback receiver got, each valid under /openapi.json."""
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        cfg = base_config(
            tmp_path,
            server={"auth_token": TOKEN},
            providers={"kie": {"base_url": emulator.url, "upscale_interval_s": 0.3}},
            notifiers=[
                {"type": "webhook", "url": f"{hook}/all", "secret": SECRET, "events": ALL},
                {
                    "type": "telegram",
                    "bot_token": BOT_TOKEN,
                    "base_url": telegram.base_url(telegram.url),
                    "webhook_secret": TG_SECRET,
                },
            ],
            polling={"max_attempts": 3, "give_up_after_s": 1.5, "delayed_interval_s": 0.3},
        )
        with run_service(cfg) as url, httpx.Client(base_url=url, headers=AUTH, timeout=10) as c:
            doc = c.get("/openapi.json")
            check = Conformance(doc.json())
            check.answer(doc, "/openapi.json", "get")
            ids = _seed(cfg["store"]["url"], cfg)
            _exercise(c, check, ids, f"{hook}/cb")
            _publish(c, check, telegram)
            wanted = {"video.succeeded", "video.failed", "video.delayed", "video.publish_requested"}
            wait_for(lambda: wanted <= {e["body"]["event"] for e in receiver.events()})
            for request in receiver.events():
                assert request["verified"]
                check.event(request["body"])
            codes = {(e["body"]["error"] or {}).get("code") for e in receiver.events()}
    assert check.events >= wanted
    assert "provider_timeout" in codes, "the timed-out failure went out too"
    assert check.states >= {s.value for s in JobState}, "a job answer in every state"
    documented = {(p, m) for p, ops in check.doc["paths"].items() for m in ops}
    answered = {(p, m) for p, m, _ in check.seen}
    events_only = {("/jobs/{jobId}/events", "get"), ("/events", "get")}  # streams never end
    assert documented - answered - events_only == set()


def _finished(c: httpx.Client, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = c.get(f"/jobs/{job_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    result: dict[str, Any] = wait_for(done)
    return result


def _exercise(c: httpx.Client, check: Conformance, seeded: dict[str, str], hook: str) -> None:
    ok = check.answer
    # operations
    ok(c.get("/healthz"), "/healthz", "get")
    ok(c.get("/readyz"), "/readyz", "get")
    ok(c.get("/metrics"), "/metrics", "get")
    ok(c.get("/"), "/", "get")
    ok(httpx.get(f"{c.base_url}/jobs"), "/jobs", "get")  # 401

    # a job in every state, seeded, then the list in both forms
    for job_id in seeded.values():
        ok(c.get(f"/jobs/{job_id}"), "/jobs/{jobId}", "get")
    ok(c.get("/jobs", params={"limit": 3}), "/jobs", "get")
    ok(c.get("/jobs", params={"group": "true"}), "/jobs", "get")
    ok(c.get("/jobs", params={"status": "nope"}), "/jobs", "get")
    ok(c.get("/jobs", params={"cursor": "x"}), "/jobs", "get")
    ok(c.get("/jobs/job_nope"), "/jobs/{jobId}", "get")

    # intake: a new job, the same again, another session, refusals
    body = {"sessionId": "s1", "taskId": "ok-1", "model": "demo", "callbackUrl": hook}
    first = ok(c.post("/poll-video", json=body), "/poll-video", "post").json()
    ok(c.post("/webhook/poll-video", json=body), "/webhook/poll-video", "post")
    ok(c.post("/poll-video", json={**body, "sessionId": "s2"}), "/poll-video", "post")  # 409
    ok(c.post("/poll-video", json={"taskId": "x", "model": "demo"}), "/poll-video", "post")
    ok(c.post("/poll-video", content=b"{not json"), "/poll-video", "post")
    ok(c.post("/poll-video", content=b"x" * 70_000), "/poll-video", "post")  # 413
    form = {"sessionId": "s1", "taskId": "form-1", "model": "demo", "attempt": "2"}
    ok(c.post("/poll-video", data=form), "/poll-video", "post")
    for task in ("fail-1", "slow-1"):
        job = {"sessionId": "s1", "taskId": task, "model": "demo", "callbackUrl": hook}
        ok(c.post("/poll-video", json=job), "/poll-video", "post")
    done = _finished(c, first["jobId"])
    assert done["status"] == "succeeded"
    job_id = first["jobId"]
    ok(c.get(f"/jobs/{job_id}"), "/jobs/{jobId}", "get")
    ok(c.get(f"/jobs/{job_id}/videos/0"), "/jobs/{jobId}/videos/{index}", "get")
    ok(c.get(f"/jobs/{job_id}/videos/9"), "/jobs/{jobId}/videos/{index}", "get")
    ok(c.get(f"/jobs/{job_id}/download.zip"), "/jobs/{jobId}/download.zip", "get")
    links = ok(
        c.post(f"/jobs/{job_id}/links", json={"singleUse": True}), "/jobs/{jobId}/links", "post"
    )
    zip_url = links.json()["zipUrl"]
    httpx.get(zip_url)
    ok(httpx.get(zip_url), "/jobs/{jobId}/download.zip", "get")  # 410: used already
    ok(c.post(f"/jobs/{job_id}/links", json={"expiresIn": 1}), "/jobs/{jobId}/links", "post")

    # actions on the seeded jobs
    ok(c.post(f"/jobs/{seeded['queued']}/cancel"), "/jobs/{jobId}/cancel", "post")
    ok(c.post(f"/jobs/{seeded['succeeded']}/cancel"), "/jobs/{jobId}/cancel", "post")  # 409
    ok(c.post(f"/jobs/{seeded['cancelled']}/retry"), "/jobs/{jobId}/retry", "post")
    ok(c.post("/jobs/job_nope/retry"), "/jobs/{jobId}/retry", "post")
    ok(c.delete(f"/jobs/{seeded['failed']}"), "/jobs/{jobId}", "delete")
    ok(c.delete(f"/jobs/{seeded['failed']}"), "/jobs/{jobId}", "delete")

    # generation and its follow-ups, on the KIE emulator
    gen = {"sessionId": "s1", "model": "veo3_fast", "prompt": "a fox", "callbackUrl": hook}
    gen["context"] = {"chatId": CHAT}
    made = ok(c.post("/generate", json=gen), "/generate", "post").json()
    ok(c.post("/generate", json={**gen, "durationSeconds": 99}), "/generate", "post")
    parent = _finished(c, made["jobId"])
    assert parent["status"] == "succeeded", parent
    pid = parent["jobId"]
    ok(c.get(f"/jobs/{pid}"), "/jobs/{jobId}", "get")
    ext = c.post(f"/jobs/{pid}/extend", json={"prompt": "the fox jumps"})
    ok(ext, "/jobs/{jobId}/extend", "post")
    ok(c.post(f"/jobs/{pid}/extend", json={"prompt": " "}), "/jobs/{jobId}/extend", "post")
    ups = c.post(f"/jobs/{pid}/upscale", json={"resolution": "1080p"})
    ok(ups, "/jobs/{jobId}/upscale", "post")
    ok(c.post(f"/jobs/{pid}/upscale", json={"resolution": "8k"}), "/jobs/{jobId}/upscale", "post")
    regen = ok(c.post(f"/jobs/{pid}/retry"), "/jobs/{jobId}/retry", "post").json()
    assert regen["action"] == "resubmitted"
    for follow in (ext.json()["jobId"], ups.json()["jobId"], regen["jobId"]):
        ok(c.get(f"/jobs/{_finished(c, follow)['jobId']}"), "/jobs/{jobId}", "get")

    # the rest of the edge
    ok(c.put("/sessions/s1", json={"lang": "en"}), "/sessions/{sessionId}", "put")
    ok(c.put("/sessions/s1", content=b"[1]"), "/sessions/{sessionId}", "put")
    ok(
        c.post("/callbacks/kie", json={"code": 200, "data": {"taskId": "nobody"}}),
        "/callbacks/{provider}",
        "post",
    )
    ok(c.post("/callbacks/nobody", json={}), "/callbacks/{provider}", "post")
    ok(c.post("/telegram/webhook", json={}), "/telegram/webhook", "post")  # 401
    # the slow job goes delayed, then fails as timed out: both events go to the receiver
    for job in c.get("/jobs", params={"sessionId": "s1", "limit": 50}).json()["jobs"]:
        if job["taskId"] == "slow-1":
            assert _finished(c, job["jobId"])["status"] == "failed"


def _publish(c: httpx.Client, check: Conformance, telegram: TelegramEmulator) -> None:
    """A Publish press on the generated video's Telegram message: video.publish_requested."""
    call = wait_for(lambda: telegram.sent("sendVideo") and telegram.sent("sendVideo")[0])
    rows = telegram.markup(call)["inline_keyboard"]
    data = {b["text"]: b["callback_data"] for b in rows[0]}["Publish"]
    update = {
        "update_id": 1001,
        "callback_query": {
            "id": "cq1",
            "from": {"id": 7, "is_bot": False, "first_name": "Ann"},
            "chat_instance": "ci",
            "data": data,
            "message": {"message_id": 101, "date": 0, "chat": {"id": CHAT, "type": "private"}},
        },
    }
    headers = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
    pressed = c.post("/telegram/webhook", json=update, headers=headers)
    assert check.answer(pressed, "/telegram/webhook", "post").json()["result"] == "publish"
