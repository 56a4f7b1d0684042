"""The ``webhook`` notifier: POST the flat event JSON, signed per Standard Webhooks.

Every attempt of one delivery carries the same ``webhook-id`` (receivers drop repeats by it),
its own ``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">``. The URL is called exactly as configured or received (an n8n
``$execution.resumeUrl`` must not be rebuilt). Only a 2xx counts; the core retries.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
from pydantic import Field, SecretStr
from standardwebhooks import Webhook

from webhook_poller.config import secret_text
from webhook_poller.errors import ConfigError, NotifyRejected, NotifyTransient, UnsafeURL
from webhook_poller.interfaces import Notification, PluginContext, Receipt
from webhook_poller.net import RefusedAddress, redact_url, retry_after_s
from webhook_poller.options import NotifierOptions, PluginOptions
from webhook_poller.stores.codec import dumps

DEFAULT_EVENTS = (
    "video.succeeded",
    "video.failed",
    "video.delayed",
    "video.publish_requested",
)
_FINISHED = re.compile(r"(has )?finished( already)?|already finished", re.I)


class NotifyConflict(NotifyTransient):
    """HTTP 409 that may clear soon (n8n: the execution has not parked on its Wait node yet):
    retried within ``callbacks.conflict_window_s`` only."""

    conflict = True


def _signer(secret: Any) -> Webhook | None:
    if secret is None:
        return None
    value = secret_text(secret)
    if not value:
        return None
    if value.startswith("whsec_"):
        return Webhook(value)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    return Webhook(raw if len(raw) >= 16 else value.encode())


def _snippet(response: httpx.Response) -> str:
    try:
        text = response.text
    except Exception:
        return ""
    return " ".join(text.split())[:200]


class OutboundClient:
    """The service's outbound client (``context.http``) or, for a notifier built without one,
    a client of its own that ``aclose`` closes."""

    _client: httpx.AsyncClient | None = None
    _own_client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is not None:
            return self._client
        if self._own_client is None:
            self._own_client = httpx.AsyncClient(follow_redirects=False)
        return self._own_client

    async def aclose(self) -> None:
        if self._own_client is not None:
            await self._own_client.aclose()


class WebhookOptions(NotifierOptions):
    url: str
    secret: SecretStr | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    headers: dict[str, str] | None = None


class WebhookNotifier(OutboundClient):
    """Options: ``url`` (required), ``secret``, ``name``, ``events``, ``timeout_s``, ``headers``."""

    Options: ClassVar[type[PluginOptions]] = WebhookOptions

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        url = options.get("url")
        if not url or not isinstance(url, str):
            raise ConfigError("notifiers: a webhook notifier needs a 'url'")
        self.url = url
        self.name = str(options.get("name") or "webhook")
        self.events = frozenset(options.get("events") or DEFAULT_EVENTS)
        self.timeout_s = float(options.get("timeout_s") or context.settings.callbacks.timeout_s)
        self.extra_headers = {str(k): str(v) for k, v in (options.get("headers") or {}).items()}
        self.signer = _signer(options.get("secret"))
        self._client = context.http

    @classmethod
    def for_callback(cls, url: str, context: PluginContext) -> WebhookNotifier:
        """The target for a request's ``callbackUrl``, signed with ``callbacks.secret``."""
        options = {
            "url": url,
            "name": "callback",
            "secret": context.settings.callbacks.secret,
            "events": list(DEFAULT_EVENTS),
        }
        return cls(options, context)

    def headers_for(self, webhook_id: str, body: str, now: datetime) -> dict[str, str]:
        headers = {
            **self.extra_headers,
            "content-type": "application/json",
            "user-agent": "webhook-poller",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
        }
        if self.signer is not None:
            headers["webhook-signature"] = self.signer.sign(webhook_id, now, body)
        return headers

    async def send(self, notification: Notification) -> Receipt:
        # compact, UTF-8 as is: pydantic-core's writer, the JSON that json.dumps gave
        body = dumps(notification.payload)
        now = datetime.now(UTC).replace(microsecond=0)
        headers = self.headers_for(notification.delivery.webhook_id, body, now)
        where = redact_url(self.url)  # keeps the port: http://n8n:5678/webhook/...
        try:
            response = await self.client.post(
                self.url, content=body.encode(), headers=headers, timeout=self.timeout_s
            )
        except UnsafeURL as exc:
            raise NotifyRejected(f"callback URL refused: {exc}") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError, UnicodeError) as exc:
            # a URL httpx cannot send never will be: final, not transient
            reason = type(exc).__name__
            raise NotifyRejected(f"{where}: the URL cannot be sent ({reason})") from None
        except httpx.TransportError as exc:
            context = exc.__context__ or exc.__cause__
            if isinstance(context, RefusedAddress):
                raise NotifyRejected(f"callback URL refused: {context}") from None
            raise NotifyTransient(f"{where}: {type(exc).__name__}") from None
        return self._classify(response, where)

    @staticmethod
    def _classify(response: httpx.Response, where: str) -> Receipt:
        status = response.status_code
        if 200 <= status < 300:
            return Receipt(f"HTTP {status}")
        text = f"{where} answered HTTP {status}"
        snippet = _snippet(response)
        if status == 409:
            if _FINISHED.search(snippet):
                raise NotifyRejected(f"{text}: the execution has finished")
            raise NotifyConflict(f"{text} (not ready yet)", retry_after_s=retry_after_s(response))
        if status in (404, 410):
            raise NotifyRejected(text)
        if status in (429, 503):
            raise NotifyTransient(text, retry_after_s=retry_after_s(response))
        if status >= 500 or status in (408, 425) or 300 <= status < 400:
            raise NotifyTransient(text)
        raise NotifyRejected(f"{text}: {snippet}" if snippet else text)
