"""The ``log`` notifier: one structured log line per event, for operators and for debugging."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import structlog

from webhook_poller.interfaces import Notification, PluginContext, Receipt
from webhook_poller.options import NotifierOptions, PluginOptions

log = structlog.get_logger(__name__)


class LogNotifier:
    """Options: ``name`` (default "log"), ``events`` (default every event)."""

    Options: ClassVar[type[PluginOptions]] = NotifierOptions

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        self.name = str(options.get("name") or "log")
        self.events = frozenset(options.get("events") or ["*"])

    async def send(self, notification: Notification) -> Receipt:
        payload = {k: v for k, v in notification.payload.items() if k != "context"}
        log.info(
            "notification_logged",
            notify_event=notification.event.value,
            job_id=notification.job.id,
            session_id=notification.job.session_id,
            status=payload.get("status"),
            payload=payload,
        )
        return Receipt("logged")
