"""Services for fast unit tests: a SQLite store and local videos in tmp, a fake clock, and
no server, no sockets. The plug-ins are the real ones; only time is under the test's hand."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.support.clock import FakeClock
from tests.support.service import deep_merge
from webhook_poller.config import settings_from_mapping
from webhook_poller.errors import NotifyTransient
from webhook_poller.interfaces import Notification, Receipt
from webhook_poller.services import Services, build_services


def unit_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """A config with everything under ``tmp_path`` and no jitter, so times are exact."""
    cfg: dict[str, Any] = {
        "store": {"url": f"sqlite:///{tmp_path}/jobs.db", "lease_s": 30},
        "storage": {"url": f"file://{tmp_path}/videos"},
        "callbacks": {"schedule_s": [5, 30, 120]},
        "polling": {"interval_s": 10, "first_poll_delay_s": 0, "jitter": 0, "tick_s": 0.05},
        # the global polling settings above apply to the demo too
        "providers": {
            "demo": {"polls_until_done": 2, "interval_s": None, "first_poll_delay_s": None}
        },
        "logging": {"level": "WARNING"},
    }
    return deep_merge(cfg, extra)


@contextlib.asynccontextmanager
async def unit_services(
    tmp_path: Path, clock: FakeClock | None = None, **extra: Any
) -> AsyncIterator[Services]:
    """Opened services on a fake clock (``services.clock``), closed afterwards."""
    services = build_services(settings_from_mapping(unit_config(tmp_path, **extra)))
    services.clock = clock or FakeClock()
    await services.open()
    try:
        yield services
    finally:
        await services.close()


class ScriptedNotifier:
    """A notification target whose answers the test scripts: each ``send`` takes the next
    step (``None`` accepts; an exception is raised), and records what it was given."""

    def __init__(self, name: str = "hook", events: frozenset[str] = frozenset({"*"})) -> None:
        self.name = name
        self.events = events
        self.steps: list[BaseException | None] = []
        self.received: list[Notification] = []

    def then(self, *steps: BaseException | None) -> ScriptedNotifier:
        self.steps.extend(steps)
        return self

    async def send(self, notification: Notification) -> Receipt:
        self.received.append(notification)
        step = self.steps.pop(0) if self.steps else None
        if step is not None:
            raise step
        return Receipt("ok")


class ConflictTransient(NotifyTransient):
    """A "busy, try again" that only lasts ``callbacks.conflict_window_s`` (an n8n 409)."""

    conflict = True
