"""Intake routes: jobs come in (``/poll-video``, ``/generate``), and so do the pushes that
move them on (provider callbacks, Telegram button presses).

The two push endpoints are public: they carry no bearer token but prove themselves with
a signature their handler checks (the provider's scheme, Telegram's secret token).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import buttons, generate, lifecycle, net, push, shapes
from ..errors import Conflict, NotFound, RequestRejected, Unauthorized, UnsafeURL
from ..model import Job, JobState, build_job, new_job_id, utcnow
from ..views import json_answer, status_url
from . import Auth, Endpoint
from .base import ApiBase

log = structlog.get_logger(__name__)


def endpoints(api: IntakeRoutes) -> list[Endpoint]:
    """Token routes read at most ``server.max_body_bytes``; a push at most 1 MiB."""
    return [
        Endpoint("/poll-video", api.intake, ("POST",)),
        Endpoint("/webhook/poll-video", api.intake, ("POST",)),
        Endpoint("/generate", api.generate, ("POST",)),
        Endpoint("/telegram/webhook", api.telegram_webhook, ("POST",), auth=Auth.PUBLIC),
        Endpoint(
            "/callbacks/{provider}",
            api.provider_push,
            ("POST",),
            auth=Auth.PUBLIC,
            body_limit=push.MAX_PUSH_BYTES,
        ),
    ]


class IntakeRoutes(ApiBase):
    """Handlers of the intake group."""

    # --- intake ------------------------------------------------------------------------

    _intake_rules: shapes.IntakeRules | None = None

    def validate_intake(self, data: Mapping[str, Any]) -> shapes.Intake:
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

    def _require_credentials(self, model: str, provider: str) -> None:
        """Refuse a model whose provider has no API key configured, naming the key."""
        missing = self.svc.missing_credentials(provider)
        if missing:
            raise RequestRejected(
                f"model {model!r} goes to provider {provider!r}, which has no API key; "
                f"set {missing}",
                field="model",
                code="provider_not_configured",
                extra={"missingKey": missing},
            )

    async def intake(self, request: Request) -> Response:
        try:
            response, created = await self._intake(request)
        except RequestRejected as exc:
            self._count_intake("unavailable" if exc.status_code == 503 else "rejected")
            raise
        self._count_intake("created" if created else "known")
        return response

    _intake_counts: tuple[object, dict[str, Any]] | None = None

    def _count_intake(self, result: str) -> None:
        """``webhook_poller_intake_total{result}`` + 1, through a cached child per result:
        ``Counter.labels`` takes a lock and builds a key on every call (about 1 us)."""
        counter = self.svc.metrics.intake
        if self._intake_counts is None or self._intake_counts[0] is not counter:
            self._intake_counts = (counter, {})
        children = self._intake_counts[1]
        child = children.get(result)
        if child is None:
            child = children[result] = counter.labels(result)
        child.inc()

    async def _intake(self, request: Request) -> tuple[Response, bool]:
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
        self._require_credentials(data.model, adapter)
        now = utcnow()
        delay = svc.gate_for(adapter).first_poll_delay_s
        job = build_job(
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
        callback: shapes.CallbackOutcome | None = (
            "registered" if data.callbackUrl and created else None
        )
        if not created:
            stored, callback = await self._known_task(stored, data)
        if created:
            # wake the loop only when the job falls due before its next look at the store
            if self.scheduler is not None:
                self.scheduler.poke_for(delay)
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

    async def _known_task(
        self, job: Job, data: shapes.Intake
    ) -> tuple[Job, shapes.CallbackOutcome | None]:
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
        body = await self.read_body(request)
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
        self._require_credentials(model, provider)
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


def _known_message(job: Job, callback: shapes.CallbackOutcome | None) -> str:
    if callback == lifecycle.CALLBACK_SENT:
        return "This task has ended already; its final event goes to the new callbackUrl now"
    if callback == lifecycle.CALLBACK_NO_EVENT:
        return "This task's job was cancelled; the new callbackUrl is kept in case of a retry"
    if job.is_terminal:
        return f"This task was handled already; its job is {job.state.value}"
    if callback == lifecycle.CALLBACK_ADDED:
        return "Already polling this task; the new callbackUrl will get the outcome too"
    return "Already polling this task"
