"""(e) 50 open dashboards: store reads and service CPU with N streams of ``GET /events``.

The service (its real CLI, Redis store) holds full live windows: 200 finished jobs, 200
being polled (``slow`` demo tasks, each polled every ``--interval`` s, so every poll is a
local change) and 200 queued behind ``polling.max_active_jobs: 200``. ``--streams`` clients
then hold ``/events`` open (raw bytes read and dropped, so the client costs little), and over
a ``--window`` s the bench reads from redis-server's ``INFO commandstats`` how many window
scans (``ZREVRANGEBYSCORE``, one or more per group read) and job reads (``HGETALL``) the
service made, and the service's CPU from /proc. The same run is made with the code of
``--before`` (default: the commit before the shared snapshot), exported with ``git archive``
and run from its own folder, in turn with this tree, over ``--rounds``; medians.

    python -m bench.sse_dashboards --streams 50 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

from tests.support.service import wait_for

from . import harness


def before_ref() -> str:
    """The parent of the commit that added the shared snapshot (this tree if none did)."""
    added = subprocess.run(
        ["git", "log", "--format=%H", "-S", "class SharedSnapshot", "--", "webhook_poller/live.py"],
        cwd=harness.ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not added:
        raise SystemExit("no commit adds SharedSnapshot; pass --before")
    return f"{added[-1]}^"


def export(ref: str, dest: Path) -> Path:
    data = subprocess.run(
        ["git", "archive", ref], cwd=harness.ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest


@contextlib.contextmanager
def serve(config: dict[str, Any], path: Path, source: Path) -> Iterator[tuple[str, int]]:
    """``python -m webhook_poller serve`` run from ``source`` (its code wins on sys.path)."""
    config_path = path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{config['server']['port']}"
    with (path / "service.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "webhook_poller", "serve", "--config", str(config_path)],
            cwd=source,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def ready() -> bool:
                if proc.poll() is not None:
                    raise SystemExit((path / "service.log").read_text()[-2000:])
                with contextlib.suppress(httpx.HTTPError):
                    return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
                return False

            wait_for(ready, 60)
            yield url, proc.pid
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def commandstats(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def fill(url: str, redis_client: redis.Redis) -> None:
    """200 finished, then 200 polled for ever and 200 queued behind them."""
    done = [{"sessionId": f"s{i % 20}", "taskId": f"done-{i}", "model": "demo"} for i in range(200)]
    harness.post_jobs(url, done, concurrency=16)
    wait_for(lambda: redis_client.zcard("wp:st:succeeded") >= 200, 120, 0.2)
    slow = [{"sessionId": f"s{i % 20}", "taskId": f"slow-{i}", "model": "demo"} for i in range(400)]
    harness.post_jobs(url, slow, concurrency=16)
    wait_for(lambda: redis_client.zcard("wp:st:queued") <= 200, 120, 0.2)


async def hold_streams(url: str, n: int, seconds: float) -> int:
    """``n`` open ``/events`` streams for ``seconds``; returns the bytes they received."""
    received = 0
    if n == 0:
        await asyncio.sleep(seconds)
        return 0

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal received
        async with client.stream("GET", "/events") as resp:
            resp.raise_for_status()
            async for chunk in resp.aiter_raw():
                received += len(chunk)

    limits = httpx.Limits(max_connections=n + 4)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        tasks = [asyncio.ensure_future(one(client)) for _ in range(n)]
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return received


def run(source: Path, streams: int, interval: float, warmup: float, window: float) -> dict:
    with harness.workdir("sse") as path, harness.redis_server(path) as server:
        cfg = harness.service_config(
            path,
            "redis",
            server.url,
            polling={
                "interval_s": interval,
                "delayed_interval_s": interval,
                "first_poll_delay_s": 0,
                "max_active_jobs": 200,
                "tick_s": 0.2,
                "give_up_after_s": 3600,
                "max_attempts": 100000,
            },
            providers={"demo": {"interval_s": None, "first_poll_delay_s": None}},
        )
        client = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)
        try:
            with serve(cfg, path, source) as (url, pid):
                fill(url, client)
                measured: dict[str, Any] = {}

                async def measure() -> int:
                    holder = asyncio.ensure_future(hold_streams(url, streams, warmup + window))
                    await asyncio.sleep(warmup)
                    stats0, cpu0, t0 = commandstats(client), harness.cpu_seconds(pid), time.time()
                    await asyncio.sleep(window)
                    stats1, cpu1, t1 = commandstats(client), harness.cpu_seconds(pid), time.time()
                    secs = t1 - t0

                    def rate(cmd: str) -> float:
                        return (stats1.get(cmd, 0) - stats0.get(cmd, 0)) / secs

                    measured.update(
                        scans=rate("zrevrangebyscore"),
                        reads=rate("hgetall"),
                        cpu=100 * (cpu1 - cpu0) / secs,
                        polls=rate("evalsha"),
                    )
                    return await holder

                received = asyncio.run(measure())
                measured["kb_s"] = received / 1024 / (warmup + window)
                return measured
        finally:
            client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=float, default=5.0, help="s between polls of a job")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--before", default=None, help="git ref of the code to compare with")
    args = parser.parse_args()
    ref = args.before or before_ref()
    results: dict[str, list[dict]] = {"none": [], "before": [], "after": []}
    with harness.workdir("sse-src") as src:
        old = export(ref, src / "before")
        for _ in range(args.rounds):
            for label, source, streams in (
                ("none", harness.ROOT, 0),
                ("before", old, args.streams),
                ("after", harness.ROOT, args.streams),
            ):
                row = run(source, streams, args.interval, args.warmup, args.window)
                row["load"] = os.getloadavg()[0]
                results[label].append(row)
                print(label, row, file=sys.stderr)
    names = {
        "none": "no stream open (this tree)",
        "before": f"before ({ref})",
        "after": "after (this tree)",
    }
    rows = []
    for label, runs in results.items():
        rows.append(
            {
                "code": names[label],
                "streams": 0 if label == "none" else args.streams,
                "window scans/s": harness.median([r["scans"] for r in runs]),
                "job reads/s": harness.median([r["reads"] for r in runs]),
                "service CPU %": harness.median([r["cpu"] for r in runs]),
                "scheduler EVALSHA/s": harness.median([r["polls"] for r in runs]),
                "stream KiB/s": harness.median([r["kb_s"] for r in runs]),
                "load avg": harness.median([r["load"] for r in runs]),
            }
        )
    harness.report(f"{args.streams} open dashboards ({args.rounds} rounds, medians)", rows)


if __name__ == "__main__":
    main()
