"""Keep alive the leases of the jobs this instance is working on: one task for all of them.

A claim leases a job for ``store.lease_s``; while a worker is on it, its lease is renewed
every ``lease_s / 3``, however long the provider or the download takes. One renewer per
instance, not one per job: each tick renews every held lease at once (the Redis store
sends the renewals that arrive together in one script call), and a job none of whose
steps outlasts a tick costs no task of its own. A renewal that finds the lease gone (the
job was changed or taken over elsewhere) cancels that job's worker, as before; a store
error is logged and the next tick tries again. The renewer runs only while a lease is held.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import structlog

from .clock import Clock
from .interfaces import JobStore

log = structlog.get_logger(__name__)


class LeaseKeeper:
    """The renewer of one instance (``owner``) for the leases its workers hold."""

    def __init__(self, store: JobStore, owner: str, lease_s: float, clock: Clock) -> None:
        self.store = store
        self.owner = owner
        self.lease_s = lease_s
        self.clock = clock
        self.interval = max(lease_s / 3, 0.05)
        #: job id -> the worker task on it (cancelled when the lease turns out lost)
        self._held: dict[str, asyncio.Task[Any] | None] = {}
        self._task: asyncio.Task[None] | None = None

    def hold(self, job_id: str, worker: asyncio.Task[Any] | None) -> None:
        """``worker`` has claimed ``job_id``: renew its lease until :meth:`release`."""
        self._held[job_id] = worker
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="lease-renewer")

    def release(self, job_id: str, worker: asyncio.Task[Any] | None) -> None:
        """``worker`` is done with ``job_id``; the renewer stops with the last lease."""
        if self._held.get(job_id) is worker:
            del self._held[job_id]
        if not self._held and self._task is not None:
            self._task.cancel()
            self._task = None

    async def close(self) -> None:
        self._held.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while self._held:
            await asyncio.sleep(self.interval)
            held = dict(self._held)
            until = self.clock.now() + timedelta(seconds=self.lease_s)
            results = await asyncio.gather(
                *(self.store.renew_lease(job_id, self.owner, until) for job_id in held),
                return_exceptions=True,
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                log.warning("lease_renew_failed", error=str(failed[0])[:200], leases=len(failed))
            for (job_id, worker), ok in zip(held.items(), results, strict=True):
                if ok is False and self._held.get(job_id) is worker:
                    log.warning("lease_lost", job_id=job_id)
                    del self._held[job_id]
                    if worker is not None:
                        worker.cancel()
