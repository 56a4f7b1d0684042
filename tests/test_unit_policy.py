"""PollPolicy and its pure helpers as tables: cadence, backoff, Retry-After, deadline, and
which keys the user set. No sockets, no sleeping: time is an argument or a fake clock."""

from __future__ import annotations

import dataclasses
import random
from datetime import timedelta
from typing import Any

import pytest

from tests.support.clock import FakeClock
from tests.support.factories import make_job
from webhook_poller import plugins
from webhook_poller.config import PollingSettings
from webhook_poller.interfaces import PollResult, PollStatus
from webhook_poller.model import ErrorCode, Event, JobState
from webhook_poller.policy import (
    PollPolicy,
    backoff_s,
    first_poll_delay_s,
    jittered,
    retry_delay_s,
    transient_base_s,
)
from webhook_poller.services import ProviderGate

CLOCK = FakeClock()
NOW = CLOCK.now()


def polling(**keys: Any) -> PollingSettings:
    """Polling settings as a user would write them (the keys given count as set)."""
    return PollingSettings.model_validate({"jitter": 0, **keys})


def policy(min_interval_s: float = 0.0, **keys: Any) -> PollPolicy:
    return PollPolicy(
        polling(**keys), min_interval_s=min_interval_s, rng=random.Random(7), clock=CLOCK
    )


def job_at(age_s: float = 0.0, **changes: Any):
    """A job created ``age_s`` before NOW."""
    created = NOW - timedelta(seconds=age_s)
    job = make_job(state=changes.pop("state", JobState.POLLING), due_at=created, **changes)
    return dataclasses.replace(job, created_at=created, updated_at=created)


def delay_of(outcome) -> float:
    return (outcome.job.due_at - NOW).total_seconds()


# --- first poll -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "explicit", "expected"),
    [
        ({}, False, 10.0),  # defaults: the 10 s default is below the 60 s interval
        ({"interval_s": 2}, False, 2.0),  # a short interval is not held up by the default
        ({"interval_s": 0.5}, False, 0.5),
        ({"interval_s": 30}, False, 10.0),
        ({"interval_s": 0}, False, 10.0),  # no interval: the default delay
        ({"interval_s": 2, "first_poll_delay_s": 20}, True, 20.0),  # the user's key rules
        ({"first_poll_delay_s": 0}, True, 0.0),
    ],
)
def test_first_poll_comes_at_most_one_interval_after_intake(keys, explicit, expected):
    """The first check is at min(first_poll_delay_s, interval_s) unless the user set the delay."""
    assert first_poll_delay_s(polling(**keys), explicit=explicit) == expected


@pytest.mark.parametrize(
    ("keys", "options", "expected"),
    [
        ({"interval_s": 2}, {}, 2.0),
        ({"interval_s": 2, "first_poll_delay_s": 25}, {}, 25.0),
        ({"interval_s": 2}, {"first_poll_delay_s": 7}, 7.0),  # set in the provider section
        ({}, {"interval_s": 3}, 3.0),  # a provider's own interval caps the default too
    ],
)
def test_gate_first_poll_delay_respects_keys_the_user_set(keys, options, expected):
    """A provider gate derives the first delay from what the user set, never a default."""
    gate = ProviderGate("demo", options, polling(**keys))
    assert gate.first_poll_delay_s == expected


@pytest.mark.parametrize(
    ("keys", "options", "expected"),
    [
        ({}, {"min_interval_s": 30.0}, 30.0),  # KIE's built-in spacing with default interval
        ({"interval_s": 5}, {"min_interval_s": 30.0}, 5.0),  # capped at the user's interval
        ({"interval_s": 5}, {"min_interval_s": 45.0}, 45.0),  # a spacing the user set rules
    ],
)
def test_builtin_min_interval_never_overrides_a_user_interval(keys, options, expected):
    """The built-in KIE spacing (30 s, the KIE adapter's own default) yields to an
    interval_s the user chose."""
    builtin = plugins.option_defaults(plugins.load("adapter", "kie-veo"))
    gate = ProviderGate("kie", options, polling(**keys), builtin=builtin)
    assert gate.min_interval_s == expected


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, 300.0),
        ({"interval_s": 4}, 4.0),  # the user's interval rules over the fallback default
        ({"interval_s": 4, "push_fallback_interval_s": 90}, 90.0),
    ],
)
def test_push_fallback_interval_follows_the_user_interval(keys, expected):
    """A push job's safety-net poll uses push_fallback_interval_s unless interval_s was set."""
    assert ProviderGate("demo", {}, polling(**keys)).push_interval_s == expected


