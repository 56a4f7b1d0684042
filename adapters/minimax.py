"""MiniMax (Hailuo): ``GET /v1/query/video_generation?task_id=``, then
``GET /v1/files/retrieve?file_id=`` for the download URL.

:func:`parse_minimax_query` and :func:`parse_minimax_file` are pure. ``status`` comes
capitalised (Preparing | Queueing | Processing | Success | Fail); success carries only a
``file_id`` (a string here, an int64 in the files API), so a second call fetches
``file.download_url``, valid for about 9 hours. ``base_resp.status_code`` 0 is ok, and is
an error inside HTTP 200 otherwise: 1026 (input sensitive) and 1027 (output sensitive) are
moderation, 1004 a refused key, 1008 an empty balance, 1002/1041 rate limits. The
deprecated Video Agent answer with ``video_url`` directly is read as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
from pydantic import Field

from webhook_poller.errors import ProviderTaskFailed, ProviderUnavailable, UnrecognizedResponse
from webhook_poller.interfaces import PollResult, PollStatus, ProviderTask
from webhook_poller.model import ErrorCode
from webhook_poller.options import ProviderOptions

from ._provider_http import DirectAdapter, as_int
from .kie import classify_failure, extract_urls

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


def parse_minimax_query(payload: object) -> tuple[PollResult, str | None]:
    """Read a query answer: the result, and the ``file_id`` still to resolve (or None)."""
    if not isinstance(payload, Mapping):
        raise UnrecognizedResponse("the body is not a JSON object", provider="minimax")
    try:
        check_base_resp(payload)
    except MinimaxModerated as exc:
        return PollResult(
            PollStatus.FAILED,
            error_code=ErrorCode.MODERATION_REJECTED,
            detail=f"code {exc.code} {exc.message}",
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


def parse_minimax_file(payload: object) -> tuple[str, ...]:
    """``file.download_url`` of a files/retrieve answer (empty when there is none)."""
    if not isinstance(payload, Mapping):
        raise UnrecognizedResponse("the body is not a JSON object", provider="minimax")
    try:
        check_base_resp(payload)
    except MinimaxModerated as exc:
        raise ProviderTaskFailed(
            ErrorCode.MODERATION_REJECTED, provider="minimax", detail=exc.message
        ) from None
    file = payload.get("file")
    if not isinstance(file, Mapping):
        return ()
    return tuple(dict.fromkeys(extract_urls(file.get("download_url"))))


class MinimaxAdapter(DirectAdapter):
    """Polls MiniMax's query endpoint, then resolves ``file_id``; key ``MINIMAX_API_KEY``."""

    name = "minimax"
    config_section = "minimax"
    Options: ClassVar[type[ProviderOptions]] = MinimaxOptions
    env_key = "MINIMAX_API_KEY"
    #: MiniMax: the download URL "is valid for 9 hours".
    result_link_ttl_s: ClassVar[float] = 32400.0

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
