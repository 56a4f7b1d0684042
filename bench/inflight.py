"""(c) 100,000 jobs in flight in one instance: service RSS and intake latency while they wait.

The jobs are demo jobs whose first poll is an hour away, so they all sit in the store's
due-time index while the scheduler runs. Intake latency is measured with wrk at a modest
concurrency (``-c 8``) on the empty service first (the baseline) and again with every job
waiting; RSS is read from /proc for the service (and for redis-server, which holds the
jobs on the Redis store) after each step.

    python -m bench.inflight --jobs 100000
"""

from __future__ import annotations

import argparse
import time

from . import harness

QUIET = {"providers": {"demo": {"first_poll_delay_s": 3600}}}


def measure(store: str, jobs: int, seconds: float) -> list[dict]:
    rows = []
    with harness.workdir("inflight") as path, harness.redis_server(path) as redis:
        cfg = harness.service_config(path / "svc", store, redis.url, **QUIET)
        with harness.service(cfg, path) as svc:
            pid = svc.proc.pid
            base = harness.wrk(svc.url, seconds=seconds, connections=8, prefix="base")
            rows.append(_row(store, "empty", base, pid, redis, store == "redis"))
            # wrk runs for a duration, not a count: aim a little past ``jobs``
            stored, rate = base["requests"], base["rps"]
            while stored < jobs:
                run = harness.wrk(
                    svc.url,
                    seconds=max(2.0, (jobs - stored) / max(rate, 500.0)),
                    connections=32,
                    prefix=f"load{stored}",
                )
                stored, rate = stored + run["requests"], run["rps"]
                print(f"{store}: {stored} jobs stored", flush=True)
            time.sleep(3)
            busy = harness.wrk(svc.url, seconds=seconds, connections=8, prefix="busy")
            waiting = stored
            rows.append(_row(store, f"{waiting:,} waiting", busy, pid, redis, store == "redis"))
    return rows


def _row(store: str, state: str, result: dict, pid: int, redis, on_redis: bool) -> dict:
    return {
        "store": store,
        "jobs in store": state,
        "intake p50 ms": result["p50_ms"],
        "intake p99 ms": result["p99_ms"],
        "intake req/s": result["rps"],
        "service RSS MB": harness.rss_mb(pid),
        "redis-server RSS MB": harness.rss_mb(redis.proc.pid) if on_redis else "-",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--stores", default="sqlite,redis")
    args = parser.parse_args()
    rows = []
    for store in args.stores.split(","):
        rows += measure(store, args.jobs, args.seconds)
    harness.report(f"{args.jobs:,} jobs waiting in one instance, wrk -t1 -c8", rows)


if __name__ == "__main__":
    main()
