"""HTTP handling every direct-provider adapter shares (not an adapter itself).

One place for: the API key from options or its environment variable, a status GET whose
transport trouble becomes ``ProviderUnavailable``, the HTTP status rules of the adapter
contract (429 with Retry-After, 5xx, bad key, no credits), tolerant JSON reading, task ids
quoted as path segments, "is this URL on the provider's own host", Retry-After, and the
create call whose lost answer may hide a paid task.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from webhook_poller.errors import (
    ProviderTaskFailed,
    ProviderUnavailable,
    SubmissionUncertain,
    UnrecognizedResponse,
)
from webhook_poller.model import ErrorCode


def api_key_from(options: Mapping[str, Any], env_var: str) -> str:
    """The key from ``options['api_key']`` (SecretStr or str), else from ``env_var``."""
    value = options.get("api_key")
    getter = getattr(value, "get_secret_value", None)
    text = str(getter() if callable(getter) else value or "").strip()
    return text or os.environ.get(env_var, "").strip()


def base_url_from(options: Mapping[str, Any], default: str) -> str:
    return str(options.get("base_url") or default).rstrip("/")


def host_of(url: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(url)
        return (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port)
    except ValueError:
        return ("", "", None)


def same_host(url: str, base_url: str) -> bool:
    """True when ``url`` has the scheme, host and port of ``base_url`` (keys may go there)."""
    mine = host_of(base_url)
    return bool(mine[1]) and host_of(url) == mine


def quote_task_path(task_id: str, *, provider: str) -> str:
    """A task id as URL path segments: slashes kept, each segment quoted, no dot-dot."""
    segments = task_id.strip().strip("/").split("/")
    if not task_id.strip() or any(s in ("", ".", "..") for s in segments):
        raise ProviderTaskFailed(
            ErrorCode.UNKNOWN_PROVIDER_ERROR,
            provider=provider,
            detail="the task id is not a valid path for this provider",
        )
    return "/".join(quote(s, safe=":@") for s in segments)


def require_key(key: str, *, provider: str, setting: str) -> None:
    if not key:
        raise ProviderTaskFailed(
            ErrorCode.AUTH_FAILED, provider=provider, detail=f"no API key configured ({setting})"
        )


async def get(
    http: httpx.AsyncClient,
    url: str,
    *,
    provider: str,
    headers: Mapping[str, str],
    timeout_s: float,
    params: Mapping[str, str] | None = None,
) -> httpx.Response:
    """One GET; timeouts and connection trouble say nothing about the task."""
    try:
        return await http.get(
            url,
            params=dict(params) if params else None,
            headers={"Accept": "application/json", **headers},
            timeout=timeout_s,
        )
    except httpx.TimeoutException:
        raise ProviderUnavailable("status request timed out", provider=provider) from None
    except httpx.TransportError as exc:
        raise ProviderUnavailable(
            f"status request failed: {type(exc).__name__}", provider=provider
        ) from None


def check_http_status(response: httpx.Response, *, provider: str) -> None:
    """The HTTP statuses whose meaning does not depend on the body."""
    status = response.status_code
    if status == 429:
        raise ProviderUnavailable(
            "HTTP 429",
            provider=provider,
            rate_limited=True,
            retry_after_s=retry_after_s(response),
        )
    if status in (401, 403):
        raise ProviderTaskFailed(ErrorCode.AUTH_FAILED, provider=provider, detail=f"HTTP {status}")
    if status == 402:
        raise ProviderTaskFailed(
            ErrorCode.INSUFFICIENT_CREDITS, provider=provider, detail="HTTP 402"
        )
    if status >= 500 or status in (408, 425):
        raise ProviderUnavailable(
            f"HTTP {status}", provider=provider, retry_after_s=retry_after_s(response)
        )


def read_json(response: httpx.Response, *, provider: str) -> Any:
    """The body as JSON; HTML, empty or cut-off bodies are UnrecognizedResponse."""
    try:
        return json.loads(response.content)
    except ValueError:
        raise UnrecognizedResponse(
            f"HTTP {response.status_code} with a body that is not JSON", provider=provider
        ) from None


def text_of(*values: Any, limit: int = 500) -> str:
    """Provider text joined for ``detail`` (logs only), bounded."""
    return " ".join(str(v) for v in values if v not in (None, "", [], {})).strip()[:limit]


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


async def post_create(
    http: httpx.AsyncClient,
    url: str,
    *,
    provider: str,
    body: Any,
    headers: Mapping[str, str],
    timeout_s: float,
    params: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST a create (paid) call. Not reaching the provider is ``ProviderUnavailable`` (nothing
    started, try later); a request sent whose answer was lost is ``SubmissionUncertain``, since
    a task may exist and must never be created twice."""
    try:
        return await http.post(url, json=body, params=params, headers=headers, timeout=timeout_s)
    except (httpx.ConnectError, httpx.ConnectTimeout):
        raise ProviderUnavailable("create request could not connect", provider=provider) from None
    except httpx.TransportError as exc:
        raise SubmissionUncertain(
            f"create request failed: {type(exc).__name__}", provider=provider
        ) from None
