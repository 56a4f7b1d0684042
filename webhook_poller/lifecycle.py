"""Operator actions on a job: cancel, retry, delete, and the admission rule for queue slots.

Every action is a compare-and-set write through the state machine in model.py, repeated a
few times when it races a worker: the worker holding the lease then fails its own write
(``LeaseLost``) and lets go, so an action made through the API always wins. Illegal actions
raise :class:`~webhook_poller.errors.Conflict` (HTTP 409) with a message saying why.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

import structlog

from .errors import Conflict, LeaseLost, NotFound, StoreUnavailable
from .interfaces import RemovesStaleParts
from .model import ACTIVE_STATES, Event, Job, JobState, can_transition, transition

if TYPE_CHECKING:
    from .services import Services
    from .shapes import CallbackOutcome

log = structlog.get_logger(__name__)

#: States that hold one of the ``polling.max_active_jobs`` slots.
SLOT_STATES = frozenset(ACTIVE_STATES - {JobState.QUEUED})

_RACE_RETRIES = 8


async def _change(
    services: Services,
    job_id: str,
    decide: Callable[[Job, datetime], Job],
) -> Job:
    """Read, decide, compare-and-set; retry when a worker wrote in between."""
    for _ in range(_RACE_RETRIES):
        job = await services.store.get(job_id)
        if job is None:
            raise NotFound("no such job")
        changed = decide(job, services.clock.now())
        try:
            return await services.store.save(changed, expected_version=job.version)
        except LeaseLost:
            continue
    raise StoreUnavailable("the job kept changing; try again")


async def cancel(services: Services, job_id: str) -> Job:
    """Stop polling at once and free the job's slot; only an unfinished job can be cancelled."""

    def decide(job: Job, now: datetime) -> Job:
        if not can_transition(job.state, JobState.CANCELLED):
            raise Conflict(
                f"the job is {job.state.value}; only a job that has not finished can be cancelled",
                extra={"status": job.state.value},
            )
        return transition(
            job, JobState.CANCELLED, now=now, due_at=now, lease_owner=None, lease_expires_at=None
        )

    job = await _change(services, job_id, decide)
    log.info("job_cancelled", job_id=job.id)
    return job


async def retry(services: Services, job_id: str) -> Job:
    """Put a failed or cancelled job back in the queue with the same parameters."""

    def decide(job: Job, now: datetime) -> Job:
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            raise Conflict(
                f"the job is {job.state.value}; only a failed or cancelled job can be retried",
                extra={"status": job.state.value},
            )
        return transition(
            job,
            JobState.QUEUED,
            now=now,
            due_at=now,
            created_at=now,
            lease_owner=None,
            lease_expires_at=None,
            reclaims=0,
        )

    job = await _change(services, job_id, decide)
    log.info("job_retried", job_id=job.id, run=job.run)
    return job


async def delete(services: Services, job_id: str) -> bool:
    """Remove a job's stored videos and its record (idempotent: False when already gone).

    An unfinished job is cancelled first, so its worker stops and writes nothing more; the
    blobs go before the record, so a failure part-way leaves a record to delete again.
    """
    job = await services.store.get(job_id)
    if job is None:
        return False
    if not job.is_terminal:
        try:
            job = await cancel(services, job_id)
        except (Conflict, NotFound):
            job = await services.store.get(job_id) or job
    for key in _blob_keys(job):
        await services.blobs.delete(key)
    removed = await services.store.delete(job_id)
    log.info("job_deleted", job_id=job_id, videos=len(job.videos))
    return removed


def _blob_keys(job: Job) -> list[str]:
    return [v.key for v in job.videos]


def slot_counts(counts: Mapping[str, int]) -> int:
    """How many jobs hold an active slot, from ``count_by_state``."""
    return sum(n for state, n in counts.items() if state in SLOT_STATES)


def admitted(limit: int | None, held: int, position: int | None) -> bool:
    """The admission rule, pure: may a queued job start now?

    ``limit`` is ``polling.max_active_jobs`` (``None``: no limit), ``held`` how many jobs
    hold a slot, ``position`` the job's 1-based place among the queued jobs, oldest first
    (``None``: not found among them, so nothing older waits ahead of it).
    """
    if limit is None:
        return True
    free = limit - held
    return free > 0 and (position is None or position <= free)


