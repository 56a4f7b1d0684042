"""Job routes: a job's status, the list, and what a caller can do to one (cancel, retry,
extend, upscale, delete), plus the per-session settings. All need the token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import followups, generate, inputs, lifecycle, shapes
from ..errors import NotFound, RequestRejected, ServiceUnavailable
from ..model import JobState
from ..views import job_answer, job_json, job_summary, json_answer, video_refs
from . import Endpoint
from .base import MAX_ID_LEN, ApiBase, _int_param

log = structlog.get_logger(__name__)


def endpoints(api: JobRoutes) -> list[Endpoint]:
    """All token routes; bodies at most ``server.max_body_bytes``."""
    return [
        Endpoint("/jobs", api.list_jobs, ("GET",)),
        Endpoint("/jobs/{job_id}", api.job_status, ("GET",)),
        Endpoint("/jobs/{job_id}", api.delete_job, ("DELETE",)),
        Endpoint("/jobs/{job_id}/cancel", api.cancel_job, ("POST",)),
        Endpoint("/jobs/{job_id}/retry", api.retry_job, ("POST",)),
        Endpoint("/jobs/{job_id}/extend", api.extend_job, ("POST",)),
        Endpoint("/jobs/{job_id}/upscale", api.upscale_job, ("POST",)),
        Endpoint("/sessions/{session_id}", api.put_session, ("PUT",)),
    ]


class JobRoutes(ApiBase):
    """Handlers of the jobs group."""

    async def job_status(self, request: Request) -> Response:
        job = await self.get_job(request.path_params["job_id"])
        svc = self.svc
        refs = await video_refs(job, svc)
        deliveries = await self._store_call(svc.store.deliveries_for(job.id))
        position = None
        if job.state is JobState.QUEUED and hasattr(svc.store, "queue_position"):
            position = await self._store_call(svc.store.queue_position(job))
        body = job_json(
            job,
            refs,
            self.settings.server.base_url(),
            deliveries=deliveries,
            queue_position=position,
        )
        return job_answer(body)

    async def put_session(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        if len(session_id) > MAX_ID_LEN:
            raise RequestRejected("sessionId is too long", field="sessionId")
        data = await self.read_object(request)
        shapes.json_object(data, "session", self.settings.server.max_context_bytes)
        await self._store_call(self.svc.sessions.put(session_id, data))
        return JSONResponse({"ok": True, "sessionId": session_id})

    # --- lifecycle ---------------------------------------------------------------------

    async def list_jobs(self, request: Request) -> Response:
        q = request.query_params
        limit = _int_param(q.get("limit"), "limit", default=50, low=1, high=200)
        states = _states_param(q.get("status"))
        filters: dict[str, Any] = {
            "session_id": q.get("sessionId") or None,
            "model": q.get("model") or None,
            "since": _since_param(q.get("since")),
        }
        cursor = _cursor_param(q.get("cursor"))
        base = self.settings.server.base_url()
        store = self.svc.store
        if q.get("group", "").lower() in ("1", "true", "yes"):
            return JSONResponse({"ok": True, **await self._grouped(states, filters, cursor, limit)})
        jobs, next_cursor = await self._store_call(
            store.list_jobs(states=states, cursor=cursor, limit=limit, **filters)
        )
        items = [job_summary(j, base, await self._position(j)) for j in jobs]
        page: shapes.JobPage = {"ok": True, "jobs": items, "nextCursor": next_cursor}
        return json_answer(shapes.JOB_PAGE, page)

    async def _grouped(
        self, states: list[str] | None, filters: dict[str, Any], cursor: str | None, limit: int
    ) -> dict[str, Any]:
        """Processing and queued in full (up to ``limit``), history newest first with a cursor."""
        base = self.settings.server.base_url()
        store = self.svc.store
        groups: dict[str, Any] = {}
        for name, members in GROUPS.items():
            wanted = [s for s in members if states is None or s in states]
            if not wanted:
                groups[name] = []
                continue
            page_cursor = cursor if name == "history" else None
            jobs, next_cursor = await self._store_call(
                store.list_jobs(states=wanted, cursor=page_cursor, limit=limit, **filters)
            )
            if name == "queued":
                jobs.sort(key=lambda j: (j.created_at, j.id))
                first = await self._position(jobs[0]) if jobs else None
                groups[name] = [job_summary(j, base, (first or 1) + i) for i, j in enumerate(jobs)]
            else:
                if name == "processing":  # oldest first, like the queue; history newest first
                    jobs.sort(key=lambda j: (j.created_at, j.id))
                groups[name] = [job_summary(j, base) for j in jobs]
            if name == "history":
                groups["nextCursor"] = next_cursor
        counts = await self._store_call(store.count_by_state())
        groups["counts"] = {s.value: int(counts.get(s.value, 0)) for s in JobState}
        limit_slots = self.settings.polling.max_active_jobs
        groups["slots"] = {"max": limit_slots, "used": lifecycle.slot_counts(counts)}
        return groups

    async def cancel_job(self, request: Request) -> Response:
        return await self._act(request, lifecycle.cancel)

    async def retry_job(self, request: Request) -> Response:
        """A job we submitted is generated again as a new job; a poll-only job is re-queued."""
        job = await self.get_job(request.path_params["job_id"])
        key = generate.idempotency_hash(request.headers.get("idempotency-key"))
        new, action = await self._store_call(generate.retry(self.svc, job.id, key))
        if self.scheduler is not None:
            self.scheduler.poke()
        self.svc.changes.notify()
        refs = await video_refs(new, self.svc)
        body = job_json(
            new, refs, self.settings.server.base_url(), queue_position=await self._position(new)
        )
        return job_answer(body, action)

    async def extend_job(self, request: Request) -> Response:
        """A new job extending a finished video (KIE Veo extend), linked by parentJobId."""
        return await self._follow_up(request, followups.extend)

    async def upscale_job(self, request: Request) -> Response:
        """A new job fetching a finished video at 1080p or 4K, linked by parentJobId."""
        return await self._follow_up(request, followups.upscale)

    async def _follow_up(self, request: Request, make: Any) -> Response:
        job = await self.get_job(request.path_params["job_id"])
        key = generate.idempotency_hash(request.headers.get("idempotency-key"))
        data = await self.read_object(request)
        new = await self._store_call(make(self.svc, job.id, data, key))
        if self.scheduler is not None:
            self.scheduler.poke()
        self.svc.changes.notify()
        body = job_json(new, [], self.settings.server.base_url())
        return job_answer(body)

    async def _act(self, request: Request, action: lifecycle.Action) -> Response:
        job_id = request.path_params["job_id"]
        await self.get_job(job_id)
        job = await self._store_call(action(self.svc, job_id))
        if self.scheduler is not None:
            self.scheduler.poke()
        self.svc.changes.notify()
        refs = await video_refs(job, self.svc)
        body = job_json(
            job, refs, self.settings.server.base_url(), queue_position=await self._position(job)
        )
        return job_answer(body)

    async def delete_job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if len(job_id) > MAX_ID_LEN:
            raise NotFound("no such job")
        try:
            removed = await lifecycle.delete(self.svc, job_id)
        except RequestRejected:
            raise
        except Exception as exc:
            log.warning("delete_failed", job_id=job_id, error=str(exc)[:200])
            raise ServiceUnavailable(
                "the job could not be deleted completely; try again",
                headers={"Retry-After": "5"},
            ) from None
        self.svc.changes.notify()
        return JSONResponse({"ok": True, "jobId": job_id, "deleted": removed})


GROUPS: dict[str, list[str]] = {
    "processing": sorted(s.value for s in lifecycle.SLOT_STATES),
    "queued": [JobState.QUEUED.value],
    "history": [s.value for s in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)],
}


#: Cursors are store sequence numbers; nothing larger fits a 64-bit integer.
MAX_CURSOR = 2**63 - 1


def _cursor_param(value: str | None) -> str | None:
    if not value:
        return None
    try:
        number = inputs.client_int(value, "cursor", default=0, low=0, high=MAX_CURSOR)
    except RequestRejected:
        raise RequestRejected(
            "cursor is not one this service gave out", field="cursor", status_code=400
        ) from None
    return str(number)


def _states_param(value: str | None) -> list[str] | None:
    if not value:
        return None
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    known = {s.value for s in JobState}
    bad = [n for n in names if n not in known]
    if bad:
        raise RequestRejected(
            f"unknown status {bad[0]!r}; known: {', '.join(s.value for s in JobState)}",
            field="status",
        )
    return names or None


def _since_param(value: str | None) -> datetime | None:
    if not value:
        return None
    text = value.strip()
    try:
        if text.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(text), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise RequestRejected(
            "since must be an ISO 8601 time or Unix seconds", field="since"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
