"""Store schema versions (issue 11, item 4): a store written by the release before versions
existed is migrated and reads back whole; a store newer than this code is refused at open;
the Redis scripts are package files taking one JSON argument.

The release stores are fixtures made with that release's code (tests/fixtures/
make_release_stores.py): a SQLite dump and a Redis key dump holding a queued job, a job
leased by an instance of that release, a finished job with a pending delivery, the link
secret and a session."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.redis_server import RedisServer
from tests.support.service import ServiceProcess, base_config
from webhook_poller.errors import StoreSchemaError
from webhook_poller.model import DeliveryStatus, JobState, utcnow
from webhook_poller.stores import redis as redis_store
from webhook_poller.stores import sqlite as sqlite_store
from webhook_poller.stores.base import BaseJobStore
from webhook_poller.stores.redis import RedisJobStore
from webhook_poller.stores.sqlite import SqliteJobStore

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def user_version(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("PRAGMA user_version").fetchone()[0])
    finally:
        con.close()


def release_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "release.db"
    con = sqlite3.connect(path)
    con.executescript((FIXTURES / "sqlite_release.sql").read_text())
    con.close()
    assert user_version(path) == 0
    return path


def load_release_redis(server: RedisServer) -> None:
    server.flush()
    client = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)
    try:
        for key, value in json.loads((FIXTURES / "redis_release.json").read_text()).items():
            if "string" in value:
                client.set(key, value["string"])
            elif "hash" in value:
                client.hset(key, mapping=value["hash"])
            else:
                client.zadd(key, dict(value["zset"]))
    finally:
        client.close()


async def assert_release_data_intact(store: BaseJobStore) -> None:
    """Everything the release stored reads back and keeps working under this code."""
    jobs, cursor = await store.list_jobs(limit=10)
    assert cursor is None
    by_task = {job.task_id: job for job in jobs}
    assert set(by_task) == {"release-queued", "release-leased", "release-done"}
    leased = by_task["release-leased"]
    assert leased.lease_owner == "instance-old"
    done = by_task["release-done"]
    assert done.state is JobState.SUCCEEDED
    assert await store.find_by_task("demo", "release-queued") == by_task["release-queued"]
    assert await store.get_or_create_secret("link_secret", "new-value") == "release-secret"
    assert await store.get_session("sess-1") == {"chatId": 42}
    (delivery,) = await store.deliveries_for(done.id)
    assert delivery.status is DeliveryStatus.PENDING
    # The expired lease of the old instance is reclaimed, the queued job claimed.
    claimed = await store.claim_due("instance-new", utcnow(), 30, 10)
    assert {job.task_id for job in claimed} == {"release-queued", "release-leased"}
    assert next(j for j in claimed if j.id == leased.id).reclaims == leased.reclaims + 1
    (sent,) = await store.claim_deliveries("instance-new", utcnow(), 30, 10)
    assert sent.webhook_id == delivery.webhook_id
    assert await store.count_by_state() == {"queued": 2, "succeeded": 1}


# --- SQLite ------------------------------------------------------------------------------


async def test_sqlite_release_database_is_migrated_and_reads_back(tmp_path: Path):
    path = release_sqlite(tmp_path)
    store = SqliteJobStore({"url": f"sqlite:///{path}"})
    await store.open()
    try:
        assert store.schema_version == len(sqlite_store.MIGRATIONS) >= 1
        assert user_version(path) == store.schema_version
        await assert_release_data_intact(store)
    finally:
        await store.close()
    reopened = SqliteJobStore({"url": f"sqlite:///{path}"})
    await reopened.open()  # already current: nothing to do, nothing lost
    try:
        assert user_version(path) == reopened.schema_version
        assert len((await reopened.list_jobs())[0]) == 3
    finally:
        await reopened.close()


async def test_sqlite_fresh_database_gets_the_current_version(tmp_path: Path):
    path = tmp_path / "new.db"
    store = SqliteJobStore({"url": f"sqlite:///{path}"})
    await store.open()
    await store.close()
    assert user_version(path) == len(sqlite_store.MIGRATIONS)


async def test_sqlite_newer_schema_is_refused_at_open(tmp_path: Path):
    path = tmp_path / "future.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE later_layout (x)")
    con.execute(f"PRAGMA user_version = {len(sqlite_store.MIGRATIONS) + 1}")
    con.commit()
    con.close()
    store = SqliteJobStore({"url": f"sqlite:///{path}"})
    with pytest.raises(StoreSchemaError) as caught:
        await store.open()
    message = str(caught.value)
    assert f"schema version {len(sqlite_store.MIGRATIONS) + 1}" in message
    assert str(path) in message
    assert store._db is None  # closed again: nothing half-open stays behind
    assert user_version(path) == len(sqlite_store.MIGRATIONS) + 1
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert tables == {"later_layout"}  # nothing of ours written into a layout we do not know


def test_service_refuses_to_start_on_a_newer_sqlite_schema(tmp_path: Path):
    """The service exits at start-up, the log names the store and both versions, and the
    database is left exactly as it was."""
    cfg = base_config(tmp_path)
    path = tmp_path / "jobs.db"
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 77")
    con.commit()
    con.close()
    service = ServiceProcess(cfg, tmp_path)
    with pytest.raises(AssertionError, match="service exited"):
        service.start()
    assert service.proc is not None
    assert service.proc.wait(timeout=20) != 0
    service.kill()
    logs = service.logs()
    assert "StoreSchemaError" in logs
    assert f"{path} has schema version 77, newer than version" in logs
    assert user_version(path) == 77
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    con.close()


def add_flag(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO meta (name, value) VALUES ('flag', 'migrated')")


class NextReleaseStore(SqliteJobStore):
    """What a later release does: append migrations (SQL, then a function)."""

    migrations = (
        *sqlite_store.MIGRATIONS,
        "CREATE TABLE extra (x TEXT); CREATE INDEX extra_x ON extra(x)",
        add_flag,
    )


async def test_sqlite_migrations_apply_in_order_from_the_release(tmp_path: Path):
    path = release_sqlite(tmp_path)
    store = NextReleaseStore({"url": f"sqlite:///{path}"})
    await store.open()
    try:
        assert user_version(path) == len(sqlite_store.MIGRATIONS) + 2
        assert await store.get_or_create_secret("flag", "not-migrated") == "migrated"
        await assert_release_data_intact(store)
    finally:
        await store.close()
    # The release's code now refuses the database the next release migrated.
    with pytest.raises(StoreSchemaError):
        await SqliteJobStore({"url": f"sqlite:///{path}"}).open()


def broken(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE half_done (x)")
    raise RuntimeError("migration bug")


class BrokenMigrationStore(SqliteJobStore):
    migrations = (*sqlite_store.MIGRATIONS, broken)


async def test_sqlite_failed_migration_leaves_the_previous_version(tmp_path: Path):
    path = release_sqlite(tmp_path)
    store = BrokenMigrationStore({"url": f"sqlite:///{path}"})
    with pytest.raises(RuntimeError, match="migration bug"):
        await store.open()
    assert store._db is None
    assert user_version(path) == len(sqlite_store.MIGRATIONS)  # version 1 done, 2 rolled back
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert "half_done" not in tables


# --- Redis -------------------------------------------------------------------------------


@pytest.fixture
async def release_redis(redis_server: RedisServer) -> AsyncIterator[RedisServer]:
    load_release_redis(redis_server)
    yield redis_server
    redis_server.flush()


def schema_key(server: RedisServer) -> str | None:
    client = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)
    try:
        value = client.get("wp:schema")
        return None if value is None else str(value)
    finally:
        client.close()


@pytest.mark.redis
async def test_redis_release_store_is_migrated_and_reads_back(release_redis: RedisServer):
    assert schema_key(release_redis) is None
    store = RedisJobStore({"url": release_redis.url})
    await store.open()
    try:
        assert store.schema_version == len(redis_store.MIGRATIONS) >= 1
        assert schema_key(release_redis) == str(store.schema_version)
        await assert_release_data_intact(store)
    finally:
        await store.close()


@pytest.mark.redis
async def test_redis_newer_schema_is_refused_at_open(release_redis: RedisServer):
    newer = len(redis_store.MIGRATIONS) + 1
    client = redis.Redis(host="127.0.0.1", port=release_redis.port)
    client.set("wp:schema", newer)
    client.close()
    store = RedisJobStore({"url": release_redis.url})
    with pytest.raises(StoreSchemaError) as caught:
        await store.open()
    assert f"schema version {newer}" in str(caught.value)
    assert "'wp:'" in str(caught.value)
    assert store._redis is None
    assert schema_key(release_redis) == str(newer)


def test_redis_store_names_its_place_without_credentials():
    store = RedisJobStore({"url": "redis://user:hunter2@10.0.0.5:6380/2", "key_prefix": "x:"})
    assert "hunter2" not in store._where()
    assert "10.0.0.5:6380/2" in store._where()


@pytest.mark.redis
async def test_redis_migrations_apply_in_order(release_redis: RedisServer):
    ran: list[int] = []

    def step(n: int) -> Callable[[RedisJobStore], Awaitable[None]]:
        async def migrate(store: RedisJobStore) -> None:
            ran.append(n)
            await store.r.set(f"{store.keys.prefix}migrated:{n}", "1")

        return migrate

    class NextRelease(RedisJobStore):
        migrations = (*redis_store.MIGRATIONS, step(2), step(3))

    store = NextRelease({"url": release_redis.url})
    await store.open()
    await store.close()
    assert ran == [2, 3]
    assert schema_key(release_redis) == str(len(redis_store.MIGRATIONS) + 2)
    again = NextRelease({"url": release_redis.url})
    await again.open()  # current: nothing runs twice
    try:
        assert ran == [2, 3]
        await assert_release_data_intact(again)
    finally:
        await again.close()


@pytest.mark.redis
async def test_redis_schema_check_waits_for_an_unreachable_redis(tmp_path: Path):
    """Redis away at start-up: open succeeds (the service starts, not ready), and the first
    ping that reaches Redis checks the schema, so a newer one is still never written to."""
    server = RedisServer(tmp_path / "redis")
    store = RedisJobStore({"url": server.url})
    await store.open()
    try:
        assert await store.ping() is False
        server.start()
        client = redis.Redis(host="127.0.0.1", port=server.port)
        client.set("wp:schema", len(redis_store.MIGRATIONS) + 5)
        client.close()
        assert await store.ping() is False  # reachable, but refused: never ready
        client = redis.Redis(host="127.0.0.1", port=server.port)
        client.delete("wp:schema")
        client.close()
        assert await store.ping() is True
        assert schema_key(server) == str(store.schema_version)
    finally:
        await store.close()
        server.stop()


# --- the Lua scripts ---------------------------------------------------------------------


def test_redis_scripts_are_package_files_taking_one_json_argument():
    lua = Path(redis_store.__file__).parent / "lua"
    assert sorted(p.stem for p in lua.glob("*.lua")) == sorted(redis_store.SCRIPTS)
    for name in redis_store.SCRIPTS:
        source = redis_store.script_source(name)
        assert "cjson.decode(ARGV[1])" in source, name
        assert not re.search(r"ARGV\[[2-9]", source), name
        assert "KEYS[" not in source, name


def test_pyproject_ships_the_lua_scripts():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    data: dict[str, Any] = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["webhook_poller.stores"]
    assert any((root / "webhook_poller" / "stores").glob(p) for p in patterns)
    assert "lua/*.lua" in patterns
