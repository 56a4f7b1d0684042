"""model.transition as a table: every (from, to) pair, allowed or refused, with no I/O."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.factories import make_job
from webhook_poller.model import (
    TERMINAL_STATES,
    ErrorCode,
    Event,
    IllegalTransition,
    JobState,
    StoredVideo,
    can_transition,
    events_for,
    transition,
)

S = JobState
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

#: The state machine written out by hand (docs/design.md), independent of model._ALLOWED.
ALLOWED = {
    (S.SUBMITTING, S.SUBMITTING),
    (S.SUBMITTING, S.QUEUED),
    (S.SUBMITTING, S.FAILED),
    (S.SUBMITTING, S.CANCELLED),
    (S.QUEUED, S.POLLING),
    (S.QUEUED, S.FAILED),
    (S.QUEUED, S.CANCELLED),
    (S.POLLING, S.POLLING),
    (S.POLLING, S.DELAYED),
    (S.POLLING, S.DOWNLOADING),
    (S.POLLING, S.FAILED),
    (S.POLLING, S.CANCELLED),
    (S.DELAYED, S.DELAYED),
    (S.DELAYED, S.DOWNLOADING),
    (S.DELAYED, S.FAILED),
    (S.DELAYED, S.CANCELLED),
    (S.DOWNLOADING, S.DOWNLOADING),
    (S.DOWNLOADING, S.STORING),
    (S.DOWNLOADING, S.FAILED),
    (S.DOWNLOADING, S.CANCELLED),
    (S.STORING, S.NOTIFYING),
    (S.STORING, S.FAILED),
    (S.STORING, S.CANCELLED),
    (S.NOTIFYING, S.SUCCEEDED),
    (S.NOTIFYING, S.FAILED),
    (S.NOTIFYING, S.CANCELLED),
    (S.FAILED, S.QUEUED),
    (S.CANCELLED, S.QUEUED),
}
PAIRS = list(itertools.product(JobState, JobState))
REFUSED = [p for p in PAIRS if p not in ALLOWED]


def _id(pair: tuple[JobState, JobState]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def test_the_table_covers_every_pair_once():
    """Allowed plus refused is every (from, to) pair of the ten states, with no overlap."""
    assert len(PAIRS) == 100
    assert len(ALLOWED) + len(REFUSED) == 100


@pytest.mark.parametrize("pair", sorted(ALLOWED), ids=_id)
def test_allowed_move_changes_state_and_stamps_updated_at(pair):
    """An allowed move returns the job in its new state, updated at ``now``."""
    old, new = pair
    job = make_job(state=old)
    moved = transition(job, new, now=NOW)
    assert can_transition(old, new)
    assert moved.state is new and moved.updated_at == NOW
    assert job.state is old  # the input is a frozen value, never changed


@pytest.mark.parametrize("pair", REFUSED, ids=_id)
def test_refused_move_raises_illegal_transition(pair):
    """A move outside the table raises IllegalTransition naming both states."""
    old, new = pair
    with pytest.raises(IllegalTransition) as info:
        transition(make_job(state=old), new, now=NOW)
    assert not can_transition(old, new)
    assert (info.value.current, info.value.new) == (old, new)
    assert old.value in str(info.value) and new.value in str(info.value)


def test_succeeded_is_a_dead_end():
    """Nothing leaves ``succeeded``, not even a retry."""
    assert [s for s in JobState if can_transition(S.SUCCEEDED, s)] == []


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES), ids=str)
def test_terminal_states_cannot_move_to_any_active_state_but_queued(state):
    """A terminal job only goes back to ``queued`` (a retry), never straight to work."""
    active = set(JobState) - TERMINAL_STATES - {S.QUEUED}
    assert not any(can_transition(state, s) for s in active)


@pytest.mark.parametrize("new", sorted(TERMINAL_STATES), ids=str)
def test_entering_a_terminal_state_sets_finished_at(new):
    """A move into succeeded/failed/cancelled records when the job finished."""
    old = S.NOTIFYING
    moved = transition(make_job(state=old), new, now=NOW)
    assert moved.finished_at == NOW and moved.is_terminal


def test_an_explicit_finished_at_is_kept():
    """A caller that passes ``finished_at`` keeps its own value."""
    earlier = NOW - timedelta(minutes=5)
    moved = transition(make_job(state=S.POLLING), S.FAILED, now=NOW, finished_at=earlier)
    assert moved.finished_at == earlier


@pytest.mark.parametrize("old", [S.FAILED, S.CANCELLED], ids=str)
def test_retry_starts_a_new_run_with_a_clean_slate(old):
    """failed/cancelled -> queued bumps ``run`` and clears counters, errors and results."""
    job = make_job(
        state=old,
        run=2,
        polls=7,
        transient_failures=3,
        empty_successes=1,
        error_code=ErrorCode.PROVIDER_TIMEOUT,
        error_detail="too slow",
        delayed_at=NOW,
        finished_at=NOW,
        result_urls=("https://cdn.example/v.mp4",),
        videos=(StoredVideo(0, "k"),),
    )
    moved = transition(job, S.QUEUED, now=NOW)
    assert moved.run == 3
    assert (moved.polls, moved.transient_failures, moved.empty_successes) == (0, 0, 0)
    assert moved.error_code is None and moved.error_detail is None
    assert moved.finished_at is None and moved.delayed_at is None
    assert moved.result_urls == () and moved.videos == ()


def test_submitting_to_queued_is_not_a_retry():
    """The end of submission keeps the run and the counters: it is the same first run."""
    job = make_job(state=S.SUBMITTING, run=0, polls=0, transient_failures=2)
    moved = transition(job, S.QUEUED, now=NOW)
    assert moved.run == 0 and moved.transient_failures == 2 and moved.finished_at is None


def test_submitting_may_stay_submitting_between_create_calls():
    """A job creating several tasks stays ``submitting`` while it records each one."""
    job = make_job(state=S.SUBMITTING, task_ids=("t1",))
    moved = transition(job, S.SUBMITTING, now=NOW, task_ids=("t1", "t2"))
    assert moved.state is S.SUBMITTING and moved.task_ids == ("t1", "t2")


@pytest.mark.parametrize(
    ("old", "new", "events"),
    [
        (S.POLLING, S.POLLING, []),
        (S.POLLING, S.DELAYED, [Event.DELAYED]),
        (S.DELAYED, S.DELAYED, []),
        (S.POLLING, S.DOWNLOADING, []),
        (S.STORING, S.NOTIFYING, [Event.SUCCEEDED]),
        (S.NOTIFYING, S.SUCCEEDED, []),
        (S.POLLING, S.FAILED, [Event.FAILED]),
        (S.SUBMITTING, S.FAILED, [Event.FAILED]),
        (S.POLLING, S.CANCELLED, []),
        (S.FAILED, S.QUEUED, []),
    ],
    ids=lambda v: v.value if isinstance(v, JobState) else None,
)
def test_events_raised_by_a_move(old, new, events):
    """Only entering delayed, notifying (success) or failed raises a notifier event."""
    moved = transition(make_job(state=old), new, now=NOW)
    assert events_for(old, moved) == events
