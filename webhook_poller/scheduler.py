"""The durable poll loop: claim due work from the store, advance it, write it back.

Due times live in the store, not in sleeping coroutines, so one process can hold very many
waiting jobs and a restarted process simply claims what is due. A claim is one atomic store
operation that sets a short lease (``store.lease_s``); while a job is worked on, the
instance's lease renewer (:mod:`.leases`) keeps the lease alive, independent of how long
the provider takes. A worker that dies
leaves its lease to expire, and the next claim takes the job over (and counts the reclaim).
Every write is a compare-and-set on the job's version, so a cancel or delete made through
the API wins over a worker that is still busy: the worker's write fails with ``LeaseLost``
and it lets go.

Steps per state: queued/polling/delayed -> poll the provider; downloading -> stream videos
into storage; storing -> read metadata; notifying -> wait until every target was tried once.
Deliveries (the outbox rows) are claimed and sent by the same loop; the attempt that leaves
no target of a notifying job untried moves the job on (the job itself looks again only
``store.lease_s`` later, for an instance that died in between).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any

import structlog

from . import analytics, lifecycle, pipeline, submission
from .clock import Clock
from .delivery import Dispatcher
from .errors import LeaseLost, ProviderTaskFailed, ProviderUnavailable, UnrecognizedResponse
from .interfaces import ClaimsDeliveriesWithJobs, HasOwnCadence, PollStatus
from .leases import LeaseKeeper
from .model import (
    POLLING_STATES,
    Delivery,
    DeliveryStatus,
    ErrorCode,
    Event,
    Job,
    JobState,
    transition,
)
from .policy import Outcome, PollPolicy, backoff_s, transient_base_s
from .services import Services

log = structlog.get_logger(__name__)

#: Unexpected errors in our own step code before a job is failed rather than retried.
MAX_STEP_CRASHES = 5


@dataclasses.dataclass(frozen=True, slots=True)
class Round:
    """What one claim round (:meth:`Scheduler.run_once`) did.

    ``jobs`` and ``deliveries`` are the records as claimed (before any work); ``saturated``
    means every worker slot was busy, so nothing was claimed and the round waited for one.
    """

    jobs: tuple[Job, ...] = ()
    deliveries: tuple[Delivery, ...] = ()
    saturated: bool = False

    @property
    def busy(self) -> bool:
        """Whether the loop should go on at once rather than idle until the next due time."""
        return self.saturated or bool(self.jobs or self.deliveries)


class Scheduler:
    """Claims and advances jobs and deliveries until stopped. One per process.

    Arguments: ``services`` (the process's wiring), ``rng`` (jitter; seeded in tests) and
    ``clock`` (the time every decision reads; ``services.clock`` when not given).
    """

    def __init__(
        self,
        services: Services,
        *,
        rng: random.Random | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.store = services.store
        self.owner = services.instance_id
        self.rng = rng or random.Random()
        self.clock = clock or services.clock
        self.dispatcher = Dispatcher(services, self.rng, clock=self.clock)
        self.policies = {
            name: PollPolicy(
                services.gate_for(name).polling,
                min_interval_s=services.gate_for(name).min_interval_s,
                rng=self.rng,
                push_interval_s=services.gate_for(name).push_interval_s,
                clock=self.clock,
            )
            for name in services.adapters
        }
        self.concurrency = self.settings.polling.concurrency
        self.lease_s = self.settings.store.lease_s
        #: renews the leases of every job in flight here (one task for all of them)
        self.leases = LeaseKeeper(self.store, self.owner, self.lease_s, self.clock)
        self.inflight: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()
        #: Admission decisions of this instance, one at a time (polling.max_active_jobs)
        self._admission = asyncio.Lock()
        self.healthy = True
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        #: While the loop idles: when it looks at the store again at the latest (its clock)
        self._next_look: datetime | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="scheduler")
        if self.settings.storage.retention_days is not None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="retention")

    async def _sweep_forever(self) -> None:
        """Delete old finished jobs and videos (``storage.retention_days``), now and then."""
        while not self._stopping:
            try:
                await lifecycle.sweep_retention(self.services)
            except Exception as exc:
                log.warning("retention_sweep_failed", error=str(exc)[:200])
            await asyncio.sleep(self.settings.storage.retention_sweep_s)

    def poke(self) -> None:
        """New work was stored: look now instead of at the next tick."""
        self.wake.set()

    def poke_for(self, delay_s: float) -> None:
        """A job due in ``delay_s`` was stored: wake the loop only when it would otherwise
        look too late. Not when the job is due a tick or more from now (the loop looks at
        least once a tick), nor when the idle loop's planned next look comes before the job
        is due (it reads the next due time again then). While the loop works a round, a
        job due within a tick pokes as before."""
        if delay_s >= self.settings.polling.tick_s:
            return
        planned = self._next_look
        if planned is None or delay_s < (planned - self.clock.now()).total_seconds():
            self.poke()

    async def stop(self) -> None:
        """Stop claiming, let in-flight work finish within the grace period, free leases."""
        self._stopping = True
        self.wake.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.inflight:
            _done, pending = await asyncio.wait(
                set(self.inflight), timeout=self.settings.server.shutdown_grace_s
            )
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        await self.leases.close()
        with contextlib.suppress(Exception):
            released = await self.store.release_owner(self.owner)
            log.info("scheduler_stopped", released_leases=released)

    # --- the loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                busy = (await self.run_once()).busy
                if failures:
                    log.info("store_reachable_again")
                failures = 0
                self.healthy = True
            except Exception as exc:  # the store is down: pause, retry with backoff
                failures += 1
                self.healthy = False
                delay = backoff_s(failures, 0.5, 10.0, self.rng)
                log.warning("claim_failed", error=str(exc)[:200], retry_in_s=round(delay, 2))
                await self._sleep(delay)
                continue
            if not busy:
                await self._idle()

    async def run_once(self, *, wait: bool = False) -> Round:
        """One claim round: claim due jobs, then due deliveries, into the free worker slots
        and start working them; the loop calls this until stopped.

        With every slot busy it waits (up to ``polling.tick_s``) for one to free instead. With
        ``wait`` it returns only once the work it started is done: a job is worked on for as
        long as it stays due, so one round can take a job through several states. A store
        error is raised to the caller (the loop backs off and tries again).
        """
        free = self.concurrency - len(self.inflight)
        if free <= 0:
            await asyncio.wait(
                set(self.inflight),
                timeout=self.settings.polling.tick_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            return Round(saturated=True)
        now = self.clock.now()
        started: list[asyncio.Task[None]] = []
        jobs = await self.store.claim_due(self.owner, now, self.lease_s, free)
        lateness = self.services.metrics.lateness
        for job in jobs:
            lateness.observe(max(0.0, (now - job.due_at).total_seconds()))
            started.append(self._spawn(self._run_job(job)))
        free = self.concurrency - len(self.inflight)
        deliveries: list[Delivery] = []
        if free > 0 and isinstance(self.store, ClaimsDeliveriesWithJobs):
            # each delivery with its job, read in the same store call (no read per send)
            pairs = await self.store.claim_deliveries_with_jobs(self.owner, now, self.lease_s, free)
            deliveries = [delivery for delivery, _ in pairs]
            for delivery, owner_job in pairs:
                started.append(self._spawn(self._run_delivery(delivery, (owner_job,))))
        elif free > 0:
            deliveries = await self.store.claim_deliveries(self.owner, now, self.lease_s, free)
            for delivery in deliveries:
                started.append(self._spawn(self._run_delivery(delivery)))
        if wait and started:
            await asyncio.wait(started)  # each task logs and handles its own errors
        return Round(tuple(jobs), tuple(deliveries))

    async def _idle(self) -> None:
        tick = self.settings.polling.tick_s
        timeout = tick
        # planned before the read too: a job stored while it runs is compared with a tick
        self._next_look = self.clock.now() + timedelta(seconds=tick)
        try:
            next_due = await self.store.next_due_at()
            if next_due is not None:
                timeout = min(tick, max(0.0, (next_due - self.clock.now()).total_seconds()))
            self._next_look = self.clock.now() + timedelta(seconds=timeout)
            await self._sleep(timeout)
        finally:
            self._next_look = None

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout=seconds)
        self.wake.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)
        return task

    # --- one job -----------------------------------------------------------------------

    async def _run_job(self, job: Job) -> None:
        structlog.contextvars.bind_contextvars(
            job_id=job.id, task_id=job.task_id, session_id=job.session_id, provider=job.provider
        )
        if job.reclaims:
            log.info("job_reclaimed", reclaims=job.reclaims, state=job.state.value)
        current = asyncio.current_task()
        self.leases.hold(job.id, current)
        try:
            await self._advance(job)
        except LeaseLost:
            log.info("job_changed_elsewhere")
        except asyncio.CancelledError:
            log.info("job_step_interrupted")
            raise
        except Exception:
            log.exception("job_step_crashed")
            await self._after_crash(job.id)
        finally:
            self.leases.release(job.id, current)

    async def _advance(self, job: Job) -> None:
        while True:
            now = self.clock.now()
            outcome = await self._step(job, now)
            job = await self._commit(job, outcome)
            if job.lease_owner is None:
                return

    async def _step(self, job: Job, now: datetime) -> Outcome:
        if job.reclaims > self.settings.store.max_reclaims:
            policy = self.policies.get(job.provider) or self._fallback_policy()
            return policy.failed(
                job,
                now,
                ErrorCode.UNKNOWN_PROVIDER_ERROR,
                f"the job was taken over {job.reclaims} times after workers stopped",
            )
        if job.state is JobState.SUBMITTING:
            adapter = self.services.adapters.get(job.provider)
            policy = self.policies.get(job.provider) or self._fallback_policy()
            return await submission.submit_step(self.services, adapter, policy, job, now)
        if job.state is JobState.QUEUED:
            job = await self._admit(job, now)
            if job.state is JobState.QUEUED:  # no free slot yet (polling.max_active_jobs)
                return Outcome(job, [])
        if job.state in POLLING_STATES:
            return await self._poll(job, now)
        if job.state is JobState.DOWNLOADING:
            adapter = self.services.adapters.get(job.provider)
            policy = self.policies.get(job.provider) or self._fallback_policy()
            return await pipeline.download_step(self.services, adapter, policy, job, now)
        if job.state is JobState.STORING:
            stored = await pipeline.storing_step(self.services, job, now)
            # With targets to tell, their deliveries move the job on (_delivery_tried).
            told = bool(self.dispatcher.targets_for(stored, Event.SUCCEEDED))
            due = now + timedelta(seconds=self.lease_s) if told else now
            moved = transition(stored, JobState.NOTIFYING, now=now, due_at=due)
            return Outcome(moved, [Event.SUCCEEDED])
        if job.state is JobState.NOTIFYING:
            return await self._notifying(job, now)
        return Outcome(job, [])

    async def _admit(self, job: Job, now: datetime) -> Job:
        """Take a slot (polling.max_active_jobs) and record it before the first poll.

        This instance decides one job at a time and writes the move to ``polling`` at once,
        so the next decision counts it: without that, jobs admitted but not yet saved were
        still "queued" in the store and one instance could overshoot the limit. With no
        limit there is nothing to decide and nothing to write ahead of the poll.
        """
        if self.settings.polling.max_active_jobs is None:
            return transition(job, JobState.POLLING, now=now)
        async with self._admission:
            later = await lifecycle.admit(self.services, job, now, self.settings.polling.tick_s)
            if later is not None:
                return later
            moved = transition(job, JobState.POLLING, now=now)
            return await self.store.save(moved, expected_version=moved.version)

    def _fallback_policy(self) -> PollPolicy:
        return PollPolicy(self.settings.polling, min_interval_s=0, rng=self.rng, clock=self.clock)

    async def _poll(self, job: Job, now: datetime) -> Outcome:
        adapter = self.services.adapters.get(job.provider)
        if adapter is None:
            return self._fallback_policy().failed(
                job,
                now,
                ErrorCode.UNKNOWN_PROVIDER_ERROR,
                f"provider {job.provider!r} is not configured any more",
            )
        policy = self.policies[job.provider]
        if (now - job.created_at).total_seconds() >= self.settings.polling.give_up_after_s:
            return policy.timed_out(job, now)
        gate = self.services.gate_for(job.provider)
        await gate.acquire()
        polls = self.services.metrics.polls
        try:
            result = await submission.poll_job(adapter, job, self.services.provider_http, gate)
        except ProviderUnavailable as exc:
            polls.labels(job.provider, "rate_limited" if exc.rate_limited else "transient").inc()
            if exc.rate_limited:
                # without Retry-After, pause as long as the first transient retry waits
                gate.pause(exc.retry_after_s or transient_base_s(gate.polling))
            log.warning(
                "poll_transient_failure",
                reason=str(exc)[:200],
                rate_limited=exc.rate_limited,
                retry_after_s=exc.retry_after_s,
            )
            return policy.after_transient(job, self.clock.now(), retry_after_s=exc.retry_after_s)
        except UnrecognizedResponse as exc:
            polls.labels(job.provider, "unrecognized").inc()
            log.warning("poll_unrecognized", reason=str(exc)[:200])
            return policy.after_transient(job, self.clock.now())
        except ProviderTaskFailed as exc:
            polls.labels(job.provider, "refused").inc()
            log.warning("poll_refused", code=exc.code.value, detail=(exc.detail or "")[:300])
            return policy.failed(job, self.clock.now(), exc.code, None)
        except Exception:  # an adapter bug must not end the loop or the job
            polls.labels(job.provider, "crashed").inc()
            log.exception("poll_adapter_crashed")
            return policy.after_transient(job, self.clock.now())
        polls.labels(job.provider, result.status.value).inc()
        if result.status is PollStatus.FAILED:
            log.info(
                "poll_failed",
                code=(result.error_code or ErrorCode.UNKNOWN_PROVIDER_ERROR).value,
                detail=(result.detail or "")[:300],
            )
        now = self.clock.now()
        return _own_cadence(adapter, policy.after_answer(job, result, now), now)

    async def _success_rows(self, job: Job) -> list[Delivery]:
        return [
            r
            for r in await self.store.deliveries_for(job.id)
            if r.run == job.run and r.event is Event.SUCCEEDED
        ]

    async def _notifying(self, job: Job, now: datetime) -> Outcome:
        """Succeed once every target was tried; else look again a lease later (the last
        attempt moves the job on before that: :meth:`_delivery_tried`)."""
        rows = await self._success_rows(job)
        later = now + timedelta(seconds=self.lease_s)
        if not rows and self.dispatcher.targets_for(job, Event.SUCCEEDED):
            # The outbox rows are written with the move to notifying; should they be missing
            # (a store restored from an older copy), plan them again rather than tell nobody.
            return Outcome(dataclasses.replace(job, due_at=later), [Event.SUCCEEDED])
        if _all_tried(rows):
            return Outcome(transition(job, JobState.SUCCEEDED, now=now), [])
        self.wake.set()
        return Outcome(dataclasses.replace(job, due_at=later), [])

    async def _commit(self, before: Job, outcome: Outcome) -> Job:
        """Write the step's result with its outbox rows; keep the lease only to go on now."""
        now = self.clock.now()
        job = outcome.job
        deliveries = await self.dispatcher.plan(job, outcome.events, now)
        go_on = not job.is_terminal and job.due_at <= now
        if go_on:
            job = dataclasses.replace(
                job,
                lease_owner=self.owner,
                lease_expires_at=now + timedelta(seconds=self.lease_s),
            )
        else:
            job = dataclasses.replace(job, lease_owner=None, lease_expires_at=None)
        saved = await self.store.save(job, expected_version=job.version, deliveries=deliveries)
        if saved.state is not before.state or outcome.events:
            self.services.changes.notify()
        if saved.state is not before.state:
            log.info(
                "job_" + saved.state.value,
                previous=before.state.value,
                attempts=saved.attempts,
                elapsed_s=round(saved.elapsed_s(now), 3),
            )
        if deliveries:
            self.wake.set()
        if saved.is_terminal:
            self._count_finished(saved)
            await analytics.job_finished(self.services, saved)
        return saved

    def _count_finished(self, job: Job) -> None:
        metrics = self.services.metrics
        metrics.finished.labels(job.model, job.state.value).inc()
        if job.state is JobState.SUCCEEDED:
            metrics.attempts.labels(job.model).observe(job.attempts)
            metrics.generation.labels(job.model).observe(job.elapsed_s())
        elif job.state is JobState.FAILED and job.error_code is not None:
            metrics.failures.labels(job.provider, job.error_code.value).inc()

    async def _after_crash(self, job_id: str) -> None:
        """Our own code failed on this job: retry later, and give up after a few crashes."""
        with contextlib.suppress(Exception):
            job = await self.store.get(job_id)
            if job is None or job.is_terminal:
                return
            now = self.clock.now()
            failures = job.transient_failures + 1
            if failures > MAX_STEP_CRASHES:
                outcome = self._fallback_policy().failed(
                    job,
                    now,
                    ErrorCode.UNKNOWN_PROVIDER_ERROR,
                    "an internal error kept this job from finishing",
                )
            else:
                delay = backoff_s(failures, 2.0, 120.0, self.rng)
                outcome = Outcome(
                    dataclasses.replace(
                        job,
                        transient_failures=failures,
                        due_at=now + timedelta(seconds=delay),
                    ),
                    [],
                )
            await self._commit(job, outcome)

    # --- one delivery ------------------------------------------------------------------

    async def _run_delivery(
        self, delivery: Delivery, claimed: tuple[Job | None] | None = None
    ) -> None:
        """Send ``delivery``; ``claimed``, when given, holds its job as claimed with it."""
        try:
            job = claimed[0] if claimed is not None else await self.store.get(delivery.job_id)
            result, job = await self.dispatcher.attempt_for_job(delivery, job)
        except Exception:
            log.exception("delivery_crashed", target=delivery.target, job_id=delivery.job_id)
            return
        if job is not None:
            try:
                await self._delivery_tried(job, result)
            except Exception as exc:  # the job's own re-check moves it on later
                log.warning("job_advance_failed", job_id=job.id, error=str(exc)[:200])

    async def _delivery_tried(self, job: Job, result: Delivery) -> None:
        """A delivery of ``job`` (as read before the send) was tried: when no target of its
        success is left untried, move it on now, rather than have the job claim itself
        every so often to look. Like an operator action this is a compare-and-set on the
        job's version, and it leaves a job that a worker holds to that worker; a write that
        lost a race reads the job once more. An instance that dies before the write leaves
        the job to its own re-check (``store.lease_s`` after it began waiting)."""
        if result.event is not Event.SUCCEEDED or result.attempts == 0:
            return
        for _ in range(2):
            if (
                job.state is not JobState.NOTIFYING
                or job.run != result.run
                or job.lease_owner is not None
            ):
                return
            # The one target of the job was just tried: nothing to read. (A target added
            # since the job was read changed its version, so the write below fails and the
            # job is read again; a row left by a notifier since removed from the config
            # fails on its own attempt and is no target.)
            only = self.dispatcher.targets_for(job, Event.SUCCEEDED) == [result.target]
            if not only and not _all_tried(await self._success_rows(job)):
                return
            try:
                done = transition(job, JobState.SUCCEEDED, now=self.clock.now())
                await self._commit(job, Outcome(done, []))
                return
            except LeaseLost:
                found = await self.store.get(job.id)
                if found is None:
                    return
                job = found


def _all_tried(rows: list[Delivery]) -> bool:
    """Every delivery was tried once (or ended without a try)."""
    return all(r.attempts > 0 or r.status is not DeliveryStatus.PENDING for r in rows)


def _own_cadence(adapter: Any, outcome: Outcome, now: datetime) -> Outcome:
    """A task with a cadence of its own (a KIE upscale: ``poll_interval_s``) is checked at
    that spacing while it is pending, whatever the usual interval."""
    job = outcome.job
    if not isinstance(adapter, HasOwnCadence) or job.state not in POLLING_STATES:
        return outcome
    seconds = adapter.poll_interval_s(job.task_id)
    if seconds is None:
        return outcome
    return Outcome(
        dataclasses.replace(job, due_at=now + timedelta(seconds=seconds)), outcome.events
    )
