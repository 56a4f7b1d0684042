"""Live updates for the dashboard and API clients, as Server-Sent Events (sse-starlette).

The store is the source of truth, because with several instances a change can happen in any
of them: each stream re-reads the store on a short period and sends what changed. Changes
made by this instance (a poll, an action through the API) wake the streams at once through
a :class:`ChangeFeed`, so a local change shows without waiting for the period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

#: Seconds between two looks at the store when nothing local happened.
REFRESH_S = 1.0
#: Seconds between keep-alive comments, so proxies keep the stream open.
PING_S = 15


class ChangeFeed:
    """A counter that waiters can block on: ``notify`` bumps it and wakes every waiter."""

    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()

    def notify(self) -> None:
        self.version += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, seconds: float) -> None:
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)


Snapshot = Callable[[], Awaitable[dict[str, dict[str, Any]]]]


async def diff_stream(
    snapshot: Snapshot,
    feed: ChangeFeed,
    *,
    exists: Callable[[str], Awaitable[bool]],
    is_disconnected: Callable[[], Awaitable[bool]],
    refresh_s: float = REFRESH_S,
) -> AsyncIterator[dict[str, str]]:
    """Yield SSE events: one ``snapshot`` first, then ``job`` for each new or changed job and
    ``deleted`` for each job that went away. ``snapshot`` maps job id -> JSON; a job that
    only left the snapshot's window (``exists`` still finds it) is not reported deleted."""
    known = await snapshot()
    yield {"event": "snapshot", "data": json.dumps({"jobs": list(known.values())})}
    while not await is_disconnected():
        await feed.wait(refresh_s)
        current = await snapshot()
        for job_id, body in current.items():
            before = known.get(job_id)
            if before != body:
                yield {"event": "job", "id": job_id, "data": json.dumps(body)}
        for job_id in known.keys() - current.keys():
            if not await exists(job_id):
                yield {"event": "deleted", "id": job_id, "data": json.dumps({"jobId": job_id})}
        known = current
