"""(d) Completion throughput, a job counted when its signed callback arrived; 1 and 3 instances.

``--jobs`` Veo jobs (each done after two status checks, then a small MP4 is downloaded,
stored and its metadata read, then one signed webhook callback is POSTed to
``bench.callback_receiver``, its own process, which verifies the signature) are posted to
the instances round-robin, each with its own ``callbackUrl``. The clock runs from the first
post until the receiver has had ``video.succeeded`` for every job. Instance counts (and,
with ``--before PY``, the other tree) alternate over ``--rounds``, each run on a fresh
Redis, provider and receiver; the table gives medians and jobs/s per instance.

    python -m bench.scale --jobs 2000 --rounds 3
    python -m bench.scale --jobs 2000 --rounds 3 --before .before/.venv/bin/python
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.service import CALLBACK_SECRET

from . import harness
from .polls import SPY, config


def run(
    instances: int,
    jobs: int,
    python: str | None = None,
    profile: Path | None = None,
    concurrency: int | None = None,
) -> float:
    with (
        harness.workdir("scale") as path,
        harness.redis_server(path) as redis,
        harness.python_server("bench.fast_provider", "--polls", "2") as (provider_url, _),
        harness.python_server("bench.callback_receiver") as (receiver_url, _),
    ):
        services = []
        try:
            for _ in range(instances):
                cfg = config(path / "svc", "redis", redis.url, provider_url, 0.2)
                cfg["polling"]["first_poll_delay_s"] = 0
                if concurrency:
                    cfg["polling"]["concurrency"] = concurrency
                cfg["callbacks"] = {"secret": CALLBACK_SECRET}
                proc = harness.ServiceProcess(cfg, path, python=python)
                services.append(proc.start(timeout=60))
            bodies = [
                {
                    "sessionId": f"s{i}",
                    "taskId": f"task-{i}",
                    "model": "veo3",
                    "callbackUrl": f"{receiver_url}/hook/task-{i}",
                }
                for i in range(jobs)
            ]
            started = time.monotonic()
            per = [bodies[n::instances] for n in range(instances)]
            # py-spy on the first instance from the first post to the last callback.
            with contextlib.ExitStack() as stack:
                if profile is not None:
                    stack.enter_context(spy(services[0], profile))
                cpu = harness.service_cpu_seconds(services[0])
                seconds = _wait(services, per, receiver_url, jobs, started)
                cpu = harness.service_cpu_seconds(services[0]) - cpu
                print(
                    f"  first instance: {100 * cpu / seconds:.0f} % CPU,"
                    f" {1000 * cpu / (jobs / instances):.1f} ms CPU per job",
                    flush=True,
                )
                return seconds
        finally:
            for svc in services:
                svc.terminate()


def _wait(services, per, receiver_url: str, jobs: int, started: float) -> float:
    for svc, share in zip(services, per, strict=True):
        harness.post_jobs(svc.url, share, concurrency=16)
    while True:
        stats = httpx.get(f"{receiver_url}/stats").json()
        if stats["bad_signatures"]:
            raise SystemExit(f"{stats['bad_signatures']} callbacks were badly signed")
        if stats["succeeded"] >= jobs:
            return time.monotonic() - started
        if time.monotonic() - started > 900:
            raise SystemExit(f"only {stats['succeeded']} of {jobs} called back in 900 s")
        time.sleep(0.1)


@contextlib.contextmanager
def spy(svc: harness.ServiceProcess, out: Path):
    """``py-spy record -r 200 -f raw`` of one service until the jobs are done (SIGINT ends it)."""
    assert svc.proc is not None
    proc = subprocess.Popen(
        [*SPY, "-o", str(out), "-p", str(svc.proc.pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instances", default="1,3")
    parser.add_argument("--before", help="interpreter of the tree to compare against")
    parser.add_argument(
        "--concurrency", type=int, help="polling.concurrency (default: bench.polls' 32)"
    )
    parser.add_argument("--profile", type=Path, help="directory for py-spy raw profiles")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    counts = [int(n) for n in args.instances.split(",")]
    times: dict[tuple[str, int], list[float]] = {}
    loads: dict[tuple[str, int], list[float]] = {}
    for r in range(args.rounds):
        for n in counts:
            for code, python in harness.codes(args.before):
                load = harness.load_average()
                out = args.profile / f"{code}-{n}-r{r}.txt" if args.profile else None
                seconds = run(n, args.jobs, python, out, args.concurrency)
                print(f"{code}, {n} instance(s): {args.jobs} jobs in {seconds:.1f} s", flush=True)
                times.setdefault((code, n), []).append(seconds)
                loads.setdefault((code, n), []).append(load)
    base = {n: harness.median(times[(harness.codes(args.before)[0][0], n)]) for n in counts}
    rows = []
    for (code, n), values in times.items():
        seconds = harness.median(values)
        rows.append(
            {
                "code": code,
                "instances": n,
                "jobs": args.jobs,
                "seconds (median)": seconds,
                "jobs/s": args.jobs / seconds,
                "jobs/s per instance": args.jobs / seconds / n,
                "vs before": f"{base[n] / seconds:.2f}",
                "load avg": harness.median(loads[(code, n)]),
            }
        )
    harness.report(f"Jobs called back, on Redis, {args.rounds} rounds", rows)


if __name__ == "__main__":
    main()
