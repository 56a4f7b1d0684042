"""KIE.ai adapters: Veo (``record-info``) and Market jobs (``recordInfo``: Sora 2, Seedance,
Kling, Hailuo, Wan ...), sharing one tolerant parser.

:func:`parse_kie_payload` is pure: it reads every shape we have seen (the Veo record, the
Market record whose ``resultJson`` is a JSON *string*, the Runway wrapper, the n8n template's
``{status, videoUrl}`` / ``{job: {status, result: {url}}}`` / legacy ``{data: {video_url}}``,
and error envelopes inside HTTP 200) and answers a :class:`PollResult`, or raises
UnrecognizedResponse. Provider text only ever lands in ``detail`` (for logs).

Traps handled (see shared/providers.md): KIE reports failures as HTTP 200 with
``code != 200``; ``successFlag`` may be a string; ``failCode`` may be a string or an int;
status words come in any case; URLs come as a string, a list, a JSON string of a list, or
the malformed ``"[http://...mp4]"`` of KIE's OpenAPI callback schema; watermarked copies and
thumbnails are not results.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

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
from webhook_poller.options import PluginOptions, ProviderOptions

from . import _provider_http as ph
from . import _signatures

SUCCESS_WORDS = frozenset(
    {"success", "succeeded", "succeed", "completed", "complete", "done", "finished", "ok"}
)
FAILURE_WORDS = frozenset(
    {
        "fail",
        "failed",
        "failure",
        "error",
        "errored",
        "canceled",
        "cancelled",
        "rejected",
        "expired",
    }
)
PENDING_WORDS = frozenset(
    {
        "waiting",
        "wait",
        "queuing",
        "queueing",
        "queued",
        "pending",
        "generating",
        "processing",
        "running",
        "in_progress",
        "inprogress",
        "starting",
        "created",
        "submitted",
        "dreaming",
    }
)

#: Keys that hold result video URLs, best first. Watermarked copies and thumbnails are absent
#: on purpose.
URL_KEYS = (
    "resultUrls",
    "result_urls",
    "fullResultUrls",
    "videoUrls",
    "video_urls",
    "videoUrl",
    "video_url",
    "resultUrl",
    "result_url",
    "url",
    "urls",
    "originUrls",
)

_MODERATION = re.compile(
    r"moderat|content polic|safety|unsafe|nsfw|sensitive|prohibit|violat|inappropriate|"
    r"flagged|guideline|public figure|copyright",
    re.I,
)
_ASSET = re.compile(
    r"(fetch|download|read|load|access).{0,20}(image|asset|file|url)|"
    r"image.{0,20}(fetch|download|invalid|too (large|small))",
    re.I,
)
_CREDITS = re.compile(r"credit|balance|insufficient|quota", re.I)
_TIMEOUT = re.compile(r"time(d)? ?out|no result has been returned", re.I)
_NOT_FOUND = re.compile(r"record is null|not found|no record|does not exist|within 14 days", re.I)


def _text(*values: Any) -> str:
    return " ".join(str(v) for v in values if v not in (None, "")).strip()


def extract_urls(value: Any) -> list[str]:
    """Every http(s) URL in a string, list, JSON string or malformed ``"[url, url]"``."""
    if value is None:
        return []
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith(("[", "{")):
            try:
                return extract_urls(json.loads(stripped))
            except ValueError:
                stripped = stripped.strip("[]")
        return [
            p.strip().strip("'\"")
            for p in re.split(r"[,\s]+", stripped)
            if p.strip().strip("'\"").lower().startswith(("http://", "https://"))
        ]
    if isinstance(value, list | tuple):
        urls: list[str] = []
        for item in value:
            urls.extend(extract_urls(item))
        return urls
    if isinstance(value, Mapping):
        return _urls_from(value)
    return []


def _urls_from(node: Mapping[str, Any]) -> list[str]:
    for key in URL_KEYS:
        if key in node:
            found = extract_urls(node[key])
            if found:
                return found
    for key in (
        "response",
        "result",
        "info",
        "videoInfo",
        "video",
        "output",
        "resultJson",
        "data",
        "job",
    ):
        child = node.get(key)
        if isinstance(child, str) and key == "resultJson" and child.strip():
            try:
                child = json.loads(child)
            except ValueError:
                child = None
        if isinstance(child, Mapping | list):
            found = extract_urls(child) if isinstance(child, list) else _urls_from(child)
            if found:
                return found
    return []


def _dedupe(urls: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(u for u in urls if u))


def classify_failure(code: int | None, message: str) -> ErrorCode:
    """Map a KIE failure code and text to our error codes (text decides where codes clash)."""
    if _MODERATION.search(message):
        return ErrorCode.MODERATION_REJECTED
    if code == 451 or _ASSET.search(message):
        return ErrorCode.ASSET_FETCH_FAILED
    if code == 402 or _CREDITS.search(message):
        return ErrorCode.INSUFFICIENT_CREDITS
    if code == 408 or _TIMEOUT.search(message):
        return ErrorCode.PROVIDER_TIMEOUT
    if code in (401, 403):
        return ErrorCode.AUTH_FAILED
    if code == 429:
        return ErrorCode.PROVIDER_RATE_LIMITED
    return ErrorCode.UNKNOWN_PROVIDER_ERROR


def _status_word(node: Mapping[str, Any]) -> str | None:
    for key in ("state", "status", "taskStatus", "task_status"):
        value = node.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip().lower().replace("-", "_").replace(" ", "_")
    return None


def _progress(node: Mapping[str, Any]) -> float | None:
    value = node.get("progress")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 100 if value > 1 else float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip().rstrip("%"))
        except ValueError:
            return None
        return number / 100 if number > 1 else number
    return None


def _parse_record(record: Mapping[str, Any]) -> PollResult | None:
    """One task record (the ``data`` of an envelope, or a bare template shape)."""
    flag = ph.as_int(record.get("successFlag"))
    fail_code = ph.as_int(record.get("failCode")) or ph.as_int(record.get("errorCode"))
    message = _text(
        record.get("failMsg"),
        record.get("errorMessage"),
        record.get("msg"),
        record.get("error") if isinstance(record.get("error"), str) else None,
    )
    urls = _dedupe(_urls_from(record))
    word = _status_word(record)
    if flag is not None:
        if flag == 1:
            return PollResult(PollStatus.SUCCEEDED, video_urls=urls)
        if flag in (2, 3):
            return PollResult(
                PollStatus.FAILED,
                error_code=classify_failure(fail_code, message),
                detail=message or f"successFlag {flag}",
            )
        return PollResult(PollStatus.PENDING, progress=_progress(record))
    if word in SUCCESS_WORDS:
        return PollResult(PollStatus.SUCCEEDED, video_urls=urls, progress=1.0)
    if word in FAILURE_WORDS:
        return PollResult(
            PollStatus.FAILED,
            error_code=classify_failure(fail_code, message),
            detail=message or word,
        )
    if word in PENDING_WORDS:
        return PollResult(PollStatus.PENDING, progress=_progress(record))
    job = record.get("job")
    if isinstance(job, Mapping):
        return _parse_record(job)
    if urls and word is None:
        # The legacy shape: {data: {video_url}} with no status at all means done.
        return PollResult(PollStatus.SUCCEEDED, video_urls=urls)
    return None


def parse_kie_payload(payload: object) -> PollResult:
    """Read any KIE (or template) status body; raise UnrecognizedResponse when we cannot."""
    if isinstance(payload, str | bytes):
        try:
            payload = json.loads(payload)
        except ValueError:
            raise UnrecognizedResponse("the body is not JSON") from None
    if not isinstance(payload, Mapping):
        raise UnrecognizedResponse(f"the body is a JSON {type(payload).__name__}, not an object")
    code = ph.as_int(payload.get("code"))
    message = _text(payload.get("msg"), payload.get("message"))
    if code is not None and code != 200:
        _raise_for_envelope(code, message)
    data = ph.unwrap_json_text(payload.get("data"))
    if isinstance(data, Mapping):
        result = _parse_record(data)
        if result is not None:
            return result
    result = _parse_record(payload)
    if result is not None:
        return result
    if code == 200 and data is None:
        raise UnrecognizedResponse("an ok envelope without data")
    raise UnrecognizedResponse("no status and no video URL in the body")


def _raise_for_envelope(code: int, message: str) -> None:
    """Failures KIE sends as HTTP 200 with ``code != 200`` in the body."""
    if code in (401, 403):
        raise ProviderTaskFailed(ErrorCode.AUTH_FAILED, provider="kie", detail=message)
    if code == 402:
        raise ProviderTaskFailed(ErrorCode.INSUFFICIENT_CREDITS, provider="kie", detail=message)
    if code == 429:
        raise ProviderUnavailable("rate limited", provider="kie", detail=message, rate_limited=True)
    if code in (455, 500, 502, 503, 504):
        raise ProviderUnavailable(f"provider code {code}", provider="kie", detail=message)
    if code == 404 or (code == 422 and _NOT_FOUND.search(message)):
        raise ProviderTaskFailed(
            ErrorCode.UNKNOWN_PROVIDER_ERROR,
            provider="kie",
            detail=f"task unknown to the provider: {message}",
        )
    if code == 422 and re.search(r"not success|processing", message, re.I):
        raise ProviderUnavailable(f"provider code {code}", provider="kie", detail=message)
    raise ProviderTaskFailed(classify_failure(code, message), provider="kie", detail=message)


def _task_id_in(node: Mapping[str, Any]) -> str | None:
    for key in ("taskId", "task_id"):
        value = node.get(key)
        if isinstance(value, str) and value.strip() and len(value) <= 256:
            return value.strip()
    return None


def parse_kie_callback(body: bytes) -> CallbackHint | None:
    """The task id of a KIE callback body and what it claims; ``None`` when it names none."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, Mapping):
        return None
    data = payload.get("data")
    task_id = (_task_id_in(data) if isinstance(data, Mapping) else None) or _task_id_in(payload)
    if task_id is None:
        return None
    try:
        status: PollStatus | None = parse_kie_payload(payload).status
    except Exception:  # a failure envelope or an odd shape: the poll will tell
        status = PollStatus.FAILED if ph.as_int(payload.get("code")) not in (None, 200) else None
    return CallbackHint(task_id=task_id, status=status)


