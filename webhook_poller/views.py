"""The public JSON shapes: a job as the API shows it, and the flat event notifiers receive."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .interfaces import VideoRef
from .logging import scrub
from .model import Delivery, Event, Job, iso, user_message

if TYPE_CHECKING:
    from .services import Services

#: The ``status`` an event reports, as in the webhook contract.
EVENT_STATUS = {
    Event.SUCCEEDED: "succeeded",
    Event.FAILED: "failed",
    Event.TIMED_OUT: "failed",
    Event.DELAYED: "delayed",
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


def error_json(job: Job) -> dict[str, Any] | None:
    if job.error_code is None:
        return None
    data: dict[str, Any] = {
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
) -> dict[str, Any]:
    """The full shape of ``GET /jobs/{jobId}``: the summary plus links, metadata, deliveries."""
    data = job_summary(job, base_url, queue_position)
    has_callback = bool(job.callback_url or job.extra_callback_urls)
    data.update(
        {
            "delayedAt": iso(job.delayed_at),
            "elapsedSeconds": round(job.elapsed_s(), 3),
            "videoUrls": [r.url for r in refs],
            "videos": [
                {"index": r.index, "url": r.url, "metadata": r.metadata.to_dict()} for r in refs
            ],
            "metadata": [r.metadata.to_dict() for r in refs],
            "hasCallback": has_callback,
            # Deprecated: the same boolean under its old, URL-like name; kept for one release
            # for outside checks that read it. The URL itself is never shown (it may be signed).
            "callbackUrl": has_callback,
            "expectPush": job.expect_push,
            "context": dict(job.context) if job.context is not None else None,
        }
    )
    if deliveries is not None:
        data["deliveries"] = [d.to_public() for d in deliveries]
    return data


def job_summary(job: Job, base_url: str, queue_position: int | None = None) -> dict[str, Any]:
    """The compact shape of a job in lists and live streams: stable while nothing changes
    (no signed links, no elapsed time: clients compute it from the timestamps)."""
    data: dict[str, Any] = {
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
        data.update(
            {
                "taskId": job.task_id or None,
                "taskIds": list(job.task_ids),
                "retryOf": job.retry_of,
                "attemptNumber": job.attempt_number,
            }
        )
    return data


def event_payload(
    job: Job, event: Event, refs: Sequence[VideoRef], base_url: str
) -> dict[str, Any]:
    """The flat JSON every webhook target receives (also handed to every notifier)."""
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
        "metadata": [r.metadata.to_dict() for r in refs],
        "statusUrl": status_url(job, base_url),
        "createdAt": iso(job.created_at),
        "finishedAt": iso(job.finished_at),
    }
