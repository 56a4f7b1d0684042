"""The delivery outbox (delivery.Dispatcher) on a SQLite store in tmp and a fake clock:
planning, attempts, the retry schedule, final versus transient errors, stable webhook ids.
No sockets and no waiting: the target is a scripted notifier, time moves when told."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.clock import FakeClock
from tests.support.factories import make_job
from tests.support.unit_services import ConflictTransient, ScriptedNotifier, unit_services
from webhook_poller.delivery import Dispatcher
from webhook_poller.errors import BlobError, NotifyRejected, NotifyTransient
from webhook_poller.model import (
    Delivery,
    DeliveryStatus,
    ErrorCode,
    Event,
    Job,
    JobState,
    transition,
    webhook_id_for,
)
from webhook_poller.services import Services

SCHEDULE = [5.0, 30.0, 120.0]  # callbacks.schedule_s in unit_config


@dataclasses.dataclass
class Outbox:
    services: Services
    clock: FakeClock
    target: ScriptedNotifier
    dispatcher: Dispatcher

    async def stored_job(self, state: JobState = JobState.NOTIFYING, **changes) -> Job:
        now = self.clock.now()
        job = make_job(state=state, due_at=now, **changes)
        job = dataclasses.replace(job, created_at=now, updated_at=now)
        created, _ = await self.services.store.create(job)
        return created

    async def planned(self, job: Job, event: Event = Event.SUCCEEDED) -> Delivery:
        """Plan ``event`` for ``job`` and write the rows with the job, as the scheduler does."""
        rows = await self.dispatcher.plan(job, [event], self.clock.now())
        await self.services.store.save(job, expected_version=job.version, deliveries=rows)
        (row,) = [r for r in rows if r.target == self.target.name]
        return row

    async def record(self, job: Job) -> Delivery:
        (row,) = [r for r in await self.services.store.deliveries_for(job.id) if r.run == job.run]
        return row


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    clock = FakeClock()
    async with unit_services(tmp_path, clock) as services:
        target = ScriptedNotifier()
        services.notifiers.append(target)
        yield Outbox(services, clock, target, Dispatcher(services, random.Random(4)))


async def test_dispatcher_reads_the_services_clock(outbox: Outbox):
    """Without a clock of its own the dispatcher takes the one the services carry."""
    assert outbox.dispatcher.clock is outbox.clock


async def test_plan_writes_one_pending_row_per_subscribed_target(outbox: Outbox):
    """A target subscribed to ``*`` gets one row, due now, with a stable webhook id."""
    job = await outbox.stored_job()
    other = ScriptedNotifier("failures-only", frozenset({"video.failed"}))
    outbox.services.notifiers.append(other)
    rows = await outbox.dispatcher.plan(job, [Event.SUCCEEDED], outbox.clock.now())
    assert [r.target for r in rows] == ["hook"]
    (row,) = rows
    assert row.status is DeliveryStatus.PENDING and row.attempts == 0
    assert row.next_attempt_at == outbox.clock.now() == row.created_at
    assert row.webhook_id == webhook_id_for(job.id, job.run, Event.SUCCEEDED, "hook")


async def test_no_events_plan_nothing(outbox: Outbox):
    """A step that raised no event writes no outbox row."""
    assert await outbox.dispatcher.plan(await outbox.stored_job(), [], outbox.clock.now()) == []


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (("job_1", 0, Event.SUCCEEDED, "hook"), ("job_1", 0, Event.SUCCEEDED, "hook"), True),
        (("job_1", 0, Event.SUCCEEDED, "hook"), ("job_1", 1, Event.SUCCEEDED, "hook"), False),
        (("job_1", 0, Event.SUCCEEDED, "hook"), ("job_1", 0, Event.FAILED, "hook"), False),
        (("job_1", 0, Event.SUCCEEDED, "hook"), ("job_1", 0, Event.SUCCEEDED, "slack"), False),
        (("job_1", 0, Event.SUCCEEDED, "hook"), ("job_2", 0, Event.SUCCEEDED, "hook"), False),
    ],
)
def test_webhook_id_is_stable_per_job_run_event_and_target(a, b, same):
    """Receivers drop repeats by webhook id: equal for the same row, different otherwise."""
    assert (webhook_id_for(*a) == webhook_id_for(*b)) is same
    assert webhook_id_for(*a).startswith("msg_")


async def test_accepted_send_is_recorded_as_sent_at_once(outbox: Outbox):
    """The target's ok marks the row sent, at the clock's time, in the store."""
    job = await outbox.stored_job()
    row = await outbox.planned(job)
    outbox.clock.advance(3)
    result = await outbox.dispatcher.attempt(row)
    assert result.status is DeliveryStatus.SENT and result.attempts == 1
    assert result.sent_at == outbox.clock.now() and result.next_attempt_at is None
    assert await outbox.record(job) == result
    note = outbox.target.received[0]
    assert note.attempt == 1 and note.event is Event.SUCCEEDED and note.job.id == job.id


async def test_repeats_keep_the_webhook_id_and_count_attempts(outbox: Outbox):
    """Every retry of a row carries the same webhook id, with the attempt number rising."""
    job = await outbox.stored_job()
    row = await outbox.planned(job)
    outbox.target.then(NotifyTransient("busy"), NotifyTransient("busy"), None)
    for _ in range(3):
        row = await outbox.dispatcher.attempt(row)
        outbox.clock.advance(1000)
    assert row.status is DeliveryStatus.SENT and row.attempts == 3
    assert [n.attempt for n in outbox.target.received] == [1, 2, 3]
    assert {n.delivery.webhook_id for n in outbox.target.received} == {row.webhook_id}


@pytest.mark.parametrize(("attempts_before", "step"), [(0, 5.0), (1, 30.0), (2, 120.0),
                                                       (3, 120.0), (7, 120.0)])  # fmt: skip
async def test_transient_failure_waits_the_scheduled_step(
    outbox: Outbox, attempts_before: int, step: float
):
    """Attempt n that fails for now is retried after schedule_s[n-1] (+/-10 %); the last
    step repeats."""
    job = await outbox.stored_job()
    row = dataclasses.replace(await outbox.planned(job), attempts=attempts_before)
    outbox.target.then(NotifyTransient("503 from target"))
    result = await outbox.dispatcher.attempt(row)
    assert result.status is DeliveryStatus.PENDING and result.attempts == attempts_before + 1
    assert result.last_error == "503 from target"
    assert result.next_attempt_at is not None
    wait = (result.next_attempt_at - outbox.clock.now()).total_seconds()
    assert step * 0.9 <= wait <= step * 1.1
    assert await outbox.record(job) == result


@pytest.mark.parametrize(("retry_after_s", "expected"), [(1.0, None), (400.0, 400.0)])
async def test_retry_after_from_the_target_lengthens_the_wait(
    outbox: Outbox, retry_after_s: float, expected: float | None
):
    """A target's Retry-After is honoured when longer than the scheduled step."""
    row = await outbox.planned(await outbox.stored_job())
    outbox.target.then(NotifyTransient("429", retry_after_s=retry_after_s))
    result = await outbox.dispatcher.attempt(row)
    assert result.next_attempt_at is not None
    wait = (result.next_attempt_at - outbox.clock.now()).total_seconds()
    if expected is None:
        assert 4.5 <= wait <= 5.5  # the first step of the schedule
    else:
        assert wait == expected


