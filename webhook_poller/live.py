"""Live updates for the dashboard and API clients, as Server-Sent Events (sse-starlette).

The store is the source of truth, because with several instances a change can happen in any
of them: each stream re-reads the store on a short period and sends what changed. Changes
made by this instance (a poll, an action through the API) wake the streams at once through
a :class:`ChangeFeed`, so a local change shows without waiting for the period.

The stream of all jobs reads its window (up to 3 x 200 jobs) through one
:class:`SharedSnapshot` per process: however many dashboards are open, the store is read once
per refresh, and at most every :data:`MIN_REFRESH_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

#: Seconds between two looks at the store when nothing local happened.
REFRESH_S = 1.0
#: Seconds between keep-alive comments, so proxies keep the stream open.
PING_S = 15
#: The shortest time between two reads of a shared snapshot, however busy the process is.
MIN_REFRESH_S = 0.25


class ChangeFeed:
    """A counter that waiters can block on: ``notify`` bumps it and wakes every waiter."""

    def __init__(self) -> None:
        self.version = 0
        #: ``time.monotonic()`` of the last ``notify`` (-inf before the first).
        self.changed_at = -math.inf
        self._event = asyncio.Event()

    def notify(self) -> None:
        self.version += 1
        self.changed_at = time.monotonic()
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, seconds: float) -> None:
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)


Snapshot = Callable[[], Awaitable[dict[str, Mapping[str, Any]]]]


class SharedSnapshot:
    """One snapshot of the store that every stream of a process shares.

    ``get(newer_than)`` returns the last snapshot if its read started at or after
    ``newer_than`` (a ``time.monotonic()`` value); otherwise it reads the store again, once for
    every caller waiting at that moment, and never sooner than ``min_interval_s`` after the
    read before. ``loads`` counts the store reads.
    """

    def __init__(self, load: Snapshot, *, min_interval_s: float = MIN_REFRESH_S) -> None:
        self._load = load
        self.min_interval_s = min_interval_s
        self.loads = 0
        self._value: dict[str, Mapping[str, Any]] | None = None
        self._started = -math.inf
        self._refresh: asyncio.Future[None] | None = None

    async def get(self, newer_than: float) -> dict[str, Mapping[str, Any]]:
        while self._value is None or self._started < newer_than:
            if self._refresh is None:
                self._refresh = asyncio.ensure_future(self._reload())
                self._refresh.add_done_callback(self._done)
            # shielded: a stream that goes away does not cancel the others' read
            await asyncio.shield(self._refresh)
        return self._value

    def _done(self, future: asyncio.Future[None]) -> None:
        self._refresh = None
        if not future.cancelled():
            future.exception()  # retrieved here; the waiters see it raised

    async def _reload(self) -> None:
        wait = self._started + self.min_interval_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        started = time.monotonic()
        self.loads += 1
        value = await self._load()
        self._value, self._started = value, started


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
