"""Luma Dream Machine: ``GET /dream-machine/v1/generations/{id}``.

:func:`parse_luma_generation` is pure. ``state`` is queued | dreaming | completed | failed;
the video is ``assets.video`` (a string; ``assets.image`` and ``assets.progress_video`` are
not results, nor are the input keyframes under ``request``); the reason of a failure is
``failure_reason`` (``state_reason`` in the old v1alpha spec). Provider text only ever lands
in ``detail``.

Generations start with ``POST /dream-machine/v1/generations`` ``{prompt, model,
aspect_ratio, duration "5s", resolution, keyframes {frame0, frame1}, loop, callback_url}``,
answered with the Generation object (``state`` queued). Luma posts the Generation to
``callback_url`` on dreaming, completed and failed, unsigned: the core treats it as a hint
(``/callbacks/luma``). We found no documented create limit, so the core's default budget
applies; a create whose answer was lost is not looked up (the listing has no field of ours
to match).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from webhook_poller.errors import UnrecognizedResponse
from webhook_poller.interfaces import ModelCapabilities, PollResult, PollStatus
from webhook_poller.model import ErrorCode
from webhook_poller.options import ProviderOptions

from . import _direct_submit as ds
from ._provider_http import DirectAdapter, segment
from .kie import classify_failure, extract_urls

if TYPE_CHECKING:
    from webhook_poller.interfaces import GenerationRequest, ProviderTask, SubmitResult

PENDING = frozenset({"queued", "pending", "dreaming", "processing", "running", "starting"})
SUCCEEDED = frozenset({"completed", "complete", "succeeded", "success"})
FAILED = frozenset({"failed", "failure", "error", "cancelled", "canceled"})

# Luma's moderation reasons say "advanced moderation failed" or "prompt not allowed".
_LUMA_MODERATION = re.compile(r"not allowed|blocked|moderation", re.I)


class LumaOptions(ProviderOptions):
    """``providers.luma``; Luma's own examples poll a generation every 3 s."""

    base_url: str | None = "https://api.lumalabs.ai"
    min_interval_s: float = Field(default=3.0, ge=0)
    max_requests_per_s: float = Field(default=5.0, ge=0)


def _video_urls(assets: Any) -> tuple[str, ...]:
    if isinstance(assets, Mapping):
        return tuple(dict.fromkeys(extract_urls(assets.get("video"))))
    return ()


def parse_luma_generation(payload: object) -> PollResult:
    """Read one Luma Generation object; raise UnrecognizedResponse when we cannot."""
    if not isinstance(payload, Mapping):
        raise UnrecognizedResponse("the body is not a JSON object", provider="luma")
    raw = payload.get("state")
    if not isinstance(raw, str) or not raw.strip():
        raw = payload.get("status")
    if not isinstance(raw, str) or not raw.strip():
        raise UnrecognizedResponse("no state in the generation", provider="luma")
    word = raw.strip().lower()
    if word in PENDING:
        return PollResult(PollStatus.PENDING)
    if word in SUCCEEDED:
        return PollResult(
            PollStatus.SUCCEEDED, video_urls=_video_urls(payload.get("assets")), progress=1.0
        )
    if word in FAILED:
        reason = payload.get("failure_reason") or payload.get("state_reason") or ""
        text = reason if isinstance(reason, str) else str(reason)
        code = classify_failure(None, text)
        if code is ErrorCode.UNKNOWN_PROVIDER_ERROR and _LUMA_MODERATION.search(text):
            code = ErrorCode.MODERATION_REJECTED
        return PollResult(PollStatus.FAILED, error_code=code, detail=text or word)
    raise UnrecognizedResponse(f"unknown state {word[:40]!r}", provider="luma")


class LumaGenerateOptions(BaseModel):
    """``options`` of a Luma generation."""

    model_config = ConfigDict(extra="forbid")

    loop: bool | None = None


#: Luma's openapi.yaml: aspect_ratio for every video model; duration "5s" | "9s" and
#: resolution 540p | 720p | 1080p | 4k on the Ray 2 models; keyframes frame0 / frame1 (a
#: start image, or start and end).
_ASPECTS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
_RAY2 = ModelCapabilities(
    durations_s=(5, 9),
    aspect_ratios=_ASPECTS,
    resolutions=("540p", "720p", "1080p", "4k"),
    max_images=2,
)
CAPABILITIES: dict[str, ModelCapabilities] = {
    "ray-2": _RAY2,
    "ray-flash-2": _RAY2,
    "ray-1-6": ModelCapabilities(aspect_ratios=_ASPECTS, max_images=2),
}


def create_body(request: GenerationRequest) -> dict[str, Any]:
    duration = request.duration_s
    frames = zip(("frame0", "frame1"), request.image_urls, strict=False)
    keyframes = {name: {"type": "image", "url": url} for name, url in frames}
    return ds.present(
        {
            "prompt": request.prompt,
            "model": request.model,
            "aspect_ratio": request.aspect_ratio,
            "duration": f"{duration}s" if duration is not None else None,
            "resolution": request.resolution,
            "keyframes": keyframes or None,
            **request.options,
            "callback_url": request.callback_url,
        }
    )


class LumaAdapter(DirectAdapter):
    """Polls ``GET {base_url}/dream-machine/v1/generations/{id}``; key ``LUMAAI_API_KEY``."""

    name = "luma"
    config_section = "luma"
    Options: ClassVar[type[ProviderOptions]] = LumaOptions
    env_key = "LUMAAI_API_KEY"
    #: Luma documents no lifetime for ``assets.video``; a day is assumed, fetched at once.
    result_link_ttl_s: ClassVar[float] = 86400.0
    capabilities: ClassVar[Mapping[str, ModelCapabilities]] = CAPABILITIES
    GenerateOptions: ClassVar[type[BaseModel]] = LumaGenerateOptions

    async def poll(self, task: ProviderTask, http: httpx.AsyncClient) -> PollResult:
        body = await self.get_json(http, f"/dream-machine/v1/generations/{segment(task.task_id)}")
        return parse_luma_generation(body)

    async def submit(self, request: GenerationRequest, http: httpx.AsyncClient) -> SubmitResult:
        """``POST /dream-machine/v1/generations``; the Generation ``id`` is the task id."""
        answer = await ds.create(http, self, "/dream-machine/v1/generations", create_body(request))
        return ds.submitted(answer.get("id"), provider=self.name)
