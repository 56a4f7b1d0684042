"""Shared fixtures: clean logging per test, and a job store parametrized over backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from tests.support.redis_server import RedisServer
from tests.support.s3_server import MotoServer
from webhook_poller.interfaces import JobStore
from webhook_poller.stores.redis import RedisJobStore
from webhook_poller.stores.sqlite import SqliteJobStore

STORE_BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """Our own redis-server on a free port (append-only), shared by the session."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server():
    """moto's S3 emulator in server mode, in its own process, shared by the session."""
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _reset_structlog() -> None:
    """Each test starts from structlog's defaults so captured logs do not leak between tests."""
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


async def open_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> JobStore:
    """A fresh, empty, opened store of the given backend."""
    if backend == "sqlite":
        store: JobStore = SqliteJobStore({"url": f"sqlite:///{tmp_path}/jobs.db"})
    elif backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        store = RedisJobStore({"url": server.url})
    else:  # pragma: no cover - new backends register here
        raise ValueError(backend)
    await store.open()
    return store


@pytest.fixture(params=STORE_BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    """Every JobStore implementation, each fresh for the test."""
    opened = await open_store(request.param, tmp_path, request)
    try:
        yield opened
    finally:
        await opened.close()