# --- pending answers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "min_interval_s", "changes", "expected_state", "expected_delay"),
    [
        ({"interval_s": 20}, 0, {}, JobState.POLLING, 20.0),
        ({"interval_s": 20}, 30, {}, JobState.POLLING, 30.0),  # provider's minimum spacing
        ({"interval_s": 20}, 0, {"expect_push": True}, JobState.POLLING, 300.0),
        ({"interval_s": 20, "max_attempts": 3}, 0, {"polls": 2}, JobState.DELAYED, 300.0),
        ({"interval_s": 20, "delayed_interval_s": 100}, 0,
         {"state": JobState.DELAYED}, JobState.DELAYED, 100.0),
        ({"delayed_interval_s": 100, "push_fallback_interval_s": 400}, 0,
         {"state": JobState.DELAYED, "expect_push": True}, JobState.DELAYED, 400.0),
    ],
)  # fmt: skip
def test_pending_answer_sets_the_next_poll(
    keys, min_interval_s, changes, expected_state, expected_delay
):
    """A pending task is polled again after the interval that applies to its state."""
    p = policy(min_interval_s, **keys)
    out = p.after_answer(job_at(**changes), PollResult(PollStatus.PENDING), NOW)
    assert out.job.state is expected_state
    assert delay_of(out) == pytest.approx(expected_delay)
    assert out.job.polls == changes.get("polls", 0) + 1


def test_entering_delayed_raises_the_delayed_event_once():
    """The move to delayed raises video.delayed; staying delayed raises nothing."""
    p = policy(max_attempts=1)
    first = p.after_answer(job_at(), PollResult(PollStatus.PENDING), NOW)
    again = p.after_answer(first.job, PollResult(PollStatus.PENDING), NOW)
    assert (first.events, first.job.delayed_at) == ([Event.DELAYED], NOW)
    assert again.job.state is JobState.DELAYED and again.events == []


@pytest.mark.parametrize(
    ("result", "state", "code", "events"),
    [
        (PollResult(PollStatus.SUCCEEDED, video_urls=("https://cdn/v.mp4",)),
         JobState.DOWNLOADING, None, []),
        (PollResult(PollStatus.FAILED, error_code=ErrorCode.MODERATION_REJECTED),
         JobState.FAILED, ErrorCode.MODERATION_REJECTED, [Event.FAILED]),
        (PollResult(PollStatus.FAILED), JobState.FAILED, ErrorCode.UNKNOWN_PROVIDER_ERROR,
         [Event.FAILED]),
    ],
)  # fmt: skip
def test_final_answers(result, state, code, events):
    """A success with a URL goes to download now; a failure ends the job with its code."""
    out = policy().after_answer(job_at(transient_failures=2), result, NOW)
    assert out.job.state is state and out.job.error_code is code and out.events == events
    assert out.job.transient_failures == 0
    if state is JobState.DOWNLOADING:
        assert out.job.due_at == NOW and out.job.result_urls == ("https://cdn/v.mp4",)


@pytest.mark.parametrize(("empties", "state"), [(0, JobState.POLLING), (2, JobState.POLLING),
                                                (3, JobState.FAILED)])  # fmt: skip
def test_success_without_url_is_retried_then_output_missing(empties, state):
    """A "success" with no URL is polled again empty_success_retries times, then fails."""
    p = policy(interval_s=60, empty_success_retries=3)
    out = p.after_answer(job_at(empty_successes=empties), PollResult(PollStatus.SUCCEEDED), NOW)
    assert out.job.state is state and out.job.empty_successes == empties + 1
    if state is JobState.FAILED:
        assert out.job.error_code is ErrorCode.OUTPUT_MISSING
    else:
        assert delay_of(out) == 15.0  # min(interval, 15 s)


# --- transient failures: backoff and Retry-After ----------------------------------------


@pytest.mark.parametrize(
    ("failures", "base", "cap", "low", "high"),
    [
        (0, 5, 300, 0, 0),
        (1, 5, 300, 2.5, 5),
        (2, 5, 300, 5, 10),
        (3, 5, 300, 10, 20),
        (8, 5, 300, 150, 300),  # capped at backoff_max_s
        (50, 5, 300, 150, 300),  # a huge count does not overflow
        (3, 0, 300, 0, 0),  # no base: no backoff
    ],
)
def test_backoff_is_capped_exponential_with_equal_jitter(failures, base, cap, low, high):
    """Half the ceiling is fixed, half random; the ceiling doubles up to the cap."""
    rng = random.Random(1)
    for _ in range(50):
        assert low <= backoff_s(failures, base, cap, rng) <= high


@pytest.mark.parametrize(
    ("keys", "expected"),
    [({}, 5.0), ({"interval_s": 2}, 2.0), ({"interval_s": 0}, 5.0),
     ({"backoff_base_s": 1, "interval_s": 30}, 1.0)],
)  # fmt: skip
def test_transient_backoff_starts_no_later_than_one_interval(keys, expected):
    """The first transient retry never waits past interval_s."""
    assert transient_base_s(polling(**keys)) == expected


