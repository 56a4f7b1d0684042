"""Turn jobs and deliveries into plain JSON-able dicts and back; shared by every store."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..logging import scrub_optional
from ..model import (
    Delivery,
    DeliveryStatus,
    ErrorCode,
    Event,
    Job,
    JobState,
    StoredVideo,
)


def ts(value: datetime | None) -> float | None:
    """Aware datetime -> epoch seconds (what stores index on)."""
    return value.timestamp() if value is not None else None


def dt(value: float | str | bytes | None) -> datetime | None:
    if value is None or value == "" or value == b"":
        return None
    return datetime.fromtimestamp(float(value), UTC)


def job_to_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "session_id": job.session_id,
        "task_id": job.task_id,
        "model": job.model,
        "provider": job.provider,
        "state": job.state.value,
        "created_at": ts(job.created_at),
        "updated_at": ts(job.updated_at),
        "due_at": ts(job.due_at),
        "start_attempt": job.start_attempt,
        "polls": job.polls,
        "transient_failures": job.transient_failures,
        "empty_successes": job.empty_successes,
        "callback_url": job.callback_url,
        "extra_callback_urls": list(job.extra_callback_urls),
        "context": dict(job.context) if job.context is not None else None,
        "error_code": job.error_code.value if job.error_code else None,
        "error_detail": scrub_optional(job.error_detail),
        "result_urls": list(job.result_urls),
        "videos": [v.to_dict() for v in job.videos],
        "delayed_at": ts(job.delayed_at),
        "finished_at": ts(job.finished_at),
        "run": job.run,
        "reclaims": job.reclaims,
        "expect_push": job.expect_push,
        "version": job.version,
        "lease_owner": job.lease_owner,
        "lease_expires_at": ts(job.lease_expires_at),
        "request": dict(job.request) if job.request is not None else None,
        "request_hash": job.request_hash,
        "idempotency_key": job.idempotency_key,
        "task_ids": list(job.task_ids),
        "submit_intent": job.submit_intent,
        "retry_of": job.retry_of,
        "attempt_number": job.attempt_number,
    }


def job_from_dict(data: Mapping[str, Any]) -> Job:
    created = dt(data["created_at"])
    assert created is not None
    return Job(
        id=data["id"],
        session_id=data["session_id"],
        task_id=data["task_id"],
        model=data["model"],
        provider=data["provider"],
        state=JobState(data["state"]),
        created_at=created,
        updated_at=dt(data.get("updated_at")) or created,
        due_at=dt(data.get("due_at")) or created,
        start_attempt=int(data.get("start_attempt") or 1),
        polls=int(data.get("polls") or 0),
        transient_failures=int(data.get("transient_failures") or 0),
        empty_successes=int(data.get("empty_successes") or 0),
        callback_url=data.get("callback_url"),
        extra_callback_urls=tuple(data.get("extra_callback_urls") or ()),
        context=data.get("context"),
        error_code=ErrorCode(data["error_code"]) if data.get("error_code") else None,
        error_detail=data.get("error_detail"),
        result_urls=tuple(data.get("result_urls") or ()),
        videos=tuple(StoredVideo.from_dict(v) for v in data.get("videos") or ()),
        delayed_at=dt(data.get("delayed_at")),
        finished_at=dt(data.get("finished_at")),
        run=int(data.get("run") or 0),
        reclaims=int(data.get("reclaims") or 0),
        expect_push=bool(data.get("expect_push") or False),
        version=int(data.get("version") or 0),
        lease_owner=data.get("lease_owner") or None,
        lease_expires_at=dt(data.get("lease_expires_at")),
        request=data.get("request"),
        request_hash=data.get("request_hash"),
        idempotency_key=data.get("idempotency_key"),
        task_ids=tuple(data.get("task_ids") or ()),
        submit_intent=data.get("submit_intent"),
        retry_of=data.get("retry_of"),
        attempt_number=int(data.get("attempt_number") or 1),
    )


def delivery_to_dict(delivery: Delivery) -> dict[str, Any]:
    return {
        "job_id": delivery.job_id,
        "run": delivery.run,
        "event": delivery.event.value,
        "target": delivery.target,
        "webhook_id": delivery.webhook_id,
        "payload": dict(delivery.payload),
        "status": delivery.status.value,
        "attempts": delivery.attempts,
        "next_attempt_at": ts(delivery.next_attempt_at),
        "last_error": scrub_optional(delivery.last_error),
        "created_at": ts(delivery.created_at),
        "sent_at": ts(delivery.sent_at),
    }


def delivery_from_dict(data: Mapping[str, Any]) -> Delivery:
    payload = data.get("payload") or {}
    if isinstance(payload, str | bytes):
        payload = json.loads(payload)
    return Delivery(
        job_id=data["job_id"],
        run=int(data.get("run") or 0),
        event=Event(data["event"]),
        target=data["target"],
        webhook_id=data["webhook_id"],
        payload=payload,
        status=DeliveryStatus(data.get("status") or "pending"),
        attempts=int(data.get("attempts") or 0),
        next_attempt_at=dt(data.get("next_attempt_at")),
        last_error=data.get("last_error"),
        created_at=dt(data.get("created_at")),
        sent_at=dt(data.get("sent_at")),
    )


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
