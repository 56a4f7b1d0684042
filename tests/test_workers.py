"""``serve --workers N``: several processes on one store, crashes of one worker or of all.

Real subprocesses under uvicorn's supervisor, a KIE-shaped provider that notices when one
task is polled twice at the same moment (two workers holding one job), and a callback
receiver that counts how often each job was told.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.kie_emulator import veo_pending, veo_success
from tests.support.redis_server import RedisServer
from tests.support.servers import serve_in_thread
from tests.support.service import CallbackReceiver, ServiceProcess, base_config, wait_for
from webhook_poller.adapters.demo import sample_video_path
from webhook_poller.workers import default_workers

pytestmark = pytest.mark.crash


class OverlapProvider:
    """KIE Veo's record-info: a task is done after ``polls`` checks, counted over every
    worker; each check takes ``delay_s`` and ``overlaps`` counts checks of one task that
    ran at the same time (a job held by two workers at once)."""

    def __init__(self, polls: int = 4, delay_s: float = 0.05) -> None:
        self.polls = polls
        self.delay_s = delay_s
        self.count: Counter[str] = Counter()
        self.running: Counter[str] = Counter()
        self.overlaps = 0
        self.url = ""
        self._lock = threading.Lock()
        self.video = Path(sample_video_path()).read_bytes()
        self.app = Starlette(
            routes=[
                Route("/api/v1/veo/record-info", self.status),
                Route("/files/{name}.mp4", self.file),
            ]
        )

    async def status(self, request: Request) -> Response:
        task = request.query_params.get("taskId", "")
        with self._lock:
            self.count[task] += 1
            self.running[task] += 1
            if self.running[task] > 1:
                self.overlaps += 1
            done = self.count[task] >= self.polls
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            with self._lock:
                self.running[task] -= 1
        answer = veo_success([f"{self.url}/files/{task}.mp4"]) if done else veo_pending()
        return JSONResponse(answer[1], status_code=answer[0])

    async def file(self, request: Request) -> Response:
        return Response(self.video, media_type="video/mp4")


def jobs_db(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


def states(tmp_path: Path) -> Counter[str]:
    with sqlite3.connect(jobs_db(tmp_path)) as db:
        return Counter(r[0] for r in db.execute("SELECT state FROM jobs"))


def owners(tmp_path: Path) -> set[str]:
    """The instances holding a lease right now: on a job (a step under way) or on one of its
    deliveries (a callback being sent)."""
    with sqlite3.connect(jobs_db(tmp_path)) as db:
        rows = db.execute(
            "SELECT lease_owner FROM jobs WHERE lease_owner IS NOT NULL"
            " UNION SELECT lease_owner FROM deliveries WHERE lease_owner IS NOT NULL"
        )
        return {r[0] for r in rows}


def post(url: str, n: int, hook: str, prefix: str, model: str = "veo3") -> list[str]:
    with httpx.Client(base_url=url, timeout=10) as client:
        ids = []
        for i in range(n):
            answer = client.post(
                "/poll-video",
                json={
                    "sessionId": f"s{i}",
                    "taskId": f"{prefix}-{i}",
                    "model": model,
                    "callbackUrl": f"{hook}/h",
                },
            )
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["jobId"])
        return ids


def kie_config(tmp_path: Path, provider_url: str, **extra: Any) -> dict[str, Any]:
    cfg = base_config(
        tmp_path,
        store={"lease_s": 1},
        polling={"interval_s": 0.1, "max_attempts": 200},
        providers={"kie": {"base_url": provider_url, "max_requests_per_s": 1000}},
        logging={"level": "INFO"},
    )
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def told_once(receiver: CallbackReceiver, ids: list[str]) -> None:
    told = Counter(r["body"]["jobId"] for r in receiver.events("video.succeeded"))
    assert set(told) == set(ids)
    repeats = {job: n for job, n in told.items() if n > 1}
    if repeats:  # a repeat after a kill -9 mid-callback is allowed only with one webhook-id
        for job in repeats:
            hooks = {
                r["headers"]["webhook-id"]
                for r in receiver.events("video.succeeded")
                if r["body"]["jobId"] == job
            }
            assert len(hooks) == 1, "a repeat must carry the same webhook-id"
    assert receiver.bad_signatures == 0


def test_default_workers_is_one_per_usable_core(tmp_path):
    cores = len(os.sched_getaffinity(0))
    assert default_workers(tmp_path / "absent") == cores
    quota = tmp_path / "cpu.max"
    quota.write_text("max 100000\n")
    assert default_workers(quota) == cores
    quota.write_text("150000 100000\n")  # a container limited to 1.5 CPUs
    assert default_workers(quota) == min(cores, 2)
    quota.write_text("50000 100000\n")
    assert default_workers(quota) == 1


def test_four_workers_start_at_once_on_a_fresh_sqlite_file(tmp_path):
    """N processes opening one new SQLite file together (WAL switch, schema, link secret)
    all come up, share the work, and answer with the same signing secret."""
    provider = OverlapProvider(polls=3)
    receiver = CallbackReceiver()
    with serve_in_thread(provider.app) as purl, receiver.serving() as hook:
        provider.url = purl
        svc = ServiceProcess(kie_config(tmp_path, purl), tmp_path, workers=4)
        svc.start()
        try:
            assert len(svc.worker_pids()) == 4
            ids = post(svc.url, 40, hook, "four")
            seen: set[str] = set()

            def done() -> bool:
                seen.update(owners(tmp_path))
                return states(tmp_path)["succeeded"] == 40

            wait_for(done, timeout=60, interval=0.02)
            wait_for(lambda: len(receiver.events("video.succeeded")) >= 40, timeout=30)
            assert len(seen) >= 2, f"the work went to one worker only: {seen}"
            # a video link made by any worker is valid on every worker
            with httpx.Client(base_url=svc.url, timeout=10) as client:
                links = {client.get(f"/jobs/{ids[0]}").json()["videoUrls"][0] for _ in range(8)}
                for link in links:
                    assert client.get(link).status_code == 200
        finally:
            svc.kill()
    assert provider.overlaps == 0
    told_once(receiver, ids)


def test_kill_9_one_worker_then_the_group_loses_nothing(tmp_path):
    """kill -9 of one worker (the supervisor starts a new one), later of the whole group
    (a restart carries on): every job finishes, no job is polled by two workers at once,
    each job is told once."""
    provider = OverlapProvider(polls=40, delay_s=0.05)  # 6 s or more per job
    receiver = CallbackReceiver()
    with serve_in_thread(provider.app) as purl, receiver.serving() as hook:
        provider.url = purl
        svc = ServiceProcess(kie_config(tmp_path, purl), tmp_path, workers=2)
        svc.start()
        try:
            ids = post(svc.url, 40, hook, "k9")
            wait_for(lambda: len(owners(tmp_path)) >= 2, timeout=20, interval=0.02)
            victim = svc.worker_pids()[0]
            os.kill(victim, signal.SIGKILL)
            assert states(tmp_path)["succeeded"] < 40
            # the supervisor replaces the dead worker
            wait_for(
                lambda: len(svc.worker_pids()) == 2 and victim not in svc.worker_pids(),
                timeout=20,
            )
            time.sleep(0.5)
            svc.kill()  # the whole process group
            assert states(tmp_path)["succeeded"] < 40
            svc.start()
            wait_for(lambda: states(tmp_path)["succeeded"] == 40, timeout=90)
            wait_for(lambda: len(set(receiver.webhook_ids("video.succeeded"))) == 40, timeout=30)
            time.sleep(0.5)
        finally:
            svc.kill()
    assert provider.overlaps == 0, "a job was polled by two workers at once"
    told_once(receiver, ids)
    assert "job_reclaimed" in svc.logs()


def test_sigterm_drains_every_worker_and_hands_jobs_back(tmp_path):
    """SIGTERM to the supervisor: each worker stops gracefully and frees its leases."""
    cfg = base_config(
        tmp_path,
        polling={"interval_s": 0.3},
        providers={"demo": {"polls_until_done": 1000}},
        logging={"level": "INFO"},
    )
    svc = ServiceProcess(cfg, tmp_path, workers=2).start()
    try:
        pids = svc.worker_pids()
        assert len(pids) == 2
        post(svc.url, 20, "http://127.0.0.1:9", "term", model="demo")
        wait_for(lambda: len(owners(tmp_path)) >= 1, timeout=10, interval=0.02)
        assert svc.terminate() == 0
        logs = svc.logs()
        assert logs.count("scheduler_stopped") == 2 and logs.count("service_stopped") == 2
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
        assert owners(tmp_path) == set()
    finally:
        svc.kill()


def test_workers_stop_by_themselves_when_the_supervisor_is_killed(tmp_path):
    """kill -9 of the supervisor alone: its workers notice, stop gracefully (leases freed,
    port released), and a new start serves on the same port."""
    cfg = base_config(
        tmp_path,
        polling={"interval_s": 0.3},
        providers={"demo": {"polls_until_done": 1000}},
        logging={"level": "INFO"},
    )
    svc = ServiceProcess(cfg, tmp_path, workers=2).start()
    try:
        pids = svc.worker_pids()
        post(svc.url, 10, "http://127.0.0.1:9", "orphan", model="demo")
        wait_for(lambda: len(owners(tmp_path)) >= 1, timeout=10, interval=0.02)
        assert svc.proc is not None
        svc.proc.send_signal(signal.SIGKILL)
        svc.proc.wait(timeout=10)
        wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in pids), timeout=20)
        assert owners(tmp_path) == set()
        assert svc.logs().count("scheduler_stopped") == 2
        svc.start()
        assert len(svc.worker_pids()) == 2
    finally:
        svc.kill()


def test_metrics_are_summed_over_workers(tmp_path):
    """Any worker answering /metrics shows the whole server's counters."""
    provider = OverlapProvider(polls=2)
    receiver = CallbackReceiver()
    with serve_in_thread(provider.app) as purl, receiver.serving() as hook:
        provider.url = purl
        svc = ServiceProcess(kie_config(tmp_path, purl), tmp_path, workers=2).start()
        try:
            post(svc.url, 30, hook, "metrics")
            wait_for(lambda: states(tmp_path)["succeeded"] == 30, timeout=60)
            for _ in range(6):  # new connections, so more than one worker answers
                text = httpx.get(f"{svc.url}/metrics", timeout=10).text
                finished = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("webhook_poller_jobs_finished_total{")
                )
                created = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith('webhook_poller_intake_total{result="created"}')
                )
                assert (finished, created) == (30, 30)
                assert 'webhook_poller_jobs{status="succeeded"} 30.0' in text
        finally:
            svc.kill()
    assert provider.overlaps == 0