@pytest.mark.parametrize(
    ("retry_after_s", "low", "high"),
    [
        (None, 2.5, 5.0),  # the backoff alone
        (1.0, 2.5, 5.0),  # a short Retry-After does not shorten the backoff
        (120.0, 120.0, 120.0),  # a long one is honoured
        (10_000.0, 600.0, 600.0),  # but never past the give-up deadline
    ],
)
def test_retry_after_is_honoured_up_to_the_deadline(retry_after_s, low, high):
    """The next poll waits max(backoff, Retry-After), capped at the give-up deadline."""
    p = policy(give_up_after_s=1200)
    out = p.after_transient(job_at(age_s=600), NOW, retry_after_s=retry_after_s)
    assert out.job.state is JobState.POLLING and out.job.transient_failures == 1
    assert low <= delay_of(out) <= high


def test_min_interval_applies_to_transient_retries():
    """A provider's minimum spacing holds after a failed poll too."""
    out = policy(min_interval_s=30).after_transient(job_at(), NOW)
    assert delay_of(out) == 30.0


# --- give_up_after_s --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age_s", "state"),
    [(0, JobState.POLLING), (599.9, JobState.POLLING), (600, JobState.FAILED),
     (10_000, JobState.FAILED)],
)  # fmt: skip
@pytest.mark.parametrize("answer", ["pending", "transient"])
def test_give_up_after_s_times_the_job_out(age_s, state, answer):
    """At give_up_after_s after intake a pending or failing poll ends in provider_timeout."""
    p = policy(give_up_after_s=600)
    job = job_at(age_s=age_s)
    if answer == "pending":
        out = p.after_answer(job, PollResult(PollStatus.PENDING), NOW)
    else:
        out = p.after_transient(job, NOW)
    assert out.job.state is state
    if state is JobState.FAILED:
        assert out.job.error_code is ErrorCode.PROVIDER_TIMEOUT
        assert out.events == [Event.FAILED] and out.job.finished_at == NOW


def test_deadline_follows_the_fake_clock():
    """Stepping the policy's clock past the deadline is all it takes to time a job out."""
    clock = FakeClock()
    p = PollPolicy(polling(give_up_after_s=60), min_interval_s=0, clock=clock)
    job = dataclasses.replace(make_job(state=JobState.POLLING), created_at=clock.now())
    assert p.after_answer(job, PollResult(PollStatus.PENDING), p.now()).job.state is (
        JobState.POLLING
    )
    clock.advance(60)
    timed_out = p.after_answer(job, PollResult(PollStatus.PENDING), p.now())
    assert timed_out.job.error_code is ErrorCode.PROVIDER_TIMEOUT


# --- small helpers ----------------------------------------------------------------------


@pytest.mark.parametrize(("base", "jitter"), [(10, 0.1), (10, 0.5), (0, 0.3), (-1, 0.1)])
def test_jittered_stays_within_its_spread_and_never_negative(base, jitter):
    """``jittered`` spreads by +/- jitter and never returns a negative delay."""
    rng = random.Random(3)
    for _ in range(50):
        value = jittered(base, jitter, rng)
        assert max(0.0, base * (1 - jitter)) <= value <= max(0.0, base * (1 + jitter))


@pytest.mark.parametrize(
    ("attempts", "step"), [(0, 10), (1, 10), (2, 60), (3, 300), (4, 300), (99, 300)]
)
def test_delivery_retry_schedule_repeats_its_last_step(attempts, step):
    """Attempt n waits schedule[n-1] (+/-10 %); past the end the last step repeats."""
    value = retry_delay_s(attempts, [10, 60, 300], random.Random(5))
    assert step * 0.9 <= value <= step * 1.1


def test_delivery_retry_without_schedule_waits_a_minute():
    """An empty schedule falls back to 60 s."""
    assert retry_delay_s(3, [], random.Random()) == 60.0


@pytest.mark.parametrize(
    ("polling", "provider", "interval", "first_delay"),
    [
        # the demo's built-in 2 s cadence, when the user set nothing
        ({}, {}, 2.0, 1.0),
        # a polling.interval_s the user set beats the demo's built-in interval; the built-in
        # first delay is then only a cap of one interval
        ({"interval_s": 0.2}, {}, 0.2, 0.2),
        ({"interval_s": 7, "first_poll_delay_s": 0}, {}, 7.0, 0.0),
        # a providers.demo key the user set rules over polling.*
        ({"interval_s": 0.2}, {"interval_s": 0.5}, 0.5, 0.5),
    ],
)
def test_a_built_in_family_cadence_never_beats_a_polling_key_the_user_set(
    polling: dict[str, float], provider: dict[str, float], interval: float, first_delay: float
) -> None:
    from webhook_poller import plugins
    from webhook_poller.config import settings_from_mapping
    from webhook_poller.services import ProviderGate

    settings = settings_from_mapping({"polling": polling, "providers": {"demo": provider}})
    builtin = plugins.option_defaults(plugins.load("adapter", "demo"))
    gate = ProviderGate("demo", settings.provider_options("demo"), settings.polling, None, builtin)
    assert gate.polling.interval_s == interval
    assert gate.first_poll_delay_s == first_delay
