"""Gemini API Veo: long-running operations, ``GET /v1beta/{operation name}``.

The task id is the operation name returned by ``predictLongRunning``, slashes and all
(``models/veo-3.0-generate-001/operations/abc123``). ``done`` is absent while running; a
finished operation holds ``response.generateVideoResponse.generatedSamples[].video.uri`` or
``error {code (gRPC), message}``. A safety block is ``done: true`` with no error and no
samples, plus ``raiMediaFilteredCount`` / ``raiMediaFilteredReasons``.

Generations start with ``POST /v1beta/models/{model}:predictLongRunning`` (``POST
/generate``): ``{instances: [{prompt}], parameters: {aspectRatio, resolution,
durationSeconds, negativePrompt, personGeneration, seed}}`` answers ``{name}``. Input images
would have to be sent inline as bytes, so none are taken.

The result file lives on the API host and is fetched with the ``x-goog-api-key`` header; a
redirect to another host is followed without it. Files are kept two days.

Traps handled: ``done`` as a string, counts as strings, the generate-video response as a JSON
string, the SDK's ``generatedVideos`` spelling, errors inside HTTP 200 and Google's
``{error: {code, status}}`` envelope on HTTP 4xx.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import urljoin

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from webhook_poller import net
from webhook_poller.errors import (
    DownloadError,
    ProviderTaskFailed,
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
from .kie import extract_urls

log = structlog.get_logger(__name__)

NAME = "gemini"
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
ENV_KEY = "GEMINI_API_KEY"

_MODERATION = re.compile(
    r"safety|responsible ai|\brai\b|blocked|filtered|policy|sensitive|prohibited|"
    r"celebrity|public figure|minor|violat",
    re.I,
)
_AUTH = re.compile(r"api key|api_key|permission|unauthenticated|credential", re.I)
_REDIRECTS = (301, 302, 303, 307, 308)

#: gRPC status codes that name one of our error codes; the rest are unknown_provider_error.
GRPC_CODES: dict[int, ErrorCode] = {
    4: ErrorCode.PROVIDER_TIMEOUT,  # DEADLINE_EXCEEDED
    7: ErrorCode.AUTH_FAILED,  # PERMISSION_DENIED
    8: ErrorCode.PROVIDER_RATE_LIMITED,  # RESOURCE_EXHAUSTED
    16: ErrorCode.AUTH_FAILED,  # UNAUTHENTICATED
}


class GeminiOptions(ProviderOptions):
    base_url: str | None = DEFAULT_BASE_URL
    #: Google's samples poll every 10 s; a Veo operation takes 11 s to 6 min.
    min_interval_s: float = 10.0
    max_requests_per_s: float = 5.0
    #: Standard Webhooks secret (``whsec_...``) of the pushes to /callbacks/gemini.
    webhook_secret: SecretStr | None = None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return value is True or (isinstance(value, int) and not isinstance(value, bool) and value == 1)


def _mapping(value: Any) -> Mapping[str, Any] | None:
    """A mapping, also when it came as a JSON string."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, Mapping) else None


def _samples(response: Mapping[str, Any]) -> tuple[list[str], Mapping[str, Any]]:
    """Result URLs and the generate-video node (which holds the safety counters)."""
    node = _mapping(response.get("generateVideoResponse")) or response
    samples = node.get("generatedSamples")
    if samples is None:
        samples = node.get("generatedVideos")  # the SDK's name for the same list
    if isinstance(samples, str):
        try:
            samples = json.loads(samples)
        except ValueError:
            samples = None
    urls: list[str] = []
    if isinstance(samples, list):
        for sample in samples:
            sample = _mapping(sample)
            if sample is None:
                continue
            video = _mapping(sample.get("video")) or sample
            urls.extend(extract_urls(video.get("uri") or video.get("url")))
    return list(dict.fromkeys(urls)), node


def classify_error(code: int | None, message: str) -> ErrorCode:
    if _MODERATION.search(message):
        return ErrorCode.MODERATION_REJECTED
    if code is not None and code in GRPC_CODES:
        return GRPC_CODES[code]
    return ErrorCode.UNKNOWN_PROVIDER_ERROR


def parse_operation(payload: Any) -> PollResult:
    """Read one operation body; raise UnrecognizedResponse when it is not one."""
    payload = _mapping(payload)
    if payload is None:
        raise UnrecognizedResponse("the body is not a JSON object", provider=NAME)
    error = _mapping(payload.get("error"))
    if error is not None:
        message = ph.text_of(error.get("message"), error.get("status"))
        return PollResult(
            PollStatus.FAILED,
            error_code=classify_error(ph.as_int(error.get("code")), message),
            detail=message or "operation error",
        )
    if not _truthy(payload.get("done")):
        if "name" not in payload and "metadata" not in payload and "done" not in payload:
            raise UnrecognizedResponse("no operation fields in the body", provider=NAME)
        return PollResult(PollStatus.PENDING)
    response = _mapping(payload.get("response")) or {}
    urls, node = _samples(response)
    if urls:
        return PollResult(PollStatus.SUCCEEDED, video_urls=tuple(urls), progress=1.0)
    filtered = ph.as_int(node.get("raiMediaFilteredCount")) or 0
    reasons = node.get("raiMediaFilteredReasons")
    if filtered > 0 or (isinstance(reasons, list) and reasons):
        return PollResult(
            PollStatus.FAILED,
            error_code=ErrorCode.MODERATION_REJECTED,
            detail=ph.text_of("safety filter:", reasons if reasons else f"{filtered} filtered"),
        )
    return PollResult(PollStatus.SUCCEEDED, detail="done without samples")