@pytest.mark.redis
def test_kill_9_one_worker_on_redis_loses_nothing(tmp_path):
    """The same with the Redis store: one worker killed mid-run, no job lost or doubled."""
    server = RedisServer(tmp_path / "redis").start()
    provider = OverlapProvider(polls=8, delay_s=0.05)
    receiver = CallbackReceiver()
    try:
        with serve_in_thread(provider.app) as purl, receiver.serving() as hook:
            provider.url = purl
            cfg = kie_config(tmp_path, purl, store={"url": server.url})
            svc = ServiceProcess(cfg, tmp_path, workers=2).start()
            try:
                ids = post(svc.url, 40, hook, "rk9")
                wait_for(lambda: sum(provider.count.values()) >= 40, timeout=20, interval=0.02)
                os.kill(svc.worker_pids()[0], signal.SIGKILL)
                with httpx.Client(base_url=svc.url, timeout=10) as client:

                    def all_done() -> bool:
                        body = client.get("/jobs", params={"limit": 100}).json()
                        return sum(j["status"] == "succeeded" for j in body["jobs"]) == 40

                    wait_for(all_done, timeout=90, interval=0.2)
                wait_for(
                    lambda: len(set(receiver.webhook_ids("video.succeeded"))) == 40, timeout=30
                )
                time.sleep(0.5)
            finally:
                svc.kill()
    finally:
        server.stop()
    assert provider.overlaps == 0
    told_once(receiver, ids)