@pytest.mark.parametrize(
    ("error", "status", "text"),
    [
        (NotifyRejected("chat not found"), DeliveryStatus.FAILED, "chat not found"),
        (BlobError("gone", transient=False), DeliveryStatus.FAILED, "the video cannot be read"),
        (BlobError("disk busy", transient=True), DeliveryStatus.PENDING, "disk busy"),
        (ValueError("plug-in bug"), DeliveryStatus.FAILED, "the notifier failed: plug-in bug"),
        (OSError("connection reset"), DeliveryStatus.PENDING, "connection reset"),
        (httpx.ConnectError("refused"), DeliveryStatus.PENDING, "refused"),
        (TimeoutError(), DeliveryStatus.PENDING, "TimeoutError"),
        (NotifyTransient("try later"), DeliveryStatus.PENDING, "try later"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
async def test_final_versus_transient_errors(
    outbox: Outbox, error: BaseException, status: DeliveryStatus, text: str
):
    """Rejections, unreadable videos and plug-in bugs are final; transport trouble and
    "try later" are retried. Decided by class, recorded with a readable error."""
    job = await outbox.stored_job()
    row = await outbox.planned(job)
    outbox.target.then(error)
    result = await outbox.dispatcher.attempt(row)
    assert result.status is status and result.attempts == 1
    assert text in (result.last_error or "")
    assert (result.next_attempt_at is None) is (status is DeliveryStatus.FAILED)
    assert await outbox.record(job) == result


@pytest.mark.parametrize(("age_s", "status"), [(0, DeliveryStatus.PENDING),
                                               (86_400 - 6, DeliveryStatus.PENDING),
                                               (86_400 - 4, DeliveryStatus.FAILED)])  # fmt: skip
async def test_transient_failures_give_up_after_max_age(
    outbox: Outbox, age_s: float, status: DeliveryStatus
):
    """A retry that would land past callbacks.max_age_s (24 h) after planning is final."""
    job = await outbox.stored_job()
    row = dataclasses.replace(
        await outbox.planned(job), created_at=outbox.clock.now() - timedelta(seconds=age_s)
    )
    outbox.target.then(NotifyTransient("busy", retry_after_s=5.0))
    result = await outbox.dispatcher.attempt(row)
    assert result.status is status
    if status is DeliveryStatus.FAILED:
        assert "gave up after 1 attempts" in (result.last_error or "")


@pytest.mark.parametrize(("age_s", "status"), [(500, DeliveryStatus.PENDING),
                                               (599, DeliveryStatus.FAILED)])  # fmt: skip
async def test_a_conflict_is_retried_only_within_its_window(
    outbox: Outbox, age_s: float, status: DeliveryStatus
):
    """An "already running" answer is retried for conflict_window_s (600 s), not 24 h."""
    row = dataclasses.replace(
        await outbox.planned(await outbox.stored_job()),
        created_at=outbox.clock.now() - timedelta(seconds=age_s),
    )
    outbox.target.then(ConflictTransient("409 running", retry_after_s=50))
    assert (await outbox.dispatcher.attempt(row)).status is status


async def test_a_row_of_a_deleted_job_fails_without_sending(outbox: Outbox):
    """When the job is gone the row ends as failed and the target hears nothing."""
    job = await outbox.stored_job()
    row = await outbox.planned(job)
    await outbox.services.store.delete(job.id)
    result = await outbox.dispatcher.attempt(row)
    assert result.status is DeliveryStatus.FAILED and result.last_error == "job deleted or retried"
    assert outbox.target.received == []


async def test_a_row_of_an_earlier_run_fails_without_sending(outbox: Outbox):
    """A retried job's old rows are not sent: their run is over."""
    job = await outbox.stored_job(JobState.POLLING)
    failed = transition(
        job, JobState.FAILED, now=outbox.clock.now(), error_code=ErrorCode.AUTH_FAILED
    )
    row = await outbox.planned(failed, Event.FAILED)
    saved = await outbox.services.store.get(job.id)
    assert saved is not None
    retried = transition(saved, JobState.QUEUED, now=outbox.clock.now())
    await outbox.services.store.save(retried, expected_version=retried.version)
    result = await outbox.dispatcher.attempt(row)
    assert result.status is DeliveryStatus.FAILED and outbox.target.received == []


async def test_a_target_no_longer_configured_fails_the_row(outbox: Outbox):
    """A row for a notifier removed from the config ends as failed, with its name."""
    row = await outbox.planned(await outbox.stored_job())
    outbox.services.notifiers.remove(outbox.target)
    result = await outbox.dispatcher.attempt(row)
    assert result.status is DeliveryStatus.FAILED and result.attempts == 1
    assert "'hook' is no longer configured" in (result.last_error or "")


async def test_a_due_row_is_claimed_only_when_the_clock_reaches_it(outbox: Outbox):
    """After a transient failure the store hands the row out again at next_attempt_at."""
    store, owner = outbox.services.store, outbox.services.instance_id
    row = await outbox.planned(await outbox.stored_job())
    outbox.target.then(NotifyTransient("busy", retry_after_s=60))
    await outbox.dispatcher.attempt(row)
    outbox.clock.advance(59)
    assert await store.claim_deliveries(owner, outbox.clock.now(), 30, 10) == []
    outbox.clock.advance(1)
    (again,) = await store.claim_deliveries(owner, outbox.clock.now(), 30, 10)
    assert again.webhook_id == row.webhook_id and again.attempts == 1
