"""Shared pieces of the benchmarks: processes, configs, wrk, /proc readings, statistics.

The service always runs as its real CLI (``python -m webhook_poller serve``) in its own
process; loads come from ``wrk`` (Debian package ``wrk``) or from a separate Python process,
so the numbers are the service's, not the load generator's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.redis_server import RedisServer
from tests.support.servers import free_port
from tests.support.service import ServiceProcess, deep_merge, wait_for

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = Path(__file__).with_name("post_jobs.lua")


def service_config(workdir: Path, store: str, redis_url: str | None = None, **extra: Any) -> dict:
    """The service on loopback with quiet logs, the given store, and ``extra`` merged in."""
    url = f"sqlite:///{workdir}/jobs.db" if store == "sqlite" else redis_url
    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": free_port(), "shutdown_grace_s": 2},
        "store": {"url": url},
        "storage": {"url": f"file://{workdir}/videos"},
        "security": {"allow_private_urls": True},
        "logging": {"level": "WARNING"},
    }
    return deep_merge(cfg, extra)


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"wp-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def redis_server(path: Path) -> Iterator[RedisServer]:
    server = RedisServer(path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def service(
    config: dict,
    path: Path,
    workers: int = 1,
    python: str | None = None,
    code: Path | None = None,
) -> Iterator[ServiceProcess]:
    """The service's CLI; ``workers`` > 1 runs ``serve --workers N`` (supervisor + N).

    Two ways to run a "before" tree in the same run: ``python`` is another tree's
    interpreter (an export with its own venv, as ``bench.polls --before`` uses); ``code`` is
    another tree's ``webhook_poller`` (a ``git archive`` export) run with this venv's
    dependencies: it goes first on the child's ``PYTHONPATH`` and is its working directory
    (``python -m`` puts the cwd first), as ``bench.intake --before`` uses."""
    with _code_tree(code):
        proc = ServiceProcess(config, path, workers=workers, python=python).start(timeout=60)
    try:
        yield proc
    finally:
        with contextlib.suppress(Exception):
            proc.terminate()


@contextlib.contextmanager
def _code_tree(code: Path | None) -> Iterator[None]:
    if code is None:
        yield
        return
    cwd, saved = os.getcwd(), os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(code) + (os.pathsep + saved if saved else "")
    os.chdir(code)
    try:
        yield
    finally:
        os.chdir(cwd)
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


@contextlib.contextmanager
def python_server(module: str, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m module --port P args...`` until /healthz answers; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{module} exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            return False

        wait_for(up, 30)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def wrk(
    url: str,
    *,
    seconds: float,
    connections: int = 32,
    threads: int = 1,
    prefix: str = "t",
    token: str | None = None,
) -> dict[str, Any]:
    """POST unique jobs with wrk; returns {requests, rps, p50_ms, p99_ms, errors, non2xx}."""
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    env = dict(os.environ, WP_PREFIX=prefix, WP_TOKEN=token or "")
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(WRK_SCRIPT),
            url,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    match = re.search(r"^WRK_JSON (.*)$", out, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    return dict(json.loads(match.group(1)))


def rss_mb(pid: int) -> float:
    """Resident set size of one process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_cpu_seconds(svc: ServiceProcess) -> float:
    """CPU seconds of the service: its process and, with workers, every worker."""
    assert svc.proc is not None
    pids = [svc.proc.pid, *(svc.worker_pids() if svc.workers > 1 else [])]
    return sum(cpu_seconds(pid) for pid in pids)


def codes(before: str | None) -> list[tuple[str, str | None]]:
    """(label, interpreter) pairs to alternate: "before" (``--before PY``) then "after"."""
    return [("before", before), ("after", None)] if before else [("this tree", None)]


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def histogram_buckets(metrics_text: str, name: str) -> list[tuple[float, float]]:
    """The cumulative (le, count) buckets of one unlabelled Prometheus histogram."""
    buckets = []
    for line in metrics_text.splitlines():
        m = re.match(rf'^{name}_bucket\{{le="([^"]+)"\}} (\S+)$', line)
        if m:
            buckets.append((float(m.group(1)), float(m.group(2))))
    return buckets


def bucket_delta(
    before: list[tuple[float, float]], after: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """What was observed between two scrapes."""
    old = dict(before)
    return [(le, count - old.get(le, 0.0)) for le, count in after]


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear inside the bucket the rank falls in."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            inside = count - prev_count
            frac = (rank - prev_count) / inside if inside else 0.0
            return prev_le + (le - prev_le) * frac
        prev_le, prev_count = le, count
    return prev_le


def counter_total(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of a counter's samples whose labels include ``labels``."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def machine() -> str:
    cpus = os.cpu_count()
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{cpus} cores, {model}, Python {sys.version.split()[0]}"


def report(title: str, rows: list[dict[str, Any]]) -> None:
    """Print a markdown table (what bench/README.md quotes) and the raw JSON."""
    print(f"\n### {title}\n\n{machine()}\n")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(_fmt(row[k]) for k in keys) + " |")
    print("\n" + json.dumps(rows))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def post_jobs(base_url: str, jobs: list[dict[str, Any]], concurrency: int = 32) -> float:
    """Post ``jobs`` from this process (asyncio + httpx); returns the seconds it took."""
    import asyncio

    async def run() -> float:
        queue = list(jobs)
        start = time.perf_counter()
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

            async def worker() -> None:
                while queue:
                    body = queue.pop()
                    resp = await client.post("/poll-video", json=body)
                    resp.raise_for_status()

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start

    return asyncio.run(run())
