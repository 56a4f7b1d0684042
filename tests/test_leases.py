"""The instance's lease renewer: one task renews every lease held, each tick at once."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime
from typing import Any, cast

import pytest

from tests.support.factories import make_job
from webhook_poller.clock import SystemClock
from webhook_poller.interfaces import JobStore
from webhook_poller.leases import LeaseKeeper
from webhook_poller.model import utcnow
from webhook_poller.stores.redis import RedisJobStore

LEASE_S = 0.3  # a tick every 0.05 s


class RecordingStore:
    """renew_lease only: records each call; the leases in ``lost`` are someone else's."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.lost: set[str] = set()
        self.down = False

    async def renew_lease(self, job_id: str, owner: str, until: datetime) -> bool:
        self.calls.append((job_id, asyncio.get_running_loop().time()))
        if self.down:
            raise OSError("store away")
        return job_id not in self.lost


def keeper(store: RecordingStore) -> LeaseKeeper:
    return LeaseKeeper(cast(JobStore, store), "me", LEASE_S, SystemClock())


async def _worker(leases: LeaseKeeper, job_id: str, seconds: float) -> str:
    task = asyncio.current_task()
    leases.hold(job_id, task)
    try:
        await asyncio.sleep(seconds)
        return "done"
    finally:
        leases.release(job_id, task)


async def test_long_runs_are_renewed_together_by_one_task_and_short_ones_never():
    """Three workers longer than the lease and one shorter than a sixth of it: one renewer
    task renews the three together, each between lease_s / 6 and lease_s / 3 after its
    claim or last renewal; the short run's lease is never renewed (its own save lets it
    go); once the last worker is done no renewer task is left."""
    store = RecordingStore()
    leases = keeper(store)
    before = {t.get_name() for t in asyncio.all_tasks()}
    workers = [asyncio.create_task(_worker(leases, f"j{i}", 0.5)) for i in range(3)]
    short = asyncio.create_task(_worker(leases, "short", 0.02))
    await asyncio.sleep(0.01)
    renewers = {t.get_name() for t in asyncio.all_tasks()} - before
    assert renewers - {w.get_name() for w in [*workers, short]} == {"lease-renewer"}
    assert await asyncio.gather(*workers, short) == ["done"] * 4
    ticks: list[list[str]] = []  # the calls of one tick come within microseconds
    last = -1.0
    for job_id, at in store.calls:
        if at - last > 0.01:
            ticks.append([])
        ticks[-1].append(job_id)
        last = at
    assert len(ticks) >= 3 and all(sorted(t) == ["j0", "j1", "j2"] for t in ticks)
    starts = [at for i, (_, at) in enumerate(store.calls) if i % 3 == 0]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g >= LEASE_S / 6 - 0.005 for g in gaps)  # not more often than due
    assert sorted(gaps)[len(gaps) // 2] <= LEASE_S / 3 + 0.02  # and in time, as a rule
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "lease-renewer"]
    await leases.close()


async def test_a_lost_lease_cancels_only_its_worker():
    """A lease found someone else's ends that job's worker; the others go on renewed."""
    store = RecordingStore()
    store.lost = {"taken"}
    leases = keeper(store)
    taken = asyncio.create_task(_worker(leases, "taken", 1.0))
    kept = asyncio.create_task(_worker(leases, "kept", 0.2))
    assert await kept == "done"
    with pytest.raises(asyncio.CancelledError):
        await taken
    assert [j for j, _ in store.calls].count("taken") == 1
    assert [j for j, _ in store.calls].count("kept") >= 3
    await leases.close()


async def test_a_store_error_is_tried_again_next_tick():
    """The store away: the renewal is logged and tried again; no worker is cancelled."""
    store = RecordingStore()
    store.down = True
    leases = keeper(store)
    assert await _worker(leases, "j", 0.2) == "done"
    assert len(store.calls) >= 3
    await leases.close()


@pytest.mark.redis
async def test_on_redis_the_renewals_of_a_tick_are_one_script_call(redis_server):
    """Renewals that arrive together go out as one renew call; each answers for its own
    lease (the owner's renewed, a lease another instance holds refused)."""
    redis_server.flush()
    store = RedisJobStore({"url": redis_server.url})
    await store.open()
    try:
        jobs = [make_job(task_id=f"renew-{i}") for i in range(5)]
        for job in jobs:
            await store.create(job)
        now = utcnow()
        claimed = await store.claim_due("a", now, 30, 10)
        assert len(claimed) == 5
        calls = 0
        script = store._scripts["renew"]

        async def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return await script(*args, **kwargs)

        store._scripts["renew"] = counting
        later = now.replace(year=now.year + 1)
        owners = ["a", "a", "b", "a", "a"]
        results = await asyncio.gather(
            *(store.renew_lease(j.id, o, later) for j, o in zip(jobs, owners, strict=True))
        )
        assert results == [True, True, False, True, True] and calls == 1
        for job, owner in zip(jobs, owners, strict=True):
            stored = await store.get(job.id)
            assert stored is not None and stored.lease_owner == "a"
            assert (stored.lease_expires_at == later) is (owner == "a")
    finally:
        await store.close()


async def test_a_release_after_the_lease_was_lost_or_never_held_is_a_no_op():
    """``release`` for a job the renewer no longer holds (its lease was lost, or it was
    never held) changes nothing, also for a worker of ``None`` (no current task)."""
    leases = keeper(RecordingStore())
    leases.release("never-held", None)
    leases.hold("kept", None)
    leases.release("other", None)
    assert leases._holds("kept", None)
    leases.release("kept", None)
    assert not leases._holds("kept", None)
    await leases.close()
