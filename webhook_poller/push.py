"""Provider push: ``POST /callbacks/{provider}`` moves a job on at once; polling stays the net.

A push is a hint, never a result. The adapter reads the provider task id from it and checks
the signature where one can be checked (:class:`~.interfaces.ReceivesCallbacks`); the job of
that task is then made due now, so the scheduler re-reads the task from the provider's status
endpoint before any result URL is used. Nothing in the push body is stored. So:

* a duplicate, late or out-of-order push is harmless: a job that is downloading or done is
  left alone, a job already due is not touched, and a job polled less than
  :data:`MIN_GAP_S` ago is polled again only after that gap (at most one extra status read
  per gap, whatever the sender does);
* an unknown task id answers 200 like a known one (the answer carries no job data);
* a forged push (wrong or missing signature while a secret is configured) is refused with 401
  and changes nothing.

``{provider}`` is a provider family (``providers.<family>`` section: ``kie``, ``replicate``,
``gemini``, ``fal`` ...) or an adapter name (``kie-veo``); a family with several adapters
(KIE Veo and Market) is matched against each adapter's jobs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import structlog

from .config import Settings
from .errors import LeaseLost, NotFound, RequestRejected, Unauthorized
from .interfaces import CallbackHint, ReceivesCallbacks
from .model import POLLING_STATES, Job, utcnow
from .services import Services

log = structlog.get_logger(__name__)

#: Largest push body read (Replicate posts the whole prediction, logs included).
MAX_PUSH_BYTES = 1024 * 1024
#: A job is polled at most once per this many seconds because of pushes.
MIN_GAP_S = 1.0
#: How long a push waits for a worker that is polling the job right now to finish.
LEASE_WAIT_S = 5.0
_RACE_RETRIES = 8


def push_callback_url(settings: Settings, provider: str) -> str:
    """Our ``/callbacks/{provider}`` URL, from ``server.public_url``, for a provider to push to.

    ``provider`` is the family (``kie``) or an adapter name (``kie-veo``); jobs we submit pass
    this URL as KIE's ``callBackUrl``, Replicate's ``webhook``, fal's ``fal_webhook``.
    """
    return f"{settings.server.base_url()}/callbacks/{quote(provider, safe='')}"


def _json_object(body: bytes) -> Mapping[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, Mapping) else None


def _plain_id(value: Any) -> str | None:
    if isinstance(value, str) and value.strip() and len(value) <= 256 and value.isprintable():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class UnsignedPushes:
    """Push reading for families that sign nothing, for adapters without their own hooks.

    Luma posts the Generation object (``{id, state, ...}``) to ``callback_url``; Kling the
    task unwrapped (``{task_id, task_status, ...}``); MiniMax posts
    ``{task_id, status, file_id, base_resp}`` and first checks the URL with a
    ``{"challenge": ...}`` that must be echoed (see :func:`challenge_answer`). There is no
    signature to check, so such a push only ever makes the job be polled.
    """

    ID_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {
        "luma": ("id", "generation_id"),
        "kling": ("task_id",),
        "minimax": ("task_id", "taskId"),
    }

    def __init__(self, family: str) -> None:
        self.keys = self.ID_KEYS[family]

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackHint | None:
        payload = _json_object(body)
        if payload is None:
            return None
        for node in (payload, payload.get("data"), payload.get("generation")):
            if isinstance(node, Mapping):
                for key in self.keys:
                    task_id = _plain_id(node.get(key))
                    if task_id is not None:
                        return CallbackHint(task_id=task_id)
        return None

    async def verify_callback(
        self,
        headers: Mapping[str, str],
        body: bytes,
        hint: CallbackHint,
        http: httpx.AsyncClient,
    ) -> bool:
        return True


def challenge_answer(body: bytes) -> dict[str, Any] | None:
    """MiniMax's URL check: a body that is only ``{"challenge": "..."}`` is echoed back."""
    payload = _json_object(body)
    if payload is None or set(payload) != {"challenge"}:
        return None
    value = payload["challenge"]
    if not isinstance(value, str) or len(value) > 512:
        return None
    return {"challenge": value}


