"""Live routes: the server-sent event streams (one job, all jobs) and the dashboard page.

The dashboard shell is public (it holds no data; it asks for the token and reads the token
routes); the streams need the token.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from .. import guard, live
from ..views import job_summary
from . import Auth, Endpoint
from .base import ApiBase
from .jobs import GROUPS

#: Jobs per group a live stream of all jobs watches.
LIVE_WINDOW = 200
STATIC = Path(__file__).parent.parent / "static"


def endpoints(api: LiveRoutes) -> list[Endpoint]:
    """GET routes only: no body is read."""
    return [
        Endpoint("/", api.dashboard, ("GET",), auth=Auth.PUBLIC),
        Endpoint("/events", api.all_events, ("GET",)),
        Endpoint("/jobs/{job_id}/events", api.job_events, ("GET",)),
    ]


class LiveRoutes(ApiBase):
    """Handlers of the live group."""

    async def job_events(self, request: Request) -> Response:
        job = await self.get_job(request.path_params["job_id"])
        svc = self.svc
        base = self.settings.server.base_url()

        async def snapshot() -> dict[str, Mapping[str, Any]]:
            current = await svc.store.get(job.id)
            if current is None:
                return {}
            return {current.id: job_summary(current, base, await self._position(current))}

        return self._event_stream(request, snapshot)

    def _event_stream(self, request: Request, snapshot: live.Snapshot) -> Response:
        store = self.svc.store

        async def exists(job_id: str) -> bool:
            return await store.get(job_id) is not None

        return EventSourceResponse(
            live.diff_stream(
                snapshot, self.svc.changes, exists=exists, is_disconnected=request.is_disconnected
            ),
            ping=live.PING_S,
        )

    async def all_events(self, request: Request) -> Response:
        shared = self._all_jobs_snapshot()
        feed = self.svc.changes

        async def snapshot() -> dict[str, Mapping[str, Any]]:
            # fresh enough: read after the last local change, and at most a period old
            return await shared.get(max(feed.changed_at, time.monotonic() - live.REFRESH_S))

        return self._event_stream(request, snapshot)

    def _all_jobs_snapshot(self) -> live.SharedSnapshot:
        """The window every stream of all jobs watches, one per process (issue 12, item 22)."""
        if self._live_all is None or self._live_all_for is not self.svc:
            self._live_all = live.SharedSnapshot(self._read_all_jobs)
            self._live_all_for = self.svc
        return self._live_all

    async def _read_all_jobs(self) -> dict[str, Mapping[str, Any]]:
        svc = self.svc
        base = self.settings.server.base_url()
        out: dict[str, Mapping[str, Any]] = {}
        # Groups are read in the order jobs move through them (queued, processing, history):
        # a job that moves on between two reads is then seen in one of them, instead of
        # being missed by both.
        for name in ("queued", "processing", "history"):
            members = GROUPS[name]
            jobs, _ = await svc.store.list_jobs(states=members, limit=LIVE_WINDOW)
            if name == "queued":
                jobs.sort(key=lambda j: (j.created_at, j.id))
                first = await self._position(jobs[0]) if jobs else None
                for i, j in enumerate(jobs):
                    out[j.id] = job_summary(j, base, (first or 1) + i)
            else:
                out.update((j.id, job_summary(j, base)) for j in jobs)
        return out

    async def dashboard(self, request: Request) -> Response:
        page = STATIC / "dashboard.html"
        return FileResponse(
            page,
            media_type="text/html; charset=utf-8",
            headers={"Cache-Control": "no-cache", **guard.page_headers(page)},
        )
