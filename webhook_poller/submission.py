"""Starting the provider tasks of a ``POST /generate`` job, and polling a job's tasks.

A job in ``submitting`` holds its checked request (``Job.request``). The scheduler creates
its ``count`` provider tasks one by one. Each create call is preceded by a durable record
of the intent (``Job.submit_intent``) and followed by a record of the task id, so a worker
killed between the two leaves a job that says "a create call may have gone out". The next
worker never submits that task again blindly: it asks the adapter's ``find_task`` (when the
provider can look a task up) and otherwise fails the job with a clear reason, because a
second submission would be billed a second time.

Create calls have their own budget per provider account (``submit_budget`` on the adapter,
KIE: 20 per 10 s), apart from the status-poll budget. A 429 on create (which KIE rejects
without queueing) keeps the job in ``submitting`` and tries again after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from . import push
from .errors import (
    ProviderTaskFailed,
    ProviderUnavailable,
    StoreUnavailable,
    SubmissionUncertain,
)
from .interfaces import (
    FindsTasks,
    FollowsUp,
    GenerationRequest,
    HasSubmitBudget,
    PollResult,
    PollStatus,
    ProviderTask,
    SubmitResult,
    Submits,
)
from .model import ErrorCode, Job, JobState, transition
from .policy import Outcome, PollPolicy, backoff_s
from .services import SharedBudget

if TYPE_CHECKING:
    import httpx

    from .interfaces import ProviderAdapter
    from .services import ProviderGate, Services

log = structlog.get_logger(__name__)

#: Used when an adapter declares no ``submit_budget``: (new generations, per seconds).
DEFAULT_BUDGET = (10, 10.0)

INTERRUPTED = (
    "the submission to the provider was interrupted before its answer was recorded; it was "
    "not sent again, so it cannot be paid twice. Retry the job to submit a new one"
)
UNCERTAIN = (
    "the provider did not confirm whether it started the task; it was not sent again, so it "
    "cannot be paid twice. Retry the job to submit a new one"
)


class SubmitGate:
    """The create-call budget of one provider account, and its pause after a 429.

    In this process a sliding window: at most ``count`` create calls in any ``period``
    seconds (KIE counts "20 new generations per 10 s"; a leaky bucket would let 40 through
    in 10 s), so a burst goes at once. With a shared budget (the Redis store) every instance
    also takes from one bucket for ``{section}:create``, spaced evenly at ``(count - 1) /
    period`` (a burst of one: any window then holds at most ``count``), and a 429 pauses
    them all; while Redis is unreachable the window alone holds.
    """

    #: Added to the window: the provider counts arrivals, and a call's way there varies.
    MARGIN_S = 0.25

    def __init__(self, budget: tuple[int, float], section: str = "", shared: Any = None) -> None:
        count, period = budget
        self.count = max(int(count), 1)
        self.period = max(float(period), 0.001) + self.MARGIN_S
        self.key = f"{section}:create"
        self.shared = shared if isinstance(shared, SharedBudget) else None
        self.paused_until = 0.0
        self._sent: deque[float] = deque()
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    async def share_pause(self, seconds: float) -> None:
        if self.shared is not None:
            with contextlib.suppress(StoreUnavailable):
                await self.shared.budget_pause(self.key, seconds)

    async def wait_s(self) -> float:
        """Seconds a 429 pause still holds (this process's, or any instance's)."""
        wait = max(0.0, self.paused_until - time.monotonic())
        if self.shared is not None:
            with contextlib.suppress(StoreUnavailable):
                wait = max(wait, await self.shared.budget_pause(self.key, 0))
        return wait

    async def acquire(self) -> None:
        """Wait until one more create call fits, and count it."""
        if self.shared is not None:
            rate = max(self.count - 1, 1) / self.period
            with contextlib.suppress(StoreUnavailable):
                wait = await self.shared.budget_take(self.key, rate, 1)
                while wait > 0:
                    await asyncio.sleep(wait)
                    wait = await self.shared.budget_take(self.key, rate, 1)
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._sent and now - self._sent[0] >= self.period:
                    self._sent.popleft()
                if len(self._sent) < self.count:
                    self._sent.append(now)
                    return
                await asyncio.sleep(self._sent[0] + self.period - now)


def submit_gate(services: Services, adapter_name: str) -> SubmitGate:
    """The gate of the adapter's account (its config section), made on first use."""
    poll_gate = services.gate_for(adapter_name)
    section = poll_gate.section
    gate = services.submit_gates.get(section)
    if gate is None:
        adapter = services.adapters.get(adapter_name)
        budget = adapter.submit_budget if isinstance(adapter, HasSubmitBudget) else DEFAULT_BUDGET
        gate = SubmitGate(budget, section, poll_gate.shared)
        services.submit_gates[section] = gate
    return gate


