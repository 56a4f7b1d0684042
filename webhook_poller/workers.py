"""``webhook-poller serve --workers N``: one process per core, each a whole service.

The supervisor is uvicorn's own (``uvicorn.supervisors.Multiprocess``): it binds the socket
once, spawns N workers that accept on it, restarts a worker that dies, and on SIGTERM or
SIGINT passes SIGTERM to every worker and waits for each graceful shutdown
(``server.shutdown_grace_s``). Each worker runs the app's lifespan, so each runs a
scheduler with its own instance id: the store's leases keep every job with one worker at a
time, exactly as between instances on several machines.

The workers are spawned (not forked) and build their app from :func:`worker_app`, an import
string factory; what the command line said reaches them in one environment variable.
"""

from __future__ import annotations

import atexit
import inspect
import json
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from starlette.applications import Starlette

from .config import Settings, load_settings

log = structlog.get_logger(__name__)

#: The serve command's overrides (JSON) for the spawned workers.
ARGS_ENV = "_WEBHOOK_POLLER_WORKER_ARGS"  # not a setting (no WEBHOOK_POLLER_ prefix)
#: prometheus-client's multi-process directory: counters are summed over the workers.
PROMETHEUS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def default_workers(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """One worker per core this process may run on: its CPU affinity (else the core count),
    capped by a cgroup v2 CPU quota (a container limited to 2 CPUs on a 32-core node)."""
    cores = os.cpu_count() or 1
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        try:
            cores = len(affinity(0))
        except OSError:  # pragma: no cover - affinity unsupported
            pass
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max" and float(period) > 0:
            cores = min(cores, math.ceil(float(quota) / float(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def apply_overrides(settings: Settings, host: str | None, port: int | None) -> Settings:
    if host:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    return settings


def share_budgets(settings: Settings, workers: int) -> Settings:
    """Each worker takes 1/N of every provider's request budget (``max_requests_per_s``),
    so N workers together still send at most what one API key allows. On the Redis store the
    budget is already one bucket shared by every process, so it is left whole there."""
    if workers <= 1 or settings.store.url.split(":", 1)[0].lower() in ("redis", "rediss"):
        return settings
    for options in settings.providers.values():
        rate = options.get("max_requests_per_s")
        if isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0:
            options["max_requests_per_s"] = float(rate) / workers
    return settings


def _watch_parent(parent: int, period_s: float = 0.5) -> None:
    """A worker whose supervisor died (``kill -9``) shuts down gracefully on its own,
    releasing its leases and the listening socket, instead of serving on as an orphan."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def worker_app() -> Starlette:
    """The app of one worker (uvicorn ``factory=True``), built from the serve command's
    settings: the same file and environment, and the command line's host and port."""
    from .app import create_app
    from .logging import configure

    args: dict[str, Any] = json.loads(os.environ.get(ARGS_ENV) or "{}")
    settings = apply_overrides(
        load_settings(args.get("config")), args.get("host"), args.get("port")
    )
    share_budgets(settings, int(args.get("workers") or 1))
    configure(settings.logging.level, settings.logging.format)
    parent = args.get("supervisor")
    if isinstance(parent, int):
        _watch_parent(parent)
    if os.environ.get(PROMETHEUS_ENV):
        from prometheus_client import multiprocess

        # this worker's live gauges (steps in flight) leave the sum when it stops
        atexit.register(multiprocess.mark_process_dead, os.getpid())
    return create_app(settings)


def __getattr__(name: str) -> Any:
    """``WorkerHTTPProtocol``: the serve command's HTTP protocol (with its head deadline),
    which uvicorn loads in each worker by import string."""
    if name == "WorkerHTTPProtocol":
        from .cli import http_protocol

        args = json.loads(os.environ.get(ARGS_ENV) or "{}")
        return http_protocol(float(args.get("head_timeout_s", 10.0)))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _multiprocess(config: uvicorn.Config, sock: Any) -> Any:
    from uvicorn.supervisors import Multiprocess

    options: dict[str, Any] = {"sockets": [sock]}
    if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn < 0.55
        options["target"] = uvicorn.Server(config).run
    return Multiprocess(config, **options)


def serve_workers(
    settings: Settings, config_path: str | None, workers: int, base: dict[str, Any]
) -> int:
    """Run ``workers`` worker processes under uvicorn's supervisor until SIGTERM/SIGINT.

    ``base`` is the keyword arguments of the one-process ``uvicorn.Config``."""
    from uvicorn.config import STARTUP_FAILURE

    os.environ[ARGS_ENV] = json.dumps(
        {
            "config": config_path,
            "host": settings.server.host,
            "port": settings.server.port,
            "workers": workers,
            "supervisor": os.getpid(),
            "head_timeout_s": settings.server.header_timeout_s,
        }
    )
    metrics_dir: Path | None = None
    try:
        metrics_dir = Path(tempfile.mkdtemp(prefix="webhook-poller-metrics-"))
        os.environ[PROMETHEUS_ENV] = str(metrics_dir)
    except OSError as exc:  # no writable temp dir: /metrics then shows one worker per scrape
        log.warning("metrics_per_worker", error=str(exc)[:200])
    # the protocol class is made at run time and does not pickle into a spawned worker
    options = {**base, "http": f"{__name__}:WorkerHTTPProtocol"}
    config = uvicorn.Config(
        "webhook_poller.workers:worker_app", factory=True, workers=workers, **options
    )
    try:
        sock = config.bind_socket()
    except SystemExit:
        return 1
    try:
        supervisor = _multiprocess(config, sock)
        supervisor.run()
    finally:
        sock.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
    return 1 if failed else 0
