"""The ``slack`` and ``discord`` notifiers: chat-ops alerts for the people who get paged.

Both post to an incoming webhook (the URL is a secret: it never appears in logs or errors).
By default they fire on ``video.failed`` and ``video.timed_out``; add ``video.delayed`` or
``video.succeeded`` in ``events``. Each alert carries the job id, model, provider, attempts,
elapsed time, error code and a link to the job, within the target's size limits, with every
substituted value escaped for the target's markup. 429s are retried after the time the
target asks for; 5xx and network trouble are retried; other 4xx are final.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from pydantic import Field, SecretStr

from webhook_poller.config import secret_text
from webhook_poller.errors import ConfigError, NotifyRejected, NotifyTransient
from webhook_poller.interfaces import Notification, PluginContext, Receipt
from webhook_poller.net import retry_after_s
from webhook_poller.options import NotifierOptions, PluginOptions

from .templates import Templates, escape_discord, escape_slack, values_for
from .webhook import OutboundClient

DEFAULT_EVENTS = ("video.failed", "video.timed_out")

_TITLE = (
    "{% if event == 'video.succeeded' %}Video ready"
    "{% elif event == 'video.delayed' %}Video delayed"
    "{% elif errorCode == 'provider_timeout' %}Video timed out"
    "{% else %}Video failed{% endif %}"
)
_BODY = "{{ userMessage }}"

_COLORS = {"video.succeeded": 0x1F8A4C, "video.delayed": 0xB7791F}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ChatOpsOptions(NotifierOptions):
    webhook_url: SecretStr
    templates: dict[str, str] | None = None
    timeout_s: float | None = Field(default=None, gt=0)


class _ChatOps(OutboundClient):
    kind = "chatops"
    Options: ClassVar[type[PluginOptions]] = ChatOpsOptions
    escape = staticmethod(escape_slack)

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        self.name = str(options.get("name") or self.kind)
        self.url = secret_text(options.get("webhook_url"))
        if not self.url.startswith(("https://", "http://")):
            raise ConfigError(f"notifiers.{self.name}: webhook_url must be an http(s) URL")
        self.events = frozenset(options.get("events") or DEFAULT_EVENTS)
        self.templates = Templates(
            self.escape,
            {"title": _TITLE, "default": _BODY},
            options.get("templates"),
            where=f"notifiers.{self.name}.templates",
        )
        self.timeout_s = float(options.get("timeout_s") or 15)
        self._client = context.http

    @property
    def where(self) -> str:
        """The target for logs: host only, never the secret path."""
        return f"{self.kind} webhook at {urlsplit(self.url).hostname}"

    def facts(self, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        pairs = [
            ("Job", values.get("jobId")),
            ("Model", values.get("model")),
            ("Provider", values.get("provider")),
            ("Attempts", values.get("attempts")),
            ("Elapsed", values.get("elapsed")),
            ("Error", values.get("errorCode")),
        ]
        return [(k, self.escape(str(v))) for k, v in pairs if v not in (None, "")]

    def body(self, note: Notification) -> dict[str, Any]:
        raise NotImplementedError

    async def send(self, notification: Notification) -> Receipt:
        try:
            response = await self.client.post(
                self.url, json=self.body(notification), timeout=self.timeout_s
            )
        except httpx.TransportError as exc:
            raise NotifyTransient(f"{self.where}: {type(exc).__name__}") from None
        status = response.status_code
        if 200 <= status < 300:
            return Receipt(f"HTTP {status}")
        text = f"{self.where} answered HTTP {status}"
        if status == 429:
            raise NotifyTransient(text, retry_after_s=self.retry_after(response))
        if status >= 500 or status == 408:
            raise NotifyTransient(text)
        raise NotifyRejected(text)

    def retry_after(self, response: httpx.Response) -> float | None:
        return retry_after_s(response)

    def rendered(self, note: Notification) -> tuple[dict[str, Any], str, str]:
        """The template values, the title and the event's text for one notification."""
        values = values_for(note)
        return (
            values,
            self.templates.render("title", values),
            self.templates.render(note.event.value, values),
        )


class SlackNotifier(_ChatOps):
    """``{type: slack, webhook_url, events, templates}``: Block Kit with a text fallback."""

    kind = "slack"
    escape = staticmethod(escape_slack)

    def body(self, note: Notification) -> dict[str, Any]:
        values, title, text = self.rendered(note)
        facts = self.facts(values)
        fallback = _cut(f"{title}: {text} ({values.get('jobId')})", 3000)
        blocks: list[dict[str, Any]] = [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _cut(f"*{title}*\n{text}", 3000)},
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": _cut(f"*{k}*\n{v}", 2000)} for k, v in facts[:10]
                ],
            },
        ]
        url = values.get("statusUrl")
        if url:
            blocks.append(
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": "Open job"},
                            "url": _cut(str(url), 3000),
                        }
                    ],
                }
            )
        return {"text": fallback, "blocks": blocks}


class DiscordNotifier(_ChatOps):
    """``{type: discord, webhook_url, events, templates}``: one embed, mentions disabled."""

    kind = "discord"
    escape = staticmethod(escape_discord)

    def body(self, note: Notification) -> dict[str, Any]:
        values, title, text = self.rendered(note)
        embed: dict[str, Any] = {
            "title": _cut(title, 256),
            "description": _cut(text, 4096),
            "color": _COLORS.get(note.event.value, 0xC23B3B),
            "fields": [
                {"name": k, "value": _cut(v, 1024), "inline": True}
                for k, v in self.facts(values)[:25]
            ],
        }
        if values.get("statusUrl"):
            embed["url"] = str(values["statusUrl"])
        return {
            "content": _cut(f"{title}: {values.get('jobId')}", 2000),
            "embeds": [embed],
            "allowed_mentions": {"parse": []},
        }

    def retry_after(self, response: httpx.Response) -> float | None:
        """Discord puts a float ``retry_after`` in the JSON body; the header is whole seconds."""
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("retry_after"), int | float):
            return float(data["retry_after"])
        return retry_after_s(response)