def push_url(services: Services, job: Job) -> str | None:
    """Where the provider may push the job's result: our ``/callbacks/{provider}`` when
    ``server.public_url`` is set and the provider pushes to us; None (poll only) otherwise.
    An upscale has no task of its own to push about."""
    if not services.settings.server.public_url:
        return None
    if (job.request or {}).get("followUp") == "upscale":
        return None
    if not push.receivers_for(services, job.provider):
        return None
    return push.push_callback_url(services.settings, job.provider)


def generation_request(job: Job, index: int, callback_url: str | None = None) -> GenerationRequest:
    """Task ``index`` of a submitted job, from the request it recorded."""
    data: Mapping[str, Any] = job.request or {}
    duration = data.get("durationSeconds")
    return GenerationRequest(
        model=job.model,
        prompt=str(data.get("prompt") or ""),
        image_urls=tuple(data.get("imageUrls") or ()),
        aspect_ratio=data.get("aspectRatio"),
        duration_s=int(duration) if duration is not None else None,
        resolution=data.get("resolution"),
        options=dict(data.get("options") or {}),
        index=index,
        callback_url=callback_url,
        job_id=job.id,
    )


async def _create(adapter: Submits, job: Job, index: int, services: Services) -> SubmitResult:
    """The paid call of task ``index``: a generation, or a follow-up of a finished task
    (extend, upscale: :mod:`.followups`) through the adapter's ``follow_up`` hook."""
    request = generation_request(job, index, push_url(services, job))
    if (job.request or {}).get("followUp"):
        if not isinstance(adapter, FollowsUp):
            raise ProviderTaskFailed(
                ErrorCode.UNKNOWN_PROVIDER_ERROR,
                provider=job.provider,
                detail="the adapter no longer offers follow-ups",
            )
        return await adapter.follow_up(
            job.request or {}, job.model, request.callback_url, services.provider_http
        )
    return await adapter.submit(request, services.provider_http)


def _count(job: Job) -> int:
    return int((job.request or {}).get("count") or 1)


async def _find(adapter: Any, job: Job, index: int, services: Services) -> str | None:
    """Ask the provider for a task a lost create call may have started (when it can tell)."""
    if not isinstance(adapter, FindsTasks):
        return None
    try:
        request = generation_request(job, index, push_url(services, job))
        found = await adapter.find_task(request, services.provider_http)
    except Exception as exc:  # a lookup that fails tells us nothing: do not guess
        log.warning("submission_lookup_failed", error=str(exc)[:200])
        return None
    return str(found) if found else None


async def _save(services: Services, job: Job, **changes: Any) -> Job:
    """An intermediate write that keeps the lease: the job object still carries the expiry
    of its claim, which the renewer has moved on since (a create call may wait for the
    budget longer than a lease lasts)."""
    if job.lease_owner is not None:
        lease_s = services.settings.store.lease_s
        changes["lease_expires_at"] = services.clock.now() + timedelta(seconds=lease_s)
    return await services.store.save(
        dataclasses.replace(job, **changes), expected_version=job.version
    )


def _later(services: Services, policy: PollPolicy, job: Job, exc: ProviderUnavailable) -> Outcome:
    """Try the create call again after a backoff (at least Retry-After), until the job's
    ``polling.give_up_after_s`` is spent. The poll spacing (``min_interval_s``) is for status
    checks of one task and does not apply here."""
    now = policy.now()
    failures = job.transient_failures + 1
    polling = policy.polling
    cleared = dataclasses.replace(job, submit_intent=None, transient_failures=failures)
    if (now - job.created_at).total_seconds() >= polling.give_up_after_s:
        code = ErrorCode.PROVIDER_RATE_LIMITED if exc.rate_limited else ErrorCode.PROVIDER_TIMEOUT
        why = "kept refusing new generations" if exc.rate_limited else "was unreachable"
        return policy.failed(
            cleared, now, code, f"the provider {why} for {int(polling.give_up_after_s)} s"
        )
    delay = backoff_s(failures, polling.backoff_base_s, polling.backoff_max_s, policy.rng)
    delay = max(delay, exc.retry_after_s or 0.0)
    return Outcome(
        dataclasses.replace(cleared, due_at=now + timedelta(seconds=delay), updated_at=now), []
    )


