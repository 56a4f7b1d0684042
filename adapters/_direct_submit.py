"""The create call of the direct families (Runway, Luma, Kling, MiniMax) and how its answer
is read; not an adapter itself.

A create answer is read more strictly than a status answer, because a lost or garbled
answer may hide a paid task (see :class:`~webhook_poller.interfaces.Submits`):

* a 429, or a family's own rate-limit code in the body: nothing was started, so
  ``ProviderUnavailable(rate_limited=True)`` and the job stays ``submitting``;
* a 5xx, a family's "server error" code, a 2xx whose body is not JSON or names no task:
  ``SubmissionUncertain`` (the core asks ``find_task`` or fails the job, never sends again);
* 401/403 ``auth_failed``, 402 ``insufficient_credits``, 400/404/422 ``validation_failed``
  (``moderation_rejected`` or ``insufficient_credits`` when the text says so): a final
  ``ProviderTaskFailed``.

A family's body codes are read first (Kling answers an empty account with HTTP 429 and code
1101, which is no rate limit). Provider text only ever lands in ``detail``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from webhook_poller.errors import ProviderTaskFailed, ProviderUnavailable, SubmissionUncertain
from webhook_poller.interfaces import SubmitResult
from webhook_poller.model import ErrorCode

from . import _provider_http as ph
from .kie import classify_failure

if TYPE_CHECKING:
    from ._provider_http import DirectAdapter

#: Reads a family's own error codes in a JSON answer and raises our classes for them.
BodyCheck = Callable[[Mapping[str, Any]], None]

_TEXT_KEYS = ("error", "detail", "message", "msg", "failure", "status_msg")


def _text(payload: Any) -> str:
    if not isinstance(payload, Mapping):
        return ph.text_of(payload)
    base = payload.get("base_resp")
    extra = base.get("status_msg") if isinstance(base, Mapping) else None
    return ph.text_of(*(payload.get(k) for k in _TEXT_KEYS), extra)


def _check_body(check: BodyCheck, payload: Mapping[str, Any], response: httpx.Response) -> None:
    try:
        check(payload)
    except ProviderUnavailable as exc:
        if not exc.rate_limited:  # a server-side fault after our request arrived
            raise SubmissionUncertain(str(exc), provider=exc.provider, detail=exc.detail) from None
        if exc.retry_after_s is None:
            exc.retry_after_s = ph.retry_after_s(response)
        raise


def read_created(
    response: httpx.Response, *, provider: str, check_body: BodyCheck | None = None
) -> Mapping[str, Any]:
    """The JSON object of an accepted create call, or the exception its answer means."""
    status = response.status_code
    try:
        payload: Any = json.loads(response.content)
    except ValueError:
        payload = None
    if isinstance(payload, Mapping) and check_body is not None:
        _check_body(check_body, payload, response)
    if status >= 500:
        raise SubmissionUncertain(f"HTTP {status} on create", provider=provider)
    ph.check_http_status(response, provider=provider)
    if status >= 400:
        text = _text(payload)
        code = classify_failure(status, text)
        if code is ErrorCode.UNKNOWN_PROVIDER_ERROR and status in (400, 404, 409, 422):
            code = ErrorCode.VALIDATION_FAILED
        raise ProviderTaskFailed(code, provider=provider, detail=f"HTTP {status}: {text}")
    if not isinstance(payload, Mapping):
        raise SubmissionUncertain(
            f"HTTP {status} with a create answer that is not a JSON object", provider=provider
        )
    return payload


def submitted(value: Any, *, provider: str) -> SubmitResult:
    """The new task from its id in a create answer; a missing or odd id is
    SubmissionUncertain (the provider answered, but we cannot tell which task it made)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and not value.isprintable():
        value = None
    return ph.created_task(value, provider=provider, missing="a create answer without a task id")


async def create(
    http: httpx.AsyncClient,
    adapter: DirectAdapter,
    path: str,
    body: Mapping[str, Any],
    check_body: BodyCheck | None = None,
) -> Mapping[str, Any]:
    """POST one create call to ``adapter.base_url + path`` with the adapter's key (through
    :func:`_provider_http.post_create`) and read its answer."""
    response = await ph.post_create(
        http,
        f"{adapter.base_url}{path}",
        provider=adapter.name,
        body=dict(body),
        headers={"Accept": "application/json", **adapter.auth_headers()},
        timeout_s=adapter.timeout_s,
    )
    return read_created(response, provider=adapter.name, check_body=check_body)


def present(values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a create body that are set (``options`` and optional request fields)."""
    return {k: v for k, v in values.items() if v is not None}


__all__ = ["BodyCheck", "create", "present", "read_created", "submitted"]
