"""Pure scheduling policy: what a poll answer means for the job and when to look again.

No I/O here. The scheduler feeds in a job and what the provider said; this module answers
with the job's next version (through :func:`model.transition`) and the events it raises.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from datetime import datetime, timedelta

from .clock import SYSTEM_CLOCK, Clock
from .config import PollingSettings
from .interfaces import PollResult, PollStatus
from .model import ErrorCode, Event, Job, JobState, events_for, transition


def jittered(base_s: float, jitter: float, rng: random.Random) -> float:
    """``base_s`` spread by +/- ``jitter`` (a fraction), never below zero."""
    if base_s <= 0 or jitter <= 0:
        return max(0.0, base_s)
    return max(0.0, base_s * (1 + rng.uniform(-jitter, jitter)))


def backoff_s(failures: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Capped exponential backoff with "equal jitter": half fixed, half random."""
    if failures <= 0 or base_s <= 0:
        return 0.0
    ceiling = min(max_s, base_s * 2.0 ** min(failures - 1, 30))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def first_poll_delay_s(polling: PollingSettings, *, explicit: bool) -> float:
    """Seconds from intake to the first status check.

    A ``first_poll_delay_s`` the user set rules. Otherwise its default is only a cap: the
    first check comes at most one ``interval_s`` after intake, so a short interval is not
    held up by the 10 s default.
    """
    if explicit or polling.interval_s <= 0:
        return polling.first_poll_delay_s
    return min(polling.first_poll_delay_s, polling.interval_s)


def transient_base_s(polling: PollingSettings) -> float:
    """Where the transient backoff starts: ``backoff_base_s``, but never past one interval."""
    if polling.interval_s <= 0:
        return polling.backoff_base_s
    return min(polling.backoff_base_s, polling.interval_s)


def retry_delay_s(attempts: int, schedule: Sequence[float], rng: random.Random) -> float:
    """Delay before delivery attempt ``attempts + 1``; the last step repeats, +/-10 %."""
    if not schedule:
        return 60.0
    step = schedule[min(max(attempts, 1), len(schedule)) - 1]
    return jittered(step, 0.1, rng)


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """The job's next version and the events that move raised."""

    job: Job
    events: list[Event]


class PollPolicy:
    """Turns poll answers into the job's next state and due time.

    Arguments: ``polling`` (the provider's polling settings), ``min_interval_s`` (the least
    spacing of two polls), ``rng`` (jitter), ``push_interval_s`` (the safety-net spacing of
    a push job) and ``clock``. Every decision takes the instant it is made at (``now``), so
    it is pure; :meth:`now` reads the policy's clock for callers that have no instant yet.
    """

    def __init__(
        self,
        polling: PollingSettings,
        *,
        min_interval_s: float,
        rng: random.Random | None = None,
        push_interval_s: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.polling = polling
        self.min_interval_s = min_interval_s
        self.rng = rng or random.Random()
        self.clock = clock or SYSTEM_CLOCK
        #: Spacing of a job that expects a push (``expect_push``): the safety-net poll.
        self.push_interval_s = (
            polling.push_fallback_interval_s if push_interval_s is None else push_interval_s
        )

    def now(self) -> datetime:
        """The current instant on this policy's clock."""
        return self.clock.now()

    def _past_deadline(self, job: Job, now: datetime) -> bool:
        return (now - job.created_at).total_seconds() >= self.polling.give_up_after_s

    def _due(self, now: datetime, delay_s: float) -> datetime:
        return now + timedelta(seconds=max(delay_s, self.min_interval_s))

    def _moved(self, job: Job, new: JobState, now: datetime, **changes: object) -> Outcome:
        moved = transition(job, new, now=now, **changes)
        return Outcome(moved, events_for(job.state, moved))

    def timed_out(self, job: Job, now: datetime) -> Outcome:
        return self._moved(
            job,
            JobState.FAILED,
            now,
            error_code=ErrorCode.PROVIDER_TIMEOUT,
            error_detail=f"no result after {int(self.polling.give_up_after_s)} s of polling",
        )

    def after_answer(self, job: Job, result: PollResult, now: datetime) -> Outcome:
        """The provider answered about the task."""
        polled = dataclasses.replace(job, polls=job.polls + 1, transient_failures=0)
        if result.status is PollStatus.FAILED:
            code = result.error_code or ErrorCode.UNKNOWN_PROVIDER_ERROR
            return self._moved(polled, JobState.FAILED, now, error_code=code)
        if result.status is PollStatus.SUCCEEDED and result.video_urls:
            return self._moved(
                polled,
                JobState.DOWNLOADING,
                now,
                result_urls=tuple(result.video_urls),
                due_at=now,
                transient_failures=0,
            )
        if result.status is PollStatus.SUCCEEDED:
            empties = job.empty_successes + 1
            if empties > self.polling.empty_success_retries:
                return self._moved(
                    polled,
                    JobState.FAILED,
                    now,
                    error_code=ErrorCode.OUTPUT_MISSING,
                    empty_successes=empties,
                    error_detail="the provider reported success without a video URL",
                )
            delay = min(self.polling.interval_s, 15.0)
            return self._moved(
                polled,
                polled.state,
                now,
                empty_successes=empties,
                due_at=self._due(now, jittered(delay, self.polling.jitter, self.rng)),
            )
        return self._still_pending(polled, now)

    def _still_pending(self, job: Job, now: datetime) -> Outcome:
        if self._past_deadline(job, now):
            return self.timed_out(job, now)
        if job.state is not JobState.DELAYED and job.attempts >= self.polling.max_attempts:
            delay = jittered(self.polling.delayed_interval_s, self.polling.jitter, self.rng)
            return self._moved(
                job, JobState.DELAYED, now, delayed_at=now, due_at=self._due(now, delay)
            )
        if job.state is JobState.DELAYED:
            base = self.polling.delayed_interval_s
            if job.expect_push:  # delayed never polls a push job faster than before
                base = max(base, self.push_interval_s)
        elif job.expect_push:
            # The push is the fast path; this poll is the net for a missed one.
            base = self.push_interval_s
        else:
            base = self.polling.interval_s
        delay = jittered(base, self.polling.jitter, self.rng)
        return self._moved(job, job.state, now, due_at=self._due(now, delay))

    def after_transient(
        self, job: Job, now: datetime, *, retry_after_s: float | None = None
    ) -> Outcome:
        """The poll said nothing about the task (timeout, 5xx, 429, unreadable body)."""
        failures = job.transient_failures + 1
        if self._past_deadline(job, now):
            return self.timed_out(dataclasses.replace(job, transient_failures=failures), now)
        # The first retry comes no later than max(interval, Retry-After), then backs off;
        # it never waits past the give-up deadline, where the job times out.
        delay = backoff_s(
            failures, transient_base_s(self.polling), self.polling.backoff_max_s, self.rng
        )
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        deadline = job.created_at + timedelta(seconds=self.polling.give_up_after_s)
        due = min(self._due(now, delay), max(deadline, now))
        return self._moved(job, job.state, now, transient_failures=failures, due_at=due)

    def failed(self, job: Job, now: datetime, code: ErrorCode, reason: str | None) -> Outcome:
        """A final failure decided by us (a refused download, a full disk...)."""
        return self._moved(job, JobState.FAILED, now, error_code=code, error_detail=reason)