class GeminiGenerateOptions(BaseModel):
    """``options`` passed through into ``parameters`` of ``predictLongRunning``."""

    model_config = ConfigDict(extra="forbid")

    negativePrompt: str | None = Field(default=None, max_length=2000)
    personGeneration: Literal["allow_all", "allow_adult", "dont_allow"] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)


_VEO_31 = ModelCapabilities(
    durations_s=(4, 6, 8), aspect_ratios=("16:9", "9:16"), resolutions=("720p", "1080p")
)
_VEO_30 = ModelCapabilities(
    durations_s=(8,), aspect_ratios=("16:9", "9:16"), resolutions=("720p", "1080p")
)


def _read_operation_started(response: httpx.Response) -> SubmitResult:
    """The answer to ``predictLongRunning``: the operation name, or which failure."""
    status = response.status_code
    body = _mapping(_safe_json(response)) or {}
    error = _mapping(body.get("error")) or {}
    message = ph.text_of(error.get("message"), error.get("status"))
    if status == 429:  # RESOURCE_EXHAUSTED: refused, nothing started
        ph.check_http_status(response, provider=NAME)
    if status >= 500:
        raise SubmissionUncertain(f"HTTP {status} on create", provider=NAME)
    if status == 400 and (_AUTH.search(message) or "API_KEY" in json.dumps(error)):
        raise ProviderTaskFailed(ErrorCode.AUTH_FAILED, provider=NAME, detail=message)
    ph.check_http_status(response, provider=NAME)
    if status >= 400:
        code = classify_error(ph.as_int(error.get("code")), message)
        if code is ErrorCode.UNKNOWN_PROVIDER_ERROR and status in (400, 404):
            code = ErrorCode.VALIDATION_FAILED
        raise ProviderTaskFailed(code, provider=NAME, detail=message or f"HTTP {status}")
    missing = "a create answer without an operation name"
    return ph.created_task(body.get("name"), provider=NAME, missing=missing, limit=512)


