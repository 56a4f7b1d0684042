"""MiniMax (Hailuo): ``GET /v1/query/video_generation?task_id=``, then
``GET /v1/files/retrieve?file_id=`` for the download URL.

:func:`parse_minimax_query` and :func:`parse_minimax_file` are pure. ``status`` comes
capitalised (Preparing | Queueing | Processing | Success | Fail); success carries only a
``file_id`` (a string here, an int64 in the files API), so a second call fetches
``file.download_url``, valid for about 9 hours. ``base_resp.status_code`` 0 is ok, and is
an error inside HTTP 200 otherwise: 1026 (input sensitive) and 1027 (output sensitive) are
moderation, 1004 a refused key, 1008 an empty balance, 1002/1041 rate limits. The
deprecated Video Agent answer with ``video_url`` directly is read as well.

Generations start with ``POST /v1/video_generation`` ``{model, prompt, duration, resolution,
first_frame_image, last_frame_image, callback_url, ...}``, answered ``{task_id, base_resp}``
(errors again inside HTTP 200: 1002 means nothing was created, 2013 invalid parameters).
MiniMax posts status changes to ``callback_url`` (our ``/callbacks/minimax``, which echoes its
``challenge`` first), unsigned: a hint. Video generation is limited to 5 requests per minute
on a free account (20 paid), hence the create budget; MiniMax has no way to look a task up
but by its id, so a create whose answer was lost is not looked up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from webhook_poller.errors import ProviderTaskFailed, ProviderUnavailable, UnrecognizedResponse
from webhook_poller.interfaces import ModelCapabilities, PollResult, PollStatus
from webhook_poller.model import ErrorCode
from webhook_poller.options import ProviderOptions

from . import _direct_submit as ds
from ._provider_http import DirectAdapter, as_int
from .kie import classify_failure, extract_urls

if TYPE_CHECKING:
    from webhook_poller.interfaces import GenerationRequest, ProviderTask, SubmitResult

PENDING = frozenset({"preparing", "queueing", "queuing", "queued", "processing", "running"})
SUCCEEDED = frozenset({"success", "succeeded", "completed"})
FAILED = frozenset({"fail", "failed", "failure", "error"})

MODERATION_CODES = frozenset({1026, 1027})
#: MiniMax's error-code table: 1002 rate limit, 1041 connection limit; 1000 unknown,
#: 1001 timeout, 1024 internal and 1033 downstream errors ask to retry later.
RATE_CODES = frozenset({1002, 1041})
TRANSIENT_CODES = frozenset({1000, 1001, 1024, 1033})


class MinimaxOptions(ProviderOptions):
    """``providers.minimax``; MiniMax's examples poll a task every 10 s.

    ``group_id`` is sent as ``GroupId`` on the files call, which older accounts need.
    """

    base_url: str | None = "https://api.minimax.io"
    min_interval_s: float = Field(default=10.0, ge=0)
    max_requests_per_s: float = Field(default=5.0, ge=0)
    group_id: str | None = None


class MinimaxModerated(Exception):
    """``base_resp`` says the input or output was judged sensitive."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_base_resp(payload: Mapping[str, Any]) -> None:
    """Raise for a non-zero ``base_resp.status_code`` (moderation raises MinimaxModerated)."""
    base = payload.get("base_resp")
    if not isinstance(base, Mapping):
        return
    code = as_int(base.get("status_code"))
    message = str(base.get("status_msg") or "")
    if code is None or code == 0:
        return
    if code in MODERATION_CODES:
        raise MinimaxModerated(code, message)
    if code in RATE_CODES:
        raise ProviderUnavailable(
            f"provider code {code}", provider="minimax", detail=message, rate_limited=True
        )
    if code in TRANSIENT_CODES:
        raise ProviderUnavailable(f"provider code {code}", provider="minimax", detail=message)
    if code == 1004:
        raise ProviderTaskFailed(ErrorCode.AUTH_FAILED, provider="minimax", detail=message)
    if code == 1008:
        raise ProviderTaskFailed(ErrorCode.INSUFFICIENT_CREDITS, provider="minimax", detail=message)
    raise ProviderTaskFailed(
        classify_failure(None, message), provider="minimax", detail=f"code {code} {message}"
    )


