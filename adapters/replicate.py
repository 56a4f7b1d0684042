"""Replicate predictions: ``GET /v1/predictions/{id}``; generations start with
``POST /v1/models/{owner}/{name}/predictions {input}`` (``POST /generate``).

``status`` is starting | processing | succeeded | failed | canceled | aborted (``aborted``:
the deadline passed before the prediction started; most SDK enums miss it). ``output``
depends on the model: a URL string, a list, an object (``{"video": url, ...}``) or null.
``error`` is a string; moderation reads "... flagged as sensitive ... (E005)".

Inputs, outputs and files are deleted one hour after the prediction finishes
(``data_removed``), so the download starts as soon as the answer says succeeded. Output
files live on ``replicate.delivery``, another host: they are fetched without the token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, SecretStr

from webhook_poller.errors import (
    ProviderTaskFailed,
    ProviderUnavailable,
    SubmissionUncertain,
    UnrecognizedResponse,
)
from webhook_poller.interfaces import (
    CallbackHint,
    GenerationRequest,
    ModelCapabilities,
    PluginContext,
    PollResult,
    PollStatus,
    ProviderTask,
    SubmitResult,
)
from webhook_poller.model import ErrorCode
from webhook_poller.options import ProviderOptions

from . import _provider_http as ph
from . import _signatures
from .kie import classify_failure, extract_urls

NAME = "replicate"
DEFAULT_BASE_URL = "https://api.replicate.com"
ENV_KEY = "REPLICATE_API_TOKEN"

PENDING = frozenset({"starting", "processing", "queued", "booting"})
_VIDEO_EXT = re.compile(r"\.(mp4|webm|mov|m4v|mkv|gif)(\?|#|$)", re.I)
_E005 = re.compile(r"\bE005\b|flagged as sensitive|nsfw|safety", re.I)
_TIMEOUT = re.compile(r"timed? ?out|deadline", re.I)


class ReplicateOptions(ProviderOptions):
    base_url: str | None = DEFAULT_BASE_URL
    #: Outputs are deleted after 1 h: look often enough to fetch them in time.
    min_interval_s: float = 5.0
    #: Replicate allows 3000 requests per minute on endpoints other than create.
    max_requests_per_s: float = 50.0
    #: The account's webhook signing secret (``whsec_...``, GET /v1/webhooks/default/secret).
    webhook_secret: SecretStr | None = None


def _output_urls(output: Any) -> list[str]:
    """Every URL in ``output``; the video ones only when some are videos (no thumbnails)."""
    if isinstance(output, str) and output.strip().startswith(("{", "[")):
        try:
            output = json.loads(output)
        except ValueError:
            pass
    urls: list[str] = []
    if isinstance(output, Mapping):
        for value in output.values():
            urls.extend(_output_urls(value))
    elif isinstance(output, list | tuple):
        for item in output:
            urls.extend(_output_urls(item))
    else:
        urls.extend(extract_urls(output))
    urls = list(dict.fromkeys(urls))
    videos = [u for u in urls if _VIDEO_EXT.search(u)]
    return videos or urls


def classify_error(message: str) -> ErrorCode:
    if _E005.search(message):
        return ErrorCode.MODERATION_REJECTED
    if _TIMEOUT.search(message):
        return ErrorCode.PROVIDER_TIMEOUT
    return classify_failure(None, message)


def parse_prediction(payload: Any) -> PollResult:
    """Read one prediction object; raise UnrecognizedResponse when it is not one."""
    if not isinstance(payload, Mapping):
        raise UnrecognizedResponse("the body is not a JSON object", provider=NAME)
    status = payload.get("status")
    word = status.strip().lower() if isinstance(status, str) else ""
    error = payload.get("error")
    message = ph.text_of(
        error if not isinstance(error, Mapping) else error.get("detail") or error.get("message")
    )
    if word == "succeeded":
        urls = _output_urls(payload.get("output"))
        if not urls and payload.get("data_removed"):
            return PollResult(PollStatus.SUCCEEDED, detail="outputs removed (data_removed)")
        return PollResult(PollStatus.SUCCEEDED, video_urls=tuple(urls), progress=1.0)
    if word == "failed":
        return PollResult(
            PollStatus.FAILED, error_code=classify_error(message), detail=message or "failed"
        )
    if word in ("canceled", "cancelled"):
        return PollResult(
            PollStatus.FAILED, error_code=ErrorCode.UNKNOWN_PROVIDER_ERROR, detail="canceled"
        )
    if word == "aborted":
        return PollResult(
            PollStatus.FAILED,
            error_code=ErrorCode.PROVIDER_TIMEOUT,
            detail=message or "aborted: the deadline passed before the prediction started",
        )
    if word in PENDING:
        return PollResult(PollStatus.PENDING)
    raise UnrecognizedResponse(f"unknown prediction status {word[:40]!r}", provider=NAME)


_RESETS_IN = re.compile(r"resets in ~?\s*(\d+(?:\.\d+)?)\s*s", re.I)


def _throttled(response: httpx.Response) -> ProviderUnavailable:
    """Replicate's 429 says when in its body: "Your rate limit resets in ~30s."."""
    match = _RESETS_IN.search(response.text[:500])
    return ProviderUnavailable(
        "HTTP 429",
        provider=NAME,
        rate_limited=True,
        retry_after_s=float(match.group(1)) if match else None,
    )


class ReplicateGenerateOptions(ph.VeoInputOptions):
    """``options`` of a Veo generation on Replicate (the model's input schema)."""


