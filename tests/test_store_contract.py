"""One contract suite for every JobStore implementation (parametrized in conftest's store)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from tests.support.factories import make_job
from webhook_poller.errors import LeaseLost
from webhook_poller.interfaces import ClaimsDeliveriesWithJobs
from webhook_poller.model import (
    Delivery,
    DeliveryStatus,
    Event,
    JobState,
    utcnow,
    webhook_id_for,
)
from webhook_poller.stores.codec import job_from_dict, job_to_dict
from webhook_poller.stores.redis import RedisJobStore


async def test_create_is_idempotent_on_provider_task(store):
    """Posting the same provider task twice yields the first job and created=False."""
    first, created = await store.create(make_job(task_id="t1"))
    again, created_again = await store.create(make_job(task_id="t1"))
    assert created and not created_again
    assert again.id == first.id


async def test_concurrent_creates_share_commits_and_keep_dedupe(store):
    """Many creates at once (one group commit): each task gets one job, the repeats of a task
    in the same batch get that job back, and every created job is readable afterwards."""
    jobs = [make_job(task_id=f"burst-{i % 40}") for i in range(120)]
    results = await asyncio.gather(*(store.create(job) for job in jobs))
    created = [stored for stored, was_created in results if was_created]
    assert len(created) == 40
    by_task = {stored.task_id: stored.id for stored in created}
    for stored, _ in results:
        assert stored.id == by_task[stored.task_id]
    for job_id in by_task.values():
        assert (await store.get(job_id)) is not None


async def test_same_task_id_on_other_provider_is_a_new_job(store):
    """The dedupe key includes the provider, so equal task ids of two APIs do not collide."""
    a, _ = await store.create(make_job(task_id="t1", provider="kie-veo"))
    b, created = await store.create(make_job(task_id="t1", provider="kie-market"))
    assert created and a.id != b.id


async def test_get_returns_what_was_stored(store):
    """A stored job reads back with every field intact."""
    job = make_job(context={"chatId": 42, "nested": {"a": [1, 2]}}, callback_url="https://x.io/h")
    await store.create(job)
    loaded = await store.get(job.id)
    assert loaded is not None
    assert job_to_dict(loaded) == job_to_dict(job)
    assert await store.get("job_missing") is None


async def test_claim_takes_only_due_jobs_and_sets_lease(store):
    """Only jobs whose due time has passed are claimed, with owner, expiry and a new version."""
    now = utcnow()
    due = make_job(task_id="due", due_at=now - timedelta(seconds=1))
    later = make_job(task_id="later", due_at=now + timedelta(hours=1))
    await store.create(due)
    await store.create(later)
    claimed = await store.claim_due("a", now, 30, 10)
    assert [j.id for j in claimed] == [due.id]
    assert claimed[0].lease_owner == "a"
    assert claimed[0].version == due.version + 1
    assert claimed[0].lease_expires_at is not None
    assert claimed[0].lease_expires_at > now


async def test_claim_skips_job_with_live_lease(store):
    """A job leased by one owner is not claimed by another until the lease expires."""
    now = utcnow()
    job = make_job(due_at=now - timedelta(seconds=1))
    await store.create(job)
    assert len(await store.claim_due("a", now, 30, 10)) == 1
    assert await store.claim_due("b", now, 30, 10) == []
    later = now + timedelta(seconds=31)
    taken = await store.claim_due("b", later, 30, 10)
    assert [j.lease_owner for j in taken] == ["b"]
    assert taken[0].reclaims == 1


async def test_claim_never_hands_one_job_to_two_owners(store):
    """Concurrent claims by many owners partition the due jobs without overlap."""
    now = utcnow()
    for i in range(60):
        await store.create(make_job(task_id=f"c{i}", due_at=now - timedelta(seconds=1)))
    results = await asyncio.gather(*(store.claim_due(f"o{i}", now, 30, 7) for i in range(12)))
    ids = [j.id for batch in results for j in batch]
    assert len(ids) == len(set(ids)) == 60


async def test_claim_ignores_terminal_jobs(store):
    """Succeeded, failed and cancelled jobs are never claimed."""
    now = utcnow()
    for state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        await store.create(make_job(task_id=state.value, state=state, due_at=now))
    assert await store.claim_due("a", now + timedelta(seconds=1), 30, 10) == []


async def test_save_is_compare_and_set_on_version(store):
    """A write with a stale version raises LeaseLost and changes nothing."""
    job = make_job()
    await store.create(job)
    saved = await store.save(dataclasses.replace(job, polls=1), expected_version=job.version)
    assert saved.version == job.version + 1
    with pytest.raises(LeaseLost):
        await store.save(dataclasses.replace(job, polls=5), expected_version=job.version)
    loaded = await store.get(job.id)
    assert loaded is not None and loaded.polls == 1


async def test_claim_invalidates_a_stale_writer(store):
    """After another owner claims an expired job, the old owner's write is refused."""
    now = utcnow()
    job = make_job(due_at=now - timedelta(seconds=1))
    await store.create(job)
    [mine] = await store.claim_due("a", now, 1, 10)
    await store.claim_due("b", now + timedelta(seconds=2), 30, 10)
    with pytest.raises(LeaseLost):
        await store.save(dataclasses.replace(mine, polls=3), expected_version=mine.version)


