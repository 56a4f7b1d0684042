"""An e-mail notifier for webhook-poller, as an example of a third-party plug-in.

Config::

    notifiers:
      - type: email
        smtp_host: smtp.example.com
        smtp_port: 587
        starttls: true
        username: ${SMTP_USER}
        password: ${SMTP_PASSWORD}
        sender: videos@example.com
        to: [ops@example.com]        # or the session's / context's ``email``
        events: [video.succeeded, video.failed, video.timed_out]

The notifier only renders and sends. Retries with backoff, the per-delivery record and
once-only delivery across restarts are the core's job: raise ``NotifyTransient`` for
"try again later" and ``NotifyRejected`` for "retrying cannot help".
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from typing import Any, ClassVar

from pydantic import Field, SecretStr

from webhook_poller.config import secret_text
from webhook_poller.errors import ConfigError, NotifyRejected, NotifyTransient
from webhook_poller.interfaces import Notification, PluginContext, Receipt
from webhook_poller.options import NotifierOptions, PluginOptions

SUBJECTS = {
    "video.succeeded": "Your video is ready",
    "video.failed": "Your video could not be made",
    "video.timed_out": "Your video took too long",
    "video.delayed": "Your video is taking longer than usual",
}


class EmailOptions(NotifierOptions):
    """``type: email``: checked when the config is loaded, so a typo is an error."""

    smtp_host: str
    smtp_port: int | None = Field(default=None, gt=0, le=65535)
    starttls: bool | None = None
    username: SecretStr | None = None
    password: SecretStr | None = None
    sender: str
    to: str | list[str] | None = None
    timeout_s: float | None = Field(default=None, gt=0)


class EmailNotifier:
    Options: ClassVar[type[PluginOptions]] = EmailOptions

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        self.name = str(options.get("name") or "email")
        self.events = frozenset(options.get("events") or ["video.succeeded", "video.failed"])
        self.host = str(options.get("smtp_host") or "")
        if not self.host:
            raise ConfigError(f"notifiers.{self.name}: smtp_host is required")
        self.port = int(options.get("smtp_port") or 587)
        self.starttls = bool(options.get("starttls", self.port == 587))
        self.username = secret_text(options.get("username"))
        self.password = secret_text(options.get("password"))
        self.sender = str(options.get("sender") or "")
        if not self.sender:
            raise ConfigError(f"notifiers.{self.name}: sender is required")
        to = options.get("to") or []
        self.to: list[str] = [to] if isinstance(to, str) else [str(a) for a in to]
        self.timeout_s = float(options.get("timeout_s") or 20)

    def recipients(self, notification: Notification) -> list[str]:
        """The session's or the request context's ``email``, else the configured list."""
        for source in (notification.session, notification.job.context):
            if isinstance(source, Mapping) and source.get("email"):
                return [str(source["email"])]
        return self.to

    def message(self, notification: Notification, to: Sequence[str]) -> EmailMessage:
        p = notification.payload
        event = notification.event.value
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = ", ".join(to)
        msg["Subject"] = SUBJECTS.get(event, event)
        # the same id on every retry, so a mail server or client can drop repeats
        msg["Message-ID"] = f"<{notification.delivery.webhook_id}@webhook-poller>"
        lines = [str(p.get("userMessage") or ""), ""]
        lines += [f"Video: {url}" for url in p.get("videoUrls") or []]
        lines += [f"Model: {p.get('model')}", f"Job: {p.get('statusUrl') or p.get('jobId')}"]
        msg.set_content("\n".join(lines))  # plain text: nothing to escape
        return msg

    def _send_blocking(self, msg: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password)
            smtp.send_message(msg)

    async def send(self, notification: Notification) -> Receipt:
        to = self.recipients(notification)
        if not to:
            raise NotifyRejected("no recipient: no email in the session or context, no `to`")
        msg = self.message(notification, to)
        try:
            # smtplib blocks; a thread keeps the event loop (and every other job) moving
            await asyncio.to_thread(self._send_blocking, msg)
        except smtplib.SMTPAuthenticationError:
            raise NotifyRejected("the SMTP server refused our login") from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise NotifyRejected(f"recipients refused: {', '.join(exc.recipients)}") from None
        except smtplib.SMTPResponseException as exc:
            if 500 <= exc.smtp_code < 600:
                raise NotifyRejected(f"SMTP {exc.smtp_code}") from None
            raise NotifyTransient(f"SMTP {exc.smtp_code}, will retry") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifyTransient(f"SMTP server unreachable: {type(exc).__name__}") from None
        return Receipt(f"mailed {len(to)} recipient(s)")
