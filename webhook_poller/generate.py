"""``POST /generate`` on the request side: the cheap checks, the job, the Idempotency-Key.

Every check here runs before any paid call: the prompt, then the model's capability table
(declared by the adapter, see :class:`~webhook_poller.interfaces.ModelCapabilities`), then
the ``options`` against the adapter's ``GenerateOptions`` model. A refusal is a 422 naming
the field and, where there is a list, the allowed values.

The job records the checked request (``Job.request``); the scheduler submits it
(:mod:`.submission`), and a retry of the job replays it as a new job (:func:`regenerate`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel, ValidationError

from . import inputs, shapes
from .errors import Conflict, NotFound, RequestRejected
from .interfaces import HasGenerateOptions, ModelCapabilities, Submits
from .model import TERMINAL_STATES, Job, JobState, utcnow

if TYPE_CHECKING:
    from .services import Services

log = structlog.get_logger(__name__)

MAX_PROMPT_CHARS = shapes.MAX_PROMPT_CHARS
MAX_COUNT = shapes.MAX_COUNT
MAX_KEY_LEN = 256
#: The fields of the body (:class:`~webhook_poller.shapes.GenerateRequest`); anything else is
#: refused so a typo is not silently ignored.
FIELDS = shapes.GENERATE_FIELDS


def _allowed(field: str, value: Any, allowed: Sequence[Any], what: str) -> RequestRejected:
    shown = ", ".join(str(a) for a in allowed) if allowed else "none (leave it out)"
    text = value if isinstance(value, str | int | float) else type(value).__name__
    return RequestRejected(
        f"{field} {str(text)[:40]!r} is not offered by {what}; allowed: {shown}",
        field=field,
        extra={"allowed": list(allowed)},
    )


def submitting_adapter(services: Services, name: str, model: str) -> tuple[Any, ModelCapabilities]:
    """The adapter that can submit ``model`` and the model's capabilities, or a 422."""
    adapter = services.adapters.get(name)
    table: Mapping[str, ModelCapabilities] = {}
    if adapter is not None and isinstance(adapter, Submits):
        table = adapter.capabilities
    if not table:
        models = generatable_models(services)
        raise RequestRejected(
            f"model {model[:80]!r} ({name}) cannot be generated here; models that can: "
            f"{', '.join(models) or 'none'}",
            field="model",
            extra={"allowed": models},
        )
    caps = table.get(model) or table.get(model.lower())
    if caps is None:
        raise _allowed("model", model, sorted(table), name)
    return adapter, caps


def generatable_models(services: Services) -> list[str]:
    models: set[str] = set()
    for adapter in services.adapters.values():
        if isinstance(adapter, Submits):
            models.update(adapter.capabilities)
    return sorted(models)


def check_request(
    data: Mapping[str, Any], adapter: Any, caps: ModelCapabilities, model: str
) -> dict[str, Any]:
    """The generation fields checked against the model; returns their normalized form."""
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise RequestRejected(
            f"unknown field {unknown[0][:40]!r}; fields: {', '.join(sorted(FIELDS))}",
            field=unknown[0][:40],
            extra={"allowed": sorted(FIELDS)},
        )
    prompt = data.get("prompt")
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        raise RequestRejected("prompt is required and must not be blank", field="prompt")
    if not isinstance(prompt, str):
        raise RequestRejected("prompt must be a string", field="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RequestRejected(
            f"prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS} are allowed",
            field="prompt",
        )
    images = _images(data, caps, model)
    aspect = _optional_str(data, "aspectRatio")
    if aspect is not None and aspect not in caps.aspect_ratios:
        raise _allowed("aspectRatio", aspect, caps.aspect_ratios, model)
    resolution = _optional_str(data, "resolution")
    if resolution is not None and resolution not in caps.resolutions:
        raise _allowed("resolution", resolution, caps.resolutions, model)
    duration = _optional_int(data, "durationSeconds")
    if duration is not None and duration not in caps.durations_s:
        raise _allowed("durationSeconds", duration, caps.durations_s, model)
    count = _optional_int(data, "count")
    if count is None:
        count = 1
    if not 1 <= count <= MAX_COUNT:
        raise _allowed("count", count, list(range(1, MAX_COUNT + 1)), "this service")
    return {
        "prompt": prompt,
        "imageUrls": images,
        "aspectRatio": aspect,
        "durationSeconds": duration,
        "resolution": resolution,
        "count": count,
        "options": check_options(adapter, data.get("options")),
    }


def _images(data: Mapping[str, Any], caps: ModelCapabilities, model: str) -> list[str]:
    images = data.get("imageUrls")
    if images is None or images == "":
        images = []
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(u, str) for u in images):
        raise RequestRejected("imageUrls must be a list of URLs", field="imageUrls")
    for url in images:
        if not url.lower().startswith(("https://", "http://")) or len(url) > 2048:
            raise RequestRejected("each of imageUrls must be an http(s) URL", field="imageUrls")
    if not caps.min_images <= len(images) <= caps.max_images:
        allowed = list(range(caps.min_images, caps.max_images + 1))
        raise RequestRejected(
            f"{model} takes {caps.min_images} to {caps.max_images} images in imageUrls, "
            f"not {len(images)}",
            field="imageUrls",
            extra={"allowed": allowed},
        )
    return images


