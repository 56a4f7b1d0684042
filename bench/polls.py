"""(b) Sustained provider polls per second and scheduling lateness, one instance.

N never-finishing Veo tasks are polled every ``--interval`` seconds (jitter 10 %) against
``bench.fast_provider`` in its own process, so the offered load is N / interval polls per
second. After a warm-up of two intervals, a window of ``--window`` seconds is measured from
the service's own /metrics: polls answered (``webhook_poller_polls_total``) and how late each
step was claimed against its due time (``webhook_poller_schedule_lateness_seconds``,
quantiles interpolated inside the histogram buckets as Prometheus does), plus the service's
CPU time from /proc. A fresh service, store and provider per level.

    python -m bench.polls --levels 250,500,1000,1500 --interval 2 --window 10
    python -m bench.polls --levels 500,1000,1500 --workers 1,2   # serve --workers N, in turn
    python -m bench.polls --before .before/.venv/bin/python --rounds 3   # before/after, in turn

``--before`` names the interpreter of another tree (``git archive main`` with its own venv):
each level is measured with it and with this tree in turn, ``--rounds`` times, and the
table gives medians. ``--profile DIR`` records every service with py-spy during the window.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import time
from pathlib import Path

import httpx

from . import harness

LATENESS = "webhook_poller_schedule_lateness_seconds"
SPY = ["py-spy", "record", "-r", "200", "-f", "raw", "--nonblocking"]


def config(path, store: str, redis_url: str | None, provider_url: str, interval: float) -> dict:
    return harness.service_config(
        path,
        store,
        redis_url,
        providers={
            "kie": {
                "base_url": provider_url,
                "api_key": "bench-key",
                "min_interval_s": 0,
                "max_requests_per_s": 100000,
                "timeout_s": 10,
            },
        },
        polling={
            "interval_s": interval,
            "jitter": 0.1,
            "first_poll_delay_s": 0.5,
            "max_attempts": 1_000_000,
            "give_up_after_s": 1e9,
            "concurrency": 32,
            "tick_s": 0.05,
        },
    )


def measure(
    store: str,
    level: int,
    interval: float,
    window: float,
    workers: int = 1,
    python: str | None = None,
    profile: Path | None = None,
) -> dict:
    jobs = int(level * interval)
    with (
        harness.workdir("polls") as path,
        harness.redis_server(path) as redis,
        harness.python_server("bench.fast_provider") as (provider_url, provider),
    ):
        cfg = config(path / "svc", store, redis.url, provider_url, interval)
        with harness.service(cfg, path, workers, python) as svc:
            bodies = [
                {"sessionId": f"s{i % 100}", "taskId": f"never-{i}", "model": "veo3"}
                for i in range(jobs)
            ]
            harness.post_jobs(svc.url, bodies)
            time.sleep(2 * interval + 1)
            pcpu0 = harness.cpu_seconds(provider.pid)
            before, cpu0, t0 = (
                httpx.get(f"{svc.url}/metrics").text,
                harness.service_cpu_seconds(svc),
                time.monotonic(),
            )
            with spy(svc, profile, window):
                time.sleep(window)
            after, cpu1, t1 = (
                httpx.get(f"{svc.url}/metrics").text,
                harness.service_cpu_seconds(svc),
                time.monotonic(),
            )
            pcpu1 = harness.cpu_seconds(provider.pid)
    polls = harness.counter_total(after, "webhook_poller_polls_total") - harness.counter_total(
        before, "webhook_poller_polls_total"
    )
    late = harness.bucket_delta(
        harness.histogram_buckets(before, LATENESS), harness.histogram_buckets(after, LATENESS)
    )
    p50, p99 = harness.quantile(late, 0.5), harness.quantile(late, 0.99)
    return {
        "store": store,
        "workers": workers,
        "jobs": jobs,
        "offered polls/s": float(level),
        "polls/s": polls / (t1 - t0),
        "lateness p50 ms": (p50 or 0) * 1000,
        "lateness p99 ms": (p99 or 0) * 1000,
        "service CPU %": 100 * (cpu1 - cpu0) / (t1 - t0),
        # the provider is one Python process too: near 100 % it, not the service, is the bound
        "provider CPU %": 100 * (pcpu1 - pcpu0) / (t1 - t0),
    }


@contextlib.contextmanager
def spy(svc: harness.ServiceProcess, out: Path | None, seconds: float):
    """``py-spy record -r 200 -f raw`` of the service for the window, when ``out`` is set."""
    if out is None:
        yield
        return
    assert svc.proc is not None
    proc = subprocess.Popen(
        [*SPY, "-d", str(int(seconds)), "-o", str(out), "-p", str(svc.proc.pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.wait(timeout=seconds + 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default="250,500,1000,1500")
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--workers", default="1", help="comma list of serve --workers N")
    parser.add_argument("--before", help="interpreter of the tree to compare against")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="directory for py-spy raw profiles")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    runs: dict[tuple, list[dict]] = {}
    for rnd in range(args.rounds):
        for store in args.stores.split(","):
            for level in (int(x) for x in args.levels.split(",")):
                for workers in (int(w) for w in args.workers.split(",")):
                    for code, python in harness.codes(args.before):
                        out = None
                        if args.profile:
                            name = f"{store}-{level}-w{workers}-{code.replace(' ', '_')}-r{rnd}"
                            out = args.profile / f"{name}.txt"
                        row = {"code": code, "load avg": harness.load_average()}
                        row |= measure(
                            store, level, args.interval, args.window, workers, python, out
                        )
                        print(row, flush=True)
                        runs.setdefault((code, store, level, workers), []).append(row)
    rows = [_median_row(group) for group in runs.values()]
    harness.report(
        f"Polls against a local provider, interval {args.interval:g} s, window {args.window:g} s",
        rows,
    )


def _median_row(group: list[dict]) -> dict:
    """Medians of the numeric columns over the rounds of one (code, store, level, workers)."""
    return {
        k: statistics.median(r[k] for r in group) if isinstance(v, float) else v
        for k, v in group[0].items()
    }


if __name__ == "__main__":
    main()
