"""The provider request budget and the 429 pause, shared by every instance on the Redis store
(issue 12, item 21). Fast tests against a real redis-server: each gate has its own store
and connection, as two instances would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer
from webhook_poller.config import settings_from_mapping
from webhook_poller.services import ProviderGate, build_services
from webhook_poller.stores.redis import RedisJobStore

pytestmark = pytest.mark.redis


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most timestamps in any half-open window [t, t + window)."""
    times = sorted(times)
    best = 0
    j = 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[list[RedisJobStore]]:
    redis_server.flush()
    opened = [RedisJobStore({"url": redis_server.url}) for _ in range(3)]
    for store in opened:
        await store.open()
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


def gate(store: RedisJobStore | None, rate: float) -> ProviderGate:
    polling = settings_from_mapping({}).polling
    return ProviderGate("kie", {"max_requests_per_s": rate}, polling, store)


async def hammer(gates: list[ProviderGate], seconds: float, workers: int = 8) -> list[float]:
    """``workers`` eager pollers per gate for ``seconds``; the time of every grant."""
    granted: list[float] = []
    stop = time.monotonic() + seconds

    async def worker(g: ProviderGate) -> None:
        while time.monotonic() < stop:
            await g.acquire()
            granted.append(time.monotonic())

    await asyncio.gather(*(worker(g) for g in gates for _ in range(workers)))
    return granted


async def test_three_gates_on_one_redis_share_one_budget(stores):
    rate = 20.0
    granted = await hammer([gate(s, rate) for s in stores], 2.0)
    # burst 1: requests are spaced 1/rate apart, so a 1 s window holds `rate` (+1 for timer
    # jitter between the reserving instances); per process it would be 3 x rate
    assert max_in_window(granted) <= rate + 1, max_in_window(granted)
    # and the budget is used, not starved: about rate x seconds (+ the waiters let through
    # by the last slots reserved before the stop)
    assert len(granted) >= 0.8 * rate * 2.0


async def test_bucket_spaces_requests_from_a_cold_start(stores):
    """No burst of `rate` requests in the first second (aiolimiter's full bucket did that)."""
    store = stores[0]
    assert await store.budget_take("sec-a", 10.0) == 0
    wait = await store.budget_take("sec-a", 10.0)
    assert 0.03 <= wait <= 0.1  # the next one conforms 100 ms later; nothing was taken
    assert 0.03 <= await stores[1].budget_take("sec-a", 10.0) <= 0.1  # the same elsewhere
    await asyncio.sleep(wait)
    assert await stores[1].budget_take("sec-a", 10.0) == 0
    # sections are independent
    assert await store.budget_take("sec-b", 10.0) == 0


async def test_a_burst_lets_that_many_through_at_once(stores):
    store = stores[0]
    waits = [await store.budget_take("burst", 10.0, burst=3) for _ in range(4)]
    assert waits[:3] == [0, 0, 0]
    assert 0.05 < waits[3] <= 0.1


async def test_pause_set_by_one_instance_holds_for_all(stores):
    a, b, c = (gate(s, 50.0) for s in stores)
    await a.acquire()
    a.pause(1.0)  # what the scheduler does on a 429 with Retry-After: 1
    await asyncio.sleep(0.05)  # the pause reaches Redis in the background
    started = time.monotonic()
    await asyncio.gather(b.acquire(), c.acquire())
    assert time.monotonic() - started >= 0.85
    assert await stores[2].budget_pause("kie", 0) == 0


async def test_pause_holds_requests_already_waiting(stores):
    """A request waiting for the budget when another instance gets a 429 waits for the pause."""
    slow = gate(stores[0], 2.0)  # 500 ms between requests
    other = gate(stores[1], 2.0)
    await slow.acquire()
    started = time.monotonic()
    waiting = asyncio.ensure_future(slow.acquire())  # would go in ~500 ms
    await asyncio.sleep(0.1)
    other.pause(1.5)
    await waiting
    assert time.monotonic() - started >= 1.5


async def test_pause_longest_wins_and_expires(stores):
    store = stores[0]
    assert await store.budget_pause("p", 2.0) == pytest.approx(2.0, abs=0.05)
    assert await store.budget_pause("p", 0.5) == pytest.approx(2.0, abs=0.05)
    client = store.r
    ttl = await client.pttl("wp:rl:pause:p")
    assert 0 < ttl <= 3000  # the key goes away by itself after the pause


async def test_without_a_rate_the_shared_pause_still_holds(stores):
    a, b = gate(stores[0], 0), gate(stores[1], 0)
    started = time.monotonic()
    await b.acquire()
    assert time.monotonic() - started < 0.2
    a.pause(0.6)
    await asyncio.sleep(0.05)
    await b.acquire()
    assert time.monotonic() - started >= 0.55


async def test_redis_down_falls_back_to_the_process_budget(tmp_path: Path, caplog):
    server = RedisServer(tmp_path / "redis").start()
    store = RedisJobStore({"url": server.url})
    await store.open()
    try:
        g = gate(store, 20.0)
        await g.acquire()
        server.stop(kill=True)
        started = time.monotonic()
        for _ in range(3):
            await g.acquire()  # no exception: the process's own limiter takes over
        g.pause(0.01)  # and a pause that cannot reach Redis does not raise either
        await asyncio.sleep(0.05)
        assert time.monotonic() - started < 10
        assert g._shared_down
    finally:
        await store.close()
        server.stop()


async def test_sqlite_store_keeps_the_budget_per_process(tmp_path: Path):
    settings = settings_from_mapping(
        {
            "store": {"url": f"sqlite:///{tmp_path}/jobs.db"},
            "storage": {"url": f"file://{tmp_path}/videos"},
            "providers": {"kie": {"api_key": "k"}},
        }
    )
    services = build_services(settings)
    try:
        assert {g.shared for g in services.gates.values()} == {None}
    finally:
        await services.http.aclose()
        await services.provider_http.aclose()


async def test_redis_store_shares_the_budget(redis_server: RedisServer, tmp_path: Path):
    settings = settings_from_mapping(
        {
            "store": {"url": redis_server.url},
            "storage": {"url": f"file://{tmp_path}/videos"},
            "providers": {"kie": {"api_key": "k"}},
        }
    )
    services = build_services(settings)
    try:
        kie = [g for g in services.gates.values() if g.section == "kie"]
        assert kie and all(g.shared is services.store for g in kie)
    finally:
        await services.http.aclose()
        await services.provider_http.aclose()
