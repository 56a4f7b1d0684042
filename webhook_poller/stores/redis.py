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
import json
import os
import time
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import LeaseLost, StoreUnavailable
from ..interfaces import PluginContext
from ..model import ACTIVE_STATES, Delivery, Job, JobState, dedupe_key, indexed_task_ids
from .batching import GroupCommit
from .codec import delivery_from_dict, delivery_to_dict, dt, dumps, job_from_dict, job_to_dict
from .keys import Keys

log = structlog.get_logger(__name__)

T = TypeVar("T")

_CREATE = """
local p = ARGV[1]
local existing = redis.call('GET', p..'dedupe:'..ARGV[3])
if existing then return {0, existing} end
local seq = redis.call('INCR', p..'seq')
local id = ARGV[2]
local jk = p..'job:'..id
redis.call('HSET', jk, 'body', ARGV[4], 'version', ARGV[5], 'state', ARGV[6], 'due_at', ARGV[7],
  'lease_owner', ARGV[8], 'lease_expires_at', ARGV[9], 'reclaims', ARGV[10], 'seq', seq,
  'session_id', ARGV[11], 'model', ARGV[12], 'created_at', ARGV[13], 'dedupe_key', ARGV[3])
redis.call('SET', p..'dedupe:'..ARGV[3], id)
redis.call('ZADD', p..'all', seq, id)
redis.call('ZADD', p..'st:'..ARGV[6], seq, id)
redis.call('ZADD', p..'sess:'..ARGV[11], seq, id)
if ARGV[14] == '1' then
  if ARGV[8] == '' then redis.call('ZADD', p..'due', ARGV[7], id)
  else redis.call('ZADD', p..'leased', ARGV[9], id) end
end
return {1, id}
"""

_CLAIM = """
local p = ARGV[1]
local now = tonumber(ARGV[2])
local expired = redis.call('ZRANGEBYSCORE', p..'leased', '-inf', now, 'LIMIT', 0, 500)
for _, id in ipairs(expired) do
  local jk = p..'job:'..id
  redis.call('ZREM', p..'leased', id)
  local due = redis.call('HGET', jk, 'due_at')
  if due then
    redis.call('HSET', jk, 'lease_owner', '', 'lease_expires_at', '')
    redis.call('HINCRBY', jk, 'reclaims', 1)
    redis.call('ZADD', p..'due', due, id)
  end
end
local ids = redis.call('ZRANGEBYSCORE', p..'due', '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  local jk = p..'job:'..id
  redis.call('ZREM', p..'due', id)
  if redis.call('EXISTS', jk) == 1 then
    redis.call('ZADD', p..'leased', ARGV[3], id)
    redis.call('HSET', jk, 'lease_owner', ARGV[5], 'lease_expires_at', ARGV[3])
    redis.call('HINCRBY', jk, 'version', 1)
    table.insert(out, redis.call('HGETALL', jk))
  end
end
return out
"""

_SAVE = """
local p = ARGV[1]
local id = ARGV[2]
local jk = p..'job:'..id
local v = redis.call('HGET', jk, 'version')
if (not v) or tonumber(v) ~= tonumber(ARGV[3]) then return 0 end
local old = redis.call('HGET', jk, 'state')
local seq = redis.call('HGET', jk, 'seq')
redis.call('HSET', jk, 'body', ARGV[4], 'state', ARGV[5], 'due_at', ARGV[6],
  'lease_owner', ARGV[7], 'lease_expires_at', ARGV[8], 'reclaims', ARGV[9],
  'version', tonumber(ARGV[3]) + 1)
if old ~= ARGV[5] then
  redis.call('ZREM', p..'st:'..old, id)
  redis.call('ZADD', p..'st:'..ARGV[5], seq, id)
end
if ARGV[10] == '1' then
  if ARGV[7] == '' then
    redis.call('ZREM', p..'leased', id)
    redis.call('ZADD', p..'due', ARGV[6], id)
  else
    redis.call('ZREM', p..'due', id)
    redis.call('ZADD', p..'leased', ARGV[8], id)
  end
else
  redis.call('ZREM', p..'due', id)
  redis.call('ZREM', p..'leased', id)
end
local n = tonumber(ARGV[11])
local i = 12
for _ = 1, n do
  if redis.call('HSETNX', p..'dl:'..id, ARGV[i], ARGV[i + 1]) == 1 and ARGV[i + 2] == 'pending' then
    redis.call('ZADD', p..'dl:due', ARGV[i + 3], id..'|'..ARGV[i])
  end
  i = i + 4
end
return 1
"""

