"""SQLite job store: the embedded default, durable against ``kill -9``.

WAL journal with ``synchronous=NORMAL``: a committed transaction survives the process being
killed (only a power cut can lose the last commits). Every multi-statement write runs in
``BEGIN IMMEDIATE`` under one lock, and the claim is a single ``UPDATE ... RETURNING``, so two
processes on one file never claim the same job (``serve --workers N``). Writes go through one
connection under that lock; reads through a second one, each run to its end in one hand-over
to the driver's thread. Scale-out across machines is the Redis store's job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import aiosqlite

from ..errors import ConfigError, LeaseLost, StoreUnavailable
from ..interfaces import PluginContext
from ..model import Delivery, Job, dedupe_key, indexed_task_ids
from .base import BaseJobStore, SaveItem
from .codec import dt, ts

#: Schema version 1: the layout of the releases before versions were recorded. Every
#: statement is IF NOT EXISTS, so on such a database (user_version 0) it only adds the
#: version stamp. Never edit a released migration: append a new one to MIGRATIONS.
_V1 = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    dedupe_key TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    model TEXT NOT NULL,
    state TEXT NOT NULL,
    active INTEGER NOT NULL,
    created_at REAL NOT NULL,
    due_at REAL NOT NULL,
    lease_owner TEXT,
    lease_expires_at REAL,
    version INTEGER NOT NULL,
    reclaims INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs(due_at) WHERE active = 1;
CREATE INDEX IF NOT EXISTS jobs_session ON jobs(session_id);
CREATE INDEX IF NOT EXISTS jobs_lease_owner ON jobs(lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS deliveries (
    job_id TEXT NOT NULL,
    run INTEGER NOT NULL,
    event TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    next_attempt_at REAL,
    lease_owner TEXT,
    lease_expires_at REAL,
    body TEXT NOT NULL,
    PRIMARY KEY (job_id, run, event, target)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(next_attempt_at) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS task_index (
    provider TEXT NOT NULL, task_id TEXT NOT NULL, job_id TEXT NOT NULL,
    PRIMARY KEY (provider, task_id)
);
CREATE INDEX IF NOT EXISTS task_index_job ON task_index(job_id);
CREATE TABLE IF NOT EXISTS used_tokens (token TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY, data TEXT NOT NULL, updated_at REAL NOT NULL
);
"""

#: A migration: SQL run as one script, or a function given the connection; each runs in the
#: transaction that also sets ``PRAGMA user_version`` to its (1-based) position.
Migration = str | Callable[[aiosqlite.Connection], Awaitable[None]]

#: Every schema version in order; the store's version is how many of them it has applied.
MIGRATIONS: tuple[Migration, ...] = (_V1,)


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db`` -> ./relative.db; ``sqlite:////abs.db`` -> /abs.db."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ConfigError(f"store.url {url!r} is not a sqlite:/// URL")
    rest = url[len(prefix) :]
    if not rest:
        raise ConfigError("store.url names no database file")
    return Path(rest)


