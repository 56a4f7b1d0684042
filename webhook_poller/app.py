"""The HTTP edge: ``create_app(settings)`` builds the Starlette app and runs the scheduler in
its lifespan.

Every error answers the same JSON envelope ``{"ok": false, "error": {"code", "message",
"field"?}}``; a 500 reveals nothing and is logged. A job exists durably in the store before
intake answers 200.
"""

from __future__ import annotations

import contextlib
import hmac
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote

import structlog
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Match, Mount, Route

from . import (
    buttons,
    downloads,
    followups,
    generate,
    guard,
    inputs,
    lifecycle,
    live,
    net,
    push,
    shapes,
)
from . import metrics as metrics_mod
from .config import Settings
from .errors import (
    Conflict,
    NotFound,
    PayloadTooLarge,
    RequestRejected,
    ServiceUnavailable,
    Unauthorized,
    UnsafeURL,
)
from .logging import configured_secrets, register_secrets
from .model import Job, JobState, new_job_id, utcnow
from .openapi import openapi_document
from .scheduler import Scheduler
from .services import Services, adapter_class, build_services
from .views import job_answer, job_json, job_summary, json_answer, status_url, video_refs

log = structlog.get_logger(__name__)
T = TypeVar("T")

MAX_ID_LEN = shapes.MAX_ID_LEN


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
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(
        RequestRejected(
            exc.detail or "request refused",
            status_code=exc.status_code,
            code=codes.get(exc.status_code, "bad_request"),
            headers=headers or None,
        )
    )


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path: Starlette names only the first route's."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


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
        self._live_all: live.SharedSnapshot | None = None
        self._live_all_for: Services | None = None
        self._intake_rules: shapes.IntakeRules | None = None

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

    async def read_body(self, request: Request, limit: int | None = None) -> bytes:
        limit = limit or self.settings.server.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and (not declared.isascii() or not declared.isdigit() or len(declared) > 18):
            raise RequestRejected("the Content-Length header is not a number", status_code=400)
        if declared and int(declared) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        return bytes(body)

    async def read_object(self, request: Request) -> dict[str, Any]:
        """The body as a mapping: JSON whatever the content type says when it is JSON, else
        a URL-encoded or multipart form (string fields only)."""
        body = await self.read_body(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            return await _multipart_fields(request.headers, body)
        if ctype == "application/x-www-form-urlencoded" and body.lstrip()[:1] not in (b"{", b"["):
            try:
                pairs = parse_qsl(
                    body.decode("utf-8"), keep_blank_values=True, strict_parsing=False
                )
            except UnicodeDecodeError:
                raise RequestRejected("the form body is not UTF-8", status_code=400) from None
            return dict(pairs)
        if not body.strip():
            raise RequestRejected("the body is empty; send a JSON object", status_code=400)
        data = inputs.load_json(body)
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
    async def _store_call(awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except RequestRejected:
            raise
        except Exception as exc:
            log.warning("store_unreachable", error=str(exc)[:200])
            raise ServiceUnavailable(
                "the job store is unreachable; retry shortly", headers={"Retry-After": "5"}
            ) from None

    async def _use_once(self, key: str, expires: str) -> None:
        """Record the first use of a single-use link; refuse every later one (410)."""
        until = datetime.fromtimestamp(int(expires), UTC)
        if not await self._store_call(self.svc.store.use_once(key, until)):
            raise RequestRejected(
                "this single-use download link was used already",
                status_code=410,
                code="link_used",
            )

    # --- intake ------------------------------------------------------------------------

    def validate_intake(self, data: Mapping[str, Any]) -> shapes.IntakeRequest:
        """Check the intake body field by field; the first problem names its field."""
        if self._intake_rules is None:
            self._intake_rules = shapes.IntakeRules(
                self._provider, self._callback, self.settings.server.max_context_bytes
            )
        return shapes.parse_intake(data, self._intake_rules)

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
            security = self.settings.security
            net.check_url(
                value, allow_private=security.allow_private_urls, allowed=security.allowlist()
            )
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
        adapter = data.provider or svc.router.adapter_for(data.model)
        if adapter is None:
            known = svc.router.known()
            raise RequestRejected(
                f"unknown model {data.model!r}; known models: {', '.join(known)}",
                field="model",
                extra={"knownModels": known},
            )
        missing = svc.missing_credentials(adapter)
        if missing:
            raise RequestRejected(
                f"model {data.model!r} goes to provider {adapter!r}, which has no API key; "
                f"set {missing}",
                field="model",
                code="provider_not_configured",
                extra={"missingKey": missing},
            )
        now = utcnow()
        delay = svc.gate_for(adapter).first_poll_delay_s
        job = Job(
            id=new_job_id(adapter, data.taskId),
            session_id=data.sessionId,
            task_id=data.taskId,
            model=data.model,
            provider=adapter,
            state=JobState.QUEUED,
            created_at=now,
            updated_at=now,
            due_at=now + timedelta(seconds=delay),
            start_attempt=data.attempt,
            callback_url=data.callbackUrl,
            context=data.context,
            expect_push=data.expectPush,
        )
        stored, created = await self._store_call(svc.store.create(job))
        callback = "registered" if data.callbackUrl and created else None
        if not created:
            stored, callback = await self._known_task(stored, data)
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
        body: shapes.IntakeResponse = {
            "ok": True,
            "jobId": stored.id,
            "status": stored.state.value,
            "message": "Polling started" if created else _known_message(stored, callback),
            "alreadyKnown": not created,
            "statusUrl": status_url(stored, self.settings.server.base_url()),
        }
        if callback is not None:
            body["callback"] = callback
        return json_answer(shapes.INTAKE_RESPONSE, body), created

    async def _known_task(self, job: Job, data: shapes.IntakeRequest) -> tuple[Job, str | None]:
        """A re-post of a known task: refuse another session, give a new callbackUrl the
        outcome (see :func:`lifecycle.add_callback`)."""
        if job.session_id != data.sessionId:
            raise Conflict(
                f"this task is already being polled for session {job.session_id!r}",
                field="sessionId",
                extra={"jobId": job.id, "sessionId": job.session_id},
            )
        url = data.callbackUrl
        if not url:
            return job, None
        job, case = await self._store_call(lifecycle.add_callback(self.svc, job.id, url))
        if case == lifecycle.CALLBACK_SENT:
            if self.scheduler is not None:
                self.scheduler.poke()
            self.svc.changes.notify()
        return job, case

    # --- provider push -----------------------------------------------------------------

    async def provider_push(self, request: Request) -> Response:
        """``POST /callbacks/{provider}``: public (providers sign, we do not hand out tokens);
        the answer is the same for every accepted push and carries no job data."""
        provider = request.path_params["provider"]
        if len(provider) > 64 or not provider.isprintable():
            raise NotFound("no such provider")
        body = await self.read_body(request, limit=push.MAX_PUSH_BYTES)
        headers = {k.lower(): v for k, v in request.headers.items()}
        challenge = push.challenge_answer(body)
        if challenge is not None and push.receivers_for(self.svc, provider):
            return JSONResponse(challenge)
        try:
            moved = await push.receive(self.svc, provider, headers, body)
        except RequestRejected:
            raise
        except Exception as exc:  # the store is down: polling is the safety net
            log.warning("push_dropped", provider=provider, error=str(exc)[:200])
            return JSONResponse({"ok": True})
        if moved and self.scheduler is not None:
            self.scheduler.poke()
        return JSONResponse({"ok": True})

    # --- generate ----------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        """Check a generation request, store its job durably, answer; the scheduler submits."""
        self.check_auth(request)
        svc = self.svc
        key = generate.idempotency_hash(request.headers.get("idempotency-key"))
        data = await self.read_object(request)
        session_id = shapes.required_str(data, "sessionId")
        model = shapes.required_str(data, "model")
        provider = self._provider(shapes.pick(data, "provider")) or svc.router.adapter_for(model)
        if provider is None:
            models = generate.generatable_models(svc)
            raise RequestRejected(
                f"unknown model {model!r}; models that can be generated: {', '.join(models)}",
                field="model",
                extra={"allowed": models},
            )
        adapter, caps = generate.submitting_adapter(svc, provider, model)
        checked = generate.check_request(data, adapter, caps, model)
        missing = svc.missing_credentials(provider)
        if missing:
            raise RequestRejected(
                f"model {model!r} goes to provider {provider!r}, which has no API key; "
                f"set {missing}",
                field="model",
                code="provider_not_configured",
                extra={"missingKey": missing},
            )
        callback = self._callback(shapes.pick(data, "callbackUrl"))
        context = shapes.json_object(
            shapes.pick(data, "context"), "context", self.settings.server.max_context_bytes
        )
        job = generate.new_job(
            session_id=session_id,
            model=model,
            provider=provider,
            request=checked,
            callback_url=callback,
            context=context,
            idempotency_key=key,
            now=utcnow(),
        )
        stored, created = await self._store_call(svc.store.create(job))
        if not created:
            generate.check_replay(stored, job)
        elif self.scheduler is not None:
            self.scheduler.poke()
            svc.changes.notify()
        if created:
            log.info(
                "job_accepted",
                job_id=stored.id,
                session_id=stored.session_id,
                model=model,
                provider=provider,
                count=checked["count"],
            )
        return JSONResponse(
            {
                "ok": True,
                "jobId": stored.id,
                "status": stored.state.value,
                "statusUrl": status_url(stored, self.settings.server.base_url()),
                "alreadyKnown": not created,
            }
        )

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
        return job_answer(body)

    async def video(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            index = inputs.client_int(
                request.path_params["index"], "index", default=-1, low=0, high=10_000
            )
        except RequestRejected:
            raise NotFound("no such video for this job") from None
        svc = self.svc
        assert svc.links is not None
        q = request.query_params
        nonce = q.get("once")
        if svc.links.verify(job_id, index, q.get("expires"), q.get("sig"), nonce=nonce):
            if nonce and request.method != "HEAD":
                await self._use_once(f"video:{nonce}", str(q.get("expires")))
        else:
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
        shapes.json_object(data, "session", self.settings.server.max_context_bytes)
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
        """A job we submitted is generated again as a new job; a poll-only job is re-queued."""
        self.check_auth(request)
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
        self.check_auth(request)
        job = await self.get_job(request.path_params["job_id"])
        key = generate.idempotency_hash(request.headers.get("idempotency-key"))
        data = await self.read_object(request)
        new = await self._store_call(make(self.svc, job.id, data, key))
        if self.scheduler is not None:
            self.scheduler.poke()
        self.svc.changes.notify()
        body = job_json(new, [], self.settings.server.base_url())
        return job_answer(body)

    async def telegram_webhook(self, request: Request) -> Response:
        """Button presses from Telegram, verified by X-Telegram-Bot-Api-Secret-Token."""
        token = request.headers.get("x-telegram-bot-api-secret-token", "")
        notifier = buttons.webhook_notifier(self.svc, token) if token else None
        if notifier is None:
            raise Unauthorized("missing or wrong X-Telegram-Bot-Api-Secret-Token")
        update = await self.read_object(request)
        poke = self.scheduler.poke if self.scheduler is not None else (lambda: None)
        done = await self._store_call(buttons.handle_update(self.svc, notifier, update, poke))
        return JSONResponse({"ok": True, "result": done})

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
        return job_answer(body)

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
                await self._use_once(f"zip:{nonce}", q["expires"])
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
        # the body is optional here; when there is one it is read with the limit, never whole
        data = await self.read_object(request) if _has_body(request) else {}
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
                "videoUrls": [
                    svc.links.video_url(job.id, v.index, expires_s, single_use=single_use)
                    for v in job.videos
                ],
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
        self.check_auth(request)
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
        page = STATIC / "dashboard.html"
        return FileResponse(
            page,
            media_type="text/html; charset=utf-8",
            headers={"Cache-Control": "no-cache", **guard.page_headers(page)},
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
    return inputs.client_int(value, field, default=default, low=low, high=high)


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


def _known_message(job: Job, callback: str | None) -> str:
    if callback == lifecycle.CALLBACK_SENT:
        return "This task has ended already; its final event goes to the new callbackUrl now"
    if callback == lifecycle.CALLBACK_NO_EVENT:
        return "This task's job was cancelled; the new callbackUrl is kept in case of a retry"
    if job.is_terminal:
        return f"This task was handled already; its job is {job.state.value}"
    if callback == lifecycle.CALLBACK_ADDED:
        return "Already polling this task; the new callbackUrl will get the outcome too"
    return "Already polling this task"


async def _multipart_fields(headers: Headers, body: bytes) -> dict[str, Any]:
    """The text fields of a ``multipart/form-data`` body; file parts are refused."""

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(headers, stream(), max_files=0).parse()
    except (MultiPartException, ValueError, KeyError) as exc:
        message = getattr(exc, "message", None) or "the multipart form could not be read"
        raise RequestRejected(message, status_code=400) from None
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str):
            raise RequestRejected("file parts are not accepted", status_code=400)
        fields[key] = value
    return fields


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in request.headers


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


def create_app(
    settings: Settings,
    *,
    services_factory: Callable[[Settings], Services] = build_services,
    run_scheduler: bool = True,
) -> Starlette:
    """Build the app; the lifespan opens the plug-ins and runs the scheduler."""
    api = Api(settings)
    register_secrets(configured_secrets(settings.model_dump()))

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
        if not settings.server.is_loopback() and not settings.server.public_url:
            log.warning(
                "public_url_missing",
                host=settings.server.host,
                base_url=settings.server.base_url(),
                hint="links and statusUrl point at this base URL; set server.public_url to "
                "the address callers reach the service at",
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
        Route("/generate", api.generate, methods=["POST"]),
        Route("/", api.dashboard, methods=["GET"]),
        Route("/jobs", api.list_jobs, methods=["GET"]),
        Route("/events", api.all_events, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        Route("/jobs/{job_id}", api.job_status, methods=["GET"]),
        Route("/jobs/{job_id}", api.delete_job, methods=["DELETE"]),
        Route("/jobs/{job_id}/cancel", api.cancel_job, methods=["POST"]),
        Route("/jobs/{job_id}/retry", api.retry_job, methods=["POST"]),
        Route("/jobs/{job_id}/extend", api.extend_job, methods=["POST"]),
        Route("/jobs/{job_id}/upscale", api.upscale_job, methods=["POST"]),
        Route("/telegram/webhook", api.telegram_webhook, methods=["POST"]),
        Route("/jobs/{job_id}/download.zip", api.download_zip, methods=["GET"]),
        Route("/jobs/{job_id}/links", api.make_links, methods=["POST"]),
        Route("/jobs/{job_id}/events", api.job_events, methods=["GET"]),
        Route("/jobs/{job_id}/videos/{index}", api.video, methods=["GET", "HEAD"]),
        Route("/sessions/{session_id}", api.put_session, methods=["PUT"]),
        Route("/callbacks/{provider}", api.provider_push, methods=["POST"]),
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
    app.add_middleware(guard.RequestGuard, server=settings.server)
    app.state.api = api
    return app


def _provider_routes(settings: Settings) -> list[Mount]:
    """Adapters may serve routes of their own (the demo video; later, push callbacks)."""
    mounts = []
    for name in dict.fromkeys(settings.models.values()):
        cls, _ = adapter_class(settings, name)
        routes = getattr(cls, "routes", None)
        if callable(routes):
            mounts.append(Mount(f"/providers/{name}", routes=routes()))
    return mounts