async def test_renew_lease_only_for_the_owner(store):
    """Only the lease holder can extend its lease."""
    now = utcnow()
    job = make_job(due_at=now - timedelta(seconds=1))
    await store.create(job)
    await store.claim_due("a", now, 30, 10)
    assert await store.renew_lease(job.id, "a", now + timedelta(seconds=60))
    assert not await store.renew_lease(job.id, "b", now + timedelta(seconds=60))
    assert await store.claim_due("b", now + timedelta(seconds=45), 30, 10) == []


async def test_release_owner_frees_leases_without_counting_a_reclaim(store):
    """A clean shutdown hands jobs back at once, and the next claim is not a reclaim."""
    now = utcnow()
    job = make_job(due_at=now - timedelta(seconds=1))
    await store.create(job)
    await store.claim_due("a", now, 30, 10)
    assert await store.release_owner("a") == 1
    [taken] = await store.claim_due("b", now, 30, 10)
    assert taken.reclaims == 0


def _delivery(job_id: str, target: str, now, run: int = 0) -> Delivery:
    return Delivery(
        job_id=job_id,
        run=run,
        event=Event.SUCCEEDED,
        target=target,
        webhook_id=webhook_id_for(job_id, run, Event.SUCCEEDED, target),
        payload={"event": "video.succeeded", "jobId": job_id},
        next_attempt_at=now,
        created_at=now,
    )


async def test_save_writes_deliveries_once(store):
    """Outbox rows are written with the job and a second insert of the same key is ignored."""
    now = utcnow()
    job = make_job()
    await store.create(job)
    rows = [_delivery(job.id, "callback", now), _delivery(job.id, "telegram", now)]
    saved = await store.save(job, expected_version=job.version, deliveries=rows)
    await store.save(saved, expected_version=saved.version, deliveries=rows)
    found = await store.deliveries_for(job.id)
    assert sorted(d.target for d in found) == ["callback", "telegram"]
    assert found[0].payload["jobId"] == job.id


async def test_delivery_claim_and_update(store):
    """Due deliveries are claimed once, and a sent one is never claimed again."""
    now = utcnow()
    job = make_job()
    await store.create(job)
    await store.save(job, expected_version=job.version, deliveries=[_delivery(job.id, "x", now)])
    [d] = await store.claim_deliveries("a", now, 30, 10)
    assert await store.claim_deliveries("b", now, 30, 10) == []
    sent = dataclasses.replace(d, status=DeliveryStatus.SENT, attempts=1, sent_at=now)
    await store.update_delivery(sent, owner="a")
    assert await store.claim_deliveries("b", now + timedelta(hours=1), 30, 10) == []
    [row] = await store.deliveries_for(job.id)
    assert row.status is DeliveryStatus.SENT and row.attempts == 1


async def test_delivery_retry_waits_for_its_time(store):
    """A delivery rescheduled into the future is claimed only once that time has come."""
    now = utcnow()
    job = make_job()
    await store.create(job)
    await store.save(job, expected_version=job.version, deliveries=[_delivery(job.id, "x", now)])
    [d] = await store.claim_deliveries("a", now, 30, 10)
    later = now + timedelta(seconds=30)
    await store.update_delivery(
        dataclasses.replace(d, attempts=1, next_attempt_at=later, last_error="HTTP 500"),
        owner="a",
    )
    assert await store.claim_deliveries("a", now + timedelta(seconds=5), 30, 10) == []
    [again] = await store.claim_deliveries("a", later, 30, 10)
    assert again.attempts == 1 and again.last_error == "HTTP 500"


