"""A real n8n for tests: started from the npm install in the cache folder, on loopback ports.

``scripts/test.sh`` installs n8n (``npm install n8n@2.8.4``) into ``n8n_install_dir()``; tests
that need it skip when it is missing. Each ``N8nServer`` gets its own user folder (SQLite
database, encryption key), its own ports, and an owner plus API key made through n8n's REST
API, as a user would click through the first-run screens. ``ReverseProxy`` stands in front of
a server to hold answers back or record what passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.servers import free_port, serve_in_thread

N8N_VERSION = "2.8.4"
OWNER = {
    "email": "owner@example.com",
    "firstName": "Test",
    "lastName": "Owner",
    "password": "Test-Passw0rd-n8n!",  # throwaway, for a loopback-only instance
}
API_SCOPES = [
    "workflow:create",
    "workflow:read",
    "workflow:update",
    "workflow:list",
    "workflow:delete",
    "workflow:activate",
    "workflow:deactivate",
    "execution:list",
    "execution:read",
    "credential:create",
    "credential:delete",
]


def n8n_install_dir() -> Path:
    """Where scripts/test.sh installs n8n (``N8N_INSTALL_DIR`` overrides)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    default = Path(cache) / "webhook-poller" / f"n8n-{N8N_VERSION}"
    return Path(os.environ.get("N8N_INSTALL_DIR") or default)


def n8n_missing_reason() -> str | None:
    """Why a real n8n cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node not found"
    binary = n8n_install_dir() / "node_modules" / ".bin" / "n8n"
    if not binary.exists():
        return f"n8n {N8N_VERSION} not installed in {n8n_install_dir()} (scripts/test.sh does it)"
    return None


class N8nServer:
    """``n8n start`` in a subprocess (its own process group), with ``extra_env`` for the
    workflows' ``$env``. ``webhook_url`` is the public base n8n puts into resume URLs."""

    def __init__(
        self, workdir: Path, extra_env: dict[str, str], webhook_url: str | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.webhook_url = (webhook_url or self.url).rstrip("/") + "/"
        self.home = workdir / "n8n-home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "n8n.log"
        self.extra_env = extra_env
        self.proc: subprocess.Popen[bytes] | None = None
        self.api_key = ""
        self.rest = httpx.Client(base_url=self.url, timeout=30)

    def environment(self) -> dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "TMPDIR")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.update(
            {
                "N8N_USER_FOLDER": str(self.home),
                "N8N_PORT": str(self.port),
                "N8N_RUNNERS_BROKER_PORT": str(free_port()),
                "N8N_LISTEN_ADDRESS": "127.0.0.1",
                "N8N_HOST": "127.0.0.1",
                "N8N_PROTOCOL": "http",
                "WEBHOOK_URL": self.webhook_url,
                "N8N_DIAGNOSTICS_ENABLED": "false",
                "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
                "N8N_PERSONALIZATION_ENABLED": "false",
                "N8N_TEMPLATES_ENABLED": "false",
                "N8N_HIRING_BANNER_ENABLED": "false",
                "N8N_COMMUNITY_PACKAGES_ENABLED": "false",
                "N8N_UNVERIFIED_PACKAGES_ENABLED": "false",
                "N8N_SECURE_COOKIE": "false",
                "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "true",
                "N8N_METRICS": "false",
                "EXECUTIONS_MODE": "regular",
                "DB_TYPE": "sqlite",
                "N8N_LOG_LEVEL": "info",
                "N8N_LOG_OUTPUT": "console",
                "NODE_ENV": "production",
                # the workflow reads the service and KIE base URLs from $env
                "N8N_BLOCK_ENV_ACCESS_IN_NODE": "false",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 180.0) -> N8nServer:
        binary = n8n_install_dir() / "node_modules" / ".bin" / "n8n"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(binary), "start"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=self.home,
                start_new_session=True,  # n8n starts a task runner child; stop both together
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"n8n exited at start:\n{self.logs()[-3000:]}")
            # the REST API answers "n8n is starting up" (200, text) until the editor is up
            if "Editor is now accessible" in self.logs():
                with contextlib.suppress(httpx.HTTPError):
                    if self.rest.get("/healthz/readiness", timeout=2).status_code == 200:
                        return self
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"n8n not ready within {timeout} s:\n{self.logs()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> None:
        self.rest.close()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def set_up_owner(self) -> str:
        """The first-run owner account, logged in, and an API key for the public API."""
        resp = self.rest.post("/rest/owner/setup", json=OWNER)
        assert resp.status_code == 200, resp.text
        resp = self.rest.post(
            "/rest/api-keys", json={"label": "tests", "scopes": API_SCOPES, "expiresAt": None}
        )
        assert resp.status_code == 200, resp.text
        self.api_key = str(resp.json()["data"]["rawApiKey"])
        return self.api_key

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """One public-API call (``/api/v1``); a non-2xx answer fails the test with its text."""
        resp = self.rest.request(
            method, f"/api/v1{path}", json=body, headers={"X-N8N-API-KEY": self.api_key}
        )
        assert resp.is_success, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json()

    def create_credential(self, name: str, type_: str, data: dict[str, Any]) -> str:
        body = {"name": name, "type": type_, "data": data}
        return str(self.api("POST", "/credentials", body)["id"])

    def deploy(self, workflow: dict[str, Any]) -> str:
        """Create the workflow through the public API and activate it; return its id."""
        body = {k: workflow[k] for k in ("name", "nodes", "connections", "settings")}
        workflow_id = str(self.api("POST", "/workflows", body)["id"])
        active = self.api("POST", f"/workflows/{workflow_id}/activate")
        assert active.get("active") is True, active
        return workflow_id

    def execution(self, execution_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/executions/{execution_id}?includeData=true"))


class ReverseProxy:
    """Forwards every request to ``target``; records each exchange in ``exchanges``.

    ``hold_s`` is how long an answer to a path in ``hold_paths`` is held back after the
    target has answered (the target already acted on the request).
    """

    _DROP = frozenset({"host", "content-length", "transfer-encoding", "connection"})
    _DROP_BACK = _DROP - {"host"} | {"content-encoding"}

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.hold_s = 0.0
        self.hold_paths: set[str] = set()
        self.exchanges: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self.forward,
                    methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
                )
            ]
        )

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self._DROP}
        query = f"?{request.url.query}" if request.url.query else ""
        url = self.target + request.url.path + query
        async with httpx.AsyncClient(timeout=60) as client:
            answer = await client.request(request.method, url, content=body, headers=headers)
        with self._lock:
            self.exchanges.append(
                {
                    "time": time.monotonic(),
                    "method": request.method,
                    "path": request.url.path,
                    "request": body.decode(errors="replace")[:4000],
                    "status": answer.status_code,
                    "text": answer.text[:500],
                }
            )
        if request.url.path in self.hold_paths and self.hold_s:
            await asyncio.sleep(self.hold_s)
        back = {k: v for k, v in answer.headers.items() if k.lower() not in self._DROP_BACK}
        return Response(answer.content, status_code=answer.status_code, headers=back)

    def seen(self, prefix: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.exchanges if e["path"].startswith(prefix)]

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        with serve_in_thread(self.app) as url:
            yield url
