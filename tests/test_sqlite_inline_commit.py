"""The SQLite store commits a group of creates on the event loop's thread when the write
lock is free at once, hands it to the writer thread when it is not, and keeps the WAL
checkpointed (stores/sqlite.py ``_commit_here``)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path

from tests.support.factories import make_job
from webhook_poller.stores import sqlite as sqlite_store
from webhook_poller.stores.sqlite import SqliteJobStore


async def _open(path: Path) -> SqliteJobStore:
    store = SqliteJobStore({"url": f"sqlite:///{path}"})
    await store.open()
    return store


def _threads_of_inserts(store: SqliteJobStore) -> list[str]:
    """Record the thread each job INSERT runs on (through the connections' trace hook)."""
    names: list[str] = []

    def trace(sql: str) -> None:
        if sql.startswith("INSERT INTO jobs"):
            names.append(threading.current_thread().name)

    for db in (store._db, store._wdb):
        assert db is not None
        db.set_trace_callback(trace)
    return names


async def test_creates_commit_on_the_loop_thread_when_the_lock_is_free(tmp_path: Path):
    store = await _open(tmp_path / "jobs.db")
    try:
        names = _threads_of_inserts(store)
        jobs = [make_job() for _ in range(5)]
        results = await asyncio.gather(*(store.create(job) for job in jobs))
        assert all(created for _, created in results)
        assert set(names) == {threading.current_thread().name}
        again, created = await store.create(make_job(task_id=jobs[0].task_id))
        assert not created and again.id == jobs[0].id
        assert (await store.get(jobs[4].id)) is not None
    finally:
        await store.close()


async def test_creates_wait_on_the_writer_thread_while_another_process_writes(tmp_path: Path):
    """Another connection holds the write lock: the batch is not tried on the loop again
    and again; it goes to the writer thread, which waits for the lock, and is stored."""
    path = tmp_path / "jobs.db"
    store = await _open(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        names = _threads_of_inserts(store)
        other.execute("BEGIN IMMEDIATE")
        job = make_job()
        pending = asyncio.ensure_future(store.create(job))
        await asyncio.sleep(0.3)
        assert not pending.done()  # waits for the lock, the loop is not blocked
        other.execute("COMMIT")
        stored, created = await asyncio.wait_for(pending, 10)
        assert created and stored.id == job.id
        assert names == ["sqlite-writer"]
    finally:
        other.close()
        await store.close()


async def test_inline_creates_keep_the_wal_checkpointed(tmp_path: Path, monkeypatch):
    """The loop's connection never checkpoints itself; the writer thread does it every
    CHECKPOINT_PAGES estimated pages, and the WAL starts over instead of growing."""
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_PAGES", 200)
    path = tmp_path / "jobs.db"
    store = await _open(path)
    try:
        for _ in range(60):
            await asyncio.gather(*(store.create(make_job()) for _ in range(32)))
        wal = await asyncio.to_thread(os.path.getsize, f"{path}-wal")
        # 1,920 creates wrote well over 4,000 pages (16 MiB) of WAL; a checkpoint every
        # ~200 pages keeps the file at a few hundred pages
        assert wal < 4 * 1024 * 1024, wal
    finally:
        await store.close()