def read_create_answer(response: httpx.Response, provider: str) -> SubmitResult:
    """A create call's answer: the new task id, or which kind of failure it was.

    Only answers that certainly started nothing are ``ProviderUnavailable`` (429, which KIE
    rejects without queueing; 455 maintenance); a 5xx or an unreadable 200 may hide a task
    that was started, so it is ``SubmissionUncertain``.
    """
    status = response.status_code
    if status >= 500:
        raise SubmissionUncertain(f"HTTP {status} on create", provider=provider)
    if status not in (408, 425):  # KIE answers those with a body that says more
        ph.check_http_status(response, provider=provider)
    try:
        body = response.json()
    except ValueError:
        raise SubmissionUncertain(
            f"HTTP {status} with a body that is not JSON", provider=provider
        ) from None
    if not isinstance(body, Mapping):
        raise SubmissionUncertain("the create answer is not a JSON object", provider=provider)
    return _read_create_body(body, status, provider)


def _read_create_body(body: Mapping[str, Any], status: int, provider: str) -> SubmitResult:
    code = ph.as_int(body.get("code"))
    if code is None and status >= 400:
        code = status
    message = _text(body.get("msg"), body.get("message"))[:300]
    if code == 429:
        raise ProviderUnavailable(
            "rate limited", provider=provider, detail=message, rate_limited=True
        )
    if code == 455:
        raise ProviderUnavailable("provider maintenance", provider=provider, detail=message)
    if code in (401, 403):
        raise ProviderTaskFailed(ErrorCode.AUTH_FAILED, provider=provider, detail=message)
    if code == 402:
        raise ProviderTaskFailed(ErrorCode.INSUFFICIENT_CREDITS, provider=provider, detail=message)
    if code is not None and code >= 500:
        raise SubmissionUncertain(f"provider code {code} on create", provider=provider)
    if code is not None and code != 200:
        kind = classify_failure(code, message)
        if kind is ErrorCode.UNKNOWN_PROVIDER_ERROR and code in (400, 422):
            kind = ErrorCode.VALIDATION_FAILED
        raise ProviderTaskFailed(kind, provider=provider, detail=message)
    data = body.get("data")
    task_id = data.get("taskId") if isinstance(data, Mapping) else None
    missing = "an ok create answer without a usable taskId"
    return ph.created_task(task_id, provider=provider, missing=missing, detail=message or None)


