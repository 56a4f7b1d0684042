"""HTTP handling every provider adapter shares (not an adapter itself).

One place for: the API key from options or its environment variable (secret unwrapping),
a status GET whose transport trouble becomes ``ProviderUnavailable``, the HTTP status rules
of the adapter contract (429 with Retry-After, 5xx, bad key, no credits: transient or
final), tolerant JSON reading, task ids quoted as path segments, "is this URL on the
provider's own host", Retry-After, the create call whose lost answer may hide a paid task,
and :class:`DirectAdapter`, the base of the direct families (Runway, Luma, Kling, MiniMax).
The API key only ever goes to ``base_url``: result videos are fetched by the core's guarded
client, which sends no key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from webhook_poller.config import secret_text
from webhook_poller.errors import (
    ConfigError,
    ProviderTaskFailed,
    ProviderUnavailable,
    SubmissionUncertain,
    UnrecognizedResponse,
)
from webhook_poller.interfaces import PluginContext, PollResult, ProviderTask, SubmitResult
from webhook_poller.model import ErrorCode
from webhook_poller.net import retry_after_s
from webhook_poller.options import ProviderOptions

__all__ = [
    "DirectAdapter",
    "KeyedAdapter",
    "VeoInputOptions",
    "api_key_from",
    "as_fraction",
    "as_int",
    "base_url_from",
    "check_http_status",
    "created_task",
    "get",
    "host_of",
    "post_create",
    "quote_task_path",
    "raise_if_transient",
    "read_json",
    "require_key",
    "retry_after_s",
    "same_host",
    "secret_or_env",
    "secret_text",
    "segment",
    "text_of",
    "unwrap_json_text",
]


def secret_or_env(value: Any, env_var: str) -> str:
    """A secret option's text (SecretStr or str), else the environment variable ``env_var``."""
    text = secret_text(value).strip()
    return text or (os.environ.get(env_var, "").strip() if env_var else "")


def api_key_from(options: Mapping[str, Any], env_var: str) -> str:
    """The key from ``options['api_key']``, else from ``env_var``."""
    return secret_or_env(options.get("api_key"), env_var)


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


def raise_if_transient(response: httpx.Response, *, provider: str) -> None:
    """A status answer that says nothing about the task: 429 (rate limited), 5xx, 408, 425,
    each with the Retry-After it carries."""
    status = response.status_code
    if status == 429:
        raise ProviderUnavailable(
            "HTTP 429",
            provider=provider,
            rate_limited=True,
            retry_after_s=retry_after_s(response),
        )
    if status >= 500 or status in (408, 425):
        raise ProviderUnavailable(
            f"HTTP {status}", provider=provider, retry_after_s=retry_after_s(response)
        )


