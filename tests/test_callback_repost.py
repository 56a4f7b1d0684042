"""Re-posting a known task: every distinct callbackUrl gets the outcome once (issue 12, item 2)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.support import kie_emulator as kie
from tests.support.servers import serve_in_thread
from tests.support.service import CallbackReceiver, base_config, run_service, wait_for, wait_status


@pytest.fixture
def world(tmp_path):
    """The service, a KIE emulator and a callback receiver standing in for n8n."""
    emu = kie.KieEmulator()
    receiver = CallbackReceiver()
    with serve_in_thread(emu.app) as emu_url, receiver.serving() as hooks:
        emu.url = emu_url
        cfg = base_config(tmp_path, providers={"kie": {"base_url": emu_url}})
        with run_service(cfg) as url, httpx.Client(base_url=url, timeout=10) as client:
            yield client, emu, receiver, hooks


def post(client: httpx.Client, task_id: str, callback: str | None, session: str = "s") -> dict:
    body = {"sessionId": session, "taskId": task_id, "model": "veo3"}
    if callback:
        body["callbackUrl"] = callback
    return client.post("/poll-video", json=body).json()


def paths(receiver: CallbackReceiver, event: str) -> list[str]:
    return sorted(r["path"] for r in receiver.events(event))


def test_new_callback_while_running_is_added_as_a_target(world):
    """exec-B posted while the job polls gets the final event too, once."""
    client, emu, receiver, hooks = world
    emu.script("run-1", [kie.veo_pending()])
    first = post(client, "run-1", f"{hooks}/exec-A")
    second = post(client, "run-1", f"{hooks}/exec-B")
    assert second["jobId"] == first["jobId"] and second["alreadyKnown"] is True
    assert second["callback"] == "added" and "new callbackUrl" in second["message"]
    again = post(client, "run-1", f"{hooks}/exec-B")
    assert again["callback"] == "already_registered"
    emu.script("run-1", [kie.veo_success([f"{emu.url}/files/a.mp4"])])
    wait_status(client, first["jobId"], {"succeeded"})
    wait_for(lambda: len(receiver.events("video.succeeded")) >= 2)
    time.sleep(0.5)  # nothing more arrives
    assert paths(receiver, "video.succeeded") == ["/exec-A", "/exec-B"]
    assert receiver.bad_signatures == 0


def test_new_callback_after_the_job_ended_gets_the_final_event_at_once(world):
    """A re-run of the n8n execution after success is told at once, the old one not again."""
    client, emu, receiver, hooks = world
    emu.script("done-1", [kie.veo_success([f"{emu.url}/files/a.mp4"])])
    first = post(client, "done-1", f"{hooks}/exec-A")
    wait_status(client, first["jobId"], {"succeeded"})
    wait_for(lambda: receiver.events("video.succeeded"))
    late = post(client, "done-1", f"{hooks}/exec-C")
    assert late["callback"] == "final_event_sent" and late["status"] == "succeeded"
    assert "has ended" in late["message"]
    wait_for(lambda: len(receiver.events("video.succeeded")) >= 2)
    time.sleep(0.5)
    assert paths(receiver, "video.succeeded") == ["/exec-A", "/exec-C"]
    body = receiver.events("video.succeeded")[-1]["body"]
    assert body["jobId"] == first["jobId"] and body["videoUrls"]
    plain = post(client, "done-1", None)
    assert plain["message"].startswith("This task was handled already")


def test_new_callback_after_failure_gets_the_failed_event(world):
    """The final event of a failed job is video.failed, sent to the late URL."""
    client, emu, receiver, hooks = world
    emu.script("fail-1", [kie.veo_failed(400, "content policy")])
    first = post(client, "fail-1", None)
    wait_status(client, first["jobId"], {"failed"})
    late = post(client, "fail-1", f"{hooks}/exec-F")
    assert late["callback"] == "final_event_sent"
    events = wait_for(lambda: receiver.events("video.failed"))
    assert events[0]["path"] == "/exec-F"


def test_same_task_with_another_session_is_a_conflict(world):
    """Merging two sessions silently would notify the wrong user: 409 naming the session."""
    client, emu, _receiver, _hooks = world
    emu.script("shared", [kie.veo_pending()])
    assert post(client, "shared", None, session="alice")["ok"] is True
    resp = client.post(
        "/poll-video", json={"sessionId": "bob", "taskId": "shared", "model": "veo3"}
    )
    assert resp.status_code == 409
    error = resp.json()["error"]
    assert error["code"] == "conflict" and error["sessionId"] == "alice"
    assert "alice" in error["message"]


def test_extra_callback_urls_survive_the_store_codec():
    """Both stores write jobs through the codec; the added URLs come back in order."""
    from webhook_poller.delivery import CALLBACK_TARGET, callback_target, callback_targets
    from webhook_poller.model import Job, JobState, utcnow
    from webhook_poller.stores.codec import job_from_dict, job_to_dict

    now = utcnow()
    job = Job(
        id="job_c",
        session_id="s",
        task_id="t",
        model="veo3",
        provider="kie-veo",
        state=JobState.POLLING,
        created_at=now,
        updated_at=now,
        due_at=now,
        callback_url="http://127.0.0.1:1/a",
        extra_callback_urls=("http://127.0.0.1:1/b", "http://127.0.0.1:1/c"),
    )
    back = job_from_dict(json.loads(json.dumps(job_to_dict(job))))
    assert back.extra_callback_urls == job.extra_callback_urls
    targets = callback_targets(back)
    assert list(targets) == [
        CALLBACK_TARGET,
        callback_target("http://127.0.0.1:1/b"),
        callback_target("http://127.0.0.1:1/c"),
    ]
    assert "127.0.0.1" not in "".join(targets), "target names do not show the URL"
