"""Scale-out on Redis under faults: several instances, one killed; Redis itself restarted;
intake and readiness while Redis is away. Each test starts its own redis-server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.redis_server import RedisServer
from tests.support.service import CallbackReceiver, ServiceProcess, base_config, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.crash]


def redis_states(server: RedisServer) -> Counter[str]:
    client = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)
    try:
        return Counter(
            {
                state: int(client.zcard(f"wp:st:{state}"))
                for state in (
                    "queued",
                    "polling",
                    "delayed",
                    "downloading",
                    "storing",
                    "notifying",
                    "succeeded",
                    "failed",
                    "cancelled",
                )
            }
        )
    finally:
        client.close()


def instance_config(tmp_path: Path, server: RedisServer, **extra) -> dict:
    cfg = base_config(tmp_path, store={"url": server.url, "lease_s": 2}, **extra)
    cfg["storage"] = {"url": f"file://{tmp_path}/videos"}
    return cfg


def post_jobs(urls: list[str], n: int, hook: str, prefix: str) -> list[str]:
    """Spread n jobs over the instances, a few posts in parallel."""

    local = threading.local()
    clients: list[httpx.Client] = []

    def one(i: int) -> str:
        url = urls[i % len(urls)]
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=10)
            clients.append(local.client)
        for _ in range(50):
            try:
                resp = local.client.post(
                    f"{url}/poll-video",
                    json={
                        "sessionId": f"s{i % 37}",
                        "taskId": f"{prefix}-{i}",
                        "model": "demo",
                        "callbackUrl": f"{hook}/h",
                    },
                )
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            if resp.status_code == 200:
                return str(resp.json()["jobId"])
            time.sleep(0.2)
        raise AssertionError(f"job {i} was never accepted")

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(one, range(n)))
    finally:
        for client in clients:
            client.close()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_three_instances_one_killed_every_job_told_once(tmp_path):
    """1,000 jobs over three instances; one is SIGKILLed mid-polling; all succeed, once each."""
    server = RedisServer(tmp_path / "redis").start()
    receiver = CallbackReceiver()
    procs: list[ServiceProcess] = []
    try:
        with receiver.serving() as hook:
            for _ in range(3):
                cfg = instance_config(
                    tmp_path,
                    server,
                    polling={
                        "interval_s": 0.3,
                        "first_poll_delay_s": 10,
                        "concurrency": 64,
                        "max_attempts": 100,
                    },
                    # the demo's 100 requests/s budget is shared by the three instances on
                    # Redis; this test is about failover, so the budget is out of the way
                    providers={"demo": {"polls_until_done": 8, "max_requests_per_s": 2000}},
                )
                procs.append(ServiceProcess(cfg, tmp_path).start())
            started = time.monotonic()
            ids = post_jobs([p.url for p in procs], 1000, hook, "scale")
            # kill once polling is under way, with most jobs still in flight
            wait_for(lambda: redis_states(server)["polling"] >= 30, timeout=60, interval=0.02)
            procs[0].kill()
            at_kill = redis_states(server)
            assert at_kill["succeeded"] <= 900, f"the kill must land mid-run: {at_kill}"
            wait_for(lambda: redis_states(server)["succeeded"] == 1000, timeout=240)
            wait_for(lambda: len(receiver.events("video.succeeded")) >= 1000, timeout=60)
            time.sleep(1.0)
            elapsed = time.monotonic() - started
    finally:
        for proc in procs:
            proc.kill()
        server.stop()
    told = [r["headers"]["webhook-id"] for r in receiver.events("video.succeeded")]
    assert len(set(told)) == 1000, "every job's success told"
    assert len(told) == 1000, "and told exactly once"
    assert {r["body"]["jobId"] for r in receiver.events("video.succeeded")} == set(ids)
    assert receiver.bad_signatures == 0
    assert elapsed < 300


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("workers", [1, 2])
def test_redis_restart_mid_run_loses_nothing(tmp_path, workers):
    """Redis goes away mid-run (instances of one or two worker processes): intake answers 503
    and readyz 503; after it returns all finish."""
    server = RedisServer(tmp_path / "redis").start()
    receiver = CallbackReceiver()
    procs: list[ServiceProcess] = []
    try:
        with receiver.serving() as hook:
            for _ in range(2):
                cfg = instance_config(
                    tmp_path,
                    server,
                    polling={"interval_s": 0.3, "max_attempts": 100},
                    providers={"demo": {"polls_until_done": 5}},
                )
                procs.append(ServiceProcess(cfg, tmp_path, workers=workers).start())
            ids = post_jobs([p.url for p in procs], 200, hook, "rr")
            server.stop()
            down = httpx.post(
                f"{procs[0].url}/poll-video",
                timeout=15,
                json={"sessionId": "s", "taskId": "during-outage", "model": "demo"},
            )
            assert down.status_code == 503 and down.headers.get("retry-after")
            assert down.json()["error"]["code"] == "unavailable"
            ready = wait_for(
                lambda: httpx.get(f"{procs[1].url}/readyz", timeout=10).status_code == 503,
                timeout=30,
            )
            assert ready
            time.sleep(1.0)
            server.start()
            wait_for(lambda: redis_states(server)["succeeded"] == 200, timeout=120)
            wait_for(
                lambda: httpx.get(f"{procs[1].url}/readyz", timeout=5).status_code == 200,
                timeout=30,
            )
            wait_for(lambda: len(set(receiver.webhook_ids("video.succeeded"))) == 200, timeout=60)
    finally:
        for proc in procs:
            proc.kill()
        server.stop()
    assert {r["body"]["jobId"] for r in receiver.events("video.succeeded")} == set(ids)


def test_intake_on_redis_is_shared_and_idempotent_across_instances(tmp_path):
    """The same task posted to two instances at the same moment makes one job."""
    server = RedisServer(tmp_path / "redis").start()
    procs: list[ServiceProcess] = []
    try:
        for _ in range(2):
            cfg = instance_config(tmp_path, server, polling={"first_poll_delay_s": 3600})
            procs.append(ServiceProcess(cfg, tmp_path).start())

        async def race() -> list[dict]:
            async with httpx.AsyncClient(timeout=10) as client:
                body = {"sessionId": "s", "taskId": "same-task", "model": "demo"}
                answers = await asyncio.gather(
                    *(client.post(f"{procs[i % 2].url}/poll-video", json=body) for i in range(20))
                )
            return [a.json() for a in answers]

        answers = asyncio.run(race())
    finally:
        for proc in procs:
            proc.kill()
        server.stop()
    assert len({a["jobId"] for a in answers}) == 1
    assert sum(1 for a in answers if not a["alreadyKnown"]) == 1


def test_session_restored_from_redis_for_notifiers(tmp_path):
    """The session stored in Redis by the caller reaches the notifiers, then is deleted."""
    server = RedisServer(tmp_path / "redis").start()
    receiver = CallbackReceiver()
    client = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)
    try:
        client.set("session:user-7", '{"chatId": 4242, "lang": "de"}')
        client.hset("session:user-8", mapping={"chatId": "77"})
        with receiver.serving() as hook:
            cfg = instance_config(
                tmp_path,
                server,
                session={"delete_on_complete": True},
                notifiers=[{"type": "log"}],
                logging={"level": "INFO"},
            )
            proc = ServiceProcess(cfg, tmp_path).start()
            try:
                for sid in ("user-7", "user-8"):
                    httpx.post(
                        f"{proc.url}/poll-video",
                        json={
                            "sessionId": sid,
                            "taskId": f"t-{sid}",
                            "model": "demo",
                            "callbackUrl": f"{hook}/h",
                        },
                    )
                wait_for(lambda: len(receiver.events("video.succeeded")) == 2, timeout=30)
                wait_for(lambda: client.exists("session:user-7", "session:user-8") == 0, timeout=10)
            finally:
                proc.kill()
            logs = proc.logs()
            assert '"session_keys": ["chatId", "lang"]' in logs
            assert '"session_keys": ["chatId"]' in logs
    finally:
        client.close()
        server.stop()