class VeoOptions(BaseModel):
    """``options`` a Veo generation passes through to ``/api/v1/veo/generate``."""

    model_config = ConfigDict(extra="forbid")

    generationType: (
        Literal["TEXT_2_VIDEO", "FIRST_AND_LAST_FRAMES_2_VIDEO", "REFERENCE_2_VIDEO"] | None
    ) = None
    enableTranslation: bool | None = None
    watermark: str | None = Field(default=None, max_length=100)
    seeds: int | None = Field(default=None, ge=10000, le=99999)


class MarketOptions(BaseModel):
    """``options`` a Market (Sora 2) generation passes through inside ``input``."""

    model_config = ConfigDict(extra="forbid")

    remove_watermark: bool | None = None
    character_id_list: list[str] | None = Field(default=None, max_length=5)


_VEO = ModelCapabilities(
    durations_s=(8,),
    aspect_ratios=("16:9", "9:16", "Auto"),
    resolutions=("720p", "1080p", "4k"),
    max_images=3,
)
_SORA_TEXT = ModelCapabilities(durations_s=(10, 15), aspect_ratios=("16:9", "9:16"))
_SORA_IMAGE = ModelCapabilities(
    durations_s=(10, 15), aspect_ratios=("16:9", "9:16"), min_images=1, max_images=1
)
_SORA_SIZES = ("standard", "high")
_SORA_ASPECT = {"16:9": "landscape", "9:16": "portrait"}


