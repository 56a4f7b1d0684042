"""SQLite lock contention between processes (``serve --workers N`` on one file).

Each process opens the real store and keeps ``32 / N`` creates in flight (as intake does under
wrk's 32 connections) for ``--seconds``; reported: creates per second over all processes,
create latency, commits, and the share of wall time spent waiting in ``BEGIN IMMEDIATE``
(the file's write lock; with one process that is only the hand-over to the driver's thread).

    python -m bench.sqlite_lock --rounds 2 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sqlite3
import statistics
import tempfile
import time
from typing import Any

from tests.support.factories import make_job
from webhook_poller.stores.sqlite import SqliteJobStore

from . import harness


class _TimedStore(SqliteJobStore):
    """The real store, timing each wait for the file's write lock (on the writer thread)."""

    def __init__(self, options: dict[str, Any], waits: list[float]) -> None:
        super().__init__(options)
        self.waits = waits

    def _begin(self, db: sqlite3.Connection) -> None:
        t = time.perf_counter()
        super()._begin(db)
        self.waits.append(time.perf_counter() - t)


def _worker(url: str, name: str, seconds: float, inflight: int, out: Any) -> None:
    async def run() -> tuple[list[float], float, int]:
        waits: list[float] = []
        store = _TimedStore({"url": url}, waits)
        await store.open()
        latencies: list[float] = []
        stop = time.monotonic() + seconds

        async def client(k: int) -> None:
            i = 0
            while time.monotonic() < stop:
                t = time.perf_counter()
                await store.create(make_job(task_id=f"{name}-{k}-{i}"))
                latencies.append(time.perf_counter() - t)
                i += 1

        await asyncio.gather(*(client(k) for k in range(inflight)))
        await store.close()
        return latencies, sum(waits), len(waits)

    out.put(asyncio.run(run()))


def measure(procs: int, seconds: float) -> dict[str, Any]:
    url = f"sqlite:///{tempfile.mkdtemp(prefix='wp-bench-lock-')}/jobs.db"
    out: Any = mp.Queue()
    workers = [
        mp.Process(target=_worker, args=(url, f"p{i}", seconds, 32 // procs, out))
        for i in range(procs)
    ]
    for w in workers:
        w.start()
    results = [out.get() for _ in workers]
    for w in workers:
        w.join()
    latencies = sorted(x for r in results for x in r[0])
    return {
        "processes": procs,
        "creates/s": len(latencies) / seconds,
        "p50 ms": 1000 * statistics.median(latencies),
        "p99 ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "commits": sum(r[2] for r in results),
        "in BEGIN IMMEDIATE %": 100 * sum(r[1] for r in results) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for procs in runs:
            row = measure(procs, args.seconds)
            print(row, flush=True)
            runs[procs].append(row)
    rows = [
        {"processes": procs}
        | {key: harness.median([r[key] for r in rs]) for key in rs[0] if key != "processes"}
        for procs, rs in runs.items()
    ]
    harness.report(f"SQLite creates from 1 and 2 processes, {args.rounds} rounds", rows)


if __name__ == "__main__":
    main()
