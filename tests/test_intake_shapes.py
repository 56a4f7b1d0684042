"""The intake path's cheap builders hold to the shapes they stand in for: ``parse_intake``
gives what ``IntakeRequest`` accepts, and ``build_job`` gives a ``Job`` like ``Job(...)``."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import timedelta
from typing import Any

import pytest

from webhook_poller import shapes
from webhook_poller.errors import RequestRejected
from webhook_poller.model import Job, JobState, build_job, utcnow

RULES = shapes.IntakeRules(
    provider=lambda v: None if v in (None, "") else str(v).strip(),
    callback=lambda v: None if v in (None, "") else str(v),
    max_context_bytes=16384,
)


@pytest.mark.parametrize(
    "body",
    [
        {"sessionId": "s", "taskId": "t", "model": "demo"},
        {"session_id": " s ", "task_id": "t", "model": "demo", "attempt": "3"},
        {"sessionId": "s", "taskId": "t", "model": "m", "attempt": 2.0, "expectPush": "true"},
        {"sessionId": "s", "taskId": "t", "model": "m", "context": '{"chatId": 5}'},
        {"sessionId": "s", "taskId": "t", "model": "m", "provider": "demo", "extra": 1},
        {"sessionId": "s", "taskId": "t", "model": "m", "callback_url": "https://h.io/x"},
        {"sessionId": "x" * shapes.MAX_ID_LEN, "taskId": "t", "model": "m", "attempt": 10000},
    ],
)
def test_checked_intake_is_what_the_documented_model_accepts(body: dict[str, Any]):
    checked = shapes.parse_intake(body, RULES)
    model = shapes.IntakeRequest.model_validate(checked._asdict())
    assert model.model_dump() == checked._asdict()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"taskId": "t", "model": "m", "attempt": 0}, "sessionId"),
        ({"sessionId": "s", "taskId": "t", "model": "m", "attempt": 0}, "attempt"),
        ({"sessionId": "s", "taskId": " ", "model": "m", "attempt": 0}, "taskId"),
        ({"sessionId": "s", "taskId": "t", "model": "m", "expectPush": "maybe"}, "expectPush"),
        ({"sessionId": "s", "taskId": "t", "model": "m", "context": [1]}, "context"),
    ],
)
def test_the_first_problem_in_field_order_is_reported(body: dict[str, Any], field: str):
    with pytest.raises(RequestRejected) as caught:
        shapes.parse_intake(body, RULES)
    assert caught.value.field == field


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