class KieOptions(ProviderOptions):
    """``providers.kie``, shared by Veo and Market: the keys every provider family knows
    (``base_url``, ``api_key``, ``min_interval_s``, ``max_requests_per_s``, ``timeout_s``,
    ``interval_s``, ``first_poll_delay_s``, ``delayed_interval_s``), the push key, and
    ``upscale_interval_s``: the spacing of 1080p / 4K checks (default 20 s and 30 s, KIE's
    advice)."""

    #: KIE's own defaults: its host, its documented 10 status queries per second per key,
    #: and one task polled at most every 30 s (the n8n template's advice). The service caps
    #: the 30 s at a ``polling.interval_s`` the user set; a ``min_interval_s`` set here rules.
    base_url: str | None = "https://api.kie.ai"
    min_interval_s: float = Field(default=30.0, ge=0)
    max_requests_per_s: float = Field(default=10.0, ge=0)
    #: The account's ``webhookHmacKey`` (kie.ai settings): checks ``X-Webhook-Signature`` of
    #: pushes to /callbacks/kie. Unset: a push is accepted unsigned (it stays a hint).
    webhook_hmac_key: SecretStr | None = None
    upscale_interval_s: float | None = Field(default=None, gt=0)


#: KIE's advice for checking an upscale: 1080p every 20-30 s, 4K every 30 s or more.
UPSCALE_INTERVAL_S = {"1080p": 20.0, "4k": 30.0}
#: Veo ``/extend`` names the model family, not the model.
_EXTEND_MODEL = {"veo3": "quality", "veo3_fast": "fast", "veo3_lite": "lite"}
_PROCESSING = re.compile(r"processing|not ready|in progress|generating|check back", re.I)


def upscale_task_id(resolution: str, index: int, parent_task_id: str) -> str:
    """The task id an upscale job polls: the parent's Veo task, the video index, the size."""
    return f"{resolution}:{index}:{parent_task_id}"


def parse_upscale_task_id(task_id: str) -> tuple[str, int, str] | None:
    """``(resolution, index, parent task id)`` of an upscale task id, else None."""
    resolution, _, rest = task_id.partition(":")
    if resolution not in UPSCALE_INTERVAL_S:
        return None
    index, _, parent = rest.partition(":")
    if not index.isdigit() or not parent:
        return None
    return resolution, int(index), parent


