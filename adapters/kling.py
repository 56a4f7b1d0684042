"""Kling's official API: ``GET /v1/videos/text2video/{task_id}`` (and ``image2video``).

:func:`parse_kling_payload` is pure. The envelope is ``{code, message, request_id, data}``
with ``code`` 0 for success; a non-zero code is an error even under HTTP 200 (and Kling
answers an empty account with HTTP 429 and code 1101/1102, which is not a rate limit).
Inside ``data``: ``task_status`` submitted | processing | succeed | failed,
``task_status_msg`` (the failure reason) and ``task_result.videos[{id, url, duration}]``.
A callback body is the same task unwrapped, and is read too.

Authentication: Kling signs requests with a JWT (HS256, ``iss`` = access key, 30 min
lifetime) made from an access key and a secret key. Set ``providers.kling.access_key`` and
``secret_key`` (or ``KLING_ACCESS_KEY`` / ``KLING_SECRET_KEY``) and the adapter mints the
token itself; a ready token in ``api_key`` / ``KLING_API_KEY`` is sent as it is.

A task id does not say whether it was a text or an image task: the adapter asks the
endpoints in ``providers.kling.endpoints`` in turn and remembers which one knew the task.

Generations start with ``POST /v1/videos/text2video`` (no image) or ``/v1/videos/image2video``
(``image``), answered ``{code: 0, data: {task_id, task_status: submitted}}``. Each create
carries ``external_task_id`` = our job id and the task's index, so after a crash between the
create call and its record :meth:`KlingAdapter.find_task` asks ``GET /v1/videos/<kind>/
{external_task_id}`` instead of paying twice. ``callback_url`` is our ``/callbacks/kling``:
Kling posts the task unwrapped (``{task_id, task_status, ...}``) and signs nothing, so the
push is only a hint. Kling limits running tasks per account (code 1303, "parallel task
over resource pack limit") rather than create calls per minute: that answer means nothing
was created, and the job stays ``submitting``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from webhook_poller.errors import ProviderTaskFailed, ProviderUnavailable, UnrecognizedResponse
from webhook_poller.interfaces import ModelCapabilities, PollResult, PollStatus
from webhook_poller.model import ErrorCode
from webhook_poller.options import ProviderOptions

from . import _direct_submit as ds
from . import _provider_http as ph
from ._provider_http import DirectAdapter, as_int, segment
from .kie import classify_failure, extract_urls

if TYPE_CHECKING:
    from webhook_poller.interfaces import (
        GenerationRequest,
        PluginContext,
        ProviderTask,
        SubmitResult,
    )

PENDING = frozenset({"submitted", "processing", "queued", "queuing", "pending", "running"})
SUCCEEDED = frozenset({"succeed", "succeeded", "success", "completed"})
FAILED = frozenset({"failed", "fail", "failure", "error"})

# Kling's refusals read "Failure to pass the risk control system" or name the content policy.
_KLING_MODERATION = re.compile(r"risk control|sensitive|security|policy", re.I)

AUTH_CODES = frozenset({1000, 1001, 1002, 1003, 1004, 1100, 1103, 1304})
CREDIT_CODES = frozenset({1101, 1102})
RATE_CODES = frozenset({1302, 1303})
MODERATION_CODES = frozenset({1300, 1301})
NOT_FOUND_CODES = frozenset({1202, 1203})


class KlingOptions(ProviderOptions):
    """``providers.kling``; the token may be minted from ``access_key`` + ``secret_key``."""

    base_url: str | None = "https://api-singapore.klingai.com"
    min_interval_s: float = Field(default=5.0, ge=0)
    max_requests_per_s: float = Field(default=5.0, ge=0)
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    #: The task kinds asked in turn (``/v1/videos/<kind>/{task_id}``).
    endpoints: list[str] = Field(default_factory=lambda: ["text2video", "image2video"])


class KlingTaskUnknown(ProviderTaskFailed):
    """This endpoint does not know the task (another kind may)."""


def _raise_for_code(code: int, message: str) -> None:
    if code in AUTH_CODES:
        raise ProviderTaskFailed(ErrorCode.AUTH_FAILED, provider="kling", detail=message)
    if code in CREDIT_CODES:
        raise ProviderTaskFailed(ErrorCode.INSUFFICIENT_CREDITS, provider="kling", detail=message)
    if code in RATE_CODES:
        raise ProviderUnavailable(
            f"provider code {code}", provider="kling", detail=message, rate_limited=True
        )
    if code >= 5000:
        raise ProviderUnavailable(f"provider code {code}", provider="kling", detail=message)
    if code in NOT_FOUND_CODES:
        raise KlingTaskUnknown(
            ErrorCode.UNKNOWN_PROVIDER_ERROR,
            provider="kling",
            detail=f"task unknown to the provider: code {code} {message}",
        )
    raise ProviderTaskFailed(
        ErrorCode.UNKNOWN_PROVIDER_ERROR, provider="kling", detail=f"code {code} {message}"
    )


def _task(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    data = ph.unwrap_json_text(payload.get("data"))
    if isinstance(data, Mapping):
        return data
    if "task_status" in payload:  # a callback: the task unwrapped
        return payload
    raise UnrecognizedResponse("no task data in the body", provider="kling")


def _videos(task: Mapping[str, Any]) -> tuple[str, ...]:
    result = task.get("task_result")
    if isinstance(result, str) and result.strip().startswith("{"):
        try:
            result = json.loads(result)
        except ValueError:
            result = None
    if not isinstance(result, Mapping):
        return ()
    urls: list[str] = []
    videos = result.get("videos")
    for video in videos if isinstance(videos, list) else [videos]:
        if isinstance(video, Mapping):
            urls.extend(extract_urls(video.get("url")))
        else:
            urls.extend(extract_urls(video))
    return tuple(dict.fromkeys(urls))


def parse_kling_payload(payload: object) -> PollResult:
    """Read a Kling query answer or callback; raise UnrecognizedResponse when we cannot."""
    if not isinstance(payload, Mapping):
        raise UnrecognizedResponse("the body is not a JSON object", provider="kling")
    message = str(payload.get("message") or payload.get("msg") or "")
    code = as_int(payload.get("code"))
    if code is not None and code != 0:
        _raise_for_code(code, message)
    task = _task(payload)
    raw = task.get("task_status")
    if not isinstance(raw, str) or not raw.strip():
        raise UnrecognizedResponse("no task_status in the task", provider="kling")
    word = raw.strip().lower()
    if word in PENDING:
        return PollResult(PollStatus.PENDING)
    if word in SUCCEEDED:
        return PollResult(PollStatus.SUCCEEDED, video_urls=_videos(task), progress=1.0)
    if word in FAILED:
        reason = task.get("task_status_msg")
        text = reason if isinstance(reason, str) else ""
        error = classify_failure(None, text)
        if error is ErrorCode.UNKNOWN_PROVIDER_ERROR and _KLING_MODERATION.search(text):
            error = ErrorCode.MODERATION_REJECTED
        return PollResult(PollStatus.FAILED, error_code=error, detail=text or word)
    raise UnrecognizedResponse(f"unknown task_status {word[:40]!r}", provider="kling")


def check_created(payload: Mapping[str, Any]) -> None:
    """A create answer's ``code``: 1200-1299 are bad requests, 1300/1301 the content policy;
    the rest as on a status answer (1302/1303 "try later": nothing was created)."""
    code = as_int(payload.get("code"))
    if code is None or code == 0:
        return
    message = str(payload.get("message") or "")
    if code in MODERATION_CODES:
        raise ProviderTaskFailed(ErrorCode.MODERATION_REJECTED, provider="kling", detail=message)
    if 1200 <= code < 1300:
        raise ProviderTaskFailed(
            ErrorCode.VALIDATION_FAILED, provider="kling", detail=f"code {code} {message}"
        )
    _raise_for_code(code, message)


class KlingGenerateOptions(BaseModel):
    """``options`` of a Kling generation (text2video / image2video body fields)."""

    model_config = ConfigDict(extra="forbid")

    negative_prompt: str | None = Field(default=None, max_length=2500)
    cfg_scale: float | None = Field(default=None, ge=0, le=1)
    #: std (720p) or pro (1080p, more credits).
    mode: Literal["std", "pro"] | None = None


#: Kling's API reference: ``duration`` "5" | "10"; ``aspect_ratio`` 16:9 | 9:16 | 1:1 on
#: text2video (image2video takes the image's); one ``image``; kling-v2-1 is image-only.
_ASPECTS = ("16:9", "9:16", "1:1")
_ANY = ModelCapabilities(durations_s=(5, 10), aspect_ratios=_ASPECTS, max_images=1)
CAPABILITIES: dict[str, ModelCapabilities] = {
    "kling-v1": _ANY,
    "kling-v1-5": _ANY,
    "kling-v1-6": _ANY,
    "kling-v2-master": _ANY,
    "kling-v2-1": ModelCapabilities(
        durations_s=(5, 10), aspect_ratios=_ASPECTS, min_images=1, max_images=1
    ),
    "kling-v2-1-master": _ANY,
    "kling-v2-5-turbo": _ANY,
}


def external_task_id(request: GenerationRequest) -> str | None:
    """Our name for the task at Kling (unique per job and index), or None without a job."""
    return f"{request.job_id}-{request.index}" if request.job_id else None


def create_call(request: GenerationRequest) -> tuple[str, dict[str, Any]]:
    """(task kind, body) of the create call; image2video takes the image's aspect ratio."""
    image = request.image_urls[0] if request.image_urls else None
    duration = request.duration_s
    body = ds.present(
        {
            "model_name": request.model,
            "prompt": request.prompt,
            "image": image,
            "duration": str(duration) if duration is not None else None,
            "aspect_ratio": None if image else request.aspect_ratio,
            **request.options,
            "callback_url": request.callback_url,
            "external_task_id": external_task_id(request),
        }
    )
    return ("image2video" if image else "text2video"), body


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def kling_jwt(access_key: str, secret_key: str, now: float | None = None) -> str:
    """The HS256 token Kling asks for: ``iss`` = access key, valid from 5 s ago for 30 min."""
    issued = int(time.time() if now is None else now)
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"iss": access_key, "exp": issued + 1800, "nbf": issued - 5}
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{body}".encode("ascii")
    signature = hmac.new(secret_key.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


class KlingAdapter(DirectAdapter):
    """Polls ``GET {base_url}/v1/videos/{text2video|image2video}/{task_id}``."""

    name = "kling"
    config_section = "kling"
    Options: ClassVar[type[ProviderOptions]] = KlingOptions
    env_key = "KLING_API_KEY"
    #: Kling keeps generated videos for 30 days (its API notes); fetched at once anyway.
    result_link_ttl_s: ClassVar[float] = 30 * 86400.0
    unknown_task_error: ClassVar[type[ProviderTaskFailed]] = KlingTaskUnknown
    capabilities: ClassVar[Mapping[str, ModelCapabilities]] = CAPABILITIES
    GenerateOptions: ClassVar[type[BaseModel]] = KlingGenerateOptions
    _KINDS_REMEMBERED = 10_000

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        opts = self.options
        self._access_key = ph.secret_or_env(getattr(opts, "access_key", None), "KLING_ACCESS_KEY")
        self._secret_key = ph.secret_or_env(getattr(opts, "secret_key", None), "KLING_SECRET_KEY")
        kinds = [str(k).strip("/") for k in getattr(opts, "endpoints", []) if str(k).strip("/")]
        self.kinds = kinds or ["text2video", "image2video"]
        self._token: tuple[str, float] | None = None
        self._kind_of: OrderedDict[str, str] = OrderedDict()

    def missing_credentials(self) -> str | None:
        if self._api_key or (self._access_key and self._secret_key):
            return None
        return (
            "providers.kling.access_key and secret_key (or providers.kling.api_key / KLING_API_KEY)"
        )

    def _bearer(self) -> str:
        if self._access_key and self._secret_key:
            now = time.time()
            if self._token is None or self._token[1] - now < 300:
                self._token = (kling_jwt(self._access_key, self._secret_key, now), now + 1800)
            return self._token[0]
        if not self._api_key:
            raise ProviderTaskFailed(
                ErrorCode.AUTH_FAILED,
                provider=self.name,
                detail="no Kling credentials configured (providers.kling.access_key and "
                "secret_key, KLING_ACCESS_KEY and KLING_SECRET_KEY, or a token in "
                "providers.kling.api_key / KLING_API_KEY)",
            )
        return self._api_key

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._bearer()}"}

    def error_for_status(self, status: int, body: Any) -> None:
        # Kling's body code is more precise than the HTTP status (429 + 1101 = no credits).
        code = as_int(body.get("code")) if isinstance(body, Mapping) else None
        if code is not None and code != 0:
            _raise_for_code(code, str(body.get("message") or ""))

    def _order(self, task: ProviderTask) -> list[str]:
        known = self._kind_of.get(task.task_id)
        kinds = list(self.kinds)
        hint = task.model.lower()
        if known is None and ("image" in hint or "i2v" in hint):
            kinds.sort(key=lambda k: "image" not in k)
        if known in kinds:
            kinds.remove(known)
            kinds.insert(0, known)
        return kinds

    async def poll(self, task: ProviderTask, http: httpx.AsyncClient) -> PollResult:
        last: KlingTaskUnknown | None = None
        for kind in self._order(task):
            try:
                body = await self.get_json(http, f"/v1/videos/{kind}/{segment(task.task_id)}")
                result = parse_kling_payload(body)
            except KlingTaskUnknown as exc:
                last = exc
                continue
            self._remember(task.task_id, kind)
            return result
        if last is None:  # pragma: no cover - kinds is never empty
            raise UnrecognizedResponse("no Kling endpoint to ask", provider=self.name)
        raise last

    def _remember(self, task_id: str, kind: str) -> None:
        self._kind_of[task_id] = kind
        self._kind_of.move_to_end(task_id)
        while len(self._kind_of) > self._KINDS_REMEMBERED:
            self._kind_of.popitem(last=False)

    async def submit(self, request: GenerationRequest, http: httpx.AsyncClient) -> SubmitResult:
        """``POST /v1/videos/{text2video|image2video}``; ``data.task_id`` is the task id."""
        kind, body = create_call(request)
        answer = await ds.create(http, self, f"/v1/videos/{kind}", body, check_created)
        data = answer.get("data")
        result = ds.submitted(
            data.get("task_id") if isinstance(data, Mapping) else None, provider=self.name
        )
        self._remember(result.task_id, kind)
        return result

    async def find_task(self, request: GenerationRequest, http: httpx.AsyncClient) -> str | None:
        """The task a lost create call may have started, by its ``external_task_id``."""
        external = external_task_id(request)
        if external is None:
            return None
        kind = "image2video" if request.image_urls else "text2video"
        try:
            body = await self.get_json(http, f"/v1/videos/{kind}/{segment(external)}")
            parse_kling_payload(body)
        except KlingTaskUnknown:
            return None
        data = body.get("data")
        if not isinstance(data, Mapping):
            return None
        info = data.get("task_info")
        named = info.get("external_task_id") if isinstance(info, Mapping) else external
        task_id = data.get("task_id")
        if named != external or not isinstance(task_id, str | int) or isinstance(task_id, bool):
            return None
        self._remember(str(task_id), kind)
        return str(task_id)
