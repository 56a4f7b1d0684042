"""Run the real service for tests: in-process on a thread, or as a subprocess to kill -9.

Also a callback receiver that verifies Standard Webhooks signatures, like an n8n Wait node
or any receiver would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import free_port, serve_in_thread
from webhook_poller.app import create_app
from webhook_poller.config import settings_from_mapping

CALLBACK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # test-only, base64 of 24 bytes


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def base_config(tmp_path: Path, port: int | None = None, **extra: Any) -> dict[str, Any]:
    """A fast config for tests: everything local under tmp_path, no waiting between polls."""
    port = port or free_port()
    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "shutdown_grace_s": 2},
        "store": {"url": f"sqlite:///{tmp_path}/jobs.db", "lease_s": 5},
        "storage": {"url": f"file://{tmp_path}/videos"},
        "security": {"allow_private_urls": True},
        "callbacks": {"secret": CALLBACK_SECRET, "schedule_s": [0.2, 0.5, 1]},
        "polling": {
            "interval_s": 0.05,
            "first_poll_delay_s": 0,
            "delayed_interval_s": 0.1,
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.5,
            "tick_s": 0.05,
            "jitter": 0,
        },
        "providers": {
            "kie": {"min_interval_s": 0, "api_key": "test-kie-key"},
            # the global polling settings above apply to the demo too
            "demo": {"polls_until_done": 2, "interval_s": None, "first_poll_delay_s": None},
        },
        "logging": {"level": "WARNING"},
    }
    return deep_merge(cfg, extra)


@contextlib.contextmanager
def run_service(config: dict[str, Any]) -> Iterator[str]:
    """Serve the real app (scheduler included) on the config's port; yield its base URL."""
    settings = settings_from_mapping(config)
    app = create_app(settings)
    with serve_in_thread(app, port=settings.server.port) as url:
        yield url


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last: {last!r})")


def wait_status(client: httpx.Client, job_id: str, states: set[str], timeout: float = 20.0):
    def check() -> dict[str, Any] | None:
        body = client.get(f"/jobs/{job_id}").json()
        return body if body.get("status") in states else None

    return wait_for(check, timeout)


class ServiceProcess:
    """``python -m webhook_poller serve`` in a subprocess, to be killed and restarted.

    One process (``--workers 1``) unless ``workers`` asks for more; then the supervisor and
    its workers run in a process group of their own, and :meth:`kill` kills the group."""

    def __init__(
        self, config: dict[str, Any], workdir: Path, workers: int = 1, python: str | None = None
    ) -> None:
        #: the interpreter to run; bench/ passes an older tree's venv to measure "before"
        self.python = str(Path(python).absolute()) if python else sys.executable
        self.config = config
        self.workers = workers
        self.port = config["server"]["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / f"config-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"service-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self, timeout: float = 20.0) -> ServiceProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_POLLER_")}
        cwd = None
        if self.python != sys.executable:
            # another tree's venv (<tree>/.venv/bin/python): run from that tree, not this one
            cwd = Path(self.python).absolute().parents[2]
            env.pop("PYTHONPATH", None)
        self._close_log()
        self._log = log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                self.python,
                "-m",
                "webhook_poller",
                "serve",
                "--config",
                str(self.config_path),
                "--workers",
                str(self.workers),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=self.workers > 1,
        )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
            return False

        wait_for(ready, timeout)
        return self

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL (to the whole group with workers): no shutdown code runs, like a crash."""
        if self.proc and self.proc.poll() is None:
            if self.workers > 1:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc and self.workers > 1:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # workers the supervisor left
        self._close_log()

    def worker_pids(self) -> list[int]:
        """The supervisor's live worker processes (not multiprocessing's resource tracker)."""
        assert self.proc is not None
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) != self.proc.pid or fields[0] == "Z":
                    continue
                cmdline = (stat.parent / "cmdline").read_bytes()
                if b"spawn_main" in cmdline:
                    pids.append(int(stat.parent.name))
        return sorted(pids)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._close_log()
        return code

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class CallbackReceiver:
    """A local webhook receiver that verifies every signature and records each request.

    ``responses`` is a list of status codes answered in turn (the last repeats); the
    default is 200.
    """

    def __init__(self, secret: str = CALLBACK_SECRET, responses: list[int] | None = None):
        self.webhook = Webhook(secret)
        self.responses = list(responses or [200])
        self.requests: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.delay_s = 0.0
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        try:
            self.webhook.verify(body, headers)
            verified = True
        except Exception:
            verified = False
        with self._lock:
            if not verified:
                self.bad_signatures += 1
            self.requests.append(
                {
                    "path": request.url.path,
                    "query": request.url.query,
                    "headers": headers,
                    "body": json.loads(body) if body else None,
                    "verified": verified,
                }
            )
            status = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if self.delay_s:
            import anyio

            await anyio.sleep(self.delay_s)
        return JSONResponse({"ok": status < 300}, status_code=status)

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if event is None or r["body"].get("event") == event]

    def webhook_ids(self, event: str | None = None) -> list[str]:
        return [r["headers"]["webhook-id"] for r in self.events(event)]

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        with serve_in_thread(self.app) as url:
            yield url
