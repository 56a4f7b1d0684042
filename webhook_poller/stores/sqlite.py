"""SQLite job store: the embedded default, durable against ``kill -9``.

WAL journal with ``synchronous=NORMAL``: a committed transaction survives the process being
killed (only a power cut can lose the last commits). Every multi-statement write runs in
``BEGIN IMMEDIATE``, and the claim is a single ``UPDATE ... RETURNING``, so two processes on
one file never claim the same job (``serve --workers N``).

Threads: one writer thread owns the writing connection and runs a whole transaction (a
group commit of creates or saves, see ``batching.py``) in one hand-over from the event loop;
aiosqlite handed over each statement and each fetch. Indexed point reads (a job by id or
task, the next due time) run on the loop's own thread on a connection of their own, which
fails at once rather than wait when the file is busy, and then goes to the reader thread;
reads that scan (lists, counts) go to that reader thread too. Every read runs to its end in
one call. A group commit of creates (intake) also runs on the loop's thread when the file's
write lock is free at once: the loop waits for it anyway, and the hand-over to the writer
thread and back (two thread wake-ups, GIL hand-offs on a busy core) is what made the slow
tail of intake; when the lock is taken (another process, or this writer thread mid-write)
the batch goes to the writer thread as before. That connection never checkpoints on its
own: after about ``CHECKPOINT_PAGES`` pages of such commits the writer thread runs the
checkpoint SQLite would have run (passive), and until it is done creates go to the writer
thread behind it, so the checkpoint catches up and the WAL starts over as before, while
the loop never waits for a page copy or an fsync. Scale-out across machines is the Redis
store's job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import structlog

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

#: A migration: SQL run as one script, or a function given the (``sqlite3``) connection and
#: run on the writer thread; each runs in the transaction that also sets
#: ``PRAGMA user_version`` to its (1-based) position.
Migration = str | Callable[[sqlite3.Connection], None]

T = TypeVar("T")

#: Every schema version in order; the store's version is how many of them it has applied.
MIGRATIONS: tuple[Migration, ...] = (_V1,)

log = structlog.get_logger(__name__)

#: Largest create batch committed on the loop's thread (about 15 us a row); larger ones go
#: to the writer thread, so the loop is never held for long.
INLINE_BATCH_MAX = 64
#: WAL pages written on the loop's thread before the writer thread checkpoints (SQLite's
#: own ``wal_autocheckpoint`` default), estimated: about 8 pages a commit and 2 a row
#: (30,000 creates in batches of 32 wrote about 60,000 pages).
CHECKPOINT_PAGES = 1000


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
        self._db: sqlite3.Connection | None = None  # point reads, on the loop's thread
        self._wdb: sqlite3.Connection | None = None  # writes, on the writer thread only
        self._rdb: sqlite3.Connection | None = None  # longer reads, on the reader thread
        self._writer: _Thread | None = None
        self._reader: _Thread | None = None
        self._inline_pages = 0  # estimated, since the last checkpoint
        self._checkpoint: asyncio.Future[Any] | None = None  # running on the writer thread

    # --- lifecycle and schema ---------------------------------------------------------

    async def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = _Thread("sqlite-writer")
        self._reader = _Thread("sqlite-reader")
        try:
            self._wdb = await self._on(self._writer, lambda: self._connection(10.0))
            await self._enable_wal()
            self._rdb = await self._on(self._reader, lambda: self._connection(10.0))
            # a busy file makes a loop-thread read fail at once (and go to the reader
            # thread) rather than block the event loop in SQLite's busy handler; its
            # commits leave checkpoints to the writer thread (see _commit_here)
            self._db = self._connection(0.0)
            self._db.execute("PRAGMA wal_autocheckpoint=0")
        except BaseException:
            await self.close()
            raise

    @staticmethod
    async def _on(thread: _Thread, fn: Callable[[], T]) -> T:
        return await thread.call(fn)

    async def _enable_wal(self, wait_s: float = 10.0) -> None:
        """Switch a new file to WAL. The switch needs the file to itself and SQLite answers
        "database is locked" at once, without the busy timeout, while another process opens
        the same new file; once one of them has switched, the pragma is a no-op for the rest.
        The pragma's answer is read to its end: a statement left open would hold the lock
        the next connection needs."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            try:
                await self._write(lambda db: db.execute("PRAGMA journal_mode=WAL").fetchall())
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.02)

    def _connection(self, busy_timeout_s: float) -> sqlite3.Connection:
        # autocommit (isolation_level None): every transaction is an explicit BEGIN IMMEDIATE
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
        )
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    async def close(self) -> None:
        for name, pool in (("_wdb", self._writer), ("_rdb", self._reader), ("_db", None)):
            db = getattr(self, name)
            if db is None:
                continue
            setattr(self, name, None)
            if pool is None:
                db.close()
            else:  # after every hand-over already queued on that thread
                await self._on(pool, db.close)
        for thread in (self._writer, self._reader):
            if thread is not None:
                thread.stop()
        self._writer = self._reader = None

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
        def migrate(db: sqlite3.Connection) -> None:
            stamp = db.execute("PRAGMA user_version").fetchall()  # another process may be first
            if stamp and int(stamp[0][0]) >= version:
                return
            step = self.migrations[version - 1]
            if isinstance(step, str):
                for statement in _statements(step):  # executescript would COMMIT for us
                    db.execute(statement)
            else:
                step(db)
            db.execute(f"PRAGMA user_version = {int(version)}")

        await self._tx(migrate)

    # --- the hand-overs: one per transaction, reads on the loop when they are short --------

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the writer thread: a whole transaction (or one
        autocommit statement) in one hand-over, where aiosqlite made one per statement.
        The one thread also serializes this process's writes, so no lock is needed. Every
        statement on this connection is read to its end: a read left open pins an old WAL
        snapshot, and once another process (``serve --workers N``) commits, the next write
        fails at once with "database is locked" (SQLITE_BUSY_SNAPSHOT, which no busy
        timeout waits out)."""
        if self._writer is None or self._wdb is None:
            raise StoreUnavailable("the SQLite store is not open")
        db = self._wdb
        return await self._writer.call(lambda: fn(db))

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` on the writer thread; it has
        committed (WAL) when this returns, and rolled back if ``fn`` raised."""

        def run(db: sqlite3.Connection) -> T:
            self._begin(db)
            return _committed(db, fn)

        return await self._write(run)

    def _begin(self, db: sqlite3.Connection) -> None:
        """Take the file's write lock (waits up to the busy timeout for other processes)."""
        db.execute("BEGIN IMMEDIATE")

    def _commit_here(self, fn: Callable[[sqlite3.Connection], T], rows: int) -> T | None:
        """``fn`` (which returns a value, never ``None``) in a ``BEGIN IMMEDIATE``
        transaction on the loop thread's connection, for a write of ``rows`` rows that takes
        microseconds: its result once committed, ``None`` with nothing done when the write
        lock is not free at once or a checkpoint is running (the caller then hands the
        transaction to the writer thread, which waits for the lock, behind the checkpoint)."""
        db = self._db
        if db is None or self._writer is None:
            raise StoreUnavailable("the SQLite store is not open")
        if self._checkpoint is not None and not self._checkpoint.done():
            return None
        try:
            self._begin(db)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            return None
        result = _committed(db, fn)
        self._inline_pages += 8 + 2 * rows
        wdb = self._wdb
        if self._inline_pages >= CHECKPOINT_PAGES and wdb is not None:
            self._inline_pages = 0
            # not awaited: the loop goes on while the writer thread copies the pages
            checkpoint = "PRAGMA wal_checkpoint(PASSIVE)"
            self._checkpoint = self._writer.call(lambda: wdb.execute(checkpoint).fetchall())
            self._checkpoint.add_done_callback(_checkpoint_done)
        return result

    async def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """A read that may scan: run to its end in one hand-over to the reader thread, so
        no statement stays open and every read sees the latest commit, also one made by
        the writing connection or another process."""
        if self._reader is None or self._rdb is None:
            raise StoreUnavailable("the SQLite store is not open")
        db = self._rdb
        return await self._on(self._reader, lambda: db.execute(sql, args).fetchall())

    async def _point(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """An indexed point read (microseconds) on the loop's own thread, no hand-over.
        While another connection holds a lock this connection must wait for (a checkpoint,
        a WAL reset), it fails at once instead of blocking the loop, and the read goes to
        the reader thread, which waits out the busy timeout."""
        db = self._db
        if db is None:
            raise StoreUnavailable("the SQLite store is not open")
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        return await self._read(sql, args)

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

        def insert(db: sqlite3.Connection) -> tuple[dict[str, str], dict[str, Job]]:
            db.executemany(
                "INSERT INTO jobs (id, dedupe_key, session_id, model, state, active, created_at,"
                " due_at, lease_owner, lease_expires_at, version, body)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(dedupe_key) DO NOTHING",
                rows,
            )
            marks = ",".join("?" * len(keys))
            cur = db.execute(f"SELECT id, dedupe_key FROM jobs WHERE dedupe_key IN ({marks})", keys)
            owners = {row["dedupe_key"]: row["id"] for row in cur.fetchall()}
            for job in jobs:
                if owners[job.dedupe_key] == job.id:
                    self._index_tasks(db, job)
            taken = {owners[job.dedupe_key] for job in jobs if owners[job.dedupe_key] != job.id}
            known: dict[str, Job] = {}
            for job_id in taken:
                holder = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchall()
                assert holder
                known[job_id] = self._job(holder[0])
            return owners, known

        here = self._commit_here(insert, len(jobs)) if len(jobs) <= INLINE_BATCH_MAX else None
        owners, known = here if here is not None else await self._tx(insert)
        found: list[tuple[Job | None, bool]] = [
            (job, True)
            if owners[job.dedupe_key] == job.id
            else (known[owners[job.dedupe_key]], False)
            for job in jobs
        ]
        return found

    async def get(self, job_id: str) -> Job | None:
        rows = await self._point("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return self._job(rows[0]) if rows else None

    async def find_by_task(self, provider: str, task_id: str) -> Job | None:
        """The job polling ``task_id`` at adapter ``provider`` (the intake dedupe key)."""
        rows = await self._point(
            "SELECT * FROM jobs WHERE dedupe_key = ?", (dedupe_key(provider, task_id),)
        )
        if not rows:
            rows = await self._point(
                "SELECT jobs.* FROM task_index JOIN jobs ON jobs.id = task_index.job_id"
                " WHERE task_index.provider = ? AND task_index.task_id = ?",
                (provider, task_id),
            )
        return self._job(rows[0]) if rows else None

    @staticmethod
    def _index_tasks(db: sqlite3.Connection, job: Job) -> None:
        tasks = indexed_task_ids(job)
        if tasks:
            db.executemany(
                "INSERT OR IGNORE INTO task_index (provider, task_id, job_id) VALUES (?,?,?)",
                [(job.provider, task, job.id) for task in tasks],
            )

    async def _save_batch(self, items: list[SaveItem]) -> list[Job | LeaseLost]:
        """Every compare-and-set of the batch in one transaction; a lost lease fails alone."""

        def update(db: sqlite3.Connection) -> list[Job | LeaseLost]:
            results: list[Job | LeaseLost] = []
            for job, expected_version, deliveries in items:
                new = dataclasses.replace(job, version=expected_version + 1)
                state, active, due, owner, expires, body = self._row_values(new)
                cur = db.execute(
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
                    self._insert_delivery(db, delivery)
                self._index_tasks(db, new)
                results.append(new)
            return results

        return await self._tx(update)

    async def claim_due(self, owner: str, now: datetime, lease_s: float, limit: int) -> list[Job]:
        now_ts = now.timestamp()
        rows = await self._write(
            lambda db: db.execute(
                "UPDATE jobs SET reclaims=reclaims+(lease_owner IS NOT NULL),"
                " lease_owner=?, lease_expires_at=?, version=version+1 WHERE seq IN"
                " (SELECT seq FROM jobs WHERE active=1 AND due_at<=?"
                "  AND (lease_owner IS NULL OR lease_expires_at<=?) ORDER BY due_at LIMIT ?)"
                " RETURNING *",
                (owner, now_ts + lease_s, now_ts, now_ts, limit),
            ).fetchall()
        )
        return sorted((self._job(r) for r in rows), key=lambda j: j.due_at)

    async def renew_lease(self, job_id: str, owner: str, until: datetime) -> bool:
        cur = await self._write(
            lambda db: db.execute(
                "UPDATE jobs SET lease_expires_at=? WHERE id=? AND lease_owner=?",
                (until.timestamp(), job_id, owner),
            )
        )
        return cur.rowcount == 1

    async def release_owner(self, owner: str) -> int:
        def release(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "UPDATE jobs SET lease_owner=NULL, lease_expires_at=NULL WHERE lease_owner=?",
                (owner,),
            )
            db.execute(
                "UPDATE deliveries SET lease_owner=NULL, lease_expires_at=NULL WHERE lease_owner=?",
                (owner,),
            )
            return cur.rowcount

        return await self._tx(release)

    async def next_due_at(self) -> datetime | None:
        rows = await self._point("SELECT MIN(due_at) FROM jobs WHERE active=1")
        row = rows[0] if rows else None
        due = row[0] if row else None
        rows = await self._point(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE status='pending'"
        )
        row = rows[0] if rows else None
        due2 = row[0] if row else None
        candidates = [d for d in (due, due2) if d is not None]
        return dt(min(candidates)) if candidates else None

    async def delete(self, job_id: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            cur = db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
            db.execute("DELETE FROM deliveries WHERE job_id=?", (job_id,))
            db.execute("DELETE FROM task_index WHERE job_id=?", (job_id,))
            return cur.rowcount == 1

        return await self._tx(delete)

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
    def _insert_delivery(cls, db: sqlite3.Connection, delivery: Delivery) -> None:
        db.execute(
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
        rows = await self._point(
            "SELECT body FROM deliveries WHERE job_id=? ORDER BY rowid", (job_id,)
        )
        return [self._decode_delivery(r[0]) for r in rows]

    async def claim_deliveries(
        self, owner: str, now: datetime, lease_s: float, limit: int
    ) -> list[Delivery]:
        now_ts = now.timestamp()
        rows = await self._write(
            lambda db: db.execute(
                "UPDATE deliveries SET lease_owner=?, lease_expires_at=? WHERE rowid IN"
                " (SELECT rowid FROM deliveries WHERE status='pending' AND next_attempt_at<=?"
                "  AND (lease_owner IS NULL OR lease_expires_at<=?)"
                "  ORDER BY next_attempt_at LIMIT ?) RETURNING body",
                (owner, now_ts + lease_s, now_ts, now_ts, limit),
            ).fetchall()
        )
        return [self._decode_delivery(r[0]) for r in rows]

    async def update_delivery(self, delivery: Delivery, *, owner: str | None) -> None:
        args = (
            delivery.status.value,
            ts(delivery.next_attempt_at),
            self._encode_delivery(delivery),
            delivery.job_id,
            delivery.run,
            delivery.event.value,
            delivery.target,
            owner,
            owner,
        )
        await self._write(
            lambda db: db.execute(
                "UPDATE deliveries SET status=?, next_attempt_at=?, body=?, lease_owner=NULL,"
                " lease_expires_at=NULL WHERE job_id=? AND run=? AND event=? AND target=?"
                " AND (? IS NULL OR lease_owner IS NULL OR lease_owner=?)",
                args,
            )
        )

    # --- small shared values (the shared logic is in BaseJobStore) ---------------------

    async def _meta_insert(self, name: str, value: str) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
                (name, value),
            )
        )

    async def _meta_get(self, name: str) -> str | None:
        rows = await self._point("SELECT value FROM meta WHERE name=?", (name,))
        return str(rows[0][0]) if rows else None

    async def use_once(self, token: str, expires_at: datetime) -> bool:
        def use(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM used_tokens WHERE expires_at < unixepoch()")
            cur = db.execute(
                "INSERT INTO used_tokens (token, expires_at) VALUES (?, ?)"
                " ON CONFLICT(token) DO NOTHING",
                (token, expires_at.timestamp()),
            )
            return cur.rowcount == 1

        return await self._write(use)

    async def _write_session(self, session_id: str, text: str) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT INTO sessions (session_id, data, updated_at) VALUES (?,?,unixepoch())"
                " ON CONFLICT(session_id) DO UPDATE SET data=excluded.data,"
                " updated_at=excluded.updated_at",
                (session_id, text),
            )
        )

    async def _read_session(self, session_id: str) -> str | None:
        rows = await self._point("SELECT data FROM sessions WHERE session_id=?", (session_id,))
        return str(rows[0][0]) if rows else None

    async def delete_session(self, session_id: str) -> None:
        await self._write(
            lambda db: db.execute("DELETE FROM sessions WHERE session_id=?", (session_id,))
        )


class _Thread:
    """One thread running the calls handed to it in order. A call costs one queue put and
    one ``call_soon_threadsafe`` back (``run_in_executor``'s two futures and executor lock
    measured dearer per poll). A daemon: a transaction cut short by the interpreter's exit
    was never committed, and SQLite rolls it back."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[asyncio.Future[Any], Callable[[], Any]] | None]
        self._calls = queue.SimpleQueue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def call(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.put((future, fn))
        return future

    def stop(self) -> None:
        self._calls.put(None)

    def _run(self) -> None:
        while (item := self._calls.get()) is not None:
            future, fn = item
            try:
                outcome: tuple[bool, Any] = (True, fn())
            except BaseException as exc:  # handed to the caller, whatever it is
                outcome = (False, exc)
            try:
                future.get_loop().call_soon_threadsafe(_settle, future, outcome)
            except RuntimeError:  # the caller's loop is closed: nobody waits any more
                pass


def _committed(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn`` in the transaction ``db`` has begun: committed, or rolled back if it raised."""
    try:
        result = fn(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _checkpoint_done(future: asyncio.Future[Any]) -> None:
    """A failed passive checkpoint loses nothing (the next commit's or checkpoint's turn)."""
    if not future.cancelled() and future.exception() is not None:
        log.warning("sqlite_checkpoint_failed", error=str(future.exception())[:200])


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():  # the caller was cancelled; the call itself has run
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (none of ours holds a ';' in a literal)."""
    return [part.strip() for part in script.split(";") if part.strip()]
