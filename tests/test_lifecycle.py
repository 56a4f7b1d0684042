"""Job lifecycle over real HTTP: list and filter, queue slots, cancel, retry, delete with
clean-up, ZIP downloads and single-use links, live events, metrics and retention."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.service import base_config, run_service, wait_for, wait_status

TOKEN = "lifecycle-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def config(tmp_path: Path, **extra) -> dict:
    return base_config(tmp_path, server={"auth_token": TOKEN}, **extra)


def post(client: httpx.Client, task_id: str, session: str = "s1") -> str:
    resp = client.post(
        "/poll-video", json={"sessionId": session, "taskId": task_id, "model": "demo"}
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["jobId"])


def test_list_filters_pages_and_validates(tmp_path):
    cfg = config(tmp_path, providers={"demo": {"polls_until_done": 100000}})
    with run_service(cfg) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        ids = [post(client, f"list-{i}", session="a" if i % 2 else "b") for i in range(5)]
        wait_for(lambda: all(client.get(f"/jobs/{i}").json()["status"] == "polling" for i in ids))
        seen, cursor = [], None
        while True:
            page = client.get(
                "/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
            ).json()
            assert len(page["jobs"]) <= 2
            seen += [j["jobId"] for j in page["jobs"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids)), "newest first, every job once"
        only_a = client.get("/jobs", params={"sessionId": "a"}).json()["jobs"]
        assert {j["jobId"] for j in only_a} == {ids[1], ids[3]}
        assert client.get("/jobs", params={"status": "succeeded"}).json()["jobs"] == []
        assert len(client.get("/jobs", params={"status": "polling,queued"}).json()["jobs"]) == 5
        assert len(client.get("/jobs", params={"model": "demo"}).json()["jobs"]) == 5
        assert client.get("/jobs", params={"model": "veo3"}).json()["jobs"] == []
        future = client.get("/jobs", params={"since": "2999-01-01T00:00:00Z"}).json()
        assert future["jobs"] == []
        grouped = client.get("/jobs", params={"group": "true"}).json()
        assert len(grouped["processing"]) == 5 and grouped["queued"] == []
        assert grouped["history"] == [] and grouped["counts"]["polling"] == 5
        for params, field, code in [
            ({"status": "nope"}, "status", 422),
            ({"since": "yesterday"}, "since", 422),
            ({"cursor": "abc"}, "cursor", 400),  # a cursor is ours or a bad request
            ({"limit": "0"}, "limit", 422),
        ]:
            bad = client.get("/jobs", params=params)
            assert bad.status_code == code, params
            assert bad.json()["error"]["field"] == field
        assert httpx.get(f"{url}/jobs").status_code == 401


def test_queue_slots_fifo_cancel_and_retry(tmp_path):
    """max_active_jobs=2: two run, the rest wait in order; cancel frees a slot; retry re-runs."""
    cfg = config(
        tmp_path,
        polling={"max_active_jobs": 2, "interval_s": 0.2},
        providers={"demo": {"polls_until_done": 4}},
    )
    with run_service(cfg) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        ids = [post(client, f"slot-{i}") for i in range(5)]
        grouped = wait_for(
            lambda: (g := client.get("/jobs?group=true").json()) and len(g["processing"]) == 2 and g
        )
        assert [j["jobId"] for j in grouped["processing"]] == ids[:2], "first come, first served"
        assert [j["jobId"] for j in grouped["queued"]] == ids[2:]
        assert [j["queuePosition"] for j in grouped["queued"]] == [1, 2, 3]
        assert client.get(f"/jobs/{ids[3]}").json()["queuePosition"] == 2

        cancelled = client.post(f"/jobs/{ids[2]}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert client.get(f"/jobs/{ids[3]}").json()["queuePosition"] == 1
        again = client.post(f"/jobs/{ids[2]}/cancel")
        assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"

        most = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            g = client.get("/jobs?group=true").json()
            most = max(most, g["slots"]["used"])
            if g["counts"]["succeeded"] == 4:
                break
            time.sleep(0.05)
        assert most <= 2, "never more than max_active_jobs past the queue"
        assert client.get(f"/jobs/{ids[4]}").json()["status"] == "succeeded"

        bad = client.post(f"/jobs/{ids[0]}/retry")
        assert bad.status_code == 409 and "only a failed or cancelled job" in bad.text
        assert client.post(f"/jobs/{ids[0]}/cancel").status_code == 409
        retried = client.post(f"/jobs/{ids[2]}/retry")
        assert retried.status_code == 200 and retried.json()["status"] == "queued"
        done = wait_status(client, ids[2], {"succeeded", "failed"})
        assert done["status"] == "succeeded" and done["error"] is None
        assert client.post("/jobs/job_nope/cancel").status_code == 404


def test_cancel_stops_polling_at_once(tmp_path):
    cfg = config(
        tmp_path, providers={"demo": {"polls_until_done": 100000}}, polling={"interval_s": 0.05}
    )
    with run_service(cfg) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        job_id = post(client, "stop-me")
        wait_for(lambda: client.get(f"/jobs/{job_id}").json()["attempts"] >= 3)
        assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
        attempts = client.get(f"/jobs/{job_id}").json()["attempts"]
        time.sleep(0.6)
        after = client.get(f"/jobs/{job_id}").json()
        assert after["status"] == "cancelled"
        assert after["attempts"] <= attempts + 1, "at most the poll already under way"
        assert after["message"] == "This video request was cancelled."


def test_delete_removes_videos_and_record_idempotently(tmp_path):
    cfg = config(tmp_path)
    with run_service(cfg) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        job_id = post(client, "delete-me")
        assert wait_status(client, job_id, {"succeeded"})["status"] == "succeeded"
        files = [p for p in (tmp_path / "videos").rglob("*") if p.is_file()]
        assert files, "the video was stored"
        gone = client.delete(f"/jobs/{job_id}")
        assert gone.status_code == 200 and gone.json()["deleted"] is True
        assert not [p for p in (tmp_path / "videos").rglob("*") if p.is_file()]
        assert client.get(f"/jobs/{job_id}").status_code == 404
        again = client.delete(f"/jobs/{job_id}")
        assert again.status_code == 200 and again.json()["deleted"] is False

        # an unfinished job is cancelled and removed; the other jobs are untouched
        keep = post(client, "keep-me")
        slow = client.post(
            "/poll-video", json={"sessionId": "s", "taskId": "slow", "model": "demo"}
        ).json()["jobId"]
        assert client.delete(f"/jobs/{slow}").json()["deleted"] is True
        assert client.get(f"/jobs/{slow}").status_code == 404
        assert wait_status(client, keep, {"succeeded"})["status"] == "succeeded"


def test_zip_download_and_single_use_links(tmp_path):
    cfg = config(tmp_path)
    with run_service(cfg) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        job_id = post(client, "zip-me")
        done = wait_status(client, job_id, {"succeeded"})
        video = httpx.get(done["videoUrls"][0]).content
        resp = client.get(f"/jobs/{job_id}/download.zip")
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/zip"
        assert f'filename="{job_id}.zip"' in resp.headers["content-disposition"]
        with zipfile.ZipFile(io.BytesIO(resp.content)) as archive:
            assert archive.namelist() == [f"{job_id}-0.mp4"]
            assert archive.read(f"{job_id}-0.mp4") == video
            assert archive.testzip() is None
        assert httpx.get(f"{url}/jobs/{job_id}/download.zip").status_code == 401

        links = client.post(
            f"/jobs/{job_id}/links", json={"singleUse": True, "expiresIn": 120}
        ).json()
        first = httpx.get(links["zipUrl"])
        assert first.status_code == 200 and zipfile.ZipFile(io.BytesIO(first.content)).namelist()
        second = httpx.get(links["zipUrl"])
        assert second.status_code == 410 and second.json()["error"]["code"] == "link_used"
        assert httpx.get(links["zipUrl"].replace("sig=", "sig=f")).status_code == 401
        reusable = client.post(f"/jobs/{job_id}/links", json={"expiresIn": 120}).json()
        assert httpx.get(reusable["zipUrl"]).status_code == 200
        assert httpx.get(reusable["zipUrl"]).status_code == 200
        assert httpx.get(reusable["videoUrls"][0]).content == video
        bad = client.post(f"/jobs/{job_id}/links", json={"expiresIn": 5})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "expiresIn"

        pending = client.post(
            "/poll-video", json={"sessionId": "s", "taskId": "not-yet", "model": "demo"}
        ).json()["jobId"]
        client.post(f"/jobs/{pending}/cancel")
        assert client.get(f"/jobs/{pending}/download.zip").status_code == 404


def read_events(lines: Iterator[str], want: int, timeout: float = 15.0) -> list[dict]:
    """Parse Server-Sent Events off a stream's lines until ``want`` have arrived."""
    events: list[dict] = []
    current: dict = {}
    deadline = time.monotonic() + timeout
    for line in lines:
        if time.monotonic() > deadline:
            break
        if line.startswith("event:"):
            current["event"] = line[6:].strip()
        elif line.startswith("data:"):
            current["data"] = json.loads(line[5:].strip())
        elif not line and current:
            events.append(current)
            current = {}
            if len(events) >= want:
                break
    return events


