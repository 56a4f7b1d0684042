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

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx

from webhook_poller.errors import ProviderTaskFailed, ProviderUnavailable, UnrecognizedResponse
from webhook_poller.interfaces import PluginContext, PollResult, PollStatus, ProviderTask
from webhook_poller.model import ErrorCode

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


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


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
    flag = _as_int(record.get("successFlag"))
    fail_code = _as_int(record.get("failCode")) or _as_int(record.get("errorCode"))
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
    code = _as_int(payload.get("code"))
    message = _text(payload.get("msg"), payload.get("message"))
    if code is not None and code != 200:
        _raise_for_envelope(code, message)
    data = payload.get("data")
    if isinstance(data, str) and data.strip().startswith("{"):
        try:
            data = json.loads(data)
        except ValueError:
            data = None
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


def retry_after_s(response: httpx.Response, now: datetime | None = None) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class _KieAdapter:
    """Shared HTTP handling; subclasses name the status endpoint."""

    name = "kie"
    config_section = "kie"
    path = ""
    #: The pure body parser of this endpoint.
    parse = staticmethod(parse_kie_payload)
    #: The Market page: result URLs "typically expire after 24 hours".
    result_link_ttl_s: ClassVar[float] = 86400.0

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        self.base_url = str(options.get("base_url") or "https://api.kie.ai").rstrip("/")
        key = options.get("api_key")
        getter = getattr(key, "get_secret_value", None)
        self._api_key = str(getter() if callable(getter) else key or "")
        self.timeout_s = float(options.get("timeout_s") or 20.0)

    async def poll(self, task: ProviderTask, http: httpx.AsyncClient) -> PollResult:
        if not self._api_key:
            raise ProviderTaskFailed(
                ErrorCode.AUTH_FAILED,
                provider=self.name,
                detail="no KIE API key configured (providers.kie.api_key)",
            )
        try:
            response = await http.get(
                f"{self.base_url}{self.path}",
                params={"taskId": task.task_id},
                headers={"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"},
                timeout=self.timeout_s,
            )
        except httpx.TimeoutException:
            raise ProviderUnavailable("status request timed out", provider=self.name) from None
        except httpx.TransportError as exc:
            raise ProviderUnavailable(
                f"status request failed: {type(exc).__name__}", provider=self.name
            ) from None
        return self._read(response)

    def _read(self, response: httpx.Response) -> PollResult:
        status = response.status_code
        if status == 429:
            raise ProviderUnavailable(
                "HTTP 429",
                provider=self.name,
                rate_limited=True,
                retry_after_s=retry_after_s(response),
            )
        if status in (401, 403):
            raise ProviderTaskFailed(
                ErrorCode.AUTH_FAILED, provider=self.name, detail=f"HTTP {status}"
            )
        if status == 402:
            raise ProviderTaskFailed(
                ErrorCode.INSUFFICIENT_CREDITS, provider=self.name, detail="HTTP 402"
            )
        if status >= 500 or status in (408, 425):
            raise ProviderUnavailable(
                f"HTTP {status}", provider=self.name, retry_after_s=retry_after_s(response)
            )
        try:
            body = response.json()
        except ValueError:
            raise UnrecognizedResponse(
                f"HTTP {status} with a body that is not JSON", provider=self.name
            ) from None
        if status >= 400 and not (isinstance(body, Mapping) and "code" in body):
            body = {"code": status, "msg": str(body)[:300]}
        return self.parse(body)


class KieVeoAdapter(_KieAdapter):
    """Veo 3 / 3.1 tasks: ``GET /api/v1/veo/record-info?taskId=``."""

    name = "kie-veo"
    path = "/api/v1/veo/record-info"


class KieMarketAdapter(_KieAdapter):
    """Market jobs (Sora 2, Seedance, Kling, ...): ``GET /api/v1/jobs/recordInfo?taskId=``."""

    name = "kie-market"
    path = "/api/v1/jobs/recordInfo"


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
    expired = isinstance(data, Mapping) and _as_int(data.get("expireFlag")) == 1
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
