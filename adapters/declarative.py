"""Declarative providers: any provider with a status URL and a JSON answer, described in YAML.

A ``providers.<name>`` section with ``type: declarative`` is one :class:`DeclarativeAdapter`,
routed to by ``models: {"acme-*": <name>}``::

    providers:
      acme:
        type: declarative
        base_url: https://api.acme.example
        api_key: ${ACME_KEY}
        status:
          url: "{base_url}/v1/jobs/{taskId}"
          headers: {Authorization: "Bearer {api_key}"}
        state: "data.status"                      # JMESPath
        states: {done: succeeded, error: failed, queued: running, running: running}
        video_urls: "data.outputs[].url"
        progress: "data.progress"
        error_message: "data.error.message"
        error_codes: [{match: "(?i)nsfw|policy", code: moderation_rejected}]

Expressions are JMESPath (the ``jmespath`` package), compiled when the config is loaded.
Before they run, every string in the answer that holds a JSON object or array is decoded, so
``resultJson: "{\\"resultUrls\\": [...]}"`` is navigable as ``data.resultJson.resultUrls``.
State words are matched case-insensitively (numbers too: ``{"0": running, "1": succeeded}``);
a state the map does not name is an unrecognized answer (polled again), never a crash.
Optional ``envelope: {code, ok, message, transient}`` reads failures sent inside HTTP 200
(``{"code": 402, "msg": ...}``): a code not in ``ok`` is handled like the same HTTP status.

Placeholders ``{base_url}``, ``{taskId}`` (percent-encoded) and ``{api_key}`` work in the URL
and the headers; the status URL must stay on ``base_url``'s host, so the key goes nowhere else.
Provider text only ever lands in ``detail`` (logs); users see our error codes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import httpx
import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult
from pydantic import Field, field_validator, model_validator

from webhook_poller.errors import ProviderTaskFailed, ProviderUnavailable, UnrecognizedResponse
from webhook_poller.interfaces import PluginContext, PollResult, PollStatus, ProviderTask
from webhook_poller.model import ErrorCode
from webhook_poller.options import PluginOptions, ProviderOptions

from . import _provider_http as ph

#: What a provider's state word may mean: the job states an adapter can report.
StateTarget = Literal["running", "pending", "succeeded", "failed"]
PLACEHOLDERS = frozenset({"base_url", "taskId", "api_key"})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_MAX_DEPTH = 32


def _compile(expression: str) -> str:
    try:
        jmespath.compile(expression)
    except JMESPathError as exc:
        raise ValueError(f"not a valid JMESPath expression ({exc})") from None
    return expression


def _check_placeholders(template: str) -> str:
    unknown = sorted({m for m in _PLACEHOLDER.findall(template) if m not in PLACEHOLDERS})
    if unknown:
        allowed = ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
        raise ValueError(f"unknown placeholder {{{unknown[0]}}}; allowed: {allowed}")
    return template


class StatusRequest(PluginOptions):
    """``status``: the GET that asks for one task's state."""

    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_placeholders(value)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for header in value.values():
            _check_placeholders(header)
        return value


class ErrorCodeRule(PluginOptions):
    """One ``error_codes`` entry: a regex searched in the error message, and our code."""

    match: str
    code: ErrorCode

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        return value


class EnvelopeSpec(PluginOptions):
    """``envelope``: a status code inside a 200 answer (KIE's ``{code, msg, data}``)."""

    code: str
    ok: list[int] = Field(default_factory=lambda: [200])
    message: str | None = None
    #: Envelope codes that mean "try again later" besides 429 and 5xx (KIE's 455 maintenance).
    transient: list[int] = Field(default_factory=list)

    @field_validator("code", "message")
    @classmethod
    def _expressions(cls, value: str | None) -> str | None:
        return None if value is None else _compile(value)


