"""Scheduler.run_once with the demo adapter, a SQLite store in tmp and a fake clock: each
claim round does exactly the work that is due at the clock's time. No server, no sockets,
no waiting loops; the clock is stepped by hand."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from tests.support.clock import FakeClock
from tests.support.factories import make_job
from tests.support.unit_services import ScriptedNotifier, unit_services
from webhook_poller import lifecycle
from webhook_poller.errors import NotifyTransient
from webhook_poller.model import DeliveryStatus, ErrorCode, Event, Job, JobState
from webhook_poller.policy import Outcome
from webhook_poller.scheduler import Scheduler
from webhook_poller.services import Services

S = JobState
INTERVAL_S = 10.0  # polling.interval_s in unit_config; jitter 0


async def _intake(services: Services, clock: FakeClock, task_id: str | None = None) -> Job:
    job = make_job(state=S.QUEUED, due_at=clock.now(), task_id=task_id)
    job = dataclasses.replace(job, created_at=clock.now(), updated_at=clock.now())
    return (await services.store.create(job))[0]


async def _get(services: Services, job: Job) -> Job:
    found = await services.store.get(job.id)
    assert found is not None
    return found


async def test_scheduler_takes_its_clock_from_the_services(tmp_path: Path):
    """Without a clock argument the scheduler, its policies and dispatcher share services'."""
    clock = FakeClock()
    async with unit_services(tmp_path, clock) as services:
        scheduler = Scheduler(services)
        assert scheduler.clock is clock and scheduler.dispatcher.clock is clock
        assert all(p.clock is clock for p in scheduler.policies.values())
        other = FakeClock()
        assert Scheduler(services, clock=other).dispatcher.clock is other


async def test_a_round_with_nothing_due_does_nothing(tmp_path: Path):
    """An empty store, or a job due later, gives an idle round."""
    clock = FakeClock()
    async with unit_services(tmp_path, clock) as services:
        scheduler = Scheduler(services)
        assert not (await scheduler.run_once(wait=True)).busy
        job = make_job(state=S.QUEUED, due_at=clock.now() + timedelta(seconds=5))
        await services.store.create(job)
        idle = await scheduler.run_once(wait=True)
        assert not idle.busy and idle.jobs == () and idle.deliveries == ()
        clock.advance(5)
        assert [j.id for j in (await scheduler.run_once(wait=True)).jobs] == [job.id]


async def test_demo_job_goes_from_intake_to_succeeded_round_by_round(tmp_path: Path):
    """Demo finishes on its 2nd poll: round 1 polls once and schedules the next poll one
    interval later; nothing is due until the clock gets there; round 2 polls, downloads,
    stores and plans the notification; round 3 sends it, and the sent delivery ends the job
    (it does not claim itself to look at its deliveries)."""
    clock = FakeClock()
    async with unit_services(tmp_path, clock) as services:
        target = ScriptedNotifier()
        services.notifiers.append(target)
        scheduler = Scheduler(services, rng=random.Random(1))
        job = await _intake(services, clock)

        first = await scheduler.run_once(wait=True)
        assert [j.id for j in first.jobs] == [job.id] and first.busy
        polled = await _get(services, job)
        assert polled.state is S.POLLING and polled.polls == 1
        assert polled.due_at == clock.now() + timedelta(seconds=INTERVAL_S)
        assert polled.lease_owner is None  # let go until due again

        clock.advance(INTERVAL_S - 0.01)
        assert not (await scheduler.run_once(wait=True)).busy
        assert (await _get(services, job)).polls == 1

        clock.advance(0.01)
        await scheduler.run_once(wait=True)
        notifying = await _get(services, job)
        assert notifying.state is S.NOTIFYING and notifying.polls == 2
        assert len(notifying.videos) == 1 and notifying.result_urls
        assert notifying.lease_owner is None  # let go: the delivery moves it on
        assert notifying.due_at == clock.now() + timedelta(seconds=scheduler.lease_s)
        (row,) = await services.store.deliveries_for(job.id)
        assert row.status is DeliveryStatus.PENDING and row.event is Event.SUCCEEDED

        sent = await scheduler.run_once(wait=True)
        assert [d.webhook_id for d in sent.deliveries] == [row.webhook_id]
        (row,) = await services.store.deliveries_for(job.id)
        assert row.status is DeliveryStatus.SENT and row.sent_at == clock.now()
        assert [n.event for n in target.received] == [Event.SUCCEEDED]
        assert sent.jobs == ()  # the job was not claimed to look
        done = await _get(services, job)
        assert done.state is S.SUCCEEDED and done.finished_at == clock.now()
        assert len(target.received) == 1  # sent once
        assert not (await scheduler.run_once(wait=True)).busy


