"""fal.ai queue: ``GET /{app}/requests/{id}/status``, then ``GET /{app}/requests/{id}``.

The job's ``model`` is the fal app id (``fal-ai/kling-video/v2/master/text-to-video``);
status and result URLs use only its first two segments (``fal-ai/kling-video``). The status
is IN_QUEUE (HTTP 202, ``queue_position``), IN_PROGRESS (202) or COMPLETED (200), and
COMPLETED is not success until the result is read: the result is the model's output
(``{"video": {"url": ...}}``, sometimes wrapped as ``{status, logs, response}``) or an error
``{"detail": [{loc, msg, type, ...}]}`` with ``X-Fal-Retryable``. Request-level failures carry
``error_type`` / ``X-Fal-Error-Type`` (request_timeout, runner_disconnected).

Media lives on ``v3.fal.media`` (another host): fetched without the key.

Generations start with ``POST /{model id}`` (``POST /generate``): the body is the model's
input, the answer ``{request_id, status_url, response_url, cancel_url}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel

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

NAME = "fal"
DEFAULT_BASE_URL = "https://queue.fal.run"
#: fal's webhook signing keys (ED25519, JWKS): docs.fal.ai "Verifying Your Webhook".
DEFAULT_JWKS_URL = "https://rest.alpha.fal.ai/.well-known/jwks.json"
ENV_KEY = "FAL_KEY"

PENDING = frozenset({"in_queue", "in_progress", "queued", "pending", "running"})

#: fal error ``type`` -> our code. Unknown types are unknown_provider_error.
ERROR_TYPES: dict[str, ErrorCode] = {
    "content_policy_violation": ErrorCode.MODERATION_REJECTED,
    "file_download_error": ErrorCode.ASSET_FETCH_FAILED,
    "image_load_error": ErrorCode.ASSET_FETCH_FAILED,
    "image_too_small": ErrorCode.VALIDATION_FAILED,
    "image_too_large": ErrorCode.VALIDATION_FAILED,
    "unsupported_image_format": ErrorCode.VALIDATION_FAILED,
    "value_error": ErrorCode.VALIDATION_FAILED,
    "generation_timeout": ErrorCode.PROVIDER_TIMEOUT,
    "request_timeout": ErrorCode.PROVIDER_TIMEOUT,
    "startup_timeout": ErrorCode.PROVIDER_TIMEOUT,
    "internal_server_error": ErrorCode.UNKNOWN_PROVIDER_ERROR,
    "downstream_service_error": ErrorCode.UNKNOWN_PROVIDER_ERROR,
    "runner_disconnected": ErrorCode.UNKNOWN_PROVIDER_ERROR,
}


class FalOptions(ProviderOptions):
    base_url: str | None = DEFAULT_BASE_URL
    min_interval_s: float = 5.0
    max_requests_per_s: float = 10.0
    #: Where fal publishes the public keys its webhooks are signed with; null: do not verify.
    jwks_url: str | None = DEFAULT_JWKS_URL


def app_path(model: str) -> str:
    """``fal-ai/kling-video/v2/master/text-to-video`` -> ``fal-ai/kling-video``."""
    parts = [p for p in model.strip().strip("/").split("/") if p]
    if len(parts) < 2:
        raise ProviderTaskFailed(
            ErrorCode.VALIDATION_FAILED,
            provider=NAME,
            detail="the model must be a fal app id such as fal-ai/kling-video/...",
        )
    return ph.quote_task_path("/".join(parts[:2]), provider=NAME)


def _retryable(response: httpx.Response) -> bool | None:
    value = response.headers.get("x-fal-retryable", "").strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    return None


def _errors(body: Any) -> list[Mapping[str, Any]]:
    """The ``detail[]`` items (also a single object or a plain string)."""
    if not isinstance(body, Mapping):
        return []
    detail = body.get("detail")
    if isinstance(detail, str) and detail.strip().startswith(("[", "{")):
        try:
            detail = json.loads(detail)
        except ValueError:
            pass
    if isinstance(detail, Mapping):
        return [detail]
    if isinstance(detail, list):
        return [d for d in detail if isinstance(d, Mapping)]
    if isinstance(detail, str) and detail.strip():
        return [{"msg": detail}]
    return []


def failure(items: list[Mapping[str, Any]], error_type: str | None, message: str) -> PollResult:
    """A failed request: the first typed item decides; text decides without a type."""
    types = [str(i.get("type") or "").strip().lower() for i in items]
    if error_type:
        types.append(error_type.strip().lower())
    text = ph.text_of(message, *(i.get("msg") for i in items), *types)
    for kind in types:
        if kind in ERROR_TYPES:
            return PollResult(PollStatus.FAILED, error_code=ERROR_TYPES[kind], detail=text)
    return PollResult(
        PollStatus.FAILED, error_code=classify_failure(None, text), detail=text or "failed"
    )


def result_urls(body: Any) -> list[str]:
    """Video URLs of a model output: ``video.url``, ``videos[].url``, or a wrapped response."""
    if not isinstance(body, Mapping):
        return []
    inner = ph.unwrap_json_text(body.get("response"))
    if isinstance(inner, Mapping):
        return result_urls(inner)
    urls: list[str] = []
    for key in ("video", "videos", "video_url", "output"):
        value = body.get(key)
        if isinstance(value, Mapping):
            urls.extend(extract_urls(value.get("url")))
        elif isinstance(value, list):
            for item in value:
                urls.extend(extract_urls(item.get("url") if isinstance(item, Mapping) else item))
        else:
            urls.extend(extract_urls(value))
    return list(dict.fromkeys(urls))


class FalGenerateOptions(ph.VeoInputOptions):
    """``options`` of the Veo 3 apps on fal (their input schema)."""


#: fal-ai/veo3 (and /fast): aspect_ratio 16:9 | 9:16, duration "4s" | "6s" | "8s",
#: resolution 720p | 1080p; the image-to-video apps take one ``image_url``.
_VEO_TEXT = ModelCapabilities(
    durations_s=(4, 6, 8), aspect_ratios=("16:9", "9:16"), resolutions=("720p", "1080p")
)
_VEO_IMAGE = ModelCapabilities(
    durations_s=(4, 6, 8),
    aspect_ratios=("auto", "16:9", "9:16"),
    resolutions=("720p", "1080p"),
    min_images=1,
    max_images=1,
)


def read_queued(response: httpx.Response) -> SubmitResult:
    """The queue's answer to a submit: the request id, or which kind of failure."""
    status = response.status_code
    if status >= 500:
        raise SubmissionUncertain(f"HTTP {status} on submit", provider=NAME)
    ph.check_http_status(response, provider=NAME)
    try:
        body = json.loads(response.content)
    except ValueError:
        raise SubmissionUncertain(
            f"HTTP {status} with a body that is not JSON", provider=NAME
        ) from None
    if status >= 400:
        items = _errors(body)
        kind = items[0].get("type") if items else None
        code = ERROR_TYPES.get(str(kind), ErrorCode.VALIDATION_FAILED)
        raise ProviderTaskFailed(code, provider=NAME, detail=ph.text_of(body))
    rid = body.get("request_id") if isinstance(body, Mapping) else None
    return ph.created_task(rid, provider=NAME, missing="a submit answer without a request_id")


