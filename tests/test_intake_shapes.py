"""The intake path's cheap builders hold to the shapes they stand in for: ``build_job``
gives a ``Job`` like ``Job(...)``."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import timedelta
from typing import Any

import pytest

from webhook_poller.model import Job, JobState, build_job, utcnow


def _fields() -> dict[str, Any]:
    now = utcnow()
    return {
        "id": "job_1",
        "session_id": "s",
        "task_id": "t",
        "model": "demo",
        "provider": "demo",
        "state": JobState.QUEUED,
        "created_at": now,
        "updated_at": now,
        "due_at": now + timedelta(seconds=10),
        "start_attempt": 2,
        "context": {"chatId": 5},
    }


def test_build_job_is_a_frozen_job_equal_to_the_constructor():
    fields = _fields()
    built, plain = build_job(**fields), Job(**fields)
    assert type(built) is Job and built == plain
    assert dataclasses.asdict(built) == dataclasses.asdict(plain)  # every default too
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.state = JobState.POLLING  # type: ignore[misc]
    assert dataclasses.replace(built, polls=3).polls == 3 and built.polls == 0
    assert pickle.loads(pickle.dumps(built)) == built


def test_build_job_refuses_what_the_constructor_refuses():
    with pytest.raises(TypeError):
        build_job(**_fields(), no_such_field=1)  # type: ignore[call-arg]
    fields = _fields()
    del fields["due_at"]
    with pytest.raises(TypeError):
        build_job(**fields)