async def test_each_state_change_logs_one_event_with_elapsed_time_on_the_clock(tmp_path: Path):
    """job_<state> events come once per move, in order, and their elapsed_s is clock time."""
    clock = FakeClock()
    async with unit_services(tmp_path, clock) as services:
        scheduler = Scheduler(services)
        job = await _intake(services, clock)
        # merge_contextvars: the job's bound context (job_id, provider) as the service logs it
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            await scheduler.run_once(wait=True)
            clock.advance(INTERVAL_S)
            await scheduler.run_once(wait=True)
        moves = [e for e in logs if e["event"].startswith("job_") and "previous" in e]
        assert [(e["event"], e["previous"]) for e in moves] == [
            ("job_polling", "queued"),
            ("job_downloading", "polling"),
            ("job_storing", "downloading"),
            ("job_notifying", "storing"),
            ("job_succeeded", "notifying"),  # no notifier: nothing to wait for
        ]
        assert [e["elapsed_s"] for e in moves] == [0.0, 10.0, 10.0, 10.0, 10.0]
        assert all(e["job_id"] == job.id and e["provider"] == "demo" for e in moves)
        (summary,) = [e for e in logs if e["event"] == "job_summary"]
        assert summary["status"] == "succeeded"


async def test_a_failing_delivery_is_retried_on_the_clock_not_before(tmp_path: Path):
    """A target that says "later" is tried again only once the clock reaches its retry."""
    clock = FakeClock()
    async with unit_services(tmp_path, clock, providers={"demo": {"polls_until_done": 1}}) as (
        services
    ):
        target = ScriptedNotifier().then(NotifyTransient("busy", retry_after_s=60))
        services.notifiers.append(target)
        scheduler = Scheduler(services)
        job = await _intake(services, clock)
        await scheduler.run_once(wait=True)  # poll, download, store, plan
        await scheduler.run_once(wait=True)  # first attempt: busy
        clock.advance(30)
        assert (await scheduler.run_once(wait=True)).deliveries == ()
        clock.advance(30)
        assert len((await scheduler.run_once(wait=True)).deliveries) == 1
        (row,) = await services.store.deliveries_for(job.id)
        assert row.status is DeliveryStatus.SENT and row.attempts == 2


async def test_a_first_try_that_failed_still_ends_the_notifying_job(tmp_path: Path):
    """ "Every target tried once" is what notifying waits for: a busy target's first try
    moves the job on, and its retry goes on without the job."""
    clock = FakeClock()
    async with unit_services(tmp_path, clock, providers={"demo": {"polls_until_done": 1}}) as (
        services
    ):
        services.notifiers.append(ScriptedNotifier().then(NotifyTransient("busy")))
        scheduler = Scheduler(services)
        job = await _intake(services, clock)
        await scheduler.run_once(wait=True)  # poll, download, store, plan
        assert (await _get(services, job)).state is S.NOTIFYING
        tried = await scheduler.run_once(wait=True)
        assert tried.jobs == () and len(tried.deliveries) == 1
        assert (await _get(services, job)).state is S.SUCCEEDED
        (row,) = await services.store.deliveries_for(job.id)
        assert row.status is DeliveryStatus.PENDING and row.attempts == 1


async def _notifying_with_rows(services: Services, clock: FakeClock, scheduler: Scheduler):
    """A job in notifying as the storing step leaves it, with its outbox rows written."""
    job = await _intake(services, clock)
    moved = dataclasses.replace(
        job, state=S.NOTIFYING, due_at=clock.now() + timedelta(seconds=scheduler.lease_s)
    )
    rows = await scheduler.dispatcher.plan(moved, [Event.SUCCEEDED], clock.now())
    saved = await services.store.save(moved, expected_version=job.version, deliveries=rows)
    return saved, rows


async def test_the_job_moves_on_only_when_its_last_target_was_tried(tmp_path: Path):
    """With two targets, the first attempt leaves the job waiting, the second ends it."""
    clock = FakeClock()
    async with unit_services(tmp_path, clock) as services:
        services.notifiers.extend([ScriptedNotifier("a"), ScriptedNotifier("b")])
        scheduler = Scheduler(services)
        job, rows = await _notifying_with_rows(services, clock, scheduler)
        assert [r.target for r in rows] == ["a", "b"]
        await scheduler._run_delivery(rows[0])
        assert (await _get(services, job)).state is S.NOTIFYING
        await scheduler._run_delivery(rows[1])
        done = await _get(services, job)
        assert done.state is S.SUCCEEDED and done.finished_at == clock.now()