async def test_next_due_at_sees_jobs_and_deliveries(store):
    """The scheduler's wake-up time is the earliest due job or delivery."""
    now = utcnow()
    assert await store.next_due_at() is None
    job = make_job(due_at=now + timedelta(seconds=50))
    await store.create(job)
    due = await store.next_due_at()
    assert due is not None and abs((due - job.due_at).total_seconds()) < 0.01
    await store.save(
        job,
        expected_version=job.version,
        deliveries=[_delivery(job.id, "x", now + timedelta(seconds=5))],
    )
    due = await store.next_due_at()
    assert due is not None and due < job.due_at


async def test_list_filters_and_paginates_newest_first(store):
    """Listing filters by state, session and model and walks pages with a cursor."""
    for i in range(7):
        await store.create(make_job(task_id=f"l{i}", session_id="s1" if i % 2 else "s2"))
    await store.create(make_job(task_id="done", state=JobState.SUCCEEDED, model="sora-2"))
    page, cursor = await store.list_jobs(limit=3)
    assert len(page) == 3 and cursor
    page2, cursor2 = await store.list_jobs(limit=3, cursor=cursor)
    page3, cursor3 = await store.list_jobs(limit=3, cursor=cursor2)
    ids = [j.id for j in page + page2 + page3]
    assert len(ids) == len(set(ids)) == 8 and cursor3 is None
    assert page[0].task_id == "done"
    s1, _ = await store.list_jobs(session_id="s1")
    assert {j.session_id for j in s1} == {"s1"} and len(s1) == 3
    done, _ = await store.list_jobs(states=["succeeded"])
    assert [j.task_id for j in done] == ["done"]
    sora, _ = await store.list_jobs(model="sora-2")
    assert [j.task_id for j in sora] == ["done"]
    counts = await store.count_by_state()
    assert counts == {"queued": 7, "succeeded": 1}


async def test_delete_removes_job_and_deliveries(store):
    """Deleting a job removes it and its deliveries, and a second delete reports nothing."""
    now = utcnow()
    job = make_job()
    await store.create(job)
    await store.save(job, expected_version=job.version, deliveries=[_delivery(job.id, "x", now)])
    assert await store.delete(job.id)
    assert await store.get(job.id) is None
    assert await store.deliveries_for(job.id) == []
    assert not await store.delete(job.id)
    again, created = await store.create(make_job())
    assert created, "after a delete the same task can be posted again"
    assert again.id


async def test_secret_is_created_once(store):
    """The first value offered wins and later calls return it."""
    assert await store.get_or_create_secret("link", "one") == "one"
    assert await store.get_or_create_secret("link", "two") == "one"


async def test_sessions_round_trip(store):
    """Sessions put through the store read back and can be deleted."""
    await store.put_session("s1", {"chatId": 7})
    assert await store.get_session("s1") == {"chatId": 7}
    await store.delete_session("s1")
    assert await store.get_session("s1") is None


def test_codec_round_trip():
    """Encoding a job to a dict and back loses nothing."""
    job = make_job(context={"a": 1}, callback_url="https://example.com/x")
    assert job_from_dict(job_to_dict(job)) == job


async def test_generated_job_keeps_its_request_and_dedupes_on_idempotency_key(store):
    """A /generate job (no task id yet) reads back with its request, intent and task list,
    and a second job with the same Idempotency-Key hash gets the first one back."""
    job = make_job(
        task_id="",
        state=JobState.SUBMITTING,
        request={"prompt": "fox", "count": 2, "options": {"seeds": 12345}},
        request_hash="h1",
        idempotency_key="k" * 64,
        task_ids=("t-a",),
        submit_intent=1,
        retry_of="job_old",
        attempt_number=2,
    )
    _stored, created = await store.create(job)
    assert created
    loaded = await store.get(job.id)
    assert loaded is not None and job_to_dict(loaded) == job_to_dict(job)
    twin = dataclasses.replace(job, id="job_twin", request_hash="h2")
    again, created_again = await store.create(twin)
    assert not created_again and again.id == job.id and again.request_hash == "h1"
    other, created_other = await store.create(make_job(task_id="", request={"prompt": "x"}))
    assert created_other, "without a key every generated job is its own"
    claimed = await store.claim_due("w", utcnow(), 30, 10)
    assert {j.id for j in claimed} >= {job.id, other.id}


