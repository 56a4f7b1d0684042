"""The whole flow over real HTTP with the demo provider: poll, download, store, metadata,
signed links, and signed callbacks checked by a real receiver."""

from __future__ import annotations

import io

import av
import httpx

from tests.support.service import (
    CallbackReceiver,
    base_config,
    run_service,
    wait_for,
    wait_status,
)


def post_job(client: httpx.Client, task_id: str, **extra) -> str:
    body = {"sessionId": "user-1", "taskId": task_id, "model": "demo", **extra}
    resp = client.post("/poll-video", json=body)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["jobId"])


def test_demo_job_completes_with_playable_video_and_signed_callback(tmp_path):
    """A demo job ends succeeded; its link plays without a token; the callback verifies."""
    receiver = CallbackReceiver()
    with receiver.serving() as hook_url:
        cfg = base_config(tmp_path, server={"auth_token": "flow-test-token-123"})
        auth = {"Authorization": "Bearer flow-test-token-123"}
        with run_service(cfg) as url, httpx.Client(base_url=url, headers=auth) as client:
            job_id = post_job(
                client,
                "demo-1",
                attempt=2,
                callbackUrl=f"{hook_url}/hook?sig=abc",
                context={"chatId": 99},
            )
            done = wait_status(client, job_id, {"succeeded", "failed"})
            assert done["status"] == "succeeded", done
            assert done["attempts"] == 1 + 2  # posted attempt 2, then two demo polls
            assert done["error"] is None
            [link] = done["videoUrls"]
            meta = done["metadata"][0]
            assert meta["size_bytes"] > 0 and meta["content_type"] == "video/mp4"
            assert meta["width"] > 0 and meta["height"] > 0 and meta["duration_s"] > 0
            video = httpx.get(link)  # no token: the link itself is signed
            assert video.status_code == 200
            assert video.headers["content-type"] == "video/mp4"
            with av.open(io.BytesIO(video.content)) as container:
                assert container.streams.video
            tampered = link.replace("sig=", "sig=0")
            assert httpx.get(tampered).status_code == 401
            wait_for(lambda: receiver.events("video.succeeded"))
            status = client.get(f"/jobs/{job_id}").json()
            [delivery] = status["deliveries"]
            assert delivery["status"] == "sent" and delivery["target"] == "callback"
    [hit] = receiver.events()
    assert hit["verified"], "the Standard Webhooks signature must verify"
    assert hit["query"] == "sig=abc", "the callback URL is called exactly as received"
    body = hit["body"]
    assert body["event"] == "video.succeeded" and body["status"] == "succeeded"
    assert body["jobId"] == job_id and body["sessionId"] == "user-1"
    assert body["taskId"] == "demo-1" and body["model"] == "demo"
    [sent_link] = body["videoUrls"]
    assert sent_link.split("?")[0] == link.split("?")[0] and body["context"] == {"chatId": 99}
    assert body["attempts"] == 3 and body["elapsedSeconds"] >= 0
    assert body["metadata"][0]["width"] > 0
    assert hit["headers"]["webhook-id"] == delivery["webhookId"]
    assert "flow-test-token" not in str(body)


def test_failed_task_sends_user_message_not_provider_text(tmp_path):
    """A failed demo task ends failed with a normalized code and a user-readable message."""
    receiver = CallbackReceiver()
    with receiver.serving() as hook_url:
        with run_service(base_config(tmp_path)) as url, httpx.Client(base_url=url) as client:
            job_id = post_job(client, "demo-moderation-1", callbackUrl=f"{hook_url}/h")
            done = wait_status(client, job_id, {"failed", "succeeded"})
            wait_for(lambda: receiver.events("video.failed"))
    assert done["status"] == "failed"
    assert done["error"]["code"] == "moderation_rejected"
    assert done["message"] == done["error"]["message"]
    assert "Try changing the prompt" in done["message"]
    body = receiver.events("video.failed")[0]["body"]
    assert body["status"] == "failed" and body["error"]["code"] == "moderation_rejected"
    assert body["videoUrls"] == []


