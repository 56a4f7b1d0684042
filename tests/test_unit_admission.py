"""Admission (polling.max_active_jobs) as a table, then on a SQLite store in tmp through one
scheduler round with a fake clock: FIFO, free slots, the recheck time. No sockets."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support.clock import FakeClock
from tests.support.factories import make_job
from tests.support.unit_services import unit_services
from webhook_poller import lifecycle
from webhook_poller.model import JobState
from webhook_poller.scheduler import Scheduler
from webhook_poller.services import Services

S = JobState


@pytest.mark.parametrize(
    ("limit", "held", "position", "expected"),
    [
        (None, 0, None, True),  # no limit: everything starts
        (None, 10_000, 5, True),
        (1, 0, 1, True),  # one free slot, first in line
        (1, 0, 2, False),  # one free slot, but an older job waits ahead
        (1, 1, 1, False),  # no free slot
        (3, 1, 2, True),  # two free slots, second in line
        (3, 1, 3, False),  # two free slots, third in line
        (3, 3, None, False),  # full
        (3, 5, 1, False),  # overshoot (two instances at once) heals: nothing starts
        (2, 0, None, True),  # not among the queued (just moved): nothing ahead of it
    ],
)
def test_admission_rule(limit, held, position, expected):
    """A queued job starts when a slot is free and it is among the oldest that fit."""
    assert lifecycle.admitted(limit, held, position) is expected


@pytest.mark.parametrize(
    ("counts", "held"),
    [
        ({}, 0),
        ({"queued": 4}, 0),  # queued jobs hold no slot
        ({"submitting": 1, "polling": 2, "delayed": 1}, 4),
        ({"downloading": 1, "storing": 1, "notifying": 1}, 3),
        ({"succeeded": 9, "failed": 3, "cancelled": 2, "polling": 1}, 1),  # finished: free
    ],
)
def test_slot_counts_only_count_started_unfinished_jobs(counts, held):
    """Every active state but ``queued`` holds a slot; finished jobs hold none."""
    assert lifecycle.slot_counts(counts) == held


async def _queued(services: Services, n: int, clock: FakeClock):
    jobs = []
    for _ in range(n):
        job = make_job(state=S.QUEUED, due_at=clock.now())
        job = dataclasses.replace(job, created_at=clock.now(), updated_at=clock.now())
        jobs.append((await services.store.create(job))[0])
        clock.advance(0.001)  # FIFO is by arrival
    return jobs


async def test_admit_is_fifo_on_a_real_store(tmp_path: Path):
    """With one slot held of two, only the oldest queued job may start; the others are put
    off by ``recheck_s`` on the clock's time."""
    clock = FakeClock()
    async with unit_services(tmp_path, clock, polling={"max_active_jobs": 2}) as services:
        running = make_job(state=S.POLLING)
        await services.store.create(running)
        first, second, third = await _queued(services, 3, clock)
        now = clock.now()
        assert await lifecycle.admit(services, first, now, 1.5) is None
        for later in (second, third):
            put_off = await lifecycle.admit(services, later, now, 1.5)
            assert put_off is not None and put_off.state is S.QUEUED
            assert put_off.due_at == now + timedelta(seconds=1.5) and put_off.updated_at == now


async def test_admit_without_a_limit_reads_nothing(tmp_path: Path):
    """No max_active_jobs: every job is admitted, however many run."""
    async with unit_services(tmp_path) as services:
        for _ in range(3):
            await services.store.create(make_job(state=S.POLLING))
        job = make_job(state=S.QUEUED)
        assert await lifecycle.admit(services, job, services.clock.now(), 1.0) is None


async def test_one_round_admits_only_as_many_jobs_as_slots(tmp_path: Path):
    """max_active_jobs=2 and three queued demo jobs: one round starts two, the third waits
    one tick and starts once a slot is free."""
    clock = FakeClock()
    async with unit_services(tmp_path, clock, polling={"max_active_jobs": 2}) as services:
        jobs = await _queued(services, 3, clock)
        scheduler = Scheduler(services)
        done = await scheduler.run_once(wait=True)
        assert len(done.jobs) == 3
        states = [(await services.store.get(j.id)).state for j in jobs]  # type: ignore[union-attr]
        assert states == [S.POLLING, S.POLLING, S.QUEUED]
        waiting = await services.store.get(jobs[2].id)
        assert waiting is not None
        assert waiting.due_at == clock.now() + timedelta(seconds=services.settings.polling.tick_s)
        # a slot frees: cancel the first job; at the next tick the third one starts
        await lifecycle.cancel(services, jobs[0].id)
        clock.advance(services.settings.polling.tick_s)
        await scheduler.run_once(wait=True)
        third = await services.store.get(jobs[2].id)
        assert third is not None and third.state is S.POLLING and third.polls == 1