async def test_two_processes_writing_one_sqlite_file_never_see_database_is_locked(tmp_path):
    """Two stores on one file (as two workers have): creates, reads, claims and saves from
    both at once all succeed; a read left open on the writing connection used to fail the
    next write at once with "database is locked" as soon as the other side committed."""
    from datetime import timedelta

    from tests.support.factories import make_job
    from webhook_poller.model import utcnow
    from webhook_poller.stores.sqlite import SqliteJobStore

    url = f"sqlite:///{tmp_path}/jobs.db"
    stores = [SqliteJobStore({"url": url}), SqliteJobStore({"url": url})]
    await asyncio.gather(*(s.open() for s in stores))

    async def churn(store: SqliteJobStore, name: str, n: int) -> int:
        made = 0
        for i in range(n):
            job, created = await store.create(make_job(task_id=f"{name}-{i}"))
            assert created
            got, _ = await asyncio.gather(store.get(job.id), store.next_due_at())
            assert got is not None  # a read after our own commit sees it
            made += 1
            claimed = await store.claim_due(name, utcnow() + timedelta(hours=1), 5, 2)
            for c in claimed:
                await store.save(c, expected_version=c.version)
        return made

    try:
        counts = await asyncio.gather(
            *(churn(s, f"{k}{j}", 60) for k, s in enumerate(stores) for j in range(3))
        )
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    assert sum(counts) == 360


