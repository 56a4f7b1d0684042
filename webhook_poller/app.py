"""The HTTP edge: ``create_app(settings)`` builds the Starlette app and runs the scheduler in
its lifespan.

Every error answers the same JSON envelope ``{"ok": false, "error": {"code", "message",
"field"?}}``; a 500 reveals nothing and is logged. A job exists durably in the store before
intake answers 200.
"""

from __future__ import annotations

import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import structlog
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route

from . import downloads, lifecycle, live, net
from . import metrics as metrics_mod
from .config import Settings
from .errors import (
    NotFound,
    PayloadTooLarge,
    RequestRejected,
    ServiceUnavailable,
    Unauthorized,
    UnsafeURL,
)
from .model import Job, JobState, new_job_id, utcnow
from .openapi import openapi_document
from .scheduler import Scheduler
from .services import Services, build_services
from .views import job_json, job_summary, status_url, video_refs

log = structlog.get_logger(__name__)

MAX_ID_LEN = 256


def error_response(exc: RequestRejected) -> JSONResponse:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.field:
        error["field"] = exc.field
    error.update(exc.extra)
    return JSONResponse(
        {"ok": False, "error": error}, status_code=exc.status_code, headers=exc.headers
    )


async def _rejected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestRejected)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
    return error_response(
        RequestRejected(
            exc.detail or "request refused",
            status_code=exc.status_code,
            code=codes.get(exc.status_code, "bad_request"),
        )
    )


async def _crashed(request: Request, exc: Exception) -> Response:
    log.error("request_crashed", path=request.url.path, error_type=type(exc).__name__)
    return JSONResponse(
        {"ok": False, "error": {"code": "internal_error", "message": "internal error"}},
        status_code=500,
    )