def check_options(adapter: Any, value: Any) -> dict[str, Any]:
    """``options`` against the adapter's ``GenerateOptions``; a 422 names the bad key."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        value = inputs.load_json(value, "options", field="options")
    if not isinstance(value, dict):
        raise RequestRejected("options must be a JSON object", field="options")
    model = adapter.GenerateOptions if isinstance(adapter, HasGenerateOptions) else None
    known = sorted(model.model_fields) if model is not None else []
    if model is None or model is BaseModel:
        if value:
            raise RequestRejected(
                "this provider takes no options", field="options", extra={"allowed": []}
            )
        return {}
    try:
        checked = model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first.get("loc", ())) or "?"
        why = (
            "is not an option of this provider"
            if first.get("type") == "extra_forbidden"
            else (str(first.get("msg", "is not valid"))[:200])
        )
        raise RequestRejected(
            f"options.{name[:40]} {why}; options: {', '.join(known) or 'none'}",
            field=f"options.{name[:40]}",
            extra={"allowed": known},
        ) from None
    return checked.model_dump(exclude_none=True)


def _optional_str(data: Mapping[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RequestRejected(f"{field} must be a string", field=field)
    return value.strip()


def _optional_int(data: Mapping[str, Any], field: str) -> int | None:
    value = data.get(field)
    if value is None or value == "":
        return None
    return inputs.client_int(
        value, field, default=0, low=-(10**9), high=10**9, allow_integral_float=True
    )


def request_hash(request: Mapping[str, Any]) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_hash(header: str | None) -> str | None:
    """The stored form of an ``Idempotency-Key`` (a hash: the key itself is not kept)."""
    if header is None:
        return None
    key = header.strip()
    if not key:
        return None
    if len(key) > MAX_KEY_LEN or not key.isprintable():
        raise RequestRejected(
            f"Idempotency-Key must be printable and at most {MAX_KEY_LEN} characters",
            field="Idempotency-Key",
            status_code=400,
        )
    return hashlib.sha256(key.encode()).hexdigest()


def new_job(
    *,
    session_id: str,
    model: str,
    provider: str,
    request: Mapping[str, Any],
    callback_url: str | None,
    context: Mapping[str, Any] | None,
    idempotency_key: str | None,
    now: datetime,
    retry_of: str | None = None,
    attempt_number: int = 1,
) -> Job:
    """A job in ``submitting`` that records its request (task ids come with the submission)."""
    return Job(
        id=f"job_{uuid.uuid4().hex[:24]}",
        session_id=session_id,
        task_id="",
        model=model,
        provider=provider,
        state=JobState.SUBMITTING,
        created_at=now,
        updated_at=now,
        due_at=now,
        callback_url=callback_url,
        context=context,
        request=dict(request),
        request_hash=request_hash(
            {
                **request,
                "sessionId": session_id,
                "model": model,
                "provider": provider,
                "callbackUrl": callback_url,
                "context": context,
            }
        ),
        idempotency_key=idempotency_key,
        retry_of=retry_of,
        attempt_number=attempt_number,
    )


def check_replay(stored: Job, job: Job) -> None:
    """Same Idempotency-Key: the same body gives the stored job, another body is a 409."""
    if stored.request_hash != job.request_hash:
        raise Conflict(
            "this Idempotency-Key was used with a different request; use a new key",
            field="Idempotency-Key",
            extra={"jobId": stored.id},
        )


async def retry(
    services: Services, job_id: str, idempotency_key: str | None = None
) -> tuple[Job, str]:
    """What "retry" means for this job: ``("resubmitted", new job)`` for a job we submitted
    (a new provider task, see :func:`regenerate`), ``("requeued", same job)`` for a poll-only
    job (polled again, :func:`lifecycle.retry`). Returns (job, action)."""
    from . import lifecycle

    job = await services.store.get(job_id)
    if job is None:
        raise NotFound("no such job")
    if not job.submitted:
        return await lifecycle.retry(services, job_id), "requeued"
    return await regenerate(services, job_id, idempotency_key), "resubmitted"


async def regenerate(services: Services, job_id: str, idempotency_key: str | None) -> Job:
    """A new job with the original parameters of a job we submitted (``retryOf`` links it).

    Only a finished job can be regenerated; the new job counts ``attemptNumber`` on.
    """
    old = await services.store.get(job_id)
    if old is None:
        raise NotFound("no such job")
    if old.request is None:
        raise Conflict("this job was not submitted by this service", extra={"jobId": old.id})
    if old.state not in TERMINAL_STATES:
        raise Conflict(
            f"the job is {old.state.value}; only a finished job can be generated again",
            extra={"status": old.state.value},
        )
    job = new_job(
        session_id=old.session_id,
        model=old.model,
        provider=old.provider,
        request=old.request,
        callback_url=old.callback_url,
        context=old.context,
        idempotency_key=idempotency_key,
        now=utcnow(),
        retry_of=old.id,
        attempt_number=old.attempt_number + 1,
    )
    stored, created = await services.store.create(job)
    if not created:
        if stored.retry_of != old.id:
            raise Conflict(
                "this Idempotency-Key was used with a different request; use a new key",
                field="Idempotency-Key",
                extra={"jobId": stored.id},
            )
        return stored
    log.info("job_regenerated", job_id=stored.id, retry_of=old.id, attempt=stored.attempt_number)
    return stored