class _KieAdapter(ph.KeyedAdapter):
    """Shared HTTP handling; subclasses name the status endpoint."""

    name = "kie"
    config_section = "kie"
    env_key = "KIE_API_KEY"
    default_base_url = "https://api.kie.ai"
    Options: ClassVar[type[PluginOptions]] = KieOptions
    path = ""
    create_path = ""
    #: The pure body parser of this endpoint.
    parse = staticmethod(parse_kie_payload)
    #: The Market page: result URLs "typically expire after 24 hours".
    result_link_ttl_s: ClassVar[float] = 86400.0
    #: KIE: 20 new generation requests per 10 s per account (a 429 is rejected, not queued).
    submit_budget: ClassVar[tuple[int, float]] = (20, 10.0)
    capabilities: ClassVar[Mapping[str, ModelCapabilities]] = {}
    GenerateOptions: ClassVar[type[BaseModel]] = BaseModel

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(options, context)
        interval = options.get("upscale_interval_s")
        self.upscale_interval_s = float(interval) if interval else None
        self._hmac_key = ph.secret_text(options.get("webhook_hmac_key")).strip()

    def _key_from(self, options: Mapping[str, Any]) -> str:
        # The key as configured: load_settings already falls back to KIE_API_KEY.
        return ph.secret_text(options.get("api_key"))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}

    # --- provider push (``callBackUrl`` -> POST /callbacks/kie) -----------------------------

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackHint | None:
        """``{code, msg, data: {taskId | task_id, ...}}`` (Veo, Market, 4K, Runway shapes)."""
        return parse_kie_callback(body)

    async def verify_callback(
        self,
        headers: Mapping[str, str],
        body: bytes,
        hint: CallbackHint,
        http: httpx.AsyncClient,
    ) -> bool:
        """``X-Webhook-Signature`` when ``providers.kie.webhook_hmac_key`` is set."""
        if not self._hmac_key:
            return True
        return _signatures.verify_kie(self._hmac_key, hint.task_id, headers)

    async def poll(self, task: ProviderTask, http: httpx.AsyncClient) -> PollResult:
        key = self._need_key()
        response = await ph.get(
            http,
            f"{self.base_url}{self.path}",
            provider=self.name,
            headers={"Authorization": f"Bearer {key}"},
            timeout_s=self.timeout_s,
            params={"taskId": task.task_id},
        )
        return self._read(response)

    def _read(self, response: httpx.Response) -> PollResult:
        status = response.status_code
        ph.check_http_status(response, provider=self.name)
        try:
            body = response.json()
        except ValueError:
            raise UnrecognizedResponse(
                f"HTTP {status} with a body that is not JSON", provider=self.name
            ) from None
        if status >= 400 and not (isinstance(body, Mapping) and "code" in body):
            body = {"code": status, "msg": str(body)[:300]}
        return self.parse(body)

    def create_body(self, request: GenerationRequest) -> dict[str, Any]:
        raise NotImplementedError

    async def submit(self, request: GenerationRequest, http: httpx.AsyncClient) -> SubmitResult:
        """Start one generation; see :class:`~webhook_poller.interfaces.Submits`."""
        self._need_key()
        response = await ph.post_create(
            http,
            f"{self.base_url}{self.create_path}",
            provider=self.name,
            body=self.create_body(request),
            headers=self._headers(),
            timeout_s=self.timeout_s,
        )
        return read_create_answer(response, self.name)