def test_workers_share_one_request_budget(tmp_path):
    """Two workers together send at most ``max_requests_per_s`` to a provider, not twice it."""
    provider = OverlapProvider(polls=10**6, delay_s=0)
    with serve_in_thread(provider.app) as purl:
        provider.url = purl
        cfg = kie_config(tmp_path, purl)
        cfg["providers"]["kie"]["max_requests_per_s"] = 20
        cfg["polling"].update(interval_s=0.01, backoff_base_s=0.01)
        svc = ServiceProcess(cfg, tmp_path, workers=2).start()
        try:
            post(svc.url, 60, "http://127.0.0.1:9", "budget")
            wait_for(lambda: len(owners(tmp_path)) >= 2, timeout=20, interval=0.02)
            time.sleep(1.5)  # past the limiter's first burst
            before = sum(provider.count.values())
            time.sleep(3)
            rate = (sum(provider.count.values()) - before) / 3
        finally:
            svc.kill()
    assert 10 <= rate <= 26, f"{rate:.1f} requests/s against a budget of 20"


def test_budget_split_per_worker_on_sqlite_but_whole_on_the_shared_redis_bucket(tmp_path):
    """N workers on SQLite take 1/N each; on Redis all processes draw from one bucket, so a
    split would cut the provider's budget to 1/N in total."""
    from webhook_poller.config import settings_from_mapping
    from webhook_poller.workers import share_budgets

    cfg = base_config(tmp_path)
    cfg["providers"]["kie"]["max_requests_per_s"] = 10
    split = share_budgets(settings_from_mapping(cfg), 2)
    assert split.providers["kie"]["max_requests_per_s"] == 5
    cfg["store"] = {"url": "redis://127.0.0.1:1/0"}
    whole = share_budgets(settings_from_mapping(cfg), 2)
    assert whole.providers["kie"]["max_requests_per_s"] == 10