def _file_id(payload: Mapping[str, Any]) -> str | None:
    value = payload.get("file_id")
    if isinstance(value, bool) or value in (None, "", 0):
        return None
    if isinstance(value, int | str):
        return str(value).strip() or None
    return None


def _checked(payload: object) -> tuple[Mapping[str, Any], MinimaxModerated | None]:
    """An answer as a JSON object and its moderation verdict (other ``base_resp`` codes
    raise, see :func:`check_base_resp`)."""
    if not isinstance(payload, Mapping):
        raise UnrecognizedResponse("the body is not a JSON object", provider="minimax")
    try:
        check_base_resp(payload)
    except MinimaxModerated as exc:
        return payload, exc
    return payload, None


def parse_minimax_query(answer: object) -> tuple[PollResult, str | None]:
    """Read a query answer: the result, and the ``file_id`` still to resolve (or None)."""
    payload, moderated = _checked(answer)
    if moderated is not None:
        return PollResult(
            PollStatus.FAILED,
            error_code=ErrorCode.MODERATION_REJECTED,
            detail=f"code {moderated.code} {moderated.message}",
        ), None
    raw = payload.get("status")
    if not isinstance(raw, str) or not raw.strip():
        raise UnrecognizedResponse("no status in the answer", provider="minimax")
    word = raw.strip().lower()
    if word in PENDING:
        return PollResult(PollStatus.PENDING), None
    if word in SUCCEEDED:
        direct = tuple(dict.fromkeys(extract_urls(payload.get("video_url"))))
        if direct:
            return PollResult(PollStatus.SUCCEEDED, video_urls=direct, progress=1.0), None
        return PollResult(PollStatus.SUCCEEDED, progress=1.0), _file_id(payload)
    if word in FAILED:
        text = str(payload.get("error_message") or payload.get("status_msg") or "")
        return PollResult(
            PollStatus.FAILED, error_code=classify_failure(None, text), detail=text or word
        ), None
    raise UnrecognizedResponse(f"unknown status {word[:40]!r}", provider="minimax")


def parse_minimax_file(answer: object) -> tuple[str, ...]:
    """``file.download_url`` of a files/retrieve answer (empty when there is none)."""
    payload, moderated = _checked(answer)
    if moderated is not None:
        raise ProviderTaskFailed(
            ErrorCode.MODERATION_REJECTED, provider="minimax", detail=moderated.message
        )
    file = payload.get("file")
    if not isinstance(file, Mapping):
        return ()
    return tuple(dict.fromkeys(extract_urls(file.get("download_url"))))


#: ``base_resp`` codes of a create call that refuse the request itself.
INVALID_CODES = frozenset({2013})


def check_created(payload: Mapping[str, Any]) -> None:
    """A create answer's ``base_resp``: sensitive input and invalid parameters are final."""
    base = payload.get("base_resp")
    code = as_int(base.get("status_code")) if isinstance(base, Mapping) else None
    message = str(base.get("status_msg") or "") if isinstance(base, Mapping) else ""
    if code in INVALID_CODES:
        raise ProviderTaskFailed(
            ErrorCode.VALIDATION_FAILED, provider="minimax", detail=f"code {code} {message}"
        )
    try:
        check_base_resp(payload)
    except MinimaxModerated as exc:
        raise ProviderTaskFailed(
            ErrorCode.MODERATION_REJECTED,
            provider="minimax",
            detail=f"code {exc.code} {exc.message}",
        ) from None