class KieVeoAdapter(_KieAdapter):
    """Veo 3 / 3.1 tasks: ``GET /api/v1/veo/record-info?taskId=``."""

    name = "kie-veo"
    path = "/api/v1/veo/record-info"
    create_path = "/api/v1/veo/generate"
    capabilities: ClassVar[Mapping[str, ModelCapabilities]] = {
        "veo3": _VEO,
        "veo3_fast": _VEO,
        "veo3_lite": _VEO,
    }
    GenerateOptions: ClassVar[type[BaseModel]] = VeoOptions
    #: Follow-ups ``POST /jobs/{id}/extend`` and ``/upscale`` can ask for.
    follow_ups: ClassVar[frozenset[str]] = frozenset({"extend", "upscale"})

    async def follow_up(
        self,
        request: Mapping[str, Any],
        model: str,
        callback_url: str | None,
        http: httpx.AsyncClient,
    ) -> SubmitResult:
        """Start a follow-up of a finished Veo task (``request`` as recorded by
        :mod:`webhook_poller.followups`). Extend creates a new task (``/api/v1/veo/extend``);
        an upscale has no task of its own: its id names the parent task and the video, and
        each poll asks ``get-1080p-video`` / ``get-4k-video`` (which also start it)."""
        self._need_key()
        parent = str(request.get("parentTaskId") or "")
        # ``index`` picks the job's video, hence its task (video i is task i's only video);
        # within that task KIE counts from 0.
        index = 0
        if request.get("followUp") == "upscale":
            resolution = str(request.get("resolution") or "")
            if resolution not in UPSCALE_INTERVAL_S:
                raise ProviderTaskFailed(ErrorCode.VALIDATION_FAILED, provider=self.name)
            return SubmitResult(task_id=upscale_task_id(resolution, index, parent))
        body: dict[str, Any] = {"taskId": parent, "prompt": str(request.get("prompt") or "")}
        if model in _EXTEND_MODEL:
            body["model"] = _EXTEND_MODEL[model]
        if callback_url:
            body["callBackUrl"] = callback_url
        response = await ph.post_create(
            http,
            f"{self.base_url}/api/v1/veo/extend",
            provider=self.name,
            body=body,
            headers=self._headers(),
            timeout_s=self.timeout_s,
            what="extend",
        )
        return read_create_answer(response, self.name)

    def poll_interval_s(self, task_id: str) -> float | None:
        """The own cadence of an upscale task (None: the usual polling interval)."""
        parsed = parse_upscale_task_id(task_id)
        if parsed is None:
            return None
        return self.upscale_interval_s or UPSCALE_INTERVAL_S[parsed[0]]

    async def poll(self, task: ProviderTask, http: httpx.AsyncClient) -> PollResult:
        parsed = parse_upscale_task_id(task.task_id)
        if parsed is None:
            return await super().poll(task, http)
        self._need_key()
        resolution, index, parent = parsed
        try:
            if resolution == "1080p":
                response = await http.get(
                    f"{self.base_url}/api/v1/veo/get-1080p-video",
                    params={"taskId": parent, "index": index},
                    headers=self._headers(),
                    timeout=self.timeout_s,
                )
            else:
                response = await http.post(
                    f"{self.base_url}/api/v1/veo/get-4k-video",
                    json={"taskId": parent, "index": index},
                    headers=self._headers(),
                    timeout=self.timeout_s,
                )
        except httpx.TimeoutException:
            raise ProviderUnavailable("upscale request timed out", provider=self.name) from None
        except httpx.TransportError as exc:
            raise ProviderUnavailable(
                f"upscale request failed: {type(exc).__name__}", provider=self.name
            ) from None
        return self._read_upscale(response)

    def _read_upscale(self, response: httpx.Response) -> PollResult:
        """``get-1080p-video`` answers ``data.resultUrl`` when ready and code 400 "1080P is
        processing" before; ``get-4k-video`` answers 200 with ``resultUrls: null`` when it
        starts, 422 "4k is processing" while it runs, then the URLs (flat or in ``info``);
        500 "The 4K version of this video is unavailable" is final."""
        status = response.status_code
        if status == 429 or status >= 500 or status in (401, 402, 403, 408, 425):
            return self._read(response)  # HTTP-level trouble: the usual handling
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, Mapping) or "code" not in body:
            return self._read(response)
        code = ph.as_int(body.get("code"))
        message = _text(body.get("msg"), body.get("message"))[:300]
        data = body.get("data")
        if code == 200:
            urls: list[str] = []
            if isinstance(data, Mapping):
                for node in (data, data.get("info")):
                    if isinstance(node, Mapping):
                        for key in ("resultUrl", "resultUrls", "result_urls"):
                            urls.extend(extract_urls(node.get(key)))
            if urls:
                return PollResult(PollStatus.SUCCEEDED, video_urls=_dedupe(urls), progress=1.0)
            return PollResult(PollStatus.PENDING, detail=message or "upscale started")
        if code in (400, 422) and (_PROCESSING.search(message) or not message):
            return PollResult(PollStatus.PENDING, detail=message)
        if code == 500 and re.search(r"unavailable", message, re.I):
            return PollResult(
                PollStatus.FAILED, error_code=ErrorCode.UNKNOWN_PROVIDER_ERROR, detail=message
            )
        if code is None:
            raise UnrecognizedResponse("an upscale answer without a code", provider=self.name)
        _raise_for_envelope(code, message)
        raise UnrecognizedResponse("an upscale answer we cannot read", provider=self.name)

    def create_body(self, request: GenerationRequest) -> dict[str, Any]:
        options = dict(request.options)
        kind = options.pop("generationType", None)
        if kind is None:
            images = len(request.image_urls)
            kind = (
                "TEXT_2_VIDEO"
                if not images
                else "REFERENCE_2_VIDEO"
                if images > 2
                else "FIRST_AND_LAST_FRAMES_2_VIDEO"
            )
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "model": request.model,
            "generationType": kind,
        }
        if request.image_urls:
            body["imageUrls"] = list(request.image_urls)
        if request.aspect_ratio:
            body["aspect_ratio"] = request.aspect_ratio
        if request.resolution:
            body["resolution"] = request.resolution
        if request.callback_url:
            body["callBackUrl"] = request.callback_url
        body.update({k: v for k, v in options.items() if v is not None})
        return body


