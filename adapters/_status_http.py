"""Shared HTTP handling for the direct provider adapters (Runway, Luma, Kling, MiniMax).

Each adapter names its options model, its API-key environment variable and its auth
headers; this base turns the status request's HTTP trouble into our exception classes the
way :mod:`.kie` does (timeouts, 5xx, 429 with Retry-After, HTML and truncated JSON are
transient; a refused key or an empty account is final) and leaves reading the body to the
family's pure parser. The API key only ever goes to ``base_url``: result videos are fetched
by the core's guarded client, which sends no key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from webhook_poller.errors import (
    ConfigError,
    ProviderTaskFailed,
    ProviderUnavailable,
    UnrecognizedResponse,
)
from webhook_poller.interfaces import PluginContext, PollResult, ProviderTask
from webhook_poller.model import ErrorCode
from webhook_poller.options import ProviderOptions

from ._provider_http import retry_after_s


def as_int(value: Any) -> int | None:
    """An int from an int, an integral float or a numeric string ("0", " 1026 ")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def as_fraction(value: Any) -> float | None:
    """Progress as 0..1 from 0..1 or 0..100, a number or a string such as "45%"."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip().rstrip("%"))
        except ValueError:
            return None
    if not isinstance(value, int | float):
        return None
    number = float(value)
    number = number / 100 if number > 1 else number
    return min(max(number, 0.0), 1.0)


def segment(value: str) -> str:
    """One URL path segment: every ``/``, ``?``, ``#`` and space in a task id is escaped."""
    return quote(value, safe="")


class DirectAdapter:
    """Base of one provider family's adapter; subclasses set the class attributes.

    ``Options`` is the family's options model (with its documented defaults), ``env_key``
    the variable read when ``providers.<family>.api_key`` is not set.
    """

    name: ClassVar[str] = ""
    config_section: ClassVar[str] = ""
    Options: ClassVar[type[ProviderOptions]] = ProviderOptions
    env_key: ClassVar[str] = ""
    result_link_ttl_s: ClassVar[float] = 86400.0
    #: Raised when the provider does not know the task (HTTP 404).
    unknown_task_error: ClassVar[type[ProviderTaskFailed]] = ProviderTaskFailed

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        try:
            self.options = self.Options.model_validate(dict(options))
        except ValidationError as exc:
            problems = "; ".join(
                f"providers.{self.config_section}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors()
            )
            raise ConfigError(f"invalid provider options: {problems}") from None
        self.base_url = str(self.options.base_url or "").rstrip("/")
        key = self.options.api_key.get_secret_value() if self.options.api_key else ""
        self._api_key = key or (os.environ.get(self.env_key, "") if self.env_key else "")
        self.timeout_s = float(self.options.timeout_s)

    def missing_credentials(self) -> str | None:
        """The setting to fill in while no API key is configured, else None."""
        if self._api_key:
            return None
        return f"providers.{self.config_section}.api_key (or {self.env_key})"

    # --- to override -------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        """Headers that carry the key (sent to ``base_url`` only)."""
        return {"Authorization": f"Bearer {self._require_key()}"}

    def error_for_status(self, status: int, body: Any) -> None:
        """A family's own reading of an HTTP error whose body is JSON (default: none)."""

    # --- shared ------------------------------------------------------------------------

    def _require_key(self) -> str:
        if not self._api_key:
            where = f"providers.{self.config_section}.api_key or {self.env_key}"
            raise ProviderTaskFailed(
                ErrorCode.AUTH_FAILED, provider=self.name, detail=f"no API key configured ({where})"
            )
        return self._api_key

    async def get_json(
        self, http: httpx.AsyncClient, path: str, params: Mapping[str, str] | None = None
    ) -> Any:
        """GET ``base_url + path`` with the key; return the JSON body or raise our errors."""
        headers = {**self.auth_headers(), "Accept": "application/json"}
        try:
            response = await http.get(
                f"{self.base_url}{path}",
                params=dict(params or {}),
                headers=headers,
                timeout=self.timeout_s,
            )
        except httpx.TimeoutException:
            raise ProviderUnavailable("status request timed out", provider=self.name) from None
        except httpx.TransportError as exc:
            raise ProviderUnavailable(
                f"status request failed: {type(exc).__name__}", provider=self.name
            ) from None
        return self.read(response)

    def read(self, response: httpx.Response) -> Any:
        """HTTP status and body decoding; the parser sees only JSON it can read."""
        status = response.status_code
        body: Any = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if status >= 400 and body is not None:
            try:
                self.error_for_status(status, body)
            except ProviderUnavailable as exc:
                if exc.retry_after_s is None:  # a body code is read, the header still counts
                    exc.retry_after_s = retry_after_s(response)
                raise
        if status == 429:
            raise ProviderUnavailable(
                "HTTP 429",
                provider=self.name,
                rate_limited=True,
                retry_after_s=retry_after_s(response),
            )
        if status >= 500 or status in (408, 425):
            raise ProviderUnavailable(
                f"HTTP {status}", provider=self.name, retry_after_s=retry_after_s(response)
            )
        if status in (401, 403):
            raise ProviderTaskFailed(
                ErrorCode.AUTH_FAILED, provider=self.name, detail=f"HTTP {status}"
            )
        if status == 402:
            raise ProviderTaskFailed(
                ErrorCode.INSUFFICIENT_CREDITS, provider=self.name, detail="HTTP 402"
            )
        if status == 404:
            raise self.unknown_task_error(
                ErrorCode.UNKNOWN_PROVIDER_ERROR,
                provider=self.name,
                detail="HTTP 404: task unknown to the provider",
            )
        if body is None:
            raise UnrecognizedResponse(
                f"HTTP {status} with a body that is not JSON", provider=self.name
            )
        if status >= 400:
            raise ProviderTaskFailed(
                ErrorCode.UNKNOWN_PROVIDER_ERROR,
                provider=self.name,
                detail=f"HTTP {status}: {str(body)[:300]}",
            )
        if not isinstance(body, Mapping):
            raise UnrecognizedResponse(
                f"the body is a JSON {type(body).__name__}, not an object", provider=self.name
            )
        return body

    async def poll(self, task: ProviderTask, http: httpx.AsyncClient) -> PollResult:
        raise NotImplementedError
