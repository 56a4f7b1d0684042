"""The public JSON answers: a job as the API shows it, and the flat event notifiers receive.

The shapes themselves are declared once in :mod:`.shapes`; the functions here fill them
from a :class:`~webhook_poller.model.Job` (mypy checks every key against the shape), and
:func:`json_answer` serializes one with the shape's compiled serializer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar, cast
from urllib.parse import quote

from pydantic import TypeAdapter
from starlette.responses import Response

from . import shapes
from .interfaces import VideoRef
from .logging import scrub
from .model import Delivery, Event, Job, iso, user_message

if TYPE_CHECKING:
    from .services import Services

T = TypeVar("T")

#: The ``status`` an event reports, as in the webhook contract.
EVENT_STATUS: dict[Event, shapes.EventStatus] = {
    Event.SUCCEEDED: "succeeded",
    Event.FAILED: "failed",
    Event.TIMED_OUT: "failed",
    Event.DELAYED: "delayed",
    Event.PUBLISH_REQUESTED: "succeeded",
}


async def video_refs(job: Job, services: Services) -> list[VideoRef]:
    """Links to a job's stored videos that work without our API token."""
    expiry = services.settings.storage.link_expiry_s
    refs = []
    for video in job.videos:
        url = await services.blobs.url_for(
            video.key, expires_s=expiry, filename=f"{job.id}-{video.index}.mp4"
        )
        if url is None:
            assert services.links is not None
            url = services.links.video_url(job.id, video.index, expiry)
        refs.append(VideoRef(video.index, url, video.key, video.metadata))
    return refs


def status_url(job: Job, base_url: str) -> str:
    return f"{base_url}/jobs/{quote(job.id)}"


def json_answer(
    shape: TypeAdapter[T], data: T, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """``data`` as JSON through its shape's serializer (keys outside the shape are dropped)."""
    return Response(
        shape.dump_json(data), status_code, headers=headers, media_type="application/json"
    )


def job_answer(detail: shapes.JobDetail, action: str | None = None) -> Response:
    """A job answer: ``{"ok": true, ...}`` around :func:`job_json`, ``action`` for a retry."""
    # strict mypy wants every optional key of the target in the ** item (extra_checks)
    data: shapes.Job = {"ok": True, **detail}  # type: ignore[typeddict-item]
    if action is not None:
        data["action"] = action
    return json_answer(shapes.JOB, data)


def _metadata(refs: Sequence[VideoRef]) -> list[shapes.VideoMetadata]:
    """Each video's metadata (``VideoMetadata.to_dict`` gives exactly the shape's keys)."""
    return cast("list[shapes.VideoMetadata]", [r.metadata.to_dict() for r in refs])


def error_json(job: Job) -> shapes.JobError | None:
    if job.error_code is None:
        return None
    data: shapes.JobError = {
        "code": job.error_code.value,
        "message": user_message(job.state, job.error_code),
    }
    if job.error_detail:
        # Our own explanation (never a provider's raw text): why a URL was refused, etc.
        data["reason"] = scrub(job.error_detail)  # also in the event it goes out in
    return data


def job_json(
    job: Job,
    refs: Sequence[VideoRef],
    base_url: str,
    *,
    deliveries: Sequence[Delivery] | None = None,
    queue_position: int | None = None,
) -> shapes.JobDetail:
    """The full shape of ``GET /jobs/{jobId}``: the summary plus links, metadata, deliveries."""
    has_callback = bool(job.callback_url or job.extra_callback_urls)
    metadata = _metadata(refs)
    # mypy's strict ** check asks for the optional "deliveries" key in the summary it unpacks
    data: shapes.JobDetail = {
        **job_summary(job, base_url, queue_position),  # type: ignore[typeddict-item]
        "delayedAt": iso(job.delayed_at),
        "elapsedSeconds": round(job.elapsed_s(), 3),
        "videoUrls": [r.url for r in refs],
        "videos": [
            {"index": r.index, "url": r.url, "metadata": m}
            for r, m in zip(refs, metadata, strict=True)
        ],
        "metadata": metadata,
        "hasCallback": has_callback,
        # Deprecated: the same boolean under its old, URL-like name; kept for one release
        # for outside checks that read it. The URL itself is never shown (it may be signed).
        "callbackUrl": has_callback,
        "expectPush": job.expect_push,
        "context": dict(job.context) if job.context is not None else None,
    }
    if deliveries is not None:
        data["deliveries"] = [cast("shapes.Delivery", d.to_public()) for d in deliveries]
    return data


def job_summary(job: Job, base_url: str, queue_position: int | None = None) -> shapes.JobSummary:
    """The compact shape of a job in lists and live streams: stable while nothing changes
    (no signed links, no elapsed time: clients compute it from the timestamps)."""
    data: shapes.JobSummary = {
        "jobId": job.id,
        "sessionId": job.session_id,
        "taskId": job.task_id,
        "model": job.model,
        "provider": job.provider,
        "status": job.state.value,
        "message": job.user_message,
        "attempts": job.attempts,
        "createdAt": iso(job.created_at),
        "updatedAt": iso(job.updated_at),
        "finishedAt": iso(job.finished_at),
        "nextPollAt": iso(job.due_at) if not job.is_terminal else None,
        "error": error_json(job),
        "videoCount": len(job.videos),
        "statusUrl": status_url(job, base_url),
    }
    if queue_position is not None:
        data["queuePosition"] = queue_position
    if job.submitted:
        data["taskId"] = job.task_id or None
        data["taskIds"] = list(job.task_ids)
        data["retryOf"] = job.retry_of
        data["attemptNumber"] = job.attempt_number
        data["parentJobId"] = job.parent_job_id
    return data


def event_payload(
    job: Job, event: Event, refs: Sequence[VideoRef], base_url: str
) -> shapes.VideoEvent:
    """The flat JSON every webhook target receives (also handed to every notifier)."""
    metadata = _metadata(refs)
    return {
        "event": event.value,
        "jobId": job.id,
        "sessionId": job.session_id,
        "taskId": job.task_id,
        "model": job.model,
        "provider": job.provider,
        "status": EVENT_STATUS[event],
        "videoUrls": [r.url for r in refs],
        "error": error_json(job),
        "userMessage": job.user_message,
        "attempts": job.attempts,
        "elapsedSeconds": round(job.elapsed_s(), 3),
        "context": dict(job.context) if job.context is not None else None,
        "metadata": metadata,
        "statusUrl": status_url(job, base_url),
        "createdAt": iso(job.created_at),
        "finishedAt": iso(job.finished_at),
    }