class KieMarketAdapter(_KieAdapter):
    """Market jobs (Sora 2, Seedance, Kling, ...): ``GET /api/v1/jobs/recordInfo?taskId=``."""

    name = "kie-market"
    path = "/api/v1/jobs/recordInfo"
    create_path = "/api/v1/jobs/createTask"
    capabilities: ClassVar[Mapping[str, ModelCapabilities]] = {
        "sora-2-text-to-video": _SORA_TEXT,
        "sora-2-image-to-video": _SORA_IMAGE,
        "sora-2-pro-text-to-video": dataclasses.replace(_SORA_TEXT, resolutions=_SORA_SIZES),
        "sora-2-pro-image-to-video": dataclasses.replace(_SORA_IMAGE, resolutions=_SORA_SIZES),
    }
    GenerateOptions: ClassVar[type[BaseModel]] = MarketOptions

    def create_body(self, request: GenerationRequest) -> dict[str, Any]:
        data: dict[str, Any] = {"prompt": request.prompt}
        if request.image_urls:
            data["image_urls"] = list(request.image_urls)
        if request.aspect_ratio:
            data["aspect_ratio"] = _SORA_ASPECT.get(request.aspect_ratio, request.aspect_ratio)
        if request.duration_s is not None:
            data["n_frames"] = str(request.duration_s)
        if request.resolution:
            data["size"] = request.resolution
        data.update({k: v for k, v in request.options.items() if v is not None})
        body: dict[str, Any] = {"model": request.model, "input": data}
        if request.callback_url:
            body["callBackUrl"] = request.callback_url
        return body


def parse_kie_runway_payload(payload: object) -> PollResult:
    """KIE's Runway wrapper: the shared parser, plus ``expireFlag`` 1 (the result is gone
    after 14 days) turning a success into output_missing instead of a dead link."""
    if isinstance(payload, str | bytes):
        try:
            payload = json.loads(payload)
        except ValueError:
            raise UnrecognizedResponse("the body is not JSON") from None
    result = parse_kie_payload(payload)
    data = payload.get("data") if isinstance(payload, Mapping) else None
    expired = isinstance(data, Mapping) and ph.as_int(data.get("expireFlag")) == 1
    if result.status is PollStatus.SUCCEEDED and expired:
        return PollResult(
            PollStatus.FAILED,
            error_code=ErrorCode.OUTPUT_MISSING,
            detail="expireFlag 1: the result expired at the provider",
        )
    return result


class KieRunwayAdapter(_KieAdapter):
    """KIE's Runway wrapper: ``GET /api/v1/runway/record-detail?taskId=``.

    ``data.state`` is wait | queueing | generating | success | fail, the video is
    ``data.videoInfo.videoUrl`` (``imageUrl`` is the thumbnail), ``failCode`` is always 400
    (the text tells moderation apart), results are kept 14 days (``expireFlag``).
    """

    name = "kie-runway"
    path = "/api/v1/runway/record-detail"
    parse = staticmethod(parse_kie_runway_payload)