async def test_a_delivery_recorded_by_an_instance_that_died_is_picked_up_a_lease_later(
    tmp_path: Path,
):
    """The attempt was recorded but the job not moved on (the instance died in between):
    the job looks at its deliveries itself, store.lease_s after it began waiting."""
    clock = FakeClock()
    async with unit_services(tmp_path, clock) as services:
        services.notifiers.append(ScriptedNotifier())
        scheduler = Scheduler(services)
        job, (row,) = await _notifying_with_rows(services, clock, scheduler)
        await scheduler.dispatcher.attempt(row)  # recorded; the job is not moved on
        assert (await _get(services, job)).state is S.NOTIFYING
        clock.advance(scheduler.lease_s - 0.01)
        assert not (await scheduler.run_once(wait=True)).busy
        clock.advance(0.01)
        assert [j.id for j in (await scheduler.run_once(wait=True)).jobs] == [job.id]
        assert (await _get(services, job)).state is S.SUCCEEDED


async def test_a_notifying_job_a_worker_holds_is_left_to_it(tmp_path: Path):
    """One instance works a job at a time: a delivery does not write a job that is leased."""
    clock = FakeClock()
    async with unit_services(tmp_path, clock) as services:
        services.notifiers.append(ScriptedNotifier())
        scheduler = Scheduler(services)
        job, (row,) = await _notifying_with_rows(services, clock, scheduler)
        clock.advance(scheduler.lease_s)
        (held,) = await services.store.claim_due("other", clock.now(), 30, 10)
        await scheduler._run_delivery(row)
        after = await _get(services, job)
        assert after.state is S.NOTIFYING and after.lease_owner == "other"
        assert after.version == held.version


@pytest.mark.parametrize("adds_target", [False, True])
async def test_a_job_changed_since_the_attempt_read_it_is_read_again(
    tmp_path: Path, adds_target: bool
):
    """The job changed between the attempt's read and its end: the compare-and-set fails
    and the job is read once more. Without a new target it is moved on; a callback URL
    posted again meanwhile is a new target, and the job waits for its delivery."""
    clock = FakeClock()
    async with unit_services(tmp_path, clock) as services:
        services.notifiers.append(ScriptedNotifier())
        scheduler = Scheduler(services)
        job, (row,) = await _notifying_with_rows(services, clock, scheduler)
        result, read = await scheduler.dispatcher.attempt_for_job(
            row, await services.store.get(row.job_id)
        )
        assert read is not None and read.version == job.version
        if adds_target:
            _, outcome = await lifecycle.add_callback(services, job.id, "http://127.0.0.1:9/cb")
            assert outcome == lifecycle.CALLBACK_SENT
        else:
            changed = dataclasses.replace(job, extra_callback_urls=())
            await services.store.save(changed, expected_version=job.version)
        await scheduler._delivery_tried(read, result)
        if adds_target:
            assert (await _get(services, job)).state is S.NOTIFYING
            sent = await scheduler.run_once(wait=True)
            assert [d.target for d in sent.deliveries] == ["callback"]
        assert (await _get(services, job)).state is S.SUCCEEDED


async def test_pending_demo_job_times_out_at_give_up_after_s(tmp_path: Path):
    """A task that never finishes (``slow``) fails with provider_timeout once the clock
    passes give_up_after_s, without anyone waiting for it."""
    clock = FakeClock()
    async with unit_services(tmp_path, clock, polling={"give_up_after_s": 25}) as services:
        scheduler = Scheduler(services)
        job = await _intake(services, clock, task_id="slow-task-1")
        for _ in range(3):  # polls at 0, 10 and 20 s: still pending, next one at 30 s
            await scheduler.run_once(wait=True)
            clock.advance(INTERVAL_S)
        assert (await _get(services, job)).state is S.POLLING
        await scheduler.run_once(wait=True)  # 30 s: past the deadline, no poll is made
        failed = await _get(services, job)
        assert failed.state is S.FAILED and failed.error_code is ErrorCode.PROVIDER_TIMEOUT
        assert failed.polls == 3 and failed.finished_at == clock.now()


async def test_a_refused_demo_task_fails_in_one_round(tmp_path: Path):
    """The demo's pretend moderation refusal ends the job in the first round."""
    clock = FakeClock()
    async with unit_services(tmp_path, clock) as services:
        job = await _intake(services, clock, task_id="moderation-1")
        await Scheduler(services).run_once(wait=True)
        failed = await _get(services, job)
        assert failed.state is S.FAILED and failed.error_code is ErrorCode.MODERATION_REJECTED