class Api:
    """Route handlers; holds the services of the running app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: Services | None = None
        self.scheduler: Scheduler | None = None
        token = settings.server.auth_token
        self._token = token.get_secret_value().encode() if token is not None else None

    @property
    def svc(self) -> Services:
        if self.services is None:
            raise ServiceUnavailable("the service is starting", headers={"Retry-After": "1"})
        return self.services

    # --- helpers -----------------------------------------------------------------------

    def check_auth(self, request: Request) -> None:
        if self._token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), self._token
        ):
            raise Unauthorized(
                "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    async def read_body(self, request: Request) -> bytes:
        limit = self.settings.server.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        return bytes(body)

    async def read_object(self, request: Request) -> dict[str, Any]:
        body = await self.read_body(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded":
            try:
                pairs = parse_qsl(
                    body.decode("utf-8"), keep_blank_values=True, strict_parsing=False
                )
            except UnicodeDecodeError:
                raise RequestRejected("the form body is not UTF-8", status_code=400) from None
            return dict(pairs)
        if not body.strip():
            raise RequestRejected("the body is empty; send a JSON object", status_code=400)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise RequestRejected("the body is not valid JSON", status_code=400) from None
        if not isinstance(data, dict):
            raise RequestRejected("the body must be a JSON object", status_code=400)
        return data

    async def get_job(self, job_id: str) -> Job:
        if len(job_id) > MAX_ID_LEN:
            raise NotFound("no such job")
        job = await self._store_call(self.svc.store.get(job_id))
        if job is None:
            raise NotFound("no such job")
        return job

    @staticmethod
    async def _store_call(awaitable: Any) -> Any:
        try:
            return await awaitable
        except RequestRejected:
            raise
        except Exception as exc:
            log.warning("store_unreachable", error=str(exc)[:200])
            raise ServiceUnavailable(
                "the job store is unreachable; retry shortly", headers={"Retry-After": "5"}
            ) from None

    # --- intake ------------------------------------------------------------------------

    def validate_intake(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Check the intake body field by field; the first problem names its field."""
        return {
            "sessionId": _required_str(data, "sessionId", "session_id"),
            "taskId": _required_str(data, "taskId", "task_id"),
            "model": _required_str(data, "model"),
            "provider": self._provider(_pick(data, "provider")),
            "attempt": _attempt(_pick(data, "attempt")),
            "callbackUrl": self._callback(_pick(data, "callbackUrl", "callback_url")),
            "context": _json_object(
                _pick(data, "context"), "context", self.settings.server.max_context_bytes
            ),
        }

    def _provider(self, value: Any) -> str | None:
        """The optional adapter name; it must be one this service has built."""
        if value is None or value == "":
            return None
        known = sorted(self.svc.adapters)
        if not isinstance(value, str) or value.strip() not in self.svc.adapters:
            shown = value if isinstance(value, str) and value.isprintable() else "?"
            raise RequestRejected(
                f"unknown provider {shown[:80]!r}; known providers: {', '.join(known)}",
                field="provider",
                extra={"knownProviders": known},
            )
        return value.strip()

    def _callback(self, value: Any) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise RequestRejected("callbackUrl must be a string", field="callbackUrl")
        try:
            net.check_url(value, allow_private=self.settings.security.allow_private_urls)
        except UnsafeURL as exc:
            raise RequestRejected(str(exc), field="callbackUrl") from None
        return value

    async def intake(self, request: Request) -> Response:
        counter = self.svc.metrics.intake
        try:
            response, created = await self._intake(request)
        except RequestRejected as exc:
            counter.labels("unavailable" if exc.status_code == 503 else "rejected").inc()
            raise
        counter.labels("created" if created else "known").inc()
        return response

    async def _intake(self, request: Request) -> tuple[Response, bool]:
        self.check_auth(request)
        svc = self.svc
        data = self.validate_intake(await self.read_object(request))
        adapter = data["provider"] or svc.router.adapter_for(data["model"])
        if adapter is None:
            known = svc.router.known()
            raise RequestRejected(
                f"unknown model {data['model']!r}; known models: {', '.join(known)}",
                field="model",
                extra={"knownModels": known},
            )
        now = utcnow()
        delay = svc.gate_for(adapter).polling.first_poll_delay_s
        job = Job(
            id=new_job_id(adapter, data["taskId"]),
            session_id=data["sessionId"],
            task_id=data["taskId"],
            model=data["model"],
            provider=adapter,
            state=JobState.QUEUED,
            created_at=now,
            updated_at=now,
            due_at=now + timedelta(seconds=delay),
            start_attempt=data["attempt"],
            callback_url=data["callbackUrl"],
            context=data["context"],
        )
        stored, created = await self._store_call(svc.store.create(job))
        if created:
            # wake the loop only when the job falls due before its next look at the store
            if self.scheduler is not None and delay < self.settings.polling.tick_s:
                self.scheduler.poke()
            log.info(
                "job_accepted",
                job_id=stored.id,
                task_id=stored.task_id,
                session_id=stored.session_id,
                model=stored.model,
                provider=adapter,
            )
        body = {
            "ok": True,
            "jobId": stored.id,
            "status": stored.state.value,
            "message": "Polling started" if created else "Already polling this task",
            "alreadyKnown": not created,
            "statusUrl": status_url(stored, self.settings.server.base_url()),
        }
        return JSONResponse(body), created

    # --- jobs --------------------------------------------------------------------------

    async def job_status(self, request: Request) -> Response:
        self.check_auth(request)
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
        return JSONResponse({"ok": True, **body})

    async def video(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        index = request.path_params["index"]
        svc = self.svc
        assert svc.links is not None
        if not svc.links.verify(
            job_id, index, request.query_params.get("expires"), request.query_params.get("sig")
        ):
            self.check_auth(request)
        job = await self.get_job(job_id)
        video = next((v for v in job.videos if v.index == index), None)
        if video is None:
            raise NotFound("no such video for this job")
        filename = f"{job.id}-{index}.mp4"
        content_type = video.metadata.content_type or "video/mp4"
        local = getattr(svc.blobs, "local_path", None)
        if local is not None:
            path = local(video.key)
            if not path.is_file():
                raise NotFound("the video file is gone")
            return FileResponse(
                path, media_type=content_type, filename=filename, content_disposition_type="inline"
            )
        url = await svc.blobs.url_for(video.key, expires_s=300, filename=filename)
        if url is None:
            raise NotFound("the video cannot be served")
        return RedirectResponse(url, status_code=302)

    async def put_session(self, request: Request) -> Response:
        self.check_auth(request)
        session_id = request.path_params["session_id"]
        if len(session_id) > MAX_ID_LEN:
            raise RequestRejected("sessionId is too long", field="sessionId")
        data = await self.read_object(request)
        _json_object(data, "session", self.settings.server.max_context_bytes)
        await self._store_call(self.svc.sessions.put(session_id, data))
        return JSONResponse({"ok": True, "sessionId": session_id})

    # --- lifecycle ---------------------------------------------------------------------

    async def list_jobs(self, request: Request) -> Response:
        self.check_auth(request)
        q = request.query_params
        limit = _int_param(q.get("limit"), "limit", default=50, low=1, high=200)
        states = _states_param(q.get("status"))
        filters: dict[str, Any] = {
            "session_id": q.get("sessionId") or None,
            "model": q.get("model") or None,
            "since": _since_param(q.get("since")),
        }
        cursor = q.get("cursor") or None
        if cursor is not None and not cursor.isdigit():
            raise RequestRejected("cursor is not one this service gave out", field="cursor")
        base = self.settings.server.base_url()
        store = self.svc.store
        if q.get("group", "").lower() in ("1", "true", "yes"):
            return JSONResponse({"ok": True, **await self._grouped(states, filters, cursor, limit)})
        jobs, next_cursor = await self._store_call(
            store.list_jobs(states=states, cursor=cursor, limit=limit, **filters)
        )
        items = [job_summary(j, base, await self._position(j)) for j in jobs]
        return JSONResponse({"ok": True, "jobs": items, "nextCursor": next_cursor})

    async def _position(self, job: Job) -> int | None:
        if job.state is not JobState.QUEUED:
            return None
        position: int | None = await self._store_call(self.svc.store.queue_position(job))
        return position

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
        return await self._act(request, lifecycle.retry)

    async def _act(self, request: Request, action: lifecycle.Action) -> Response:
        self.check_auth(request)
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
        return JSONResponse({"ok": True, **body})

    async def delete_job(self, request: Request) -> Response:
        self.check_auth(request)
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

    # --- downloads ---------------------------------------------------------------------

    async def download_zip(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        svc = self.svc
        assert svc.links is not None
        q = request.query_params
        if q.get("sig"):
            if not svc.links.verify_path(
                request.url.path, q.get("expires"), q.get("sig"), q.get("once")
            ):
                raise Unauthorized("the download link is invalid or has expired")
            nonce = q.get("once")
            if nonce:
                until = datetime.fromtimestamp(int(q["expires"]), UTC)
                if not await self._store_call(svc.store.use_once(f"zip:{nonce}", until)):
                    raise RequestRejected(
                        "this single-use download link was used already",
                        status_code=410,
                        code="link_used",
                    )
        else:
            self.check_auth(request)
        job = await self.get_job(job_id)
        if not job.videos:
            raise NotFound("this job has no stored videos yet")
        return StreamingResponse(
            downloads.zip_stream(svc, job),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{job.id}.zip"'},
        )

    async def make_links(self, request: Request) -> Response:
        """Expiring (optionally single-use) links to a job's ZIP and videos."""
        self.check_auth(request)
        job = await self.get_job(request.path_params["job_id"])
        data = await self.read_object(request) if await request.body() else {}
        expires_s = _int_param(
            data.get("expiresIn"),
            "expiresIn",
            default=3600,
            low=60,
            high=self.settings.storage.link_expiry_s,
        )
        single_use = data.get("singleUse", False)
        if not isinstance(single_use, bool):
            raise RequestRejected("singleUse must be true or false", field="singleUse")
        svc = self.svc
        assert svc.links is not None
        path = f"/jobs/{quote(job.id)}/download.zip"
        return JSONResponse(
            {
                "ok": True,
                "jobId": job.id,
                "zipUrl": svc.links.path_url(path, expires_s, single_use=single_use),
                "videoUrls": [svc.links.video_url(job.id, v.index, expires_s) for v in job.videos],
                "expiresIn": expires_s,
                "singleUse": single_use,
            }
        )

    # --- live --------------------------------------------------------------------------

    async def job_events(self, request: Request) -> Response:
        self.check_auth(request)
        job = await self.get_job(request.path_params["job_id"])
        svc = self.svc
        base = self.settings.server.base_url()

        async def snapshot() -> dict[str, dict[str, Any]]:
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
        self.check_auth(request)
        svc = self.svc
        base = self.settings.server.base_url()

        async def snapshot() -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for name, members in GROUPS.items():
                jobs, _ = await svc.store.list_jobs(states=members, limit=LIVE_WINDOW)
                if name == "queued":
                    jobs.sort(key=lambda j: (j.created_at, j.id))
                    first = await self._position(jobs[0]) if jobs else None
                    for i, j in enumerate(jobs):
                        out[j.id] = job_summary(j, base, (first or 1) + i)
                else:
                    out.update((j.id, job_summary(j, base)) for j in jobs)
            return out

        return self._event_stream(request, snapshot)

    # --- operations --------------------------------------------------------------------

    async def metrics(self, request: Request) -> Response:
        self.check_auth(request)
        svc = self.svc
        counts = await self._store_call(svc.store.count_by_state())
        inflight = len(self.scheduler.inflight) if self.scheduler is not None else 0
        svc.metrics.set_counts(counts, inflight)
        return Response(svc.metrics.render(), media_type=metrics_mod.CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document(self.settings))

    async def dashboard(self, request: Request) -> Response:
        return FileResponse(
            STATIC / "dashboard.html",
            media_type="text/html; charset=utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    # --- health ------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def readyz(self, request: Request) -> Response:
        checks: dict[str, bool] = {"store": False, "storage": False, "scheduler": False}
        if self.services is not None:
            with contextlib.suppress(Exception):
                checks["store"] = await self.services.store.ping()
            with contextlib.suppress(Exception):
                checks["storage"] = await self.services.blobs.ping()
            checks["scheduler"] = self.scheduler is not None and self.scheduler.healthy
        ready = all(checks.values())
        return JSONResponse(
            {"ok": ready, "checks": checks},
            status_code=200 if ready else 503,
            headers=None if ready else {"Retry-After": "5"},
        )


GROUPS: dict[str, list[str]] = {
    "processing": sorted(s.value for s in lifecycle.SLOT_STATES),
    "queued": [JobState.QUEUED.value],
    "history": [s.value for s in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)],
}
#: Jobs per group a live stream of all jobs watches.
LIVE_WINDOW = 200
STATIC = Path(__file__).parent / "static"


def _int_param(value: Any, field: str, *, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestRejected(f"{field} must be a whole number from {low} to {high}", field=field)
    return value


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


def _pick(data: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if data.get(name) is not None:
            return data[name]
    return None


def _required_str(data: Mapping[str, Any], field: str, *aliases: str) -> str:
    value = _pick(data, field, *aliases)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RequestRejected(f"{field} is required", field=field)
    if not isinstance(value, str):
        raise RequestRejected(f"{field} must be a string", field=field)
    value = value.strip()
    if len(value) > MAX_ID_LEN or not value.isprintable():
        raise RequestRejected(
            f"{field} must be printable and at most {MAX_ID_LEN} characters", field=field
        )
    return value


def _attempt(value: Any) -> int:
    if value is None or value == "":
        return 1
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10000:
        raise RequestRejected("attempt must be a whole number from 1 to 10000", field="attempt")
    return value


def _json_object(value: Any, field: str, max_bytes: int) -> dict[str, Any] | None:
    """An optional JSON object (or a form field holding one), at most ``max_bytes``."""
    if isinstance(value, str) and value.strip():
        try:
            value = json.loads(value)
        except ValueError:
            raise RequestRejected(f"{field} must be a JSON object", field=field) from None
    if value is None or value == "":
        return None
    if not isinstance(value, dict):
        raise RequestRejected(f"{field} must be a JSON object", field=field)
    size = len(json.dumps(value).encode())
    if size > max_bytes:
        raise RequestRejected(
            f"{field} is {size} bytes; at most {max_bytes} are allowed", field=field
        )
    return value


def create_app(
    settings: Settings,
    *,
    services_factory: Callable[[Settings], Services] = build_services,
    run_scheduler: bool = True,
) -> Starlette:
    """Build the app; the lifespan opens the plug-ins and runs the scheduler."""
    api = Api(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = services_factory(settings)
        await services.open()
        api.services = services
        app.state.services = services
        scheduler = Scheduler(services)
        api.scheduler = scheduler
        app.state.scheduler = scheduler
        if run_scheduler:
            scheduler.start()
        log.info(
            "service_started", instance=services.instance_id, base_url=settings.server.base_url()
        )
        try:
            yield
        finally:
            if run_scheduler:
                await scheduler.stop()
            await services.close()
            log.info("service_stopped")

    routes: list[Route | Mount] = [
        Route("/poll-video", api.intake, methods=["POST"]),
        Route("/webhook/poll-video", api.intake, methods=["POST"]),
        Route("/", api.dashboard, methods=["GET"]),
        Route("/jobs", api.list_jobs, methods=["GET"]),
        Route("/events", api.all_events, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        Route("/jobs/{job_id}", api.job_status, methods=["GET"]),
        Route("/jobs/{job_id}", api.delete_job, methods=["DELETE"]),
        Route("/jobs/{job_id}/cancel", api.cancel_job, methods=["POST"]),
        Route("/jobs/{job_id}/retry", api.retry_job, methods=["POST"]),
        Route("/jobs/{job_id}/download.zip", api.download_zip, methods=["GET"]),
        Route("/jobs/{job_id}/links", api.make_links, methods=["POST"]),
        Route("/jobs/{job_id}/events", api.job_events, methods=["GET"]),
        Route("/jobs/{job_id}/videos/{index:int}", api.video, methods=["GET", "HEAD"]),
        Route("/sessions/{session_id}", api.put_session, methods=["PUT"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
    ]
    routes.extend(_provider_routes(settings))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            RequestRejected: _rejected,
            HTTPException: _http_error,
            Exception: _crashed,
        },
    )
    app.state.api = api
    return app


def _provider_routes(settings: Settings) -> list[Mount]:
    """Adapters may serve routes of their own (the demo video; later, push callbacks)."""
    from . import plugins

    mounts = []
    for name in dict.fromkeys(settings.models.values()):
        cls = plugins.load("adapter", name)
        routes = getattr(cls, "routes", None)
        if callable(routes):
            mounts.append(Mount(f"/providers/{name}", routes=routes()))
    return mounts