def check_http_status(response: httpx.Response, *, provider: str) -> None:
    """The HTTP statuses whose meaning does not depend on the body: the transient ones,
    and a refused key or an empty account (final)."""
    raise_if_transient(response, provider=provider)
    status = response.status_code
    if status in (401, 403):
        raise ProviderTaskFailed(ErrorCode.AUTH_FAILED, provider=provider, detail=f"HTTP {status}")
    if status == 402:
        raise ProviderTaskFailed(
            ErrorCode.INSUFFICIENT_CREDITS, provider=provider, detail="HTTP 402"
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


async def post_create(
    http: httpx.AsyncClient,
    url: str,
    *,
    provider: str,
    body: Any,
    headers: Mapping[str, str],
    timeout_s: float,
    params: Mapping[str, str] | None = None,
    what: str = "create",
) -> httpx.Response:
    """POST a create (paid) call. Not reaching the provider is ``ProviderUnavailable`` (nothing
    started, try later); a request sent whose answer was lost is ``SubmissionUncertain``, since
    a task may exist and must never be created twice. ``what`` names the call in messages."""
    try:
        return await http.post(url, json=body, params=params, headers=headers, timeout=timeout_s)
    except (httpx.ConnectError, httpx.ConnectTimeout):
        raise ProviderUnavailable(f"{what} request could not connect", provider=provider) from None
    except httpx.TransportError as exc:
        raise SubmissionUncertain(
            f"{what} request failed: {type(exc).__name__}", provider=provider
        ) from None


def created_task(
    value: Any, *, provider: str, missing: str, limit: int = 256, detail: str | None = None
) -> SubmitResult:
    """The task named by a create answer: a non-blank string of at most ``limit`` characters.
    Anything else is ``SubmissionUncertain`` with the message ``missing``: the provider
    answered, but we cannot tell which task it made."""
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise SubmissionUncertain(missing, provider=provider)
    return SubmitResult(task_id=value.strip(), detail=detail)


def unwrap_json_text(value: Any) -> Any:
    """A JSON document sent as text (``"{...}"``) decoded, ``None`` when that text is not
    JSON; any other value as it is."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


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


class VeoInputOptions(BaseModel):
    """The Veo 3 model inputs that fal and Replicate both expose, passed through as given."""

    model_config = ConfigDict(extra="forbid")

    negative_prompt: str | None = Field(default=None, max_length=2000)
    generate_audio: bool | None = None
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)


class KeyedAdapter:
    """Base of an adapter that calls one provider host with one API key.

    Reads ``base_url`` (else ``default_base_url``), ``api_key`` (else the environment
    variable ``env_key``) and ``timeout_s`` (else 20 s) from the plug-in's options, and says
    which setting to fill in while the key is missing.
    """

    name: ClassVar[str] = ""
    config_section: ClassVar[str] = ""
    env_key: ClassVar[str] = ""
    default_base_url: ClassVar[str] = ""

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        self.base_url = base_url_from(options, self.default_base_url)
        self._api_key = self._key_from(options)
        self.timeout_s = float(options.get("timeout_s") or 20.0)

    def _key_from(self, options: Mapping[str, Any]) -> str:
        return api_key_from(options, self.env_key)

    def missing_credentials(self) -> str | None:
        """The setting to fill in while no API key is configured, else None."""
        if self._api_key:
            return None
        return f"providers.{self.config_section}.api_key (or {self.env_key})"

    def _need_key(self) -> str:
        """The API key, or the final ``auth_failed`` a call without one gets."""
        setting = f"providers.{self.config_section}.api_key"
        require_key(self._api_key, provider=self.name, setting=setting)
        return self._api_key


class DirectAdapter(KeyedAdapter):
    """Base of one provider family's adapter; subclasses set the class attributes.

    ``Options`` is the family's options model (with its documented defaults), ``env_key``
    the variable read when ``providers.<family>.api_key`` is not set.
    """

    Options: ClassVar[type[ProviderOptions]] = ProviderOptions
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
        self._api_key = api_key_from({"api_key": self.options.api_key}, self.env_key)
        self.timeout_s = float(self.options.timeout_s)

    # --- to override -------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        """Headers that carry the key (sent to ``base_url`` only)."""
        return {"Authorization": f"Bearer {self._require_key()}"}

    def error_for_status(self, status: int, body: Any) -> None:
        """A family's own reading of an HTTP error whose body is JSON (default: none)."""

    # --- shared ------------------------------------------------------------------------

    def _require_key(self) -> str:
        where = f"providers.{self.config_section}.api_key or {self.env_key}"
        require_key(self._api_key, provider=self.name, setting=where)
        return self._api_key

    async def get_json(
        self, http: httpx.AsyncClient, path: str, params: Mapping[str, str] | None = None
    ) -> Any:
        """GET ``base_url + path`` with the key; return the JSON body or raise our errors."""
        response = await get(
            http,
            f"{self.base_url}{path}",
            provider=self.name,
            headers=self.auth_headers(),
            timeout_s=self.timeout_s,
            params=params or {},
        )
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
        check_http_status(response, provider=self.name)
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