_RENEW = """
local p = ARGV[1]
local jk = p..'job:'..ARGV[2]
if redis.call('HGET', jk, 'lease_owner') ~= ARGV[3] then return 0 end
redis.call('HSET', jk, 'lease_expires_at', ARGV[4])
redis.call('ZADD', p..'leased', 'XX', ARGV[4], ARGV[2])
return 1
"""

_RELEASE = """
local p = ARGV[1]
local owner = ARGV[2]
local count = 0
for _, id in ipairs(redis.call('ZRANGE', p..'leased', 0, -1)) do
  local jk = p..'job:'..id
  if redis.call('HGET', jk, 'lease_owner') == owner then
    redis.call('HSET', jk, 'lease_owner', '', 'lease_expires_at', '')
    redis.call('ZREM', p..'leased', id)
    redis.call('ZADD', p..'due', redis.call('HGET', jk, 'due_at'), id)
    count = count + 1
  end
end
for _, m in ipairs(redis.call('ZRANGE', p..'dl:leased', 0, -1)) do
  if redis.call('HGET', p..'dl:owner', m) == owner then
    redis.call('ZREM', p..'dl:leased', m)
    redis.call('HDEL', p..'dl:owner', m)
    redis.call('ZADD', p..'dl:due', ARGV[3], m)
  end
end
return count
"""

_CLAIM_DL = """
local p = ARGV[1]
local now = tonumber(ARGV[2])
for _, m in ipairs(redis.call('ZRANGEBYSCORE', p..'dl:leased', '-inf', now, 'LIMIT', 0, 500)) do
  redis.call('ZREM', p..'dl:leased', m)
  redis.call('HDEL', p..'dl:owner', m)
  redis.call('ZADD', p..'dl:due', now, m)
end
local out = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', p..'dl:due', '-inf', now, 'LIMIT', 0,
                              tonumber(ARGV[4]))) do
  redis.call('ZREM', p..'dl:due', m)
  local sep = string.find(m, '|', 1, true)
  local body = redis.call('HGET', p..'dl:'..string.sub(m, 1, sep - 1), string.sub(m, sep + 1))
  if body then
    redis.call('ZADD', p..'dl:leased', ARGV[3], m)
    redis.call('HSET', p..'dl:owner', m, ARGV[5])
    table.insert(out, body)
  end
end
return out
"""

_UPDATE_DL = """
local p = ARGV[1]
local m = ARGV[2]..'|'..ARGV[3]
local current = redis.call('HGET', p..'dl:owner', m)
if ARGV[7] ~= '' and current and current ~= ARGV[7] then return 0 end
if redis.call('HEXISTS', p..'dl:'..ARGV[2], ARGV[3]) == 0 then return 0 end
redis.call('HSET', p..'dl:'..ARGV[2], ARGV[3], ARGV[4])
redis.call('ZREM', p..'dl:leased', m)
redis.call('HDEL', p..'dl:owner', m)
if ARGV[5] == 'pending' then redis.call('ZADD', p..'dl:due', ARGV[6], m)
else redis.call('ZREM', p..'dl:due', m) end
return 1
"""

_DELETE = """
local p = ARGV[1]
local id = ARGV[2]
local jk = p..'job:'..id
if redis.call('EXISTS', jk) == 0 then return 0 end
local f = redis.call('HMGET', jk, 'state', 'session_id', 'dedupe_key')
redis.call('DEL', jk)
redis.call('DEL', p..'dedupe:'..f[3])
redis.call('ZREM', p..'due', id)
redis.call('ZREM', p..'leased', id)
redis.call('ZREM', p..'all', id)
redis.call('ZREM', p..'st:'..f[1], id)
redis.call('ZREM', p..'sess:'..f[2], id)
for _, field in ipairs(redis.call('HKEYS', p..'dl:'..id)) do
  local m = id..'|'..field
  redis.call('ZREM', p..'dl:due', m)
  redis.call('ZREM', p..'dl:leased', m)
  redis.call('HDEL', p..'dl:owner', m)
end
redis.call('DEL', p..'dl:'..id)
return 1
"""

# The per-key request budget shared by every instance: GCRA (a token bucket kept as the
# theoretical arrival time of the next request), on Redis's own clock so instances on hosts
# with skewed clocks agree. ARGV: prefix, section, µs per request, burst tolerance in µs.
# Takes one request's worth and returns 0, or takes nothing and returns the µs to wait before
# asking again (until the section's 429 pause ends, or until the next request conforms).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause = tonumber(redis.call('GET', ARGV[1]..'rl:pause:'..ARGV[2]) or '0')
if pause > now then return math.ceil(pause - now) end
local tk = ARGV[1]..'rl:tat:'..ARGV[2]
local tat = tonumber(redis.call('GET', tk) or '0')
if tat < now then tat = now end
local wait = tat - tonumber(ARGV[4]) - now
if wait > 0 then return math.ceil(wait) end
local nxt = tat + tonumber(ARGV[3])
redis.call('SET', tk, string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1000)
return 0
"""

# ARGV: prefix, section, pause in µs (0: only read). Returns the µs the pause still holds.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pk = ARGV[1]..'rl:pause:'..ARGV[2]
local till = tonumber(redis.call('GET', pk) or '0')
local span = tonumber(ARGV[3])
if span > 0 and now + span > till then
  till = now + span
  redis.call('SET', pk, string.format('%.0f', till), 'PX', math.ceil(span / 1000) + 1000)
end
if till <= now then return 0 end
return math.ceil(till - now)
"""

