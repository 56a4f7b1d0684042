"""Runway's official API: ``GET /v1/tasks/{id}`` with ``X-Runway-Version``.

:func:`parse_runway_task` is pure. States PENDING, THROTTLED (Runway holds the task until a
concurrency slot frees: waiting, not failing) and RUNNING are pending; SUCCEEDED carries
``output[]`` URLs that expire within 24-48 h (so the download starts at once); FAILED is
classified by ``failureCode`` (``SAFETY.*`` and ``INPUT_PREPROCESSING.SAFETY.*`` are
moderation, ``ASSET.*`` a bad input asset), falling back to the ``failure`` text;
CANCELLED is a final failure. Provider text only ever lands in ``detail``.

Generations start with ``POST /v1/text_to_video`` (no image) or ``POST /v1/image_to_video``
(``promptImage``: one URL, or first and last frames), both answering ``{id}``. Runway
documents no completion webhook, so these jobs are polled; nor a way to list tasks, so a
create call whose answer was lost cannot be looked up (the core fails such a job rather than
pay twice). Runway documents no per-minute create limit either: past the account's
concurrency a task waits as THROTTLED, so the core's default create budget applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from webhook_poller.errors import UnrecognizedResponse
from webhook_poller.interfaces import ModelCapabilities, PollResult, PollStatus
from webhook_poller.model import ErrorCode
from webhook_poller.options import ProviderOptions

from . import _direct_submit as ds
from ._provider_http import DirectAdapter, as_fraction, segment
from .kie import classify_failure, extract_urls

if TYPE_CHECKING:
    from webhook_poller.interfaces import GenerationRequest, ProviderTask, SubmitResult

PENDING = frozenset({"PENDING", "THROTTLED", "RUNNING", "QUEUED", "IN_PROGRESS", "STARTING"})
FAILED = frozenset({"FAILED", "FAILURE", "ERROR"})
CANCELLED = frozenset({"CANCELLED", "CANCELED", "ABORTED"})


class RunwayOptions(ProviderOptions):
    """``providers.runway``; Runway asks clients to poll a task no more than every 5 s."""

    base_url: str | None = "https://api.dev.runwayml.com"
    min_interval_s: float = Field(default=5.0, ge=0)
    max_requests_per_s: float = Field(default=5.0, ge=0)
    #: The ``X-Runway-Version`` header every request must carry.
    api_version: str = "2024-11-06"


def classify_runway_failure(code: str, message: str) -> ErrorCode:
    """``failureCode`` families first (documented), the text only when there is no code."""
    upper = code.strip().upper()
    if upper.startswith("SAFETY") or ".SAFETY" in upper:
        return ErrorCode.MODERATION_REJECTED
    if upper.startswith(("ASSET", "INPUT_PREPROCESSING.ASSET")):
        return ErrorCode.ASSET_FETCH_FAILED
    if upper:
        return ErrorCode.UNKNOWN_PROVIDER_ERROR
    return classify_failure(None, message)


def _output_urls(value: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(extract_urls(value)))


def parse_runway_task(payload: object) -> PollResult:
    """Read one Runway task object; raise UnrecognizedResponse when we cannot."""
    if not isinstance(payload, Mapping):
        raise UnrecognizedResponse("the body is not a JSON object", provider="runway")
    raw = payload.get("status")
    if not isinstance(raw, str) or not raw.strip():
        raise UnrecognizedResponse("no status in the task", provider="runway")
    word = raw.strip().upper().replace("-", "_").replace(" ", "_")
    if word in PENDING:
        progress = as_fraction(payload.get("progress"))
        return PollResult(PollStatus.PENDING, progress=progress)
    if word in ("SUCCEEDED", "SUCCESS", "COMPLETED"):
        return PollResult(
            PollStatus.SUCCEEDED, video_urls=_output_urls(payload.get("output")), progress=1.0
        )
    code = payload.get("failureCode")
    code_text = code if isinstance(code, str) else ""
    message = payload.get("failure")
    message_text = message if isinstance(message, str) else ""
    if word in FAILED:
        return PollResult(
            PollStatus.FAILED,
            error_code=classify_runway_failure(code_text, message_text),
            detail=" ".join(p for p in (code_text, message_text) if p) or "FAILED",
        )
    if word in CANCELLED:
        return PollResult(
            PollStatus.FAILED,
            error_code=ErrorCode.UNKNOWN_PROVIDER_ERROR,
            detail="the task was cancelled at the provider",
        )
    raise UnrecognizedResponse(f"unknown task status {word[:40]!r}", provider="runway")


class RunwayContentModeration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    publicFigureThreshold: Literal["auto", "low"] | None = None


class RunwayGenerateOptions(BaseModel):
    """``options`` of a Runway generation (the create bodies' optional fields)."""

    model_config = ConfigDict(extra="forbid")

    seed: int | None = Field(default=None, ge=0, le=4294967295)
    contentModeration: RunwayContentModeration | None = None


#: Runway's ``ratio`` values are output sizes ("1280:720"), and ``aspectRatio`` takes them as
#: they are. From the API reference (2024-11-06): gen4_turbo and gen3a_turbo need an image;
#: the Veo models and gen4.5 take text alone or one image.
_GEN4_RATIOS = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
_VEO_RATIOS = ("1280:720", "720:1280", "1080:1920", "1920:1080")
CAPABILITIES: dict[str, ModelCapabilities] = {
    "gen4_turbo": ModelCapabilities(
        durations_s=tuple(range(2, 11)), aspect_ratios=_GEN4_RATIOS, min_images=1, max_images=1
    ),
    "gen4.5": ModelCapabilities(
        durations_s=tuple(range(2, 11)), aspect_ratios=("1280:720", "720:1280"), max_images=1
    ),
    # gen3a_turbo: the image may be the first frame, or first and last.
    "gen3a_turbo": ModelCapabilities(
        durations_s=(5, 10), aspect_ratios=("1280:768", "768:1280"), min_images=1, max_images=2
    ),
    "veo3": ModelCapabilities(durations_s=(8,), aspect_ratios=_VEO_RATIOS, max_images=1),
    "veo3.1": ModelCapabilities(durations_s=(4, 6, 8), aspect_ratios=_VEO_RATIOS, max_images=1),
    "veo3.1_fast": ModelCapabilities(
        durations_s=(4, 6, 8), aspect_ratios=_VEO_RATIOS, max_images=1
    ),
}


def create_call(request: GenerationRequest) -> tuple[str, dict[str, Any]]:
    """(path, body) of the create call. Runway requires ``ratio`` and ``duration``: left out
    of the request, the model's first ratio and its longest duration are sent."""
    caps = CAPABILITIES.get(request.model, ModelCapabilities())
    ratios, durations = caps.aspect_ratios or (None,), caps.durations_s or (None,)
    body = ds.present(
        {
            "model": request.model,
            "promptText": request.prompt,
            "ratio": request.aspect_ratio or ratios[0],
            "duration": request.duration_s or durations[-1],
            **request.options,
        }
    )
    images = request.image_urls
    if not images:
        return "/v1/text_to_video", body
    if len(images) == 1:
        body["promptImage"] = images[0]
    else:
        body["promptImage"] = [
            {"uri": images[0], "position": "first"},
            {"uri": images[-1], "position": "last"},
        ]
    return "/v1/image_to_video", body


class RunwayAdapter(DirectAdapter):
    """Polls ``GET {base_url}/v1/tasks/{id}``; key from ``RUNWAYML_API_SECRET``."""

    name = "runway"
    config_section = "runway"
    Options: ClassVar[type[ProviderOptions]] = RunwayOptions
    env_key = "RUNWAYML_API_SECRET"
    #: Runway: output URLs "expire within 24-48 hours"; the short end counts.
    result_link_ttl_s: ClassVar[float] = 86400.0
    capabilities: ClassVar[Mapping[str, ModelCapabilities]] = CAPABILITIES
    GenerateOptions: ClassVar[type[BaseModel]] = RunwayGenerateOptions

    def auth_headers(self) -> dict[str, str]:
        version = str(getattr(self.options, "api_version", "") or "2024-11-06")
        return {"Authorization": f"Bearer {self._require_key()}", "X-Runway-Version": version}

    async def poll(self, task: ProviderTask, http: httpx.AsyncClient) -> PollResult:
        body = await self.get_json(http, f"/v1/tasks/{segment(task.task_id)}")
        return parse_runway_task(body)

    async def submit(self, request: GenerationRequest, http: httpx.AsyncClient) -> SubmitResult:
        """``POST /v1/text_to_video`` or ``/v1/image_to_video``; the task ``id`` is the task id."""
        path, body = create_call(request)
        answer = await ds.create(http, self, path, body)
        return ds.submitted(answer.get("id"), provider=self.name)