class DeclarativeOptions(ProviderOptions):
    """A ``providers.<name>`` section with ``type: declarative``."""

    type: Literal["declarative"] = "declarative"
    base_url: str  # required here, optional for code adapters
    status: StatusRequest
    state: str
    states: dict[str, StateTarget]
    video_urls: str | None = None
    progress: str | None = None
    error_message: str | None = None
    error_codes: list[ErrorCodeRule] = Field(default_factory=list)
    envelope: EnvelopeSpec | None = None
    #: How long the provider's result links live; the download starts at once anyway.
    result_link_ttl_s: float = Field(default=3600.0, gt=0)
    #: The section's name, filled in by the service; not for the config file.
    name: str | None = None

    @field_validator("state", "video_urls", "progress", "error_message")
    @classmethod
    def _expressions(cls, value: str | None) -> str | None:
        return None if value is None else _compile(value)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host")
        return value.rstrip("/")

    @field_validator("states", mode="before")
    @classmethod
    def _state_words(cls, value: Any) -> Any:
        # YAML reads `{0: running, 1: succeeded}` with int keys; words match lower-cased
        if not isinstance(value, Mapping):
            return value
        return {(_word(k) or str(k)): v for k, v in value.items()}

    @field_validator("states")
    @classmethod
    def _states(cls, value: dict[str, StateTarget]) -> dict[str, StateTarget]:
        if "succeeded" not in value.values():
            raise ValueError("no state word maps to succeeded")
        return value

    @model_validator(mode="after")
    def _status_on_base_host(self) -> DeclarativeOptions:
        probe = fill(self.status.url, {"base_url": self.base_url, "taskId": "t", "api_key": "k"})
        if _origin(probe) != _origin(self.base_url):
            raise ValueError(
                f"status.url must be on base_url's host ({urlsplit(self.base_url).netloc}), "
                "so the API key goes to no other host"
            )
        return self


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace the placeholders in one pass (a value is never read as a template)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _word(value: Any) -> str | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else str(value)
    if isinstance(value, str) and value.strip():
        return value.strip().lower()
    return None


def decode_json_strings(value: Any, depth: int = 0) -> Any:
    """Every string that holds a JSON object or array, decoded (recursively)."""
    if depth > _MAX_DEPTH:
        return value
    if isinstance(value, str):
        text = value.strip()
        if len(text) >= 2 and (text[0], text[-1]) in (("{", "}"), ("[", "]")):
            try:
                decoded = json.loads(text)
            except (ValueError, RecursionError):
                return value
            if isinstance(decoded, dict | list):
                return decode_json_strings(decoded, depth + 1)
        return value
    if isinstance(value, Mapping):
        return {k: decode_json_strings(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_json_strings(v, depth + 1) for v in value]
    return value


def _urls(value: Any) -> tuple[str, ...]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            url = node.strip()
            if url.lower().startswith(("http://", "https://")):
                found.append(url)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(value)
    return tuple(dict.fromkeys(found))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value, default=str)[:500]