async def test_intake_pokes_the_idle_loop_only_for_a_job_due_before_its_next_look(
    tmp_path: Path,
):
    """``poke_for``: the loop sleeping until a job due in 0.3 s is not woken for a new job
    due in 0.5 s (it looks again first), is woken for one due in 0.1 s, and a job due a tick
    or more from now never wakes it."""
    clock = FakeClock()
    async with unit_services(tmp_path, clock, polling={"tick_s": 2.0}) as services:
        scheduler = Scheduler(services)
        scheduler.poke_for(2.0)  # a tick away: never
        assert not scheduler.wake.is_set()
        scheduler.poke_for(0.5)  # the loop is not idle (no planned look): as before
        assert scheduler.wake.is_set()
        scheduler.wake.clear()
        await services.store.create(make_job(due_at=clock.now() + timedelta(seconds=0.3)))
        idle = asyncio.ensure_future(scheduler._idle())
        await asyncio.sleep(0.05)
        scheduler.poke_for(0.5)
        assert not scheduler.wake.is_set() and not idle.done()
        scheduler.poke_for(0.1)
        await asyncio.wait_for(idle, 0.2)  # woken well before its 0.3 s
        assert scheduler._next_look is None


@pytest.mark.redis
async def test_on_redis_a_delivery_round_reads_no_job_of_its_own(tmp_path: Path, redis_server):
    """Redis claims each due delivery with its job in one script call: the round sends with
    that job (no store read per delivery), and a row whose job was retried after it was
    planned (another run) still fails without being sent."""
    redis_server.flush()
    clock = FakeClock()
    async with unit_services(tmp_path, clock, store={"url": redis_server.url}) as services:
        target = ScriptedNotifier()
        services.notifiers.append(target)
        scheduler = Scheduler(services, rng=random.Random(1))
        job, other = await _intake(services, clock), await _intake(services, clock)
        await scheduler.run_once(wait=True)
        clock.advance(INTERVAL_S)
        await scheduler.run_once(wait=True)  # both: polled, stored, rows planned
        retried = await _get(services, other)
        assert retried.state is S.NOTIFYING
        await services.store.save(
            dataclasses.replace(retried, run=retried.run + 1), expected_version=retried.version
        )
        reads: list[str] = []
        real_get = services.store.get

        async def counting_get(job_id: str) -> Job | None:
            reads.append(job_id)
            return await real_get(job_id)

        services.store.get = counting_get  # type: ignore[method-assign]
        sent = await scheduler.run_once(wait=True)
        assert len(sent.deliveries) == 2 and reads == []
        assert [n.job.id for n in target.received] == [job.id]
        rows = {j.id: (await services.store.deliveries_for(j.id))[0] for j in (job, other)}
        assert rows[job.id].status is DeliveryStatus.SENT
        assert rows[other.id].status is DeliveryStatus.FAILED
        assert rows[other.id].last_error == "job deleted or retried"


async def test_a_step_longer_than_the_lease_keeps_its_lease(tmp_path: Path):
    """While a step outlasts the lease, the instance's renewer keeps the job's lease ahead
    of the clock, so another instance cannot take the job over; once the step is done the
    lease is let go and no renewer is left running."""
    clock = FakeClock()
    async with unit_services(tmp_path, clock, store={"lease_s": 0.3}) as services:
        scheduler = Scheduler(services)
        job = await _intake(services, clock)
        go_on = asyncio.Event()

        async def slow_step(j: Job, now: datetime) -> Outcome:
            await go_on.wait()
            return Outcome(dataclasses.replace(j, due_at=now + timedelta(seconds=60)), [])

        scheduler._step = slow_step  # type: ignore[method-assign]
        await scheduler.run_once()
        await asyncio.sleep(0.01)
        clock.advance(1.0)  # the lease taken at the claim ran out 0.7 s ago by this clock
        await asyncio.sleep(0.25)  # a few renewals (each due 0.05-0.1 s after the last)
        assert await services.store.claim_due("other", clock.now(), 30, 10) == []
        held = await _get(services, job)
        assert held.lease_expires_at is not None and held.lease_expires_at > clock.now()
        go_on.set()
        await asyncio.wait(set(scheduler.inflight))
        assert (await _get(services, job)).lease_owner is None
        await asyncio.sleep(0)
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "lease-renewer"]
