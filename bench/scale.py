"""(d) Completion throughput: three instances sharing Redis versus one.

``--jobs`` Veo jobs (each done after two status checks, then a small MP4 is downloaded,
stored and its metadata read) are posted to the instances round-robin; the clock runs from
the first post until every job is ``succeeded`` (the sum of the instances'
``webhook_poller_jobs_finished_total``). One and three instances alternate over
``--rounds``, each run on a fresh Redis and a fresh provider; the table gives medians.

    python -m bench.scale --jobs 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import time

import httpx

from . import harness
from .polls import config


def run(instances: int, jobs: int) -> float:
    with (
        harness.workdir("scale") as path,
        harness.redis_server(path) as redis,
        harness.python_server("bench.fast_provider", "--polls", "2") as (provider_url, _),
    ):
        services = []
        try:
            for _ in range(instances):
                cfg = config(path / "svc", "redis", redis.url, provider_url, 0.2)
                cfg["polling"]["first_poll_delay_s"] = 0
                services.append(harness.ServiceProcess(cfg, path).start(timeout=60))
            bodies = [
                {"sessionId": f"s{i}", "taskId": f"task-{i}", "model": "veo3"} for i in range(jobs)
            ]
            started = time.monotonic()
            per = [bodies[n::instances] for n in range(instances)]
            for svc, share in zip(services, per, strict=True):
                harness.post_jobs(svc.url, share, concurrency=16)
            while True:
                done = sum(
                    harness.counter_total(
                        httpx.get(f"{s.url}/metrics").text,
                        "webhook_poller_jobs_finished_total",
                        status="succeeded",
                    )
                    for s in services
                )
                if done >= jobs:
                    return time.monotonic() - started
                if time.monotonic() - started > 900:
                    raise SystemExit(f"only {done} of {jobs} finished in 900 s")
                time.sleep(0.2)
        finally:
            for svc in services:
                svc.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[int, list[float]] = {1: [], 3: []}
    for _ in range(args.rounds):
        for instances in (1, 3):
            seconds = run(instances, args.jobs)
            print(f"{instances} instance(s): {args.jobs} jobs in {seconds:.1f} s", flush=True)
            times[instances].append(seconds)
    one = harness.median(times[1])
    rows = [
        {
            "instances": n,
            "jobs": args.jobs,
            "seconds (median)": harness.median(times[n]),
            "jobs/s": args.jobs / harness.median(times[n]),
            "vs one": f"{one / harness.median(times[n]):.2f}",
        }
        for n in (1, 3)
    ]
    harness.report(f"Completion throughput on Redis, {args.rounds} rounds", rows)


if __name__ == "__main__":
    main()
