"""Follow-ups of a finished video as linked jobs: extend, upscale, and a publish request.

``POST /jobs/{id}/extend {prompt, index?}`` and ``POST /jobs/{id}/upscale {resolution,
index?}`` store a new job in ``submitting`` whose ``parentJobId`` names the finished job and
whose request records what to do with which of its videos (``followUp``, ``parentTaskId``,
``index``). The scheduler starts it through the adapter's ``follow_up`` hook (KIE Veo:
``/api/v1/veo/extend``; an upscale is polled on ``get-1080p-video`` / ``get-4k-video`` at its
own cadence), and the result is delivered like any job: the new job carries the parent's
session, context and callbacks, so it reaches the same chat and the same workflow.

:func:`publish` records a ``video.publish_requested`` event for the webhook targets (the
Telegram Publish button).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from .errors import Conflict, NotFound, RequestRejected
from .generate import MAX_PROMPT_CHARS, new_job
from .interfaces import FollowsUp
from .model import Delivery, Event, Job, JobState, utcnow, webhook_id_for
from .views import event_payload, video_refs

if TYPE_CHECKING:
    from .services import Services

log = structlog.get_logger(__name__)

RESOLUTIONS = ("1080p", "4k")
#: What an Extend press asks for when the job recorded no prompt of its own.
DEFAULT_EXTEND_PROMPT = "Continue the scene naturally."


async def _parent(services: Services, job_id: str, kind: str) -> tuple[Job, Any]:
    job = await services.store.get(job_id)
    if job is None:
        raise NotFound("no such job")
    adapter = services.adapters.get(job.provider)
    if adapter is None or not isinstance(adapter, FollowsUp) or kind not in adapter.follow_ups:
        offering = [
            n
            for n, a in services.adapters.items()
            if isinstance(a, FollowsUp) and kind in a.follow_ups
        ]
        raise RequestRejected(
            f"{kind} is not offered for provider {job.provider!r}; providers that offer it: "
            f"{', '.join(sorted(offering)) or 'none'}",
            field="jobId",
            extra={"allowed": sorted(offering)},
        )
    if job.state is not JobState.SUCCEEDED:
        raise Conflict(
            f"the job is {job.state.value}; only a succeeded job can be followed up",
            extra={"status": job.state.value},
        )
    return job, adapter


def _index(data: Mapping[str, Any], job: Job) -> int:
    value = data.get("index")
    count = len(job.all_task_ids)
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise RequestRejected(
            f"index must be one of the job's videos, 0 to {count - 1}",
            field="index",
            extra={"allowed": list(range(count))},
        )
    return value


async def _create(
    services: Services,
    parent: Job,
    request: dict[str, Any],
    key: str | None,
    context: Mapping[str, Any] | None = None,
) -> Job:
    job = new_job(
        session_id=parent.session_id,
        model=parent.model,
        provider=parent.provider,
        request={**request, "count": 1},
        callback_url=parent.callback_url,
        context=context if context is not None else parent.context,
        idempotency_key=key,
        now=utcnow(),
    )
    job = dataclasses.replace(
        job, parent_job_id=parent.id, extra_callback_urls=parent.extra_callback_urls
    )
    stored, created = await services.store.create(job)
    if not created and stored.request_hash != job.request_hash:
        raise Conflict(
            "this Idempotency-Key was used with a different request; use a new key",
            field="Idempotency-Key",
            extra={"jobId": stored.id},
        )
    if created:
        log.info("follow_up_created", job_id=stored.id, parent=parent.id, kind=request["followUp"])
    return stored


async def extend(
    services: Services,
    job_id: str,
    data: Mapping[str, Any],
    key: str | None = None,
    *,
    chat_id: Any = None,
) -> Job:
    """A new job extending video ``index`` of a finished job with ``prompt``. ``chat_id``
    (a Telegram press) is added to the context when it names no chat, so the extended
    video reaches the chat that asked even once the session is gone."""
    parent, _adapter = await _parent(services, job_id, "extend")
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RequestRejected("prompt is required and must not be blank", field="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RequestRejected(
            f"prompt is longer than {MAX_PROMPT_CHARS} characters", field="prompt"
        )
    index = _index(data, parent)
    request = {
        "followUp": "extend",
        "prompt": prompt,
        "index": index,
        "parentTaskId": parent.all_task_ids[index],
    }
    context = parent.context
    if chat_id is not None and not any((context or {}).get(k) for k in ("chatId", "chat_id")):
        context = {**(context or {}), "chatId": chat_id}
    return await _create(services, parent, request, key, context)


async def upscale(
    services: Services, job_id: str, data: Mapping[str, Any], key: str | None = None
) -> Job:
    """A new job fetching video ``index`` of a finished job at 1080p or 4K."""
    parent, _adapter = await _parent(services, job_id, "upscale")
    resolution = data.get("resolution")
    if resolution not in RESOLUTIONS:
        raise RequestRejected(
            f"resolution must be one of {', '.join(RESOLUTIONS)}",
            field="resolution",
            extra={"allowed": list(RESOLUTIONS)},
        )
    index = _index(data, parent)
    request = {
        "followUp": "upscale",
        "prompt": "",
        "resolution": resolution,
        "index": index,
        "parentTaskId": parent.all_task_ids[index],
    }
    return await _create(services, parent, request, key)


def extend_prompt(job: Job) -> str:
    """The prompt an Extend button press continues with: the job's own, else a default."""
    prompt = (job.request or {}).get("prompt")
    return prompt if isinstance(prompt, str) and prompt.strip() else DEFAULT_EXTEND_PROMPT


async def publish(services: Services, job_id: str) -> Job:
    """Record a ``video.publish_requested`` event of a succeeded job for every notifier
    subscribed to it (webhook targets by default); the outbox delivers it."""
    job = await services.store.get(job_id)
    if job is None:
        raise NotFound("no such job")
    if job.state is not JobState.SUCCEEDED:
        raise Conflict(f"the job is {job.state.value}; only a finished video can be published")
    event = Event.PUBLISH_REQUESTED
    now = utcnow()
    refs = await video_refs(job, services)
    payload = event_payload(job, event, refs, services.settings.server.base_url())
    rows = [
        Delivery(
            job_id=job.id,
            run=job.run,
            event=event,
            target=n.name,
            webhook_id=webhook_id_for(job.id, job.run, event, n.name),
            payload=payload,
            next_attempt_at=now,
            created_at=now,
        )
        for n in services.notifiers
        if event.value in n.events or "*" in n.events
    ]
    saved = await services.store.save(job, expected_version=job.version, deliveries=rows)
    log.info("publish_requested", job_id=job.id, targets=len(rows))
    return saved
