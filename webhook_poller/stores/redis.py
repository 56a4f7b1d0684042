"""Redis job store: several instances share one Redis (``store.url: redis://...``).

Every write that must not race is one Lua script, so it runs atomically on the server:
create (idempotent on the provider task), claim (take due jobs, set the lease, bump the
version), save (compare-and-set on the version, move the job between the due and leased
sets, insert outbox rows once), renew, release, and the delivery claims. Leased jobs sit in
their own sorted set scored by lease expiry, so the due scan never walks over jobs being
worked on; an expired lease moves the job back to the due set and counts a reclaim. No job
key has a TTL: a job never silently expires.

Key names live in :mod:`.keys`. Redis Cluster is not supported (scripts touch keys they
compute); use one primary (with replicas/Sentinel for availability).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from importlib import resources
from typing import Any, ClassVar, TypeVar, cast

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import LeaseLost, StoreSchemaError, StoreUnavailable
from ..interfaces import PluginContext
from ..model import Delivery, Job, JobState, dedupe_key, indexed_task_ids
from .base import BaseJobStore, SaveItem
from .batching import GroupCommit
from .codec import dt, dumps
from .keys import Keys

log = structlog.get_logger(__name__)

T = TypeVar("T")


# The connection decodes every reply (decode_responses=True), which redis-py's types cannot
# know: they say ``bytes | str`` everywhere. These helpers say it once.
def _hash(reply: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return cast("dict[str, str]", reply)


def _scored(reply: list[Any]) -> list[tuple[str, float]]:
    """A ``withscores=True`` range: (member, score) pairs."""
    return cast("list[tuple[str, float]]", reply)


def _text(reply: bytes | str | None) -> str | None:
    return cast("str | None", reply)


#: The atomic writes, one Lua file each in ``lua/`` (shipped as package data). Each script
#: takes one JSON object as ARGV[1] (decoded with cjson), its fields named in its header.
SCRIPTS = (
    "create",
    "claim",
    "save",
    "renew",
    "release",
    "claim_dl",
    "update_dl",
    "delete",
    "take",
    "take_many",
    "pause",
    "schema",
)


def script_source(name: str) -> str:
    """The Lua source of script ``name`` (a package file, ``stores/lua/{name}.lua``)."""
    path = resources.files("webhook_poller.stores") / "lua" / f"{name}.lua"
    return path.read_text(encoding="utf-8")


async def _adopt_release_layout(store: RedisJobStore) -> None:
    """Version 1 is the key layout of the releases before versions were recorded (see
    :mod:`.keys`): such a store needs nothing but the version stamp."""


#: A migration: a function given the opened store; the ``schema`` script then records its
#: (1-based) position. A Redis migration must be safe to run twice (two instances starting
#: at once may both run it before one records it). Append new ones; never edit a released one.
Migration = Callable[["RedisJobStore"], Awaitable[None]]

#: Every schema version in order.
MIGRATIONS: tuple[Migration, ...] = (_adopt_release_layout,)

#: Jobs looked at per list_jobs call before it returns a partial page with a cursor.
MAX_LIST_SCAN = 5000


def _ts(value: datetime | None) -> str:
    return repr(value.timestamp()) if value is not None else ""


def _field(delivery: Delivery) -> str:
    return f"{delivery.run}|{delivery.event.value}|{delivery.target}"


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


class RedisJobStore(BaseJobStore):
    """Job store on Redis. Options: ``url``, ``key_prefix`` (default ``wp:``)."""

    backend: ClassVar[str] = "Redis"
    migrations: ClassVar[tuple[Migration, ...]] = MIGRATIONS

    def __init__(self, options: Mapping[str, Any], context: PluginContext | None = None) -> None:
        super().__init__()
        self.url = str(options["url"])
        self.keys = Keys(str(options.get("key_prefix") or "wp:"))
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._updates: GroupCommit[tuple[Delivery, str | None], None] = GroupCommit(
            self._update_batch
        )
        self._renewals: GroupCommit[tuple[str, str, datetime], bool] = GroupCommit(
            self._renew_batch
        )

    # --- lifecycle and schema ---------------------------------------------------------

    async def _connect(self) -> None:
        kwargs: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": 5.0,
            "socket_connect_timeout": 3.0,
            "health_check_interval": 15,
        }
        password = os.environ.get("REDIS_PASSWORD")
        if password and "@" not in self.url.split("//", 1)[-1]:
            kwargs["password"] = password
        self._redis = aioredis.Redis.from_url(self.url, **kwargs)
        for name in SCRIPTS:
            self._scripts[name] = self._redis.register_script(script_source(name))

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    @property
    def r(self) -> aioredis.Redis:
        if self._redis is None:
            raise StoreUnavailable("the Redis store is not open")
        return self._redis

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(f"Redis is unreachable: {type(exc).__name__}") from None
        except RedisError as exc:
            raise StoreUnavailable(f"Redis refused the command: {type(exc).__name__}") from None

    def _args(self, **fields: Any) -> list[str]:
        """A script's one argument: its fields and the key prefix, as JSON."""
        return [dumps({"p": self.keys.prefix, **fields})]

    async def _script(self, name: str, **fields: Any) -> Any:
        return await self._call(self._scripts[name](keys=[], args=self._args(**fields)))

    async def _ping(self) -> bool:
        try:
            return bool(await self._call(self.r.ping()))
        except StoreUnavailable:
            return False

    def _where(self) -> str:
        host = self.url.split("//", 1)[-1].rsplit("@", 1)[-1]  # never the credentials
        return f"redis://{host} (key prefix {self.keys.prefix!r})"

    async def _read_schema_version(self) -> int:
        raw = await self._call(self.r.get(self.keys.schema))
        try:
            return int(raw) if raw else 0
        except ValueError:
            raise StoreSchemaError(
                f"the Redis store at {self._where()} holds {self.keys.schema!r} = {raw!r},"
                " which is no schema version"
            ) from None

    async def _migrate_to(self, version: int) -> None:
        await self.migrations[version - 1](self)
        await self._script("schema", version=version)

    # --- jobs ------------------------------------------------------------------------

    @classmethod
    def _job(cls, fields: Mapping[str, Any]) -> Job:
        return cls._decode_job(
            fields["body"],
            version=int(fields["version"]),
            lease_owner=fields.get("lease_owner") or None,
            lease_expires_at=(
                float(fields["lease_expires_at"]) if fields.get("lease_expires_at") else None
            ),
            due_at=float(fields["due_at"]),
            reclaims=int(fields.get("reclaims") or 0),
        )

    async def _create_batch(self, jobs: list[Job]) -> list[tuple[Job | None, bool]]:
        """The batch in one create script call (one command, one round trip; a pipeline
        of one call per job cost redis-py a command each and a SCRIPT EXISTS per batch);
        then the task index of the new jobs, and the jobs that already held a key."""
        replies = await self._script(
            "create",
            jobs=[
                {
                    "id": job.id,
                    "dedupe_key": job.dedupe_key,
                    "body": self._encode_job(job),
                    "version": job.version,
                    "state": job.state.value,
                    "due_at": _ts(job.due_at),
                    "lease_owner": job.lease_owner or "",
                    "lease_expires_at": _ts(job.lease_expires_at),
                    "reclaims": job.reclaims,
                    "session_id": job.session_id,
                    "model": job.model,
                    "created_at": _ts(job.created_at),
                    "active": self._is_active(job),
                }
                for job in jobs
            ],
        )
        made = [int(created) == 1 for created, _ in replies]
        await self._index_tasks([job for job, new in zip(jobs, made, strict=True) if new])
        holders = [str(job_id) for (_, job_id), new in zip(replies, made, strict=True) if not new]
        known: dict[str, Job | None] = {}
        if holders:  # the jobs that already held a key, in one more round trip
            reads = self.r.pipeline(transaction=False)
            for job_id in holders:
                reads.hgetall(self.keys.job(job_id))
            rows = await self._call(reads.execute())
            known = {
                job_id: self._job(fields) if fields else None
                for job_id, fields in zip(holders, rows, strict=True)
            }
        return [
            (job, True) if new else (known[str(job_id)], False)
            for job, new, (_, job_id) in zip(jobs, made, replies, strict=True)
        ]

    async def get(self, job_id: str) -> Job | None:
        fields = _hash(await self._call(self.r.hgetall(self.keys.job(job_id))))
        return self._job(fields) if fields else None

    async def find_by_task(self, provider: str, task_id: str) -> Job | None:
        """The job polling ``task_id`` at adapter ``provider`` (the intake dedupe key)."""
        job_id = await self._call(self.r.get(self.keys.dedupe(dedupe_key(provider, task_id))))
        if not job_id:
            job_id = await self._call(self.r.get(self.keys.task(provider, task_id)))
        if not job_id:
            return None
        job = await self.get(str(job_id))
        return job if job is not None and job.provider == provider else None

    async def _index_tasks(self, jobs: Sequence[Job]) -> None:
        """Index the tasks a dedupe key does not name (an index: written after the job)."""
        pairs = [(job, task) for job in jobs for task in indexed_task_ids(job)]
        if not pairs:
            return
        pipe = self.r.pipeline(transaction=False)
        for job, task in pairs:
            pipe.set(self.keys.task(job.provider, task), job.id, nx=True)
        try:
            await self._call(pipe.execute())
        except StoreUnavailable as exc:  # the job is saved; a push for it falls back to polls
            log.warning("task_index_write_failed", error=str(exc)[:200])

    async def _save_batch(self, items: list[SaveItem]) -> list[Job | LeaseLost]:
        """Every compare-and-set of the batch in one save script call (one round trip)."""
        results = await self._script(
            "save",
            items=[
                {
                    "id": job.id,
                    "expected_version": expected_version,
                    "body": self._encode_job(job),
                    "state": job.state.value,
                    "due_at": _ts(job.due_at),
                    "lease_owner": job.lease_owner or "",
                    "lease_expires_at": _ts(job.lease_expires_at),
                    "reclaims": job.reclaims,
                    "active": self._is_active(job),
                    "deliveries": [
                        {
                            "field": _field(d),
                            "body": self._encode_delivery(d),
                            "status": d.status.value,
                            "next_attempt_at": _ts(d.next_attempt_at) or "0",
                        }
                        for d in deliveries
                    ],
                }
                for job, expected_version, deliveries in items
            ],
        )
        saved: list[Job | LeaseLost] = [
            dataclasses.replace(job, version=expected_version + 1)
            if int(ok) == 1
            else LeaseLost(job.id)
            for (job, expected_version, _), ok in zip(items, results, strict=True)
        ]
        await self._index_tasks([j for j in saved if isinstance(j, Job)])
        return saved

    async def claim_due(self, owner: str, now: datetime, lease_s: float, limit: int) -> list[Job]:
        rows = await self._claim("claim", owner, now, lease_s, limit)
        return [self._job(_pairs(row)) for row in rows]

    async def _claim(
        self, script: str, owner: str, now: datetime, lease_s: float, limit: int, **more: Any
    ) -> Any:
        """A claim script's call: leases to ``owner`` from ``now`` for ``lease_s``."""
        return await self._script(
            script,
            now=repr(now.timestamp()),
            until=repr(now.timestamp() + lease_s),
            limit=limit,
            owner=owner,
            **more,
        )

    async def renew_lease(self, job_id: str, owner: str, until: datetime) -> bool:
        return await self._renewals.submit((job_id, owner, until))

    async def _renew_batch(self, items: list[tuple[str, str, datetime]]) -> list[bool]:
        """The renewals that arrive together (an instance renews all its leases at once,
        :mod:`..leases`) in one renew script call."""
        replies = await self._script(
            "renew",
            items=[
                {"id": job_id, "owner": owner, "until": _ts(until)}
                for job_id, owner, until in items
            ],
        )
        return [int(r) == 1 for r in replies]

    async def release_owner(self, owner: str) -> int:
        return int(await self._script("release", owner=owner, now=repr(time.time())))

    async def next_due_at(self) -> datetime | None:
        pipe = self.r.pipeline(transaction=False)
        pipe.zrange(self.keys.due, 0, 0, withscores=True)
        pipe.zrange(self.keys.leased, 0, 0, withscores=True)
        pipe.zrange(self.keys.dl_due, 0, 0, withscores=True)
        pipe.zrange(self.keys.dl_leased, 0, 0, withscores=True)
        results = await self._call(pipe.execute())
        scores = [rows[0][1] for rows in results if rows]
        return dt(min(scores)) if scores else None

    async def delete(self, job_id: str) -> bool:
        job = await self.get(job_id)
        removed = int(await self._script("delete", id=job_id)) == 1
        if job is not None and indexed_task_ids(job):
            keys = [self.keys.task(job.provider, t) for t in indexed_task_ids(job)]
            await self._call(self.r.delete(*keys))
        return removed

    async def list_jobs(
        self,
        *,
        states: Sequence[str] | None = None,
        session_id: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[Job], str | None]:
        if session_id is not None:
            source = self.keys.session_index(session_id)
        elif states and len(states) == 1:
            source = self.keys.state(states[0])
        else:
            source = self.keys.all
        wanted = set(states) if states else None
        top = f"({cursor}" if cursor else "+inf"
        found: list[tuple[Job, float]] = []
        scanned = 0
        last_score: float | None = None
        while len(found) <= limit and scanned < MAX_LIST_SCAN:
            batch = _scored(
                await self._call(
                    self.r.zrevrangebyscore(source, top, "-inf", start=0, num=200, withscores=True)
                )
            )
            if not batch:
                last_score = None
                break
            pipe = self.r.pipeline(transaction=False)
            for job_id, _ in batch:
                pipe.hgetall(self.keys.job(job_id))
            rows = await self._call(pipe.execute())
            for (_, score), fields in zip(batch, rows, strict=True):
                scanned += 1
                last_score = score
                if not fields:
                    continue
                if wanted is not None and fields["state"] not in wanted:
                    continue
                if model is not None and fields["model"] != model:
                    continue
                if since is not None and float(fields["created_at"]) < since.timestamp():
                    continue
                found.append((self._job(fields), score))
                if len(found) > limit:
                    break
            top = f"({int(batch[-1][1])}"
        if len(found) > limit:
            return [j for j, _ in found[:limit]], str(int(found[limit - 1][1]))
        if last_score is not None and scanned >= MAX_LIST_SCAN:
            return [j for j, _ in found], str(int(last_score))
        return [j for j, _ in found], None

    async def count_by_state(self) -> dict[str, int]:
        pipe = self.r.pipeline(transaction=False)
        for state in JobState:
            pipe.zcard(self.keys.state(state.value))
        counts = await self._call(pipe.execute())
        return {s.value: int(n) for s, n in zip(JobState, counts, strict=True) if n}

    async def queue_position(self, job: Job) -> int | None:
        seq = _text(await self._call(self.r.hget(self.keys.job(job.id), "seq")))
        if seq is None:
            return None
        count = await self._call(self.r.zcount(self.keys.state("queued"), "-inf", seq))
        return int(count) or None

    # --- deliveries --------------------------------------------------------------------

    async def deliveries_for(self, job_id: str) -> list[Delivery]:
        rows = await self._call(self.r.hvals(self.keys.deliveries(job_id)))
        found = [self._decode_delivery(r) for r in rows]
        return sorted(
            found,
            key=lambda d: (
                d.created_at.timestamp() if d.created_at else 0,
                d.event.value,
                d.target,
            ),
        )

    async def claim_deliveries(
        self, owner: str, now: datetime, lease_s: float, limit: int
    ) -> list[Delivery]:
        rows = await self._claim("claim_dl", owner, now, lease_s, limit)
        return [self._decode_delivery(r) for r in rows]

    async def claim_deliveries_with_jobs(
        self, owner: str, now: datetime, lease_s: float, limit: int
    ) -> list[tuple[Delivery, Job | None]]:
        """:meth:`claim_deliveries` with each delivery's job read in the same script call
        (``ClaimsDeliveriesWithJobs``): one round trip for the round instead of one more
        per delivery."""
        rows = await self._claim("claim_dl", owner, now, lease_s, limit, jobs=True)
        return [
            (self._decode_delivery(body), self._job(_pairs(fields)) if fields else None)
            for body, fields in rows
        ]

    async def update_delivery(self, delivery: Delivery, *, owner: str | None) -> None:
        await self._updates.submit((delivery, owner))

    async def _update_batch(self, items: list[tuple[Delivery, str | None]]) -> list[None]:
        """The delivery writes that arrive together (sends that end at about the same time)
        in one update_dl script call; each caller still waits for its own write."""
        await self._script(
            "update_dl",
            items=[
                {
                    "job_id": delivery.job_id,
                    "field": _field(delivery),
                    "body": self._encode_delivery(delivery),
                    "status": delivery.status.value,
                    "next_attempt_at": _ts(delivery.next_attempt_at) or "0",
                    "owner": owner or "",
                }
                for delivery, owner in items
            ],
        )
        return [None] * len(items)

    # --- the provider request budget, shared by every instance (services.SharedBudget) ----

    async def budget_take(self, section: str, rate: float, burst: int = 1) -> float:
        """Take one request from ``section``'s budget (``rate`` per second, up to ``burst`` at
        once): 0 when taken, else the seconds to wait before asking again."""
        step = 1_000_000 / rate
        waited = await self._script("take", section=section, step=step, burst=step * (burst - 1))
        return max(0, int(waited)) / 1_000_000

    async def budget_take_many(
        self, section: str, rate: float, burst: int, count: int, ahead_s: float
    ) -> tuple[list[float], float]:
        """Up to ``count`` requests from ``section``'s budget in one round trip, each with the
        seconds it waits before it goes (at most ``ahead_s``, spaced as ``count`` calls of
        :meth:`budget_take` would be); with none taken, the seconds to wait before asking
        again."""
        step = 1_000_000 / rate
        reply = await self._script(
            "take_many",
            section=section,
            step=step,
            burst=step * (burst - 1),
            n=count,
            ahead=int(ahead_s * 1_000_000),
        )
        delays = [max(0, int(d)) / 1_000_000 for d in reply[1:]]
        return delays, max(0, int(reply[0])) / 1_000_000

    async def budget_pause(self, section: str, seconds: float) -> float:
        """Hold every instance's requests for ``section`` for ``seconds`` (0: only look);
        return the seconds the pause still holds."""
        micros = max(0, int(seconds * 1_000_000))
        return max(0, int(await self._script("pause", section=section, span=micros))) / 1_000_000

    # --- small shared values (the shared logic is in BaseJobStore) ---------------------

    async def _meta_insert(self, name: str, value: str) -> None:
        await self._call(self.r.hsetnx(self.keys.meta, name, value))

    async def _meta_get(self, name: str) -> str | None:
        value = await self._call(self.r.hget(self.keys.meta, name))
        return None if value is None else str(value)

    async def use_once(self, token: str, expires_at: datetime) -> bool:
        ms = max(1, int(expires_at.timestamp() * 1000))
        done = await self._call(self.r.set(self.keys.used(token), "1", nx=True, pxat=ms))
        return bool(done)

    async def _write_session(self, session_id: str, text: str) -> None:
        await self._call(self.r.set(Keys.session(session_id), text))

    async def _read_session(self, session_id: str) -> str | Mapping[str, Any] | None:
        key = Keys.session(session_id)
        kind = await self._call(self.r.type(key))
        if kind == "hash":
            return _hash(await self._call(self.r.hgetall(key)))
        raw = await self._call(self.r.get(key)) if kind == "string" else None
        return None if raw is None else str(raw)

    async def delete_session(self, session_id: str) -> None:
        await self._call(self.r.delete(Keys.session(session_id)))
