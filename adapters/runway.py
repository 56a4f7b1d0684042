"""Runway's official API: ``GET /v1/tasks/{id}`` with ``X-Runway-Version``.

:func:`parse_runway_task` is pure. States PENDING, THROTTLED (Runway holds the task until a
concurrency slot frees: waiting, not failing) and RUNNING are pending; SUCCEEDED carries
``output[]`` URLs that expire within 24-48 h (so the download starts at once); FAILED is
classified by ``failureCode`` (``SAFETY.*`` and ``INPUT_PREPROCESSING.SAFETY.*`` are
moderation, ``ASSET.*`` a bad input asset), falling back to the ``failure`` text;
CANCELLED is a final failure. Provider text only ever lands in ``detail``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
from pydantic import Field

from webhook_poller.errors import UnrecognizedResponse
from webhook_poller.interfaces import PollResult, PollStatus, ProviderTask
from webhook_poller.model import ErrorCode
from webhook_poller.options import ProviderOptions

from ._provider_http import DirectAdapter, as_fraction, segment
from .kie import classify_failure, extract_urls

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


class RunwayAdapter(DirectAdapter):
    """Polls ``GET {base_url}/v1/tasks/{id}``; key from ``RUNWAYML_API_SECRET``."""

    name = "runway"
    config_section = "runway"
    Options: ClassVar[type[ProviderOptions]] = RunwayOptions
    env_key = "RUNWAYML_API_SECRET"
    #: Runway: output URLs "expire within 24-48 hours"; the short end counts.
    result_link_ttl_s: ClassVar[float] = 86400.0

    def auth_headers(self) -> dict[str, str]:
        version = str(getattr(self.options, "api_version", "") or "2024-11-06")
        return {"Authorization": f"Bearer {self._require_key()}", "X-Runway-Version": version}

    async def poll(self, task: ProviderTask, http: httpx.AsyncClient) -> PollResult:
        body = await self.get_json(http, f"/v1/tasks/{segment(task.task_id)}")
        return parse_runway_task(body)
