"""Crashes and restarts: every accepted job finishes, and no callback goes out twice.

Two kinds of proof. Real ``kill -9`` of a service subprocess at moments we can hold
(polling, and a callback in flight), and, for every state, a store left exactly as a worker
killed in that state leaves it (job in that state, lease held by a dead instance, half a
download on disk), which a fresh service must carry to the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sqlite3
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.factories import make_job
from tests.support.service import (
    CallbackReceiver,
    ServiceProcess,
    base_config,
    run_service,
    wait_for,
)
from webhook_poller.adapters.demo import sample_video_path
from webhook_poller.model import (
    Delivery,
    DeliveryStatus,
    Event,
    JobState,
    StoredVideo,
    VideoMetadata,
    utcnow,
    webhook_id_for,
)
from webhook_poller.pipeline import video_key
from webhook_poller.stores.sqlite import SqliteJobStore


def states(tmp_path: Path) -> Counter[str]:
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        return Counter(r[0] for r in db.execute("SELECT state FROM jobs"))


def post_many(url: str, n: int, hook: str, prefix: str) -> list[str]:
    with httpx.Client(base_url=url, timeout=10) as client:
        return [
            client.post(
                "/poll-video",
                json={
                    "sessionId": f"s{i}",
                    "taskId": f"{prefix}-{i}",
                    "model": "demo",
                    "callbackUrl": f"{hook}/h",
                },
            ).json()["jobId"]
            for i in range(n)
        ]


@pytest.mark.crash
@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_while_polling_loses_nothing(tmp_path, workers):
    """Killed twice mid-polling (with one or two worker processes on one file), the service
    resumes every job and calls back once per job."""
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        cfg = base_config(
            tmp_path,
            store={"lease_s": 1},
            polling={"interval_s": 0.2, "max_attempts": 100},
            providers={"demo": {"polls_until_done": 8}},
        )
        svc = ServiceProcess(cfg, tmp_path, workers=workers).start()
        try:
            ids = post_many(svc.url, 30, hook, "k9")
            for _ in range(2):
                time.sleep(0.6)
                svc.kill()
                assert states(tmp_path)["succeeded"] < 30
                svc.start()
            wait_for(lambda: states(tmp_path)["succeeded"] == 30, timeout=60)
            wait_for(lambda: len(set(receiver.webhook_ids("video.succeeded"))) == 30, timeout=30)
            time.sleep(0.5)
        finally:
            svc.kill()
    succeeded = [r["body"]["jobId"] for r in receiver.events("video.succeeded")]
    assert sorted(succeeded) == sorted(ids), "each job's success told exactly once"
    assert receiver.bad_signatures == 0


@pytest.mark.crash
@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_with_callbacks_in_flight_repeats_only_with_same_webhook_id(tmp_path, workers):
    """A crash while receivers are still answering (one or two worker processes) re-sends
    with the same webhook-id only."""
    receiver = CallbackReceiver()
    receiver.delay_s = 1.5
    with receiver.serving() as hook:
        cfg = base_config(tmp_path, store={"lease_s": 1})
        svc = ServiceProcess(cfg, tmp_path, workers=workers).start()
        try:
            ids = post_many(svc.url, 10, hook, "inflight")
            wait_for(lambda: len(receiver.events()) >= 5, timeout=30)
            svc.kill()
            receiver.delay_s = 0
            svc.start()
            wait_for(lambda: states(tmp_path)["succeeded"] == 10, timeout=60)

            def all_sent() -> bool:
                with sqlite3.connect(tmp_path / "jobs.db") as db:
                    rows = db.execute("SELECT status FROM deliveries").fetchall()
                return len(rows) == 10 and all(r[0] == "sent" for r in rows)

            wait_for(all_sent, timeout=30)
        finally:
            svc.kill()
    by_job: dict[str, set[str]] = {}
    for hit in receiver.events("video.succeeded"):
        by_job.setdefault(hit["body"]["jobId"], set()).add(hit["headers"]["webhook-id"])
    assert sorted(by_job) == sorted(ids)
    assert all(len(v) == 1 for v in by_job.values()), "a repeat must carry the same webhook-id"


async def _seed(tmp_path: Path, base_url: str, hook: str) -> dict[str, str]:
    """Write jobs as a worker killed in each state leaves them; return state -> job id."""
    store = SqliteJobStore({"url": f"sqlite:///{tmp_path}/jobs.db"})
    await store.open()
    now = utcnow()
    dead = {"lease_owner": "inst-dead", "lease_expires_at": now - timedelta(seconds=1)}
    sample = sample_video_path()
    seeded: dict[str, str] = {}

    async def put(state: JobState, **changes) -> None:
        job = make_job(
            task_id=f"seed-{state.value}-{changes.pop('suffix', '')}",
            state=state,
            callback_url=f"{hook}/h",
            due_at=now - timedelta(seconds=1),
            **dead,
            **changes,
        )
        await store.create(job)
        seeded[job.task_id] = job.id

    await put(JobState.QUEUED)
    await put(JobState.POLLING, polls=1)
    await put(JobState.DELAYED, polls=15, delayed_at=now)
    demo_url = f"{base_url}/providers/demo/sample.mp4"
    await put(JobState.DOWNLOADING, polls=2, result_urls=(demo_url,))
    # a half-written download from the dead worker lies next to where the video goes
    part_job = make_job(task_id="seed-downloading-")
    part = tmp_path / "videos" / Path(video_key(part_job, 0)).parent / ".0.mp4.dead.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(b"\x00" * 1000)
    for suffix in ("", "sent"):
        for state in (JobState.STORING, JobState.NOTIFYING):
            probe = make_job(task_id=f"seed-{state.value}-{suffix}")
            key = video_key(probe, 0)
            target = tmp_path / "videos" / key
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sample, target)
            video = StoredVideo(
                0, key, VideoMetadata(size_bytes=target.stat().st_size, content_type="video/mp4")
            )
            await put(state, polls=2, result_urls=(demo_url,), videos=(video,), suffix=suffix)
    # a notifying job whose callback was already accepted before the crash
    job = await store.get(seeded["seed-notifying-sent"])
    assert job is not None
    row = Delivery(
        job_id=job.id,
        run=0,
        event=Event.SUCCEEDED,
        target="callback",
        webhook_id=webhook_id_for(job.id, 0, Event.SUCCEEDED, "callback"),
        payload={"event": "video.succeeded", "jobId": job.id},
        status=DeliveryStatus.SENT,
        attempts=1,
        created_at=now,
        sent_at=now,
    )
    await store.save(dataclasses.replace(job), expected_version=job.version, deliveries=[row])
    await store.close()
    return seeded


@pytest.mark.crash
def test_restart_carries_on_from_every_state(tmp_path):
    """A job left in any state by a dead worker is finished by the next instance, told once."""
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        cfg = base_config(tmp_path, store={"lease_s": 1})
        base_url = f"http://127.0.0.1:{cfg['server']['port']}"
        seeded = asyncio.run(_seed(tmp_path, base_url, hook))
        with run_service(cfg):
            wait_for(lambda: states(tmp_path)["succeeded"] == len(seeded), timeout=30)
            time.sleep(0.5)
            with sqlite3.connect(tmp_path / "jobs.db") as db:
                pending = db.execute(
                    "SELECT COUNT(*) FROM deliveries WHERE status != 'sent'"
                ).fetchone()[0]
            assert pending == 0
    told = Counter(r["body"]["jobId"] for r in receiver.events("video.succeeded"))
    expected = {jid for task, jid in seeded.items() if task != "seed-notifying-sent"}
    assert set(told) == expected, "every job but the one told before the crash is told now"
    assert all(n == 1 for n in told.values())


@pytest.mark.crash
def test_sigterm_shuts_down_cleanly_and_hands_jobs_back(tmp_path):
    """SIGTERM shuts down gracefully and frees leases, so the next start takes over at once."""
    cfg = base_config(
        tmp_path,
        polling={"interval_s": 0.3},
        providers={"demo": {"polls_until_done": 100}},
        logging={"level": "INFO"},
    )
    svc = ServiceProcess(cfg, tmp_path).start()
    try:
        post_many(svc.url, 5, "http://127.0.0.1:9", "term")
        time.sleep(0.5)
        # uvicorn re-raises the signal after its graceful shutdown, as supervisors expect
        assert svc.terminate() in (0, -15)
        assert "scheduler_stopped" in svc.logs() and "service_stopped" in svc.logs()
        with sqlite3.connect(tmp_path / "jobs.db") as db:
            leased = db.execute(
                "SELECT COUNT(*) FROM jobs WHERE lease_owner IS NOT NULL"
            ).fetchone()[0]
        assert leased == 0
    finally:
        svc.kill()