class MinimaxGenerateOptions(BaseModel):
    """``options`` of a MiniMax generation."""

    model_config = ConfigDict(extra="forbid")

    prompt_optimizer: bool | None = None
    fast_pretreatment: bool | None = None
    aigc_watermark: bool | None = None


#: platform.minimax.io video generation: Hailuo 2.3 and 02 take 6 or 10 s (10 s not at
#: 1080P: MiniMax refuses that pair with 2013) and 768P / 1080P (02 also 512P, and a last
#: frame); the 01 models 6 s at 720P; the I2V models and Hailuo 2.3 Fast need a first frame.
#: No aspect ratio: the first frame's, or 16:9.
_HAILUO_23 = ModelCapabilities(durations_s=(6, 10), resolutions=("768P", "1080P"), max_images=1)
_O1_TEXT = ModelCapabilities(durations_s=(6,), resolutions=("720P",))
_O1_IMAGE = ModelCapabilities(durations_s=(6,), resolutions=("720P",), min_images=1, max_images=1)
CAPABILITIES: dict[str, ModelCapabilities] = {
    "MiniMax-Hailuo-2.3": _HAILUO_23,
    "MiniMax-Hailuo-2.3-Fast": ModelCapabilities(
        durations_s=(6, 10), resolutions=("768P", "1080P"), min_images=1, max_images=1
    ),
    "MiniMax-Hailuo-02": ModelCapabilities(
        durations_s=(6, 10), resolutions=("512P", "768P", "1080P"), max_images=2
    ),
    "T2V-01-Director": _O1_TEXT,
    "T2V-01": _O1_TEXT,
    "I2V-01-Director": _O1_IMAGE,
    "I2V-01-live": _O1_IMAGE,
    "I2V-01": _O1_IMAGE,
}


def create_body(request: GenerationRequest) -> dict[str, Any]:
    images = request.image_urls
    return ds.present(
        {
            "model": request.model,
            "prompt": request.prompt,
            "duration": request.duration_s,
            "resolution": request.resolution,
            "first_frame_image": images[0] if images else None,
            "last_frame_image": images[1] if len(images) > 1 else None,
            **request.options,
            "callback_url": request.callback_url,
        }
    )


class MinimaxAdapter(DirectAdapter):
    """Polls MiniMax's query endpoint, then resolves ``file_id``; key ``MINIMAX_API_KEY``."""

    name = "minimax"
    config_section = "minimax"
    Options: ClassVar[type[ProviderOptions]] = MinimaxOptions
    env_key = "MINIMAX_API_KEY"
    #: MiniMax: the download URL "is valid for 9 hours".
    result_link_ttl_s: ClassVar[float] = 32400.0
    capabilities: ClassVar[Mapping[str, ModelCapabilities]] = CAPABILITIES
    GenerateOptions: ClassVar[type[BaseModel]] = MinimaxGenerateOptions
    #: MiniMax rate limits: video generation, 5 requests per minute (free accounts).
    submit_budget: ClassVar[tuple[int, float]] = (5, 60.0)

    async def poll(self, task: ProviderTask, http: httpx.AsyncClient) -> PollResult:
        body = await self.get_json(http, "/v1/query/video_generation", {"task_id": task.task_id})
        result, file_id = parse_minimax_query(body)
        if file_id is None:
            return result
        params = {"file_id": file_id}
        group = getattr(self.options, "group_id", None)
        if group:
            params["GroupId"] = str(group)
        urls = parse_minimax_file(await self.get_json(http, "/v1/files/retrieve", params))
        return PollResult(PollStatus.SUCCEEDED, video_urls=urls, progress=1.0)

    async def submit(self, request: GenerationRequest, http: httpx.AsyncClient) -> SubmitResult:
        """``POST /v1/video_generation``; its ``task_id`` is the task id."""
        body = create_body(request)
        answer = await ds.create(http, self, "/v1/video_generation", body, check_created)
        return ds.submitted(answer.get("task_id"), provider=self.name)
