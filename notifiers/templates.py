"""Message templates for notifiers, in YAML, rendered with Jinja2's sandbox.

The template text is the operator's and is used as written (it may hold markup for the target,
like ``<b>`` for Telegram HTML). Every *value* substituted into it is escaped for the target's
format by the environment's ``finalize`` hook, so a prompt, model name or message can never
break the markup or inject a mention.

Values a template can use: ``event``, ``jobId``, ``sessionId``, ``taskId``, ``model``,
``provider``, ``status``, ``userMessage``, ``attempts``, ``elapsed`` ("6m 32s"),
``elapsedSeconds``, ``errorCode``, ``statusUrl``, ``videoUrl``, ``duration``, ``resolution``,
``sizeMB``, and ``context`` (the request's context object).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment
from telegram.helpers import escape_markdown

from webhook_poller.analytics import human_duration
from webhook_poller.errors import ConfigError
from webhook_poller.interfaces import Notification

Escape = Callable[[str], str]


def escape_telegram_html(text: str) -> str:
    return html.escape(text, quote=False)


def escape_telegram_markdown_v2(text: str) -> str:
    return escape_markdown(text, version=2)


def escape_slack(text: str) -> str:
    """Slack mrkdwn: only &, < and > are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_DISCORD_MD = re.compile(r"([\\*_~`|>#\[\]()-])")


def escape_discord(text: str) -> str:
    """Discord markdown, and @everyone / @here / <@id> mentions made inert."""
    text = _DISCORD_MD.sub(r"\\\1", text)
    return text.replace("@", "@\u200b")


def escape_plain(text: str) -> str:
    return text


def values_for(notification: Notification) -> dict[str, Any]:
    """The template variables of one notification (never the provider's raw text)."""
    payload = notification.payload
    error = payload.get("error") or {}
    video = notification.videos[0] if notification.videos else None
    meta = video.metadata if video is not None else None
    return {
        "event": notification.event.value,
        "jobId": payload.get("jobId"),
        "sessionId": payload.get("sessionId"),
        "taskId": payload.get("taskId"),
        "model": payload.get("model"),
        "provider": payload.get("provider"),
        "status": payload.get("status"),
        "userMessage": payload.get("userMessage"),
        "attempts": payload.get("attempts"),
        "elapsedSeconds": payload.get("elapsedSeconds"),
        "elapsed": human_duration(float(payload.get("elapsedSeconds") or 0)),
        "errorCode": error.get("code"),
        "statusUrl": payload.get("statusUrl"),
        "videoUrl": video.url if video is not None else None,
        "duration": meta.duration_s if meta is not None else None,
        "resolution": f"{meta.width}x{meta.height}"
        if meta and meta.width and meta.height
        else None,
        "sizeMB": round(meta.size_bytes / 1e6, 1) if meta and meta.size_bytes else None,
        "context": dict(payload.get("context") or {}),
    }


class Templates:
    """Per-event templates (``default`` as the fallback) with values escaped by ``escape``."""

    def __init__(
        self,
        escape: Escape,
        defaults: Mapping[str, str],
        overrides: Mapping[str, Any] | None = None,
        *,
        where: str = "templates",
    ) -> None:
        def finalize(value: Any) -> str:
            return "" if value is None else escape(str(value))

        self.escape = escape
        self.env = SandboxedEnvironment(
            finalize=finalize, autoescape=False, keep_trailing_newline=False
        )
        merged = dict(defaults)
        for name, text in (overrides or {}).items():
            if not isinstance(text, str):
                raise ConfigError(f"{where}.{name} must be a string")
            merged[name] = text
        try:
            self.templates = {name: self.env.from_string(text) for name, text in merged.items()}
        except TemplateError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def render(self, event: str, values: Mapping[str, Any]) -> str:
        template = self.templates.get(event) or self.templates.get("default")
        if template is None:
            return ""
        try:
            return template.render(**values).strip()
        except TemplateError as exc:  # a broken template must not lose the message
            return self.escape(f"{values.get('event')}: {values.get('jobId')} ({exc})")
