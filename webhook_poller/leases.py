"""Keep alive the leases of the jobs this instance is working on: one task for all of them.

A claim leases a job for ``store.lease_s``; while a worker is on it, its lease is renewed
once it has been held between ``lease_s / 6`` and ``lease_s / 3`` since the claim or the
last renewal, however long the provider or the download takes. One renewer per instance,
not one per job: it ticks every ``lease_s / 6`` and renews the leases due at once (the
Redis store sends the renewals that arrive together in one script call); a job whose run
is shorter than that is never renewed, as before, so a renewal does not race the save
that lets a finished job go. A renewal that finds the lease gone (the job was changed or
taken over elsewhere) cancels that job's worker, as before; a store error is logged and
the next tick tries again. The renewer runs only while a lease is held.
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
        #: a held lease is renewed after this long (1/6 to 1/3 of the lease)
        self.tick = max(lease_s / 6, 0.025)
        #: job id -> the worker task on it (cancelled when the lease turns out lost) and
        #: the loop time of its claim or last renewal
        self._held: dict[str, tuple[asyncio.Task[Any] | None, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def hold(self, job_id: str, worker: asyncio.Task[Any] | None) -> None:
        """``worker`` has claimed ``job_id``: renew its lease until :meth:`release`."""
        self._held[job_id] = (worker, asyncio.get_running_loop().time())
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="lease-renewer")

    def release(self, job_id: str, worker: asyncio.Task[Any] | None) -> None:
        """``worker`` is done with ``job_id``; the renewer stops with the last lease."""
        if self._holds(job_id, worker):
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

    def _holds(self, job_id: str, worker: asyncio.Task[Any] | None) -> bool:
        """``worker`` still holds ``job_id`` (a job released meanwhile is no one's)."""
        held = self._held.get(job_id)
        return held is not None and held[0] is worker

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._held:
            await asyncio.sleep(self.tick)
            started = loop.time()
            due = {
                job_id: worker
                for job_id, (worker, since) in self._held.items()
                if started - since >= self.tick
            }
            if not due:
                continue
            until = self.clock.now() + timedelta(seconds=self.lease_s)
            results = await asyncio.gather(
                *(self.store.renew_lease(job_id, self.owner, until) for job_id in due),
                return_exceptions=True,
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                log.warning("lease_renew_failed", error=str(failed[0])[:200], leases=len(failed))
            for (job_id, worker), ok in zip(due.items(), results, strict=True):
                if not self._holds(job_id, worker):
                    continue  # done meanwhile
                if ok is True:
                    self._held[job_id] = (worker, started)
                elif ok is False:
                    log.warning("lease_lost", job_id=job_id)
                    del self._held[job_id]
                    if worker is not None:
                        worker.cancel()