def receivers_for(services: Services, provider: str) -> list[tuple[str, ReceivesCallbacks]]:
    """(adapter name, adapter) of every built adapter of that family or name that takes pushes."""
    found: list[tuple[str, ReceivesCallbacks]] = []
    for name, adapter in services.adapters.items():
        gate = services.gates.get(name)
        section = gate.section if gate is not None else name
        if provider not in (name, section):
            continue
        if isinstance(adapter, ReceivesCallbacks):
            found.append((name, adapter))
        elif section in UnsignedPushes.ID_KEYS:
            found.append((name, UnsignedPushes(section)))
    return found


async def receive(
    services: Services, provider: str, headers: Mapping[str, str], body: bytes
) -> bool:
    """Handle one push; True when it moved a job. Raises RequestRejected for a 4xx."""
    receivers = receivers_for(services, provider)
    if not receivers:
        raise NotFound(f"no provider {provider[:40]!r} receives pushes here")
    _, first = receivers[0]
    try:
        hint = first.parse_callback(headers, body)
    except Exception:  # an adapter bug must not become a 5xx
        log.exception("push_parse_crashed", provider=provider)
        hint = None
    if hint is None:
        raise RequestRejected(
            "the push names no task this provider knows how to read",
            status_code=400,
            code="bad_request",
        )
    try:
        verified = await first.verify_callback(headers, body, hint, services.provider_http)
    except Exception:
        log.exception("push_verify_crashed", provider=provider)
        verified = False
    if not verified:
        services.metrics.pushes.labels(provider, "forged").inc()
        log.warning("push_signature_refused", provider=provider)
        raise Unauthorized("the push signature is missing or wrong", code="bad_signature")
    job = await _find(services, [name for name, _ in receivers], hint)
    if job is None:
        services.metrics.pushes.labels(provider, "unknown").inc()
        log.info("push_unknown_task", provider=provider)
        return False
    moved = await nudge(services, job.id)
    services.metrics.pushes.labels(provider, "moved" if moved else "ignored").inc()
    log.info(
        "push_received",
        provider=provider,
        job_id=job.id,
        claimed=hint.status.value if hint.status else None,
        moved=moved,
    )
    return moved


async def _find(services: Services, adapters: list[str], hint: CallbackHint) -> Job | None:
    for task_id in (hint.task_id, *hint.aliases):
        for name in adapters:
            job = await services.store.find_by_task(name, task_id)
            if job is not None:
                return job
    return None


async def nudge(services: Services, job_id: str) -> bool:
    """Make a job that waits for its provider due now (or after :data:`MIN_GAP_S`).

    A job a worker is polling right now is left to that worker for up to
    :data:`LEASE_WAIT_S`, then looked at again: its answer may predate the push. Past that
    wait the lease is taken back, as an operator action would.
    """
    loop = asyncio.get_running_loop()
    give_up_waiting = loop.time() + LEASE_WAIT_S
    races = 0
    while races < _RACE_RETRIES:
        job = await services.store.get(job_id)
        if job is None or job.state not in POLLING_STATES:
            return False
        now = utcnow()
        leased = (
            job.lease_owner is not None
            and job.lease_expires_at is not None
            and job.lease_expires_at > now
        )
        if leased and loop.time() < give_up_waiting:
            await asyncio.sleep(0.05)
            continue
        # a job never polled goes now; one just polled waits out the gap (duplicate pushes)
        due = now if job.polls == 0 else max(now, job.updated_at + timedelta(seconds=MIN_GAP_S))
        if not leased and job.due_at <= due:
            return False  # due already: the next claim polls it
        changed = dataclasses.replace(job, due_at=due, lease_owner=None, lease_expires_at=None)
        try:
            await services.store.save(changed, expected_version=job.version)
        except LeaseLost:
            races += 1
            continue
        return True
    return False