class FalAdapter(ph.KeyedAdapter):
    """Any model on fal's queue (Kling, Veo, Wan, Pika, MiniMax ... as fal apps)."""

    name = NAME
    config_section = "fal"
    env_key = ENV_KEY
    default_base_url = DEFAULT_BASE_URL
    Options: ClassVar[type[ProviderOptions]] = FalOptions
    #: fal CDN files do not expire unless the account or the request sets
    #: ``expiration_duration_seconds`` (the docs' example: 86400); assume that day.
    result_link_ttl_s: ClassVar[float] = 86400.0
    capabilities: ClassVar[Mapping[str, ModelCapabilities]] = {
        "fal-ai/veo3": _VEO_TEXT,
        "fal-ai/veo3/fast": _VEO_TEXT,
        "fal-ai/veo3/image-to-video": _VEO_IMAGE,
        "fal-ai/veo3/fast/image-to-video": _VEO_IMAGE,
    }
    GenerateOptions: ClassVar[type[BaseModel]] = FalGenerateOptions

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        jwks_url = options.get("jwks_url", DEFAULT_JWKS_URL)
        self._keys = _signatures.FalKeys(str(jwks_url)) if jwks_url else None

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackHint | None:
        """``{request_id, gateway_request_id, status: OK | ERROR, payload, error}``."""
        payload = _signatures.json_object(body)
        if payload is None:
            return None
        task_id = _signatures.task_id_of(payload.get("request_id"))
        if task_id is None:
            return None
        word = str(payload.get("status") or "").strip().upper()
        status = {"OK": PollStatus.SUCCEEDED, "ERROR": PollStatus.FAILED}.get(word)
        return CallbackHint(task_id=task_id, status=status)

    async def verify_callback(
        self,
        headers: Mapping[str, str],
        body: bytes,
        hint: CallbackHint,
        http: httpx.AsyncClient,
    ) -> bool:
        """ED25519 against the keys at ``providers.fal.jwks_url`` (``null`` turns it off)."""
        if self._keys is None:
            return True
        return await self._keys.verify(headers, body, http)

    async def _get(self, http: httpx.AsyncClient, url: str) -> httpx.Response:
        return await ph.get(
            http,
            url,
            provider=self.name,
            headers={"Authorization": f"Key {self._api_key}"},
            timeout_s=self.timeout_s,
        )

    async def poll(self, task: ProviderTask, http: httpx.AsyncClient) -> PollResult:
        self._need_key()
        request_id = ph.quote_task_path(task.task_id, provider=self.name)
        base = f"{self.base_url}/{app_path(task.model)}/requests/{request_id}"
        status = await self._get(http, f"{base}/status")
        answer = self._read_status(status)
        if answer is not None:
            return answer
        return self._read_result(await self._get(http, base))

    def create_body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": request.prompt}
        if request.image_urls:
            body["image_url"] = request.image_urls[0]
        if request.aspect_ratio:
            body["aspect_ratio"] = request.aspect_ratio
        if request.duration_s is not None:
            body["duration"] = f"{request.duration_s}s"
        if request.resolution:
            body["resolution"] = request.resolution
        body.update({k: v for k, v in request.options.items() if v is not None})
        return body

    async def submit(self, request: GenerationRequest, http: httpx.AsyncClient) -> SubmitResult:
        """``POST /{model id}`` on the queue; the request id is the task id."""
        self._need_key()
        path = ph.quote_task_path(request.model, provider=self.name)
        params = {"fal_webhook": request.callback_url} if request.callback_url else None
        response = await ph.post_create(
            http,
            f"{self.base_url}/{path}",
            provider=self.name,
            body=self.create_body(request),
            params=params,
            headers={"Authorization": f"Key {self._api_key}", "Accept": "application/json"},
            timeout_s=self.timeout_s,
        )
        return read_queued(response)

    def _refused(self, response: httpx.Response, what: str) -> None:
        """HTTP trouble on either call; a typed ``detail`` on the result is the task's end."""
        ph.check_http_status(response, provider=self.name)
        if response.status_code == 404:
            raise ProviderTaskFailed(
                ErrorCode.UNKNOWN_PROVIDER_ERROR,
                provider=self.name,
                detail=f"request unknown to the provider ({what}: HTTP 404)",
            )

    def _read_status(self, response: httpx.Response) -> PollResult | None:
        """PENDING or a request-level failure; ``None`` means COMPLETED: read the result."""
        self._refused(response, "status")
        body = ph.read_json(response, provider=self.name)
        if response.status_code >= 400:
            return failure(_errors(body), response.headers.get("x-fal-error-type"), "")
        if not isinstance(body, Mapping):
            raise UnrecognizedResponse("the status body is not a JSON object", provider=self.name)
        word = str(body.get("status") or "").strip().lower()
        if word in PENDING:
            return PollResult(PollStatus.PENDING)
        if word in ("completed", "ok"):
            error_type = body.get("error_type") or response.headers.get("x-fal-error-type")
            if body.get("error") or error_type:
                return failure(_errors(body), str(error_type or ""), ph.text_of(body.get("error")))
            return None
        if word in ("error", "failed", "cancelled", "canceled", "cancellation_requested"):
            return failure(_errors(body), str(body.get("error_type") or ""), word)
        raise UnrecognizedResponse(f"unknown queue status {word[:40]!r}", provider=self.name)

    def _read_result(self, response: httpx.Response) -> PollResult:
        status = response.status_code
        retryable = _retryable(response)
        if status >= 500 or status == 429:
            try:
                body = json.loads(response.content)
            except ValueError:
                body = None
            items = _errors(body)
            typed = any(str(i.get("type") or "").lower() in ERROR_TYPES for i in items)
            # A typed error on a finished request is its end, unless fal says it retries.
            if typed and retryable is not True and status != 429:
                return failure(items, response.headers.get("x-fal-error-type"), "")
            ph.check_http_status(response, provider=self.name)
        self._refused(response, "result")
        body = ph.read_json(response, provider=self.name)
        if status >= 400:
            if retryable is True and status in (408, 409, 425):
                raise ProviderUnavailable(f"HTTP {status}", provider=self.name)
            return failure(_errors(body), response.headers.get("x-fal-error-type"), "")
        if isinstance(body, Mapping) and _errors(body) and not result_urls(body):
            return failure(_errors(body), None, "")
        if not isinstance(body, Mapping):
            raise UnrecognizedResponse("the result body is not a JSON object", provider=self.name)
        urls = result_urls(body)
        return PollResult(PollStatus.SUCCEEDED, video_urls=tuple(urls), progress=1.0)


__all__ = ["FalAdapter", "FalOptions", "app_path", "result_urls"]