async def submit_step(
    services: Services, adapter: ProviderAdapter | None, policy: PollPolicy, job: Job, now: datetime
) -> Outcome:
    """Create every provider task the job still lacks; move to ``queued`` when all exist."""
    if adapter is None or not isinstance(adapter, Submits):
        return policy.failed(
            job, now, ErrorCode.UNKNOWN_PROVIDER_ERROR, f"provider {job.provider!r} cannot submit"
        )
    if job.submit_intent is not None:
        index = job.submit_intent
        found = await _find(adapter, job, index, services)
        if found is None:
            log.warning("submission_interrupted", index=index)
            return policy.failed(
                dataclasses.replace(job, submit_intent=None),
                now,
                ErrorCode.UNKNOWN_PROVIDER_ERROR,
                INTERRUPTED,
            )
        log.info("submission_recovered", index=index, provider_task=found)
        job = await _save(services, job, task_ids=(*job.task_ids, found), submit_intent=None)
    gate = submit_gate(services, job.provider)
    while len(job.task_ids) < _count(job):
        index = len(job.task_ids)
        wait = await gate.wait_s()
        if wait > 0:
            due = policy.now() + timedelta(seconds=wait)
            return Outcome(dataclasses.replace(job, due_at=due), [])
        await gate.acquire()
        # The intent is durable before the paid call goes out.
        job = await _save(services, job, submit_intent=index)
        try:
            result = await _create(adapter, job, index, services)
        except ProviderUnavailable as exc:  # certainly nothing started: try again later
            if exc.rate_limited:
                gate.pause(exc.retry_after_s or 1.0)
                await gate.share_pause(exc.retry_after_s or 1.0)
            log.warning(
                "submit_deferred",
                index=index,
                reason=str(exc)[:200],
                rate_limited=exc.rate_limited,
                retry_after_s=exc.retry_after_s,
            )
            return _later(services, policy, job, exc)
        except ProviderTaskFailed as exc:
            log.warning("submit_refused", index=index, code=exc.code.value, detail=exc.detail)
            return policy.failed(
                dataclasses.replace(job, submit_intent=None),
                policy.now(),
                exc.code,
                "the provider refused the submission",
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # SubmissionUncertain, or an adapter bug after sending
            if not isinstance(exc, SubmissionUncertain):
                log.exception("submit_adapter_crashed", index=index)
            found = await _find(adapter, job, index, services)
            if found is None:
                log.warning("submit_uncertain", index=index, reason=str(exc)[:200])
                return policy.failed(
                    dataclasses.replace(job, submit_intent=None),
                    policy.now(),
                    ErrorCode.UNKNOWN_PROVIDER_ERROR,
                    UNCERTAIN,
                )
            result_id = found
        else:
            result_id = result.task_id
        log.info("task_submitted", index=index, provider_task=result_id)
        job = await _save(
            services,
            job,
            task_ids=(*job.task_ids, result_id),
            submit_intent=None,
            transient_failures=0,
        )
    now = policy.now()
    delay = services.gate_for(job.provider).first_poll_delay_s
    moved = transition(
        job,
        JobState.QUEUED,
        now=now,
        task_id=job.task_ids[0],
        due_at=now + timedelta(seconds=delay),
        transient_failures=0,
        # The provider pushes to us: polling slows to the safety net.
        expect_push=push_url(services, job) is not None,
    )
    return Outcome(moved, [])


async def poll_job(
    adapter: ProviderAdapter, job: Job, http: httpx.AsyncClient, gate: ProviderGate | None
) -> PollResult:
    """Poll every task of the job (the caller took the first request's budget).

    One task: its answer. Several (``count``): pending while any is pending (the later ones
    are not asked yet), failed when one failed, succeeded with one URL per task, in order.
    """
    ids = job.all_task_ids
    if len(ids) <= 1:
        task = ProviderTask(task_id=job.task_id, model=job.model, provider=job.provider)
        return await adapter.poll(task, http)
    urls: list[str] = []
    for position, task_id in enumerate(ids):
        if position and gate is not None:
            await gate.acquire()
        task = ProviderTask(task_id=task_id, model=job.model, provider=job.provider)
        result = await adapter.poll(task, http)
        if result.status is not PollStatus.SUCCEEDED:
            return result
        if not result.video_urls:
            return PollResult(PollStatus.SUCCEEDED, detail=f"task {position} has no video URL")
        urls.append(result.video_urls[0])
    return PollResult(PollStatus.SUCCEEDED, video_urls=tuple(urls), progress=1.0)
