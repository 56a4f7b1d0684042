"""Restore the user's session when a job completes, the way the n8n template did.

Where it reads from: ``session.url`` (a Redis URL) when set, else the job store's Redis when
the store is Redis, else the job store's own session table (``PUT /sessions/{id}``). In
Redis the value at ``session.key_template`` may be a JSON string or a hash. The reads of
the deliveries sent at once share round trips (a group commit, :mod:`.stores.batching`):
one pipeline asks every key's type, one more reads the keys that exist.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import structlog

from .stores.batching import GroupCommit

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .config import Settings
    from .interfaces import JobStore

log = structlog.get_logger(__name__)


class SessionSource:
    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings.session
        self.store = store
        url = settings.session.url
        if url is None and settings.store.url.startswith(("redis://", "rediss://", "unix://")):
            url = settings.store.url
        self.url = url
        self._redis: Redis | None = None
        self._reads: GroupCommit[str, Mapping[str, Any] | None] = GroupCommit(self._read_keys)

    async def open(self) -> None:
        if self.url:
            from redis.asyncio import Redis

            self._redis = Redis.from_url(self.url, decode_responses=True)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def key(self, session_id: str) -> str:
        return self.settings.key_template.replace("{sessionId}", session_id)

    async def get(self, session_id: str) -> Mapping[str, Any] | None:
        if self._redis is None:
            return await self.store.get_session(session_id)
        return await self._reads.submit(self.key(session_id))

    async def _read_keys(self, keys: list[str]) -> list[Mapping[str, Any] | Exception | None]:
        """The sessions at ``keys``: one round trip for their types, one for the values of
        those that exist (a hash, or a JSON string); a key whose type changed in between
        fails alone (its caller gets the error, as a lone read would have raised it)."""
        assert self._redis is not None
        unique = list(dict.fromkeys(keys))  # one read per session, however many deliveries
        kinds = self._redis.pipeline(transaction=False)
        for key in unique:
            kinds.type(key)
        found = [
            (key, kind)
            for key, kind in zip(unique, await kinds.execute(), strict=True)
            if kind in ("hash", "string")
        ]
        values: dict[str, Any] = {}
        if found:
            reads = self._redis.pipeline(transaction=False)
            for key, kind in found:
                if kind == "hash":
                    reads.hgetall(key)
                else:
                    reads.get(key)
            replies = await reads.execute(raise_on_error=False)
            values = {key: reply for (key, _), reply in zip(found, replies, strict=True)}
        kind_of = dict(found)
        return [self._decode(key, kind_of.get(key), values.get(key)) for key in keys]

    @staticmethod
    def _decode(key: str, kind: str | None, raw: Any) -> Mapping[str, Any] | Exception | None:
        if isinstance(raw, Exception):  # the pipeline's error for this key (WRONGTYPE)
            return raw
        if kind == "hash":
            # decode_responses=True: str keys and values, which redis-py's types cannot know
            return cast("dict[str, str]", raw)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            log.warning("session_unreadable", session_key=key)
            return None
        return value if isinstance(value, dict) else {"value": value}

    async def put(self, session_id: str, data: Mapping[str, Any]) -> None:
        if self._redis is None:
            await self.store.put_session(session_id, data)
        else:
            await self._redis.set(self.key(session_id), json.dumps(dict(data)))

    async def delete(self, session_id: str) -> None:
        if self._redis is None:
            await self.store.delete_session(session_id)
        else:
            await self._redis.delete(self.key(session_id))
