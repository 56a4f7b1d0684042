"""SessionSource on Redis: the reads of deliveries sent at once share two round trips."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from tests.support.unit_services import unit_config
from webhook_poller.config import settings_from_mapping
from webhook_poller.sessions import SessionSource
from webhook_poller.stores.sqlite import SqliteJobStore

pytestmark = pytest.mark.redis


async def test_concurrent_session_reads_share_two_pipelines(tmp_path: Path, redis_server):
    """A JSON string, a hash, a plain JSON value, unreadable text, a missing key, a key of
    another type and a repeated key, read at once: each caller gets its own answer, from
    one pipeline of types and one of values; a key of the wrong type for its read fails
    for its caller alone."""
    redis_server.flush()
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
    client.set("session:json", '{"chatId": 4242, "lang": "de"}')
    client.hset("session:hash", mapping={"chatId": "77"})
    client.set("session:plain", "12")
    client.set("session:bad", "{not json")
    client.rpush("session:list", "x")
    client.close()
    settings = settings_from_mapping(unit_config(tmp_path, session={"url": redis_server.url}))
    source = SessionSource(settings, SqliteJobStore({"url": f"sqlite:///{tmp_path}/j.db"}))
    await source.open()
    try:
        assert source._redis is not None
        pipelines = 0
        real = source._redis.pipeline

        def counting(*args, **kwargs):
            nonlocal pipelines
            pipelines += 1
            return real(*args, **kwargs)

        source._redis.pipeline = counting  # type: ignore[method-assign]
        ids = ["json", "hash", "plain", "bad", "missing", "list", "json"]
        got = await asyncio.gather(*(source.get(i) for i in ids))
        assert got == [
            {"chatId": 4242, "lang": "de"},
            {"chatId": "77"},
            {"value": 12},
            None,
            None,
            None,
            {"chatId": 4242, "lang": "de"},
        ]
        assert pipelines == 2
        # nothing found: one round trip
        pipelines = 0
        assert await asyncio.gather(source.get("x"), source.get("y")) == [None, None]
        assert pipelines == 1
        # a key that turns into a hash between its type and its read fails alone
        real_kinds = real(transaction=False)

        async def kinds_then_change(*args, **kwargs):
            found = await type(real_kinds).execute(real_kinds, *args, **kwargs)
            await source._redis.delete("session:json")  # type: ignore[union-attr]
            await source._redis.hset("session:json", "a", "1")  # type: ignore[union-attr]
            return found

        first = True

        def racing(*args, **kwargs):
            nonlocal first
            if first:
                first = False
                real_kinds.execute = kinds_then_change  # type: ignore[method-assign]
                return real_kinds
            return real(*args, **kwargs)

        source._redis.pipeline = racing  # type: ignore[method-assign]
        changed, hashed = await asyncio.gather(
            source.get("json"), source.get("hash"), return_exceptions=True
        )
        assert isinstance(changed, redis.exceptions.ResponseError)
        assert hashed == {"chatId": "77"}
    finally:
        await source.close()
