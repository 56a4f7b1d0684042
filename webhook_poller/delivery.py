"""Notifications: plan one delivery per (event, target), send it, record it at once.

Deliveries are an outbox: the rows are written in the same store write as the job's state
change, so an event is never lost, and each row is marked ``sent`` the moment its target
accepts it, so a restart does not repeat it. Webhook targets also get a stable
``webhook-id`` for receivers to drop repeats; for chat apps a repeat can only come from a
crash between the target's "ok" and our write.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import httpx
import structlog

from .clock import Clock
from .errors import BlobError, NotifyRejected, NotifyTransient, StoreUnavailable
from .interfaces import Notification, Notifier, VideoRef
from .logging import scrub
from .model import (
    Delivery,
    DeliveryStatus,
    Event,
    Job,
    JobState,
    event_matches,
    webhook_id_for,
)
from .policy import retry_delay_s
from .views import event_payload, video_refs

if TYPE_CHECKING:
    import random

    from .services import Services

log = structlog.get_logger(__name__)

CALLBACK_TARGET = "callback"


def callback_target(url: str) -> str:
    """The delivery target name of a callback URL posted after the first one.

    A digest, so ``GET /jobs/{id}`` does not show the URL and each URL is its own target.
    """
    return f"{CALLBACK_TARGET}:{hashlib.sha256(url.encode()).hexdigest()[:16]}"


def callback_targets(job: Job) -> dict[str, str]:
    """Every callback URL of ``job`` by its delivery target name, the first one first."""
    targets = {CALLBACK_TARGET: job.callback_url} if job.callback_url else {}
    for url in job.extra_callback_urls:
        targets.setdefault(callback_target(url), url)
    return targets


def _error_text(exc: BaseException) -> str:
    text = scrub(str(exc)) or exc.__class__.__name__
    return text[:300]


class Dispatcher:
    """Plans and sends deliveries; the scheduler calls it, retries go through the store.

    Arguments: ``services``, ``rng`` (retry jitter) and ``clock`` (when an attempt is made,
    how old a delivery is; ``services.clock`` when not given).
    """

    def __init__(
        self, services: Services, rng: random.Random, *, clock: Clock | None = None
    ) -> None:
        self.services = services
        self.rng = rng
        self.clock = clock or services.clock
        self.wake = asyncio.Event()

    def targets_for(self, job: Job, event: Event) -> list[str]:
        names = [n.name for n in self.services.notifiers if self._subscribed(n, event, job)]
        names.extend(callback_targets(job))
        return names

    @staticmethod
    def _subscribed(notifier: Notifier, event: Event, job: Job) -> bool:
        return any(event_matches(e, event, job) for e in notifier.events)

    async def plan(self, job: Job, events: Sequence[Event], now: datetime) -> list[Delivery]:
        """The outbox rows for ``events`` of ``job``, with their payload frozen now."""
        if not events:
            return []
        base = self.services.settings.server.base_url()
        refs = await video_refs(job, self.services)
        rows = []
        for event in events:
            payload = event_payload(job, event, refs, base)
            for target in self.targets_for(job, event):
                rows.append(
                    Delivery(
                        job_id=job.id,
                        run=job.run,
                        event=event,
                        target=target,
                        webhook_id=webhook_id_for(job.id, job.run, event, target),
                        payload=payload,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
        return rows

    def _notifier(self, job: Job, target: str) -> Notifier | None:
        if target == CALLBACK_TARGET or target.startswith(CALLBACK_TARGET + ":"):
            url = callback_targets(job).get(target)
            return self.services.callback_notifier(url) if url else None
        return next((n for n in self.services.notifiers if n.name == target), None)

    async def attempt(self, delivery: Delivery) -> Delivery:
        """Send one delivery once and record the result before returning it."""
        job = await self.services.store.get(delivery.job_id)
        return (await self.attempt_for_job(delivery, job))[0]

    async def attempt_for_job(
        self, delivery: Delivery, job: Job | None
    ) -> tuple[Delivery, Job | None]:
        """:meth:`attempt` with the delivery's job already read (``None``: it is gone), as a
        store that claims deliveries with their jobs hands it over; also returns that job
        (``None`` when it is gone or was retried), so the caller can move it on without
        reading it again."""
        services = self.services
        now = self.clock.now()
        if job is None or job.run != delivery.run:
            done = dataclasses.replace(
                delivery,
                status=DeliveryStatus.FAILED,
                last_error="job deleted or retried",
                next_attempt_at=None,
            )
            await services.store.update_delivery(done, owner=services.instance_id)
            return done, None
        notifier = self._notifier(job, delivery.target)
        attempt_no = delivery.attempts + 1
        structlog.contextvars.bind_contextvars(
            job_id=job.id, task_id=job.task_id, session_id=job.session_id
        )
        if notifier is None:
            result = dataclasses.replace(
                delivery,
                status=DeliveryStatus.FAILED,
                attempts=attempt_no,
                last_error=f"notifier {delivery.target!r} is no longer configured",
                next_attempt_at=None,
            )
        else:
            result = await self._send(notifier, job, delivery, attempt_no, now)
        await self._record(result)
        self.services.metrics.deliveries.labels(
            delivery.target, delivery.event.value, result.status.value
        ).inc()
        self.services.changes.notify()
        log.info(
            "delivery_" + result.status.value,
            target=delivery.target,
            notify_event=delivery.event.value,
            attempts=result.attempts,
            webhook_id=delivery.webhook_id,
            error=result.last_error,
        )
        if result.status is not DeliveryStatus.PENDING:
            await self._maybe_forget_session(job)
        return result, job

    async def _record(self, result: Delivery) -> None:
        """Write the outcome at once; if the store is briefly down, keep trying for a while,
        because a sent message that is not recorded would be sent again."""
        for attempt in range(12):
            try:
                await self.services.store.update_delivery(result, owner=self.services.instance_id)
                return
            except StoreUnavailable:
                if attempt == 11:
                    raise
                await asyncio.sleep(min(0.25 * 2**attempt, 5.0))

    async def _send(
        self, notifier: Notifier, job: Job, delivery: Delivery, attempt_no: int, now: datetime
    ) -> Delivery:
        session = None
        try:
            session = await self.services.sessions.get(job.session_id)
        except Exception as exc:
            log.warning("session_restore_failed", error=_error_text(exc))
        else:
            log.info(
                "session_restored",
                found=session is not None,
                session_keys=sorted(session) if session else [],
            )
        urls = list(delivery.payload.get("videoUrls") or [])
        refs = [
            VideoRef(v.index, urls[i] if i < len(urls) else "", v.key, v.metadata)
            for i, v in enumerate(job.videos)
        ]
        note = Notification(
            event=delivery.event,
            job=job,
            delivery=delivery,
            payload=delivery.payload,
            videos=refs,
            session=session,
            attempt=attempt_no,
        )
        try:
            await notifier.send(note)
        except NotifyRejected as exc:
            return dataclasses.replace(
                delivery,
                status=DeliveryStatus.FAILED,
                attempts=attempt_no,
                last_error=_error_text(exc),
                next_attempt_at=None,
            )
        except NotifyTransient as exc:
            # the target's pause (Retry-After) counts from its answer, not from when we began
            return self._later(delivery, attempt_no, self.clock.now(), _error_text(exc), exc)
        except (OSError, TimeoutError, httpx.TransportError, StoreUnavailable) as exc:
            # transport trouble a plug-in did not classify: try again later
            log.warning("notifier_unreachable", target=delivery.target, error=_error_text(exc))
            return self._later(delivery, attempt_no, now, _error_text(exc), None)
        except BlobError as exc:
            if not exc.transient:
                return self._final(
                    delivery, attempt_no, f"the video cannot be read: {_error_text(exc)}"
                )
            return self._later(delivery, attempt_no, now, _error_text(exc), None)
        except Exception as exc:
            # A broken plug-in must not kill the loop. An error that is neither "try later"
            # nor "give up" is a bug or a target that can never work: retrying it for
            # callbacks.max_age_s only repeats the traceback, so it is final, logged once.
            log.exception("notifier_crashed", target=delivery.target)
            return self._final(delivery, attempt_no, f"the notifier failed: {_error_text(exc)}")
        return dataclasses.replace(
            delivery,
            status=DeliveryStatus.SENT,
            attempts=attempt_no,
            sent_at=self.clock.now(),
            last_error=None,
            next_attempt_at=None,
        )

    @staticmethod
    def _final(delivery: Delivery, attempt_no: int, error: str) -> Delivery:
        return dataclasses.replace(
            delivery,
            status=DeliveryStatus.FAILED,
            attempts=attempt_no,
            last_error=error[:300],
            next_attempt_at=None,
        )

    def _later(
        self,
        delivery: Delivery,
        attempt_no: int,
        now: datetime,
        error: str,
        exc: NotifyTransient | None,
    ) -> Delivery:
        cfg = self.services.settings.callbacks
        created = delivery.created_at or now
        age = (now - created).total_seconds()
        window = cfg.max_age_s
        if exc is not None and exc.conflict:
            window = min(window, cfg.conflict_window_s)
        delay = retry_delay_s(attempt_no, cfg.schedule_s, self.rng)
        if exc is not None and exc.retry_after_s is not None:
            delay = max(delay, exc.retry_after_s)
        if age + delay > window:
            return dataclasses.replace(
                delivery,
                status=DeliveryStatus.FAILED,
                attempts=attempt_no,
                last_error=f"{error} (gave up after {attempt_no} attempts)",
                next_attempt_at=None,
            )
        return dataclasses.replace(
            delivery,
            attempts=attempt_no,
            last_error=error,
            next_attempt_at=now + timedelta(seconds=delay),
        )

    async def _maybe_forget_session(self, job: Job) -> None:
        if not self.services.settings.session.delete_on_complete:
            return
        if job.state is not JobState.SUCCEEDED and job.state is not JobState.NOTIFYING:
            return
        rows = await self.services.store.deliveries_for(job.id)
        if any(r.status is DeliveryStatus.PENDING and r.run == job.run for r in rows):
            return
        try:
            await self.services.sessions.delete(job.session_id)
        except Exception as exc:
            log.warning("session_delete_failed", error=_error_text(exc))