class DeclarativeAdapter:
    """One provider described by a ``type: declarative`` section (see the module docstring).

    ``options`` is the section as a mapping; it is validated again here, so a hand-built
    adapter is checked like one from the config file.
    """

    name = "declarative"
    config_section = "declarative"
    Options: ClassVar[type[ProviderOptions]] = DeclarativeOptions
    result_link_ttl_s: float = 3600.0

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        spec = DeclarativeOptions.model_validate(dict(options))
        self.spec = spec
        self.name = spec.name or "declarative"
        self.base_url = spec.base_url
        self.timeout_s = spec.timeout_s
        self.result_link_ttl_s = spec.result_link_ttl_s
        self._api_key = ph.secret_text(spec.api_key)
        self._needs_key = "{api_key}" in spec.status.url or any(
            "{api_key}" in v for v in spec.status.headers.values()
        )
        self._state = jmespath.compile(spec.state)
        self._video_urls = self._maybe(spec.video_urls)
        self._progress = self._maybe(spec.progress)
        self._error_message = self._maybe(spec.error_message)
        self._rules = [(re.compile(r.match), r.code) for r in spec.error_codes]
        envelope = spec.envelope
        self._envelope_code = jmespath.compile(envelope.code) if envelope else None
        self._envelope_message = self._maybe(envelope.message if envelope else None)
        self._ok_codes = frozenset(envelope.ok if envelope else ())
        self._transient_codes = frozenset(envelope.transient if envelope else ())

    @staticmethod
    def _maybe(expression: str | None) -> ParsedResult | None:
        return jmespath.compile(expression) if expression else None

    # --- the pure part ------------------------------------------------------------------

    def parse(self, body: object) -> PollResult:
        """Read one status answer; raise UnrecognizedResponse when it says nothing we know."""
        if isinstance(body, str | bytes):
            try:
                body = json.loads(body)
            except (ValueError, RecursionError):
                raise UnrecognizedResponse("the body is not JSON", provider=self.name) from None
        try:
            return self._parse(decode_json_strings(body))
        except JMESPathError as exc:
            raise UnrecognizedResponse(
                "an expression could not be applied to the body",
                provider=self.name,
                detail=str(exc)[:300],
            ) from None

    def _parse(self, doc: Any) -> PollResult:
        if self._envelope_code is not None:
            code = ph.as_int(self._envelope_code.search(doc))
            if code is not None and code not in self._ok_codes:
                message = _text(self._search(self._envelope_message, doc))
                self._raise_for_code(code, message)
        word = _word(self._state.search(doc))
        if word is None:
            raise UnrecognizedResponse("no state in the body", provider=self.name)
        target = self.spec.states.get(word)
        if target is None:
            raise UnrecognizedResponse(
                "a state the config does not name", provider=self.name, detail=word[:100]
            )
        if target == "succeeded":
            urls = _urls(self._search(self._video_urls, doc))
            return PollResult(PollStatus.SUCCEEDED, video_urls=urls, progress=1.0)
        if target == "failed":
            message = _text(self._search(self._error_message, doc))
            return PollResult(
                PollStatus.FAILED,
                error_code=self.classify(message),
                detail=message[:500] or f"state {word}",
            )
        return PollResult(
            PollStatus.PENDING, progress=ph.as_fraction(self._search(self._progress, doc))
        )

    @staticmethod
    def _search(expression: ParsedResult | None, doc: Any) -> Any:
        return expression.search(doc) if expression is not None else None

    def classify(self, message: str) -> ErrorCode:
        """The first ``error_codes`` rule whose regex is found in the message decides."""
        for pattern, code in self._rules:
            if pattern.search(message):
                return code
        return ErrorCode.UNKNOWN_PROVIDER_ERROR

    def _raise_for_code(self, code: int, message: str) -> None:
        """An HTTP status, or an envelope code read the same way."""
        name = self.name
        if code in (401, 403):
            raise ProviderTaskFailed(ErrorCode.AUTH_FAILED, provider=name, detail=message)
        if code == 402:
            raise ProviderTaskFailed(ErrorCode.INSUFFICIENT_CREDITS, provider=name, detail=message)
        if code == 429:
            raise ProviderUnavailable(
                "rate limited", provider=name, detail=message, rate_limited=True
            )
        if code >= 500 or code in (408, 425) or code in self._transient_codes:
            raise ProviderUnavailable(f"provider code {code}", provider=name, detail=message)
        if code == 404:
            raise ProviderTaskFailed(
                ErrorCode.UNKNOWN_PROVIDER_ERROR,
                provider=name,
                detail=f"task unknown to the provider: {message}",
            )
        raise ProviderTaskFailed(self.classify(message), provider=name, detail=message)

    # --- HTTP ---------------------------------------------------------------------------

    def status_request(self, task: ProviderTask) -> tuple[str, dict[str, str]]:
        """The URL and headers of one status GET."""
        values = {
            "base_url": self.base_url,
            "taskId": quote(task.task_id, safe=""),
            "api_key": quote(self._api_key, safe=""),
        }
        url = fill(self.spec.status.url, values)
        headers = {"Accept": "application/json"}
        header_values = {**values, "taskId": task.task_id, "api_key": self._api_key}
        for header, template in self.spec.status.headers.items():
            headers[header] = fill(template, header_values)
        if _origin(url) != _origin(self.base_url):  # the config check makes this unreachable
            raise ProviderTaskFailed(
                ErrorCode.UNKNOWN_PROVIDER_ERROR,
                provider=self.name,
                detail="the status URL left base_url's host",
            )
        return url, headers

    async def poll(self, task: ProviderTask, http: httpx.AsyncClient) -> PollResult:
        if self._needs_key and not self._api_key:
            raise ProviderTaskFailed(
                ErrorCode.AUTH_FAILED,
                provider=self.name,
                detail=f"no API key configured (providers.{self.name}.api_key)",
            )
        url, headers = self.status_request(task)
        try:
            response = await http.get(url, headers=headers, timeout=self.timeout_s)
        except httpx.TimeoutException:
            raise ProviderUnavailable("status request timed out", provider=self.name) from None
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise ProviderUnavailable(
                f"status request failed: {type(exc).__name__}", provider=self.name
            ) from None
        return self.read(response)

    def read(self, response: httpx.Response) -> PollResult:
        status = response.status_code
        ph.raise_if_transient(response, provider=self.name)
        if status in (401, 402, 403):
            self._raise_for_code(status, f"HTTP {status}")
        try:
            body = json.loads(response.content)
        except (ValueError, RecursionError):
            raise UnrecognizedResponse(
                f"HTTP {status} with a body that is not JSON", provider=self.name
            ) from None
        if status < 400:
            return self.parse(body)
        try:  # a 4xx whose body still says something about the task (or an envelope code)
            return self.parse(body)
        except UnrecognizedResponse:
            self._raise_for_code(status, f"HTTP {status}")
            raise  # pragma: no cover - _raise_for_code always raises