class SqliteJobStore(BaseJobStore):
    """Job store on one SQLite file. Options: ``url`` (sqlite:///path)."""

    backend: ClassVar[str] = "SQLite"
    migrations: ClassVar[tuple[Migration, ...]] = MIGRATIONS

    def __init__(self, options: Mapping[str, Any], context: PluginContext | None = None) -> None:
        super().__init__()
        self.path = sqlite_path(str(options["url"]))
        self._db: aiosqlite.Connection | None = None
        self._wdb: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    # --- lifecycle and schema ---------------------------------------------------------

    async def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        wdb = await self._connection()
        try:
            await self._enable_wal(wdb)
        except BaseException:
            await wdb.close()
            raise
        self._wdb = wdb
        self._db = await self._connection()

    @staticmethod
    async def _enable_wal(db: aiosqlite.Connection, wait_s: float = 10.0) -> None:
        """Switch a new file to WAL. The switch needs the file to itself and SQLite answers
        "database is locked" at once, without the busy timeout, while another process opens
        the same new file; once one of them has switched, the pragma is a no-op for the rest.
        The pragma's answer is read to its end: a statement left open would hold the lock
        the next connection needs."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            try:
                await db.execute_fetchall("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.02)

    async def _connection(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        # first, so that N processes opening a new file at once wait for each other
        await db.execute("PRAGMA busy_timeout=10000")
        await db.execute("PRAGMA synchronous=NORMAL")
        return db

    async def close(self) -> None:
        for name in ("_db", "_wdb"):
            db = getattr(self, name)
            if db is not None:
                setattr(self, name, None)
                await db.close()

    async def _ping(self) -> bool:
        try:
            await self._read("SELECT 1")
        except Exception:
            return False
        return True

    def _where(self) -> str:
        return str(self.path)

    async def _read_schema_version(self) -> int:
        rows = await self._read("PRAGMA user_version")
        return int(rows[0][0]) if rows else 0

    async def _migrate_to(self, version: int) -> None:
        async with self._tx() as db:
            cur = await db.execute("PRAGMA user_version")  # another process may be first
            stamp = list(await cur.fetchall())
            if stamp and int(stamp[0][0]) >= version:
                return
            step = self.migrations[version - 1]
            if isinstance(step, str):
                for statement in _statements(step):  # executescript would COMMIT for us
                    await db.execute(statement)
            else:
                await step(db)
            await db.execute(f"PRAGMA user_version = {int(version)}")

    async def _read(self, sql: str, args: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        """One read, run to its end in one hand-over to the driver's thread: no statement
        stays open between two awaits, so every read sees the latest commit, also one made
        by the writing connection or another process."""
        return list(await self.db.execute_fetchall(sql, args))

    @property
    def db(self) -> aiosqlite.Connection:
        """The connection for reads: they never wait, and never hold up a writer."""
        if self._db is None:
            raise StoreUnavailable("the SQLite store is not open")
        return self._db

    @property
    def wdb(self) -> aiosqlite.Connection:
        """The connection for writes, used only under ``self._lock``, and every statement on
        it is read to the end. A read left open on a writing connection pins an old WAL
        snapshot, and once another process (``serve --workers N``) commits, that
        connection's next write fails at once with "database is locked" (SQLITE_BUSY_SNAPSHOT,
        which no busy timeout waits out)."""
        if self._wdb is None:
            raise StoreUnavailable("the SQLite store is not open")
        return self._wdb

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            db = self.wdb
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    # --- jobs ------------------------------------------------------------------------

    @classmethod
    def _row_values(cls, job: Job) -> tuple[Any, ...]:
        return (
            job.state.value,
            1 if cls._is_active(job) else 0,
            ts(job.due_at),
            job.lease_owner,
            ts(job.lease_expires_at),
            cls._encode_job(job),
        )

    @classmethod
    def _job(cls, row: sqlite3.Row) -> Job:
        return cls._decode_job(
            row["body"],
            version=row["version"],
            lease_owner=row["lease_owner"],
            lease_expires_at=row["lease_expires_at"],
            due_at=row["due_at"],
            reclaims=row["reclaims"],
        )

    async def _create_batch(self, jobs: list[Job]) -> list[tuple[Job | None, bool]]:
        """Insert a batch in one transaction; a dedupe key already taken keeps its job."""
        rows = []
        for job in jobs:
            state, active, due, owner, expires, body = self._row_values(job)
            rows.append(
                (
                    job.id,
                    job.dedupe_key,
                    job.session_id,
                    job.model,
                    state,
                    active,
                    ts(job.created_at),
                    due,
                    owner,
                    expires,
                    job.version,
                    body,
                )
            )
        keys = sorted({job.dedupe_key for job in jobs})
        async with self._tx() as db:
            await db.executemany(
                "INSERT INTO jobs (id, dedupe_key, session_id, model, state, active, created_at,"
                " due_at, lease_owner, lease_expires_at, version, body)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(dedupe_key) DO NOTHING",
                rows,
            )
            marks = ",".join("?" * len(keys))
            cur = await db.execute(
                f"SELECT id, dedupe_key FROM jobs WHERE dedupe_key IN ({marks})", keys
            )
            owners = {row["dedupe_key"]: row["id"] for row in await cur.fetchall()}
            for job in jobs:
                if owners[job.dedupe_key] == job.id:
                    await self._index_tasks(db, job)
            taken = {owners[job.dedupe_key] for job in jobs if owners[job.dedupe_key] != job.id}
            known: dict[str, Job] = {}
            for job_id in taken:
                cur = await db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,))
                holder = list(await cur.fetchall())
                assert holder
                known[job_id] = self._job(holder[0])
        found: list[tuple[Job | None, bool]] = [
            (job, True)
            if owners[job.dedupe_key] == job.id
            else (known[owners[job.dedupe_key]], False)
            for job in jobs
        ]
        return found

    async def get(self, job_id: str) -> Job | None:
        rows = await self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        row = rows[0] if rows else None
        return self._job(row) if row else None

    async def find_by_task(self, provider: str, task_id: str) -> Job | None:
        """The job polling ``task_id`` at adapter ``provider`` (the intake dedupe key)."""
        cur = await self.db.execute(
            "SELECT * FROM jobs WHERE dedupe_key = ?", (dedupe_key(provider, task_id),)
        )
        row = await cur.fetchone()
        if row is None:
            cur = await self.db.execute(
                "SELECT jobs.* FROM task_index JOIN jobs ON jobs.id = task_index.job_id"
                " WHERE task_index.provider = ? AND task_index.task_id = ?",
                (provider, task_id),
            )
            row = await cur.fetchone()
        return self._job(row) if row else None

    @staticmethod
    async def _index_tasks(db: aiosqlite.Connection, job: Job) -> None:
        tasks = indexed_task_ids(job)
        if tasks:
            await db.executemany(
                "INSERT OR IGNORE INTO task_index (provider, task_id, job_id) VALUES (?,?,?)",
                [(job.provider, task, job.id) for task in tasks],
            )

    async def _save_batch(self, items: list[SaveItem]) -> list[Job | LeaseLost]:
        """Every compare-and-set of the batch in one transaction; a lost lease fails alone."""
        results: list[Job | LeaseLost] = []
        async with self._tx() as db:
            for job, expected_version, deliveries in items:
                new = dataclasses.replace(job, version=expected_version + 1)
                state, active, due, owner, expires, body = self._row_values(new)
                cur = await db.execute(
                    "UPDATE jobs SET state=?, active=?, due_at=?, lease_owner=?,"
                    " lease_expires_at=?, reclaims=?, body=?, version=version+1"
                    " WHERE id=? AND version=?",
                    (
                        state,
                        active,
                        due,
                        owner,
                        expires,
                        new.reclaims,
                        body,
                        job.id,
                        expected_version,
                    ),
                )
                if cur.rowcount != 1:
                    results.append(LeaseLost(job.id))
                    continue
                for delivery in deliveries:
                    await self._insert_delivery(db, delivery)
                await self._index_tasks(db, new)
                results.append(new)
        return results

    async def claim_due(self, owner: str, now: datetime, lease_s: float, limit: int) -> list[Job]:
        now_ts = now.timestamp()
        async with self._lock:
            cur = await self.wdb.execute(
                "UPDATE jobs SET reclaims=reclaims+(lease_owner IS NOT NULL),"
                " lease_owner=?, lease_expires_at=?, version=version+1 WHERE seq IN"
                " (SELECT seq FROM jobs WHERE active=1 AND due_at<=?"
                "  AND (lease_owner IS NULL OR lease_expires_at<=?) ORDER BY due_at LIMIT ?)"
                " RETURNING *",
                (owner, now_ts + lease_s, now_ts, now_ts, limit),
            )
            rows = await cur.fetchall()
        return sorted((self._job(r) for r in rows), key=lambda j: j.due_at)

    async def renew_lease(self, job_id: str, owner: str, until: datetime) -> bool:
        async with self._lock:
            cur = await self.wdb.execute(
                "UPDATE jobs SET lease_expires_at=? WHERE id=? AND lease_owner=?",
                (until.timestamp(), job_id, owner),
            )
        return cur.rowcount == 1

    async def release_owner(self, owner: str) -> int:
        async with self._lock:
            cur = await self.wdb.execute(
                "UPDATE jobs SET lease_owner=NULL, lease_expires_at=NULL WHERE lease_owner=?",
                (owner,),
            )
            await self.wdb.execute(
                "UPDATE deliveries SET lease_owner=NULL, lease_expires_at=NULL WHERE lease_owner=?",
                (owner,),
            )
        return cur.rowcount

    async def next_due_at(self) -> datetime | None:
        rows = await self._read("SELECT MIN(due_at) FROM jobs WHERE active=1")
        row = rows[0] if rows else None
        due = row[0] if row else None
        rows = await self._read(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE status='pending'"
        )
        row = rows[0] if rows else None
        due2 = row[0] if row else None
        candidates = [d for d in (due, due2) if d is not None]
        return dt(min(candidates)) if candidates else None

    async def delete(self, job_id: str) -> bool:
        async with self._tx() as db:
            cur = await db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
            await db.execute("DELETE FROM deliveries WHERE job_id=?", (job_id,))
            await db.execute("DELETE FROM task_index WHERE job_id=?", (job_id,))
        return cur.rowcount == 1

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
        where, args = [], []  # type: list[str], list[Any]
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if session_id is not None:
            where.append("session_id=?")
            args.append(session_id)
        if model is not None:
            where.append("model=?")
            args.append(model)
        if since is not None:
            where.append("created_at>=?")
            args.append(since.timestamp())
        if cursor:
            where.append("seq<?")
            args.append(int(cursor))
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit + 1)
        rows = await self._read(sql, args)
        next_cursor = str(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return [self._job(r) for r in rows[:limit]], next_cursor

    async def count_by_state(self) -> dict[str, int]:
        rows = await self._read("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {row[0]: row[1] for row in rows}

    async def queue_position(self, job: Job) -> int | None:
        """1-based FIFO position of a queued job among queued jobs."""
        rows = await self._read(
            "SELECT COUNT(*) FROM jobs WHERE state='queued' AND seq <="
            " (SELECT seq FROM jobs WHERE id=?)",
            (job.id,),
        )
        row = rows[0] if rows else None
        return int(row[0]) if row and row[0] else None

    # --- deliveries --------------------------------------------------------------------

    @classmethod
    async def _insert_delivery(cls, db: aiosqlite.Connection, delivery: Delivery) -> None:
        await db.execute(
            "INSERT INTO deliveries (job_id, run, event, target, status, next_attempt_at, body)"
            " VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
            (
                delivery.job_id,
                delivery.run,
                delivery.event.value,
                delivery.target,
                delivery.status.value,
                ts(delivery.next_attempt_at),
                cls._encode_delivery(delivery),
            ),
        )

    async def deliveries_for(self, job_id: str) -> list[Delivery]:
        rows = await self._read(
            "SELECT body FROM deliveries WHERE job_id=? ORDER BY rowid", (job_id,)
        )
        return [self._decode_delivery(r[0]) for r in rows]

    async def claim_deliveries(
        self, owner: str, now: datetime, lease_s: float, limit: int
    ) -> list[Delivery]:
        now_ts = now.timestamp()
        async with self._lock:
            cur = await self.wdb.execute(
                "UPDATE deliveries SET lease_owner=?, lease_expires_at=? WHERE rowid IN"
                " (SELECT rowid FROM deliveries WHERE status='pending' AND next_attempt_at<=?"
                "  AND (lease_owner IS NULL OR lease_expires_at<=?)"
                "  ORDER BY next_attempt_at LIMIT ?) RETURNING body",
                (owner, now_ts + lease_s, now_ts, now_ts, limit),
            )
            rows = await cur.fetchall()
        return [self._decode_delivery(r[0]) for r in rows]

    async def update_delivery(self, delivery: Delivery, *, owner: str | None) -> None:
        async with self._lock:
            await self.wdb.execute(
                "UPDATE deliveries SET status=?, next_attempt_at=?, body=?, lease_owner=NULL,"
                " lease_expires_at=NULL WHERE job_id=? AND run=? AND event=? AND target=?"
                " AND (? IS NULL OR lease_owner IS NULL OR lease_owner=?)",
                (
                    delivery.status.value,
                    ts(delivery.next_attempt_at),
                    self._encode_delivery(delivery),
                    delivery.job_id,
                    delivery.run,
                    delivery.event.value,
                    delivery.target,
                    owner,
                    owner,
                ),
            )

    # --- small shared values (the shared logic is in BaseJobStore) ---------------------

    async def _meta_insert(self, name: str, value: str) -> None:
        async with self._lock:
            await self.wdb.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
                (name, value),
            )

    async def _meta_get(self, name: str) -> str | None:
        rows = await self._read("SELECT value FROM meta WHERE name=?", (name,))
        return str(rows[0][0]) if rows else None

    async def use_once(self, token: str, expires_at: datetime) -> bool:
        async with self._lock:
            await self.wdb.execute("DELETE FROM used_tokens WHERE expires_at < unixepoch()")
            cur = await self.wdb.execute(
                "INSERT INTO used_tokens (token, expires_at) VALUES (?, ?)"
                " ON CONFLICT(token) DO NOTHING",
                (token, expires_at.timestamp()),
            )
        return cur.rowcount == 1

    async def _write_session(self, session_id: str, text: str) -> None:
        async with self._lock:
            await self.wdb.execute(
                "INSERT INTO sessions (session_id, data, updated_at) VALUES (?,?,unixepoch())"
                " ON CONFLICT(session_id) DO UPDATE SET data=excluded.data,"
                " updated_at=excluded.updated_at",
                (session_id, text),
            )

    async def _read_session(self, session_id: str) -> str | None:
        rows = await self._read("SELECT data FROM sessions WHERE session_id=?", (session_id,))
        return str(rows[0][0]) if rows else None

    async def delete_session(self, session_id: str) -> None:
        async with self._lock:
            await self.wdb.execute("DELETE FROM sessions WHERE session_id=?", (session_id,))


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (none of ours holds a ';' in a literal)."""
    return [part.strip() for part in script.split(";") if part.strip()]