async def admit(services: Services, job: Job, now: datetime, recheck_s: float) -> Job | None:
    """FIFO admission: ``None`` when ``job`` may start now, else the job with a later due time.

    With ``polling.max_active_jobs`` unset every job is admitted. Otherwise a queued job
    starts only when fewer jobs hold a slot than allowed and it is among the oldest queued
    jobs that fit into the free slots (:func:`admitted`). Two instances deciding at the same
    instant can each admit one job; the overshoot is bounded by the number of instances and
    heals itself.
    """
    limit = services.settings.polling.max_active_jobs
    if limit is None:
        return None
    held = slot_counts(await services.store.count_by_state())
    # the queue position is only worth a read when a slot is free
    position = await services.store.queue_position(job) if held < limit else None
    if admitted(limit, held, position):
        return None
    return dataclasses.replace(job, due_at=now + timedelta(seconds=recheck_s), updated_at=now)


async def sweep_retention(
    services: Services, *, now: datetime | None = None, batch: int = 200
) -> int:
    """Delete finished jobs (and their videos) older than ``storage.retention_days``, then
    any stored video older than that which no job refers to. Returns how many were removed."""
    days = services.settings.storage.retention_days
    if days is None:
        return 0
    now = now or services.clock.now()
    cutoff = now - timedelta(days=days)
    removed = 0
    for state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        cursor: str | None = None
        while True:
            jobs, cursor = await services.store.list_jobs(
                states=[state.value], cursor=cursor, limit=batch
            )
            for job in jobs:
                if job.finished_at is not None and job.finished_at < cutoff:
                    removed += int(await delete(services, job.id))
            if cursor is None:
                break
    for key in await services.blobs.keys_older_than(cutoff):
        await services.blobs.delete(key)
        removed += 1
    if isinstance(services.blobs, RemovesStaleParts):  # half-written files a kill left behind
        removed += await services.blobs.remove_stale_parts()
    if removed:
        log.info("retention_swept", removed=removed, retention_days=days)
    return removed


Action = Callable[["Services", str], Awaitable[Job]]


#: Callback URLs one job may collect from re-posts of its task.
MAX_CALLBACKS = 20

#: What :func:`add_callback` did, as the intake answer says it.
CALLBACK_KNOWN: Final[CallbackOutcome] = "already_registered"
CALLBACK_ADDED: Final[CallbackOutcome] = "added"
CALLBACK_SENT: Final[CallbackOutcome] = "final_event_sent"
CALLBACK_NO_EVENT: Final[CallbackOutcome] = "no_final_event"


async def add_callback(services: Services, job_id: str, url: str) -> tuple[Job, CallbackOutcome]:
    """Give a callback URL posted again for a known task the job's outcome, once.

    While the job runs, the URL becomes one more target of its final event. Once the job
    has its final event (notifying, succeeded, failed), a delivery of that event to the URL
    is written with the URL, so it goes out at once. A cancelled job has no final event;
    the URL is kept for a retry. Like every action, this write wins over a busy worker,
    which then lets go and the job is taken up again when its lease runs out.
    """
    from .delivery import Dispatcher, callback_target

    for _ in range(_RACE_RETRIES):
        job = await services.store.get(job_id)
        if job is None:
            raise NotFound("no such job")
        if url == job.callback_url or url in job.extra_callback_urls:
            return job, CALLBACK_KNOWN
        if job.callback_url is None:
            changed, target = dataclasses.replace(job, callback_url=url), "callback"
        else:
            if len(job.extra_callback_urls) + 1 >= MAX_CALLBACKS:
                raise Conflict(
                    f"this task has {MAX_CALLBACKS} callback URLs already; no more are taken",
                    extra={"status": job.state.value},
                )
            changed = dataclasses.replace(job, extra_callback_urls=(*job.extra_callback_urls, url))
            target = callback_target(url)
        final = _final_event(job)
        deliveries = []
        if final is not None:
            dispatcher = Dispatcher(services, random.Random())
            rows = await dispatcher.plan(changed, [final], services.clock.now())
            deliveries = [r for r in rows if r.target == target]
        try:
            saved = await services.store.save(
                changed, expected_version=job.version, deliveries=deliveries
            )
        except LeaseLost:
            continue
        log.info("callback_added", job_id=job.id, target=target, sent_now=bool(deliveries))
        if deliveries:
            return saved, CALLBACK_SENT
        return saved, CALLBACK_NO_EVENT if job.state is JobState.CANCELLED else CALLBACK_ADDED
    raise StoreUnavailable("the job kept changing; try again")


def _final_event(job: Job) -> Event | None:
    """The event a job raised when it ended, if it has ended with one."""
    if job.state in (JobState.NOTIFYING, JobState.SUCCEEDED):
        return Event.SUCCEEDED
    if job.state is JobState.FAILED:
        return Event.FAILED
    return None
