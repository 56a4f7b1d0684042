"""Names that say what a value is (issue 12, item 25): the job JSON's callback flag and the
analytics record's storage key."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.support.service import CallbackReceiver, base_config, run_service, wait_for, wait_status


def test_job_json_names_the_callback_flag_for_what_it_is(tmp_path):
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        cfg = base_config(tmp_path, polling={"first_poll_delay_s": 3600})
        with run_service(cfg) as url, httpx.Client(base_url=url, timeout=10) as client:
            with_cb = client.post(
                "/poll-video",
                json={"sessionId": "s", "taskId": "t1", "model": "demo", "callbackUrl": hook},
            ).json()["jobId"]
            without = client.post(
                "/poll-video", json={"sessionId": "s", "taskId": "t2", "model": "demo"}
            ).json()["jobId"]
            later = client.post(
                "/poll-video", json={"sessionId": "s", "taskId": "t3", "model": "demo"}
            ).json()["jobId"]
            assert client.get(f"/jobs/{later}").json()["hasCallback"] is False
            client.post(
                "/poll-video",
                json={"sessionId": "s", "taskId": "t3", "model": "demo", "callbackUrl": hook},
            )
            assert client.get(f"/jobs/{later}").json()["hasCallback"] is True, "added by re-post"
            a = client.get(f"/jobs/{with_cb}").json()
            b = client.get(f"/jobs/{without}").json()
            schema = client.get("/openapi.json").json()["components"]["schemas"]["Job"]
    assert a["hasCallback"] is True and b["hasCallback"] is False
    assert hook not in json.dumps(a), "the callback URL itself is never shown"
    # the old name stays one release for outside checks, marked deprecated in the schema
    assert a["callbackUrl"] is True and b["callbackUrl"] is False
    assert schema["properties"]["hasCallback"]["type"] == "boolean"
    assert schema["properties"]["callbackUrl"]["deprecated"] is True


def test_analytics_record_calls_the_storage_key_a_key(tmp_path):
    path = tmp_path / "analytics.jsonl"
    cfg = base_config(tmp_path, analytics={"jsonl_path": str(path)})
    with run_service(cfg) as url, httpx.Client(base_url=url, timeout=10) as client:
        job_id = client.post(
            "/poll-video", json={"sessionId": "s", "taskId": "ok-1", "model": "demo"}
        ).json()["jobId"]
        wait_status(client, job_id, {"succeeded"})

        def line() -> dict | None:
            if not path.exists():
                return None
            rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            return next((r for r in rows if r["jobId"] == job_id), None)

        rec = wait_for(line)
    assert rec["videoKey"] and not rec["videoKey"].startswith(("http://", "https://"))
    assert rec["videoKey"].endswith(".mp4")
    assert rec["videoUrl"] == rec["videoKey"], "old name kept one release"


def test_readme_says_what_slow_demo_tasks_and_attempt_really_do(tmp_path):
    """A `slow` demo task goes delayed after max_attempts polls, counted from the posted
    `attempt`, and fails with provider_timeout after give_up_after_s; the README says so."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "never finish, so" not in readme
    assert "`slow` never finishes at the provider, so the job goes `delayed`" in readme
    assert "counts toward `polling.max_attempts`" in readme
    cfg = base_config(
        tmp_path,
        polling={
            "max_attempts": 4,
            "give_up_after_s": 2.0,
            "interval_s": 0.1,
            "delayed_interval_s": 1.0,
        },
    )
    with run_service(cfg) as url, httpx.Client(base_url=url, timeout=10) as client:
        job_id = client.post(
            "/poll-video",
            json={"sessionId": "s", "taskId": "demo-slow-1", "model": "demo", "attempt": 3},
        ).json()["jobId"]
        delayed = wait_status(client, job_id, {"delayed", "failed"})
        assert delayed["status"] == "delayed" and delayed["attempts"] == 4
        failed = wait_status(client, job_id, {"failed"}, timeout=15)
    assert failed["error"]["code"] == "provider_timeout"