async def test_claim_deliveries_with_jobs_reads_the_job_in_the_claim(store):
    """A store that claims deliveries with their jobs (Redis) leases them as
    claim_deliveries does and hands each over with its job as it stood at the claim, or
    None when the job's record is gone; the scheduler then sends without reading it again."""
    if not isinstance(store, ClaimsDeliveriesWithJobs):
        pytest.skip("this store claims deliveries alone")
    now = utcnow()
    job, other = make_job(task_id="kept"), make_job(task_id="other")
    for j in (job, other):
        await store.create(j)
    rows = [_delivery(job.id, "x", now), _delivery(job.id, "y", now)]
    saved = await store.save(job, expected_version=job.version, deliveries=rows)
    await store.save(
        other, expected_version=other.version, deliveries=[_delivery(other.id, "z", now)]
    )
    await store.r.delete(store.keys.job(other.id))  # a record gone under its outbox row
    pairs = await store.claim_deliveries_with_jobs("a", now, 30, 10)
    by_target = {d.target: (d, j) for d, j in pairs}
    assert sorted(by_target) == ["x", "y", "z"]
    for target in ("x", "y"):
        delivery, claimed = by_target[target]
        assert claimed is not None and claimed.id == delivery.job_id == job.id
        assert claimed.version == saved.version and claimed.state is saved.state
    assert by_target["z"][1] is None
    assert await store.claim_deliveries_with_jobs("b", now, 30, 10) == []
    assert await store.claim_deliveries("b", now, 30, 10) == []
    # an expired delivery lease is claimed again, with the job as it stands then
    moved = await store.save(
        dataclasses.replace(saved, state=JobState.NOTIFYING), expected_version=saved.version
    )
    again = await store.claim_deliveries_with_jobs("b", now + timedelta(seconds=31), 30, 10)
    assert sorted(d.target for d, _ in again) == ["x", "y", "z"]
    assert all(j is None or j.version == moved.version for _, j in again)


async def test_concurrent_delivery_updates_are_each_written(store):
    """Sends that end together record their results together (Redis: one script call for
    the lot); each write lands, and one for a lease another owner holds is still refused
    alone, the others of its batch written."""
    now = utcnow()
    job = make_job()
    await store.create(job)
    targets = [f"t{i}" for i in range(6)]
    await store.save(
        job, expected_version=job.version, deliveries=[_delivery(job.id, t, now) for t in targets]
    )
    claimed = await store.claim_deliveries("a", now, 30, 10)
    calls = 0
    if isinstance(store, RedisJobStore):
        script = store._scripts["update_dl"]

        async def counting(*args, **kwargs):
            nonlocal calls
            calls += 1
            return await script(*args, **kwargs)

        store._scripts["update_dl"] = counting
    results = []
    for i, d in enumerate(sorted(claimed, key=lambda d: d.target)):
        status = DeliveryStatus.SENT if i % 2 else DeliveryStatus.PENDING
        later = None if i % 2 else now + timedelta(seconds=60)
        results.append(
            (
                dataclasses.replace(d, status=status, attempts=1, next_attempt_at=later),
                "b" if d.target == "t0" else "a",
            )
        )
    await asyncio.gather(*(store.update_delivery(d, owner=o) for d, o in results))
    rows = {r.target: r for r in await store.deliveries_for(job.id)}
    assert rows["t0"].attempts == 0  # the lease is a's: b's write is refused
    assert [rows[t].status for t in targets[1:]] == [
        DeliveryStatus.SENT,
        DeliveryStatus.PENDING,
        DeliveryStatus.SENT,
        DeliveryStatus.PENDING,
        DeliveryStatus.SENT,
    ]
    assert all(rows[t].attempts == 1 for t in targets[1:])
    if isinstance(store, RedisJobStore):
        assert calls == 1
    # the pending ones are due again at their time, the sent ones never
    later = await store.claim_deliveries("a", now + timedelta(seconds=61), 30, 10)
    assert sorted(d.target for d in later) == ["t0", "t2", "t4"]