def test_live_events_for_all_jobs_and_one_job(tmp_path):
    cfg = config(tmp_path, polling={"interval_s": 0.3})
    with run_service(cfg) as url, httpx.Client(base_url=url, headers=AUTH, timeout=20) as client:
        first = post(client, "live-0")
        with client.stream("GET", "/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            [snapshot] = read_events(lines, 1)
            assert snapshot["event"] == "snapshot"
            assert [j["jobId"] for j in snapshot["data"]["jobs"]] == [first]
            second = post(client, "live-1")
            statuses: dict[str, set[str]] = {}
            events = []
            while "succeeded" not in statuses.get(second, set()):
                more = read_events(lines, 1)
                assert more, "the stream went quiet"
                events += more
                for ev in more:
                    if ev["event"] == "job":
                        statuses.setdefault(ev["data"]["jobId"], set()).add(ev["data"]["status"])
            assert "succeeded" in statuses[second]
        with client.stream("GET", f"/jobs/{second}/events") as stream:
            lines = stream.iter_lines()
            [snap] = read_events(lines, 1)
            assert snap["data"]["jobs"][0]["status"] == "succeeded"
            client.delete(f"/jobs/{second}")
            [gone] = read_events(lines, 1)
            assert gone == {"event": "deleted", "data": {"jobId": second}}
        assert httpx.get(f"{url}/events").status_code == 401
        assert client.get("/jobs/job_missing/events").status_code == 404


def test_metrics_expose_states_polls_histograms_and_deliveries(tmp_path):
    cfg = config(tmp_path, notifiers=[{"type": "log"}])
    with run_service(cfg) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        job_id = post(client, "metrics-1")
        assert post(client, "metrics-1") == job_id
        assert client.post("/poll-video", json={"taskId": "x"}).status_code == 422
        wait_status(client, job_id, {"succeeded"})
        wait_for(lambda: 'status="sent"' in client.get("/metrics").text)
        text = client.get("/metrics").text
        assert 'webhook_poller_jobs{status="succeeded"} 1.0' in text
        assert 'webhook_poller_polls_total{outcome="succeeded",provider="demo"} 1.0' in text
        assert 'webhook_poller_attempts_until_completion_count{model="demo"} 1.0' in text
        assert 'webhook_poller_generation_seconds_count{model="demo"} 1.0' in text
        assert 'webhook_poller_downloaded_bytes_total{provider="demo"}' in text
        assert (
            'webhook_poller_deliveries_total{event="video.succeeded",status="sent",'
            'target="log"} 1.0' in text
        )
        assert "webhook_poller_queue_length 0.0" in text
        for result in ("created", "known", "rejected"):
            assert f'webhook_poller_intake_total{{result="{result}"}} 1.0' in text
        # every claimed step (poll, download, notify) is timed against its due time
        assert "webhook_poller_schedule_lateness_seconds_count 0.0" not in text
        assert 'webhook_poller_schedule_lateness_seconds_bucket{le="+Inf"}' in text
        assert httpx.get(f"{url}/metrics").status_code == 401


@pytest.mark.parametrize("days", [0.00001])
def test_retention_removes_old_jobs_and_videos(tmp_path, days):
    """retention_days (here under a second) deletes finished jobs with their files."""
    cfg = config(tmp_path, storage={"retention_days": days, "retention_sweep_s": 0.2})
    with run_service(cfg) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        job_id = post(client, "old-news")
        wait_status(client, job_id, {"succeeded"})
        wait_for(lambda: client.get(f"/jobs/{job_id}").status_code == 404, timeout=10)
        assert not [p for p in (tmp_path / "videos").rglob("*") if p.is_file()]