#: google/veo-3 and veo-3-fast input schemas: aspect_ratio 16:9 | 9:16, duration 4 | 6 | 8,
#: resolution 720p | 1080p, one start image.
_VEO = ModelCapabilities(
    durations_s=(4, 6, 8),
    aspect_ratios=("16:9", "9:16"),
    resolutions=("720p", "1080p"),
    max_images=1,
)


def read_created(response: httpx.Response) -> SubmitResult:
    """The answer to a create call: the prediction's id, or which kind of failure."""
    status = response.status_code
    if status == 429:  # throttled: the prediction was not created
        if "retry-after" not in response.headers:
            raise _throttled(response)
        ph.check_http_status(response, provider=NAME)
    if status >= 500:
        raise SubmissionUncertain(f"HTTP {status} on create", provider=NAME)
    ph.check_http_status(response, provider=NAME)
    try:
        body = json.loads(response.content)
    except ValueError:
        raise SubmissionUncertain(
            f"HTTP {status} with a body that is not JSON", provider=NAME
        ) from None
    detail = ph.text_of(body.get("detail") if isinstance(body, Mapping) else body)
    if status >= 400:
        code = ErrorCode.VALIDATION_FAILED if status in (400, 404, 422) else None
        raise ProviderTaskFailed(
            code or classify_failure(status, detail),
            provider=NAME,
            detail=f"HTTP {status}: {detail}",
        )
    pid = body.get("id") if isinstance(body, Mapping) else None
    return ph.created_task(pid, provider=NAME, missing="a create answer without a prediction id")


class ReplicateAdapter(ph.KeyedAdapter, _signatures.StandardWebhooks):
    """Replicate predictions (any model: Veo, Kling, Wan, Hailuo ... hosted there)."""

    name = NAME
    config_section = "replicate"
    env_key = ENV_KEY
    default_base_url = DEFAULT_BASE_URL
    Options: ClassVar[type[ProviderOptions]] = ReplicateOptions
    #: "API inputs, outputs, files and logs are removed after 1 hour".
    result_link_ttl_s: ClassVar[float] = 3600.0
    #: Replicate: create prediction at 600 requests per minute.
    submit_budget: ClassVar[tuple[int, float]] = (600, 60.0)
    capabilities: ClassVar[Mapping[str, ModelCapabilities]] = {
        "google/veo-3": _VEO,
        "google/veo-3-fast": _VEO,
    }
    GenerateOptions: ClassVar[type[BaseModel]] = ReplicateGenerateOptions

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        self._webhook_secret = ph.secret_text(options.get("webhook_secret")).strip()

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackHint | None:
        """A webhook posts the prediction object itself: its ``id`` is the task id."""
        payload = _signatures.json_object(body)
        task_id = _signatures.task_id_of(payload.get("id")) if payload is not None else None
        if payload is None or task_id is None:
            return None
        try:
            status: PollStatus | None = parse_prediction(payload).status
        except Exception:  # an odd status word: the poll will tell
            status = None
        return CallbackHint(task_id=task_id, status=status)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._need_key()}"}

    def _url(self, template: str, path: str) -> str:
        """``base_url`` + ``template`` with ``path`` quoted as path segments at ``{}``."""
        return self.base_url + template.format(ph.quote_task_path(path, provider=self.name))

    async def poll(self, task: ProviderTask, http: httpx.AsyncClient) -> PollResult:
        headers = self._headers()
        url = self._url("/v1/predictions/{}", task.task_id)
        response = await ph.get(
            http, url, provider=self.name, headers=headers, timeout_s=self.timeout_s
        )
        if response.status_code == 429 and "retry-after" not in response.headers:
            raise _throttled(response)
        ph.check_http_status(response, provider=self.name)
        body = ph.read_json(response, provider=self.name)
        if response.status_code == 404:
            raise ProviderTaskFailed(
                ErrorCode.UNKNOWN_PROVIDER_ERROR,
                provider=self.name,
                detail="prediction unknown to the provider (HTTP 404)",
            )
        if response.status_code >= 400:
            detail = ph.text_of(body.get("detail") if isinstance(body, Mapping) else body)
            raise ProviderTaskFailed(
                classify_failure(response.status_code, detail),
                provider=self.name,
                detail=f"HTTP {response.status_code}: {detail}",
            )
        return parse_prediction(body)

    def create_body(self, request: GenerationRequest) -> dict[str, Any]:
        data: dict[str, Any] = {"prompt": request.prompt}
        if request.image_urls:
            data["image"] = request.image_urls[0]
        if request.aspect_ratio:
            data["aspect_ratio"] = request.aspect_ratio
        if request.duration_s is not None:
            data["duration"] = request.duration_s
        if request.resolution:
            data["resolution"] = request.resolution
        data.update({k: v for k, v in request.options.items() if v is not None})
        body: dict[str, Any] = {"input": data}
        if request.callback_url:
            body["webhook"] = request.callback_url
            body["webhook_events_filter"] = ["completed"]
        return body

    async def submit(self, request: GenerationRequest, http: httpx.AsyncClient) -> SubmitResult:
        """``POST /v1/models/{owner}/{name}/predictions``; the prediction id is the task id."""
        headers = {**self._headers(), "Accept": "application/json"}
        response = await ph.post_create(
            http,
            self._url("/v1/models/{}/predictions", request.model),
            provider=self.name,
            body=self.create_body(request),
            headers=headers,
            timeout_s=self.timeout_s,
        )
        return read_created(response)


__all__ = ["ReplicateAdapter", "ReplicateOptions", "parse_prediction"]