_ACTIVE = frozenset(s.value for s in ACTIVE_STATES)
#: Jobs looked at per list_jobs call before it returns a partial page with a cursor.
MAX_LIST_SCAN = 5000


def _ts(value: datetime | None) -> str:
    return repr(value.timestamp()) if value is not None else ""


def _field(delivery: Delivery) -> str:
    return f"{delivery.run}|{delivery.event.value}|{delivery.target}"


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


class RedisJobStore:
    """Job store on Redis. Options: ``url``, ``key_prefix`` (default ``wp:``)."""

    def __init__(self, options: Mapping[str, Any], context: PluginContext | None = None) -> None:
        self.url = str(options["url"])
        self.keys = Keys(str(options.get("key_prefix") or "wp:"))
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._creates = GroupCommit(self._create_batch)
        self._saves = GroupCommit(self._save_batch)

    # --- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
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
        for name, source in {
            "create": _CREATE,
            "claim": _CLAIM,
            "save": _SAVE,
            "renew": _RENEW,
            "release": _RELEASE,
            "claim_dl": _CLAIM_DL,
            "update_dl": _UPDATE_DL,
            "delete": _DELETE,
            "take": _TAKE,
            "pause": _PAUSE,
        }.items():
            self._scripts[name] = self._redis.register_script(source)

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

    async def _script(self, name: str, *args: Any) -> Any:
        return await self._call(self._scripts[name](keys=[], args=[self.keys.prefix, *args]))

    async def ping(self) -> bool:
        try:
            return bool(await self._call(self.r.ping()))
        except StoreUnavailable:
            return False

    # --- jobs ------------------------------------------------------------------------

    @staticmethod
    def _job(fields: Mapping[str, Any]) -> Job:
        data = json.loads(fields["body"])
        data["version"] = int(fields["version"])
        data["lease_owner"] = fields.get("lease_owner") or None
        data["lease_expires_at"] = (
            float(fields["lease_expires_at"]) if fields.get("lease_expires_at") else None
        )
        data["due_at"] = float(fields["due_at"])
        data["reclaims"] = int(fields.get("reclaims") or 0)
        return job_from_dict(data)

    async def create(self, job: Job) -> tuple[Job, bool]:
        created, job_id = await self._creates.submit(job)
        if int(created) == 1:
            await self._index_tasks([job])
            return job, True
        existing = await self.get(job_id)
        if existing is None:  # deleted between the two calls: try once more
            return await self.create(job)
        return existing, False

    async def _create_batch(self, jobs: list[Job]) -> list[tuple[Any, Any]]:
        """Every job's create script in one pipeline: one round trip for the batch."""
        pipe = self.r.pipeline(transaction=False)
        script = self._scripts["create"]
        for job in jobs:
            await script(
                keys=[],
                args=[
                    self.keys.prefix,
                    job.id,
                    job.dedupe_key,
                    dumps(job_to_dict(job)),
                    job.version,
                    job.state.value,
                    _ts(job.due_at),
                    job.lease_owner or "",
                    _ts(job.lease_expires_at),
                    job.reclaims,
                    job.session_id,
                    job.model,
                    _ts(job.created_at),
                    "1" if job.state.value in _ACTIVE else "0",
                ],
                client=pipe,
            )
        return list(await self._call(pipe.execute()))

    async def get(self, job_id: str) -> Job | None:
        fields = await self._call(self.r.hgetall(self.keys.job(job_id)))
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

    async def save(
        self, job: Job, *, expected_version: int, deliveries: Sequence[Delivery] = ()
    ) -> Job:
        return await self._saves.submit((job, expected_version, tuple(deliveries)))

    async def _save_batch(
        self, items: list[tuple[Job, int, tuple[Delivery, ...]]]
    ) -> list[Job | LeaseLost]:
        """Every compare-and-set script of the batch in one pipeline (one round trip)."""
        pipe = self.r.pipeline(transaction=False)
        script = self._scripts["save"]
        for job, expected_version, deliveries in items:
            args: list[Any] = [
                self.keys.prefix,
                job.id,
                expected_version,
                dumps(job_to_dict(job)),
                job.state.value,
                _ts(job.due_at),
                job.lease_owner or "",
                _ts(job.lease_expires_at),
                job.reclaims,
                "1" if job.state.value in _ACTIVE else "0",
                len(deliveries),
            ]
            for d in deliveries:
                args += [
                    _field(d),
                    dumps(delivery_to_dict(d)),
                    d.status.value,
                    _ts(d.next_attempt_at) or "0",
                ]
            await script(keys=[], args=args, client=pipe)
        results = await self._call(pipe.execute())
        saved: list[Job | LeaseLost] = [
            dataclasses.replace(job, version=expected_version + 1)
            if int(ok) == 1
            else LeaseLost(job.id)
            for (job, expected_version, _), ok in zip(items, results, strict=True)
        ]
        await self._index_tasks([j for j in saved if isinstance(j, Job)])
        return saved

    async def claim_due(self, owner: str, now: datetime, lease_s: float, limit: int) -> list[Job]:
        rows = await self._script(
            "claim", repr(now.timestamp()), repr(now.timestamp() + lease_s), limit, owner
        )
        return [self._job(_pairs(row)) for row in rows]

    async def renew_lease(self, job_id: str, owner: str, until: datetime) -> bool:
        return int(await self._script("renew", job_id, owner, repr(until.timestamp()))) == 1

    async def release_owner(self, owner: str) -> int:
        return int(await self._script("release", owner, repr(time.time())))

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
        removed = int(await self._script("delete", job_id)) == 1
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
            batch = await self._call(
                self.r.zrevrangebyscore(source, top, "-inf", start=0, num=200, withscores=True)
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
        seq = await self._call(self.r.hget(self.keys.job(job.id), "seq"))
        if seq is None:
            return None
        count = await self._call(self.r.zcount(self.keys.state("queued"), "-inf", seq))
        return int(count) or None

    # --- deliveries --------------------------------------------------------------------

    async def deliveries_for(self, job_id: str) -> list[Delivery]:
        rows = await self._call(self.r.hvals(self.keys.deliveries(job_id)))
        found = [delivery_from_dict(json.loads(r)) for r in rows]
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
        rows = await self._script(
            "claim_dl", repr(now.timestamp()), repr(now.timestamp() + lease_s), limit, owner
        )
        return [delivery_from_dict(json.loads(r)) for r in rows]

    async def update_delivery(self, delivery: Delivery, *, owner: str | None) -> None:
        await self._script(
            "update_dl",
            delivery.job_id,
            _field(delivery),
            dumps(delivery_to_dict(delivery)),
            delivery.status.value,
            _ts(delivery.next_attempt_at) or "0",
            owner or "",
        )

    # --- the provider request budget, shared by every instance (services.SharedBudget) ----

    async def budget_take(self, section: str, rate: float, burst: int = 1) -> float:
        """Take one request from ``section``'s budget (``rate`` per second, up to ``burst`` at
        once): 0 when taken, else the seconds to wait before asking again."""
        step = 1_000_000 / rate
        waited = await self._script("take", section, repr(step), repr(step * (burst - 1)))
        return max(0, int(waited)) / 1_000_000

    async def budget_pause(self, section: str, seconds: float) -> float:
        """Hold every instance's requests for ``section`` for ``seconds`` (0: only look);
        return the seconds the pause still holds."""
        micros = max(0, int(seconds * 1_000_000))
        return max(0, int(await self._script("pause", section, micros))) / 1_000_000

    # --- small shared values -----------------------------------------------------------

    async def get_or_create_secret(self, name: str, factory_value: str) -> str:
        await self._call(self.r.hsetnx(self.keys.meta, name, factory_value))
        value = await self._call(self.r.hget(self.keys.meta, name))
        return str(value)

    async def use_once(self, token: str, expires_at: datetime) -> bool:
        ms = max(1, int(expires_at.timestamp() * 1000))
        done = await self._call(self.r.set(self.keys.used(token), "1", nx=True, pxat=ms))
        return bool(done)

    async def put_session(self, session_id: str, data: Mapping[str, Any]) -> None:
        await self._call(self.r.set(Keys.session(session_id), dumps(dict(data))))

    async def get_session(self, session_id: str) -> Mapping[str, Any] | None:
        key = Keys.session(session_id)
        kind = await self._call(self.r.type(key))
        if kind == "hash":
            return dict(await self._call(self.r.hgetall(key)))
        raw = await self._call(self.r.get(key)) if kind == "string" else None
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else {"value": value}

    async def delete_session(self, session_id: str) -> None:
        await self._call(self.r.delete(Keys.session(session_id)))