class GeminiAdapter(ph.KeyedAdapter, _signatures.StandardWebhooks):
    """Veo through the Gemini API (``generativelanguage.googleapis.com``)."""

    name = NAME
    config_section = "gemini"
    env_key = ENV_KEY
    default_base_url = DEFAULT_BASE_URL
    Options: ClassVar[type[ProviderOptions]] = GeminiOptions
    #: "Videos are stored on the server for 2 days".
    result_link_ttl_s: ClassVar[float] = 172800.0
    capabilities: ClassVar[Mapping[str, ModelCapabilities]] = {
        "veo-3.1-generate-preview": _VEO_31,
        "veo-3.1-fast-generate-preview": _VEO_31,
        "veo-3.0-generate-001": _VEO_30,
        "veo-3.0-fast-generate-001": _VEO_30,
    }
    GenerateOptions: ClassVar[type[BaseModel]] = GeminiGenerateOptions

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        self._context = context
        self._webhook_secret = ph.secret_text(options.get("webhook_secret")).strip()

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackHint | None:
        """The operation (``{name, done, ...}``), bare or under ``operation`` / ``data``."""
        payload = _signatures.json_object(body)
        if payload is None:
            return None
        node = payload
        for key in ("operation", "data", "resource"):
            inner = _mapping(payload.get(key))
            if inner is not None and "name" in inner:
                node = inner
                break
        name = _signatures.task_id_of(node.get("name"))
        if name is None:
            return None
        try:
            status: PollStatus | None = parse_operation(node).status
        except Exception:  # the poll will tell
            status = None
        bare = name.lstrip("/").removeprefix("v1beta/")
        aliases = tuple(a for a in (bare, f"v1beta/{bare}") if a != name)
        return CallbackHint(task_id=name, status=status, aliases=aliases)

    def _status_url(self, task_id: str) -> str:
        name = task_id.strip()
        if name.startswith("/"):
            name = name[1:]
        if name.startswith("v1beta/"):
            name = name[len("v1beta/") :]
        return f"{self.base_url}/v1beta/{ph.quote_task_path(name, provider=self.name)}"

    async def poll(self, task: ProviderTask, http: httpx.AsyncClient) -> PollResult:
        self._need_key()
        url = self._status_url(task.task_id)
        response = await ph.get(
            http,
            url,
            provider=self.name,
            headers={"x-goog-api-key": self._api_key},
            timeout_s=self.timeout_s,
        )
        return self._read(response)

    def _read(self, response: httpx.Response) -> PollResult:
        status = response.status_code
        if status == 400:
            # Google answers a bad key with 400 INVALID_ARGUMENT "API key not valid".
            body = _mapping(_safe_json(response)) or {}
            error = _mapping(body.get("error")) or {}
            message = ph.text_of(error.get("message"), error.get("status"))
            if _AUTH.search(message) or "API_KEY" in json.dumps(error.get("details", "")):
                raise ProviderTaskFailed(ErrorCode.AUTH_FAILED, provider=self.name, detail=message)
            raise ProviderTaskFailed(
                classify_error(ph.as_int(error.get("code")), message),
                provider=self.name,
                detail=message or "HTTP 400",
            )
        ph.check_http_status(response, provider=self.name)
        if status == 404:
            raise ProviderTaskFailed(
                ErrorCode.UNKNOWN_PROVIDER_ERROR,
                provider=self.name,
                detail="operation unknown to the provider (HTTP 404)",
            )
        body = ph.read_json(response, provider=self.name)
        if status >= 400:
            error = _mapping((_mapping(body) or {}).get("error")) or {}
            message = ph.text_of(error.get("message"), error.get("status"))
            raise ProviderTaskFailed(
                classify_error(ph.as_int(error.get("code")), message),
                provider=self.name,
                detail=message or f"HTTP {status}",
            )
        return parse_operation(body)

    # --- submit -------------------------------------------------------------------------

    def create_body(self, request: GenerationRequest) -> dict[str, Any]:
        parameters: dict[str, Any] = {}
        if request.aspect_ratio:
            parameters["aspectRatio"] = request.aspect_ratio
        if request.resolution:
            parameters["resolution"] = request.resolution
        if request.duration_s is not None:
            parameters["durationSeconds"] = request.duration_s
        parameters.update({k: v for k, v in request.options.items() if v is not None})
        body: dict[str, Any] = {"instances": [{"prompt": request.prompt}]}
        if parameters:
            body["parameters"] = parameters
        return body

    async def submit(self, request: GenerationRequest, http: httpx.AsyncClient) -> SubmitResult:
        """``POST /v1beta/models/{model}:predictLongRunning``; the operation name is the id."""
        self._need_key()
        model = request.model.strip().removeprefix("models/")
        path = ph.quote_task_path(model, provider=self.name)
        response = await ph.post_create(
            http,
            f"{self.base_url}/v1beta/models/{path}:predictLongRunning",
            provider=self.name,
            body=self.create_body(request),
            headers={"x-goog-api-key": self._api_key, "Accept": "application/json"},
            timeout_s=self.timeout_s,
        )
        return _read_operation_started(response)

    # --- download: the key goes only to the API host ------------------------------------

    async def download(self, url: str, http: httpx.AsyncClient) -> AsyncIterator[bytes] | None:
        """Fetch a file URI on the API host with the key; anything else: the plain fetcher."""
        if not self._api_key or not ph.same_host(url, self.base_url):
            return None
        return self._fetch(url, http)

    async def _fetch(self, url: str, http: httpx.AsyncClient) -> AsyncIterator[bytes]:
        settings = self._context.settings
        deadline = settings.storage.download_timeout_s
        current = url
        try:
            async with asyncio.timeout(deadline):
                for _hop in range(6):
                    if not ph.same_host(current, self.base_url):
                        # A redirect to a storage host: no key, and the SSRF guard applies.
                        async for chunk in self._fetch_elsewhere(current, http):
                            yield chunk
                        return
                    request = http.build_request(
                        "GET", current, headers={"x-goog-api-key": self._api_key}
                    )
                    try:
                        response = await http.send(request, stream=True)
                    except httpx.TransportError as exc:
                        raise DownloadError(
                            f"could not fetch the Gemini file: {type(exc).__name__}",
                            transient=True,
                        ) from None
                    try:
                        if response.status_code in _REDIRECTS and "location" in response.headers:
                            current = urljoin(current, response.headers["location"])
                            continue
                        _raise_for_download_status(response.status_code)
                        async for chunk in response.aiter_bytes(65536):
                            yield chunk
                        return
                    except httpx.TransportError as exc:
                        raise DownloadError(
                            f"the Gemini file download broke off: {type(exc).__name__}",
                            transient=True,
                        ) from None
                    finally:
                        await response.aclose()
                raise DownloadError("too many redirects from the Gemini file URI")
        except TimeoutError:
            raise DownloadError(
                f"the Gemini file download took longer than {deadline:g} s", transient=True
            ) from None

    async def _fetch_elsewhere(self, url: str, http: httpx.AsyncClient) -> AsyncIterator[bytes]:
        settings = self._context.settings
        client = self._context.http or http
        async with net.open_stream(
            client,
            url,
            max_bytes=settings.storage.max_video_bytes,
            deadline_s=settings.storage.download_timeout_s,
            allow_private=settings.security.allow_private_urls,
        ) as stream:
            async for chunk in stream.iter_bytes():
                yield chunk


def _raise_for_download_status(status: int) -> None:
    if 200 <= status < 300:
        return
    transient = status in (408, 425, 429) or status >= 500
    raise DownloadError(
        f"the Gemini file URI answered HTTP {status}", transient=transient, status=status
    )


def _safe_json(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


__all__ = ["GeminiAdapter", "GeminiOptions", "parse_operation"]
