"""Small builders for domain objects used across tests."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from webhook_poller.model import Job, JobState, new_job_id, utcnow

_seq = itertools.count()


def make_job(
    *,
    task_id: str | None = None,
    provider: str = "demo",
    session_id: str = "sess-1",
    model: str = "demo",
    state: JobState = JobState.QUEUED,
    due_at: datetime | None = None,
    **changes: Any,
) -> Job:
    """A valid job; every call gets a fresh task id unless one is given."""
    now = utcnow()
    task_id = task_id or f"task-{next(_seq)}"
    return Job(
        id=new_job_id(provider, task_id),
        session_id=session_id,
        task_id=task_id,
        model=model,
        provider=provider,
        state=state,
        created_at=now,
        updated_at=now,
        due_at=due_at or now,
        **changes,
    )