def test_callback_retries_keep_webhook_id_until_accepted(tmp_path):
    """A 500 then a 200: two attempts, one webhook-id, the delivery recorded as sent."""
    receiver = CallbackReceiver(responses=[500, 503, 200])
    with receiver.serving() as hook_url:
        with run_service(base_config(tmp_path)) as url, httpx.Client(base_url=url) as client:
            job_id = post_job(client, "demo-retry", callbackUrl=f"{hook_url}/h")
            wait_status(client, job_id, {"succeeded"})
            wait_for(lambda: len(receiver.events()) >= 3)

            def sent():
                rows = client.get(f"/jobs/{job_id}").json()["deliveries"]
                return rows if rows and rows[0]["status"] == "sent" else None

            [row] = wait_for(sent)
    assert row["attempts"] == 3
    ids = receiver.webhook_ids()
    assert len(ids) == 3 and len(set(ids)) == 1
    timestamps = [r["headers"]["webhook-timestamp"] for r in receiver.events()]
    assert all(t.isdigit() for t in timestamps)


def test_gone_callback_is_final(tmp_path):
    """A 410 from the receiver ends the delivery at once; the job still succeeds."""
    receiver = CallbackReceiver(responses=[410])
    with receiver.serving() as hook_url:
        with run_service(base_config(tmp_path)) as url, httpx.Client(base_url=url) as client:
            job_id = post_job(client, "demo-gone", callbackUrl=f"{hook_url}/h")
            done = wait_status(client, job_id, {"succeeded"})

            def final():
                rows = client.get(f"/jobs/{job_id}").json()["deliveries"]
                return rows if rows and rows[0]["status"] == "failed" else None

            [row] = wait_for(final)
    assert done["status"] == "succeeded"
    assert row["attempts"] == 1 and "410" in (row["lastError"] or "")
    assert len(receiver.events()) == 1


def test_n8n_conflict_is_retried_until_the_wait_node_parks(tmp_path):
    """n8n answers 409 while its execution is still running; we try again and get through."""
    receiver = CallbackReceiver(responses=[409, 409, 200])
    with receiver.serving() as hook_url:
        with run_service(base_config(tmp_path)) as url, httpx.Client(base_url=url) as client:
            job_id = post_job(client, "demo-n8n", callbackUrl=f"{hook_url}/webhook-waiting/7")
            wait_status(client, job_id, {"succeeded"})
            wait_for(lambda: len(receiver.events()) >= 3)
    assert len(set(receiver.webhook_ids())) == 1


def test_configured_webhook_notifier_gets_events_with_its_own_secret(tmp_path):
    """A webhook notifier from the config is signed with its own secret and filtered by event."""
    other_secret = "whsec_" + "dGhpcyBpcyBhIGxvbmcgdGVzdCBzZWNyZXQh"
    ops = CallbackReceiver(secret=other_secret)
    with ops.serving() as ops_url:
        cfg = base_config(
            tmp_path,
            notifiers=[
                {
                    "type": "webhook",
                    "url": f"{ops_url}/ops",
                    "secret": other_secret,
                    "events": ["video.failed"],
                }
            ],
        )
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            ok_id = post_job(client, "demo-ok")
            bad_id = post_job(client, "demo-fail-1")
            wait_status(client, ok_id, {"succeeded"})
            wait_status(client, bad_id, {"failed"})
            wait_for(lambda: ops.events("video.failed"))
    assert [r["body"]["jobId"] for r in ops.events()] == [bad_id]
    assert ops.events()[0]["verified"]


def test_service_serves_demo_sample(tmp_path):
    """The demo video is served by the service itself, so the demo needs no network."""
    with run_service(base_config(tmp_path)) as url:
        resp = httpx.get(f"{url}/providers/demo/sample.mp4")
    assert resp.status_code == 200 and resp.headers["content-type"] == "video/mp4"
    assert resp.content[4:8] == b"ftyp"
