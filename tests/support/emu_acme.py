""" "Acme", a made-up provider over real HTTP, for the declarative adapter's tests.

``GET /v1/jobs/{taskId}`` with ``Authorization: Bearer <key>`` answers scripted bodies per task
(the last repeats), with the traps real providers set: 202 while pending, capitalised states,
numbers as strings, outputs as a JSON string inside the JSON. ``/files/{name}.mp4`` serves a
real MP4. ``calls`` records every request (path as sent, auth header).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from webhook_poller.adapters.demo import sample_video_path

Answer = tuple[int, Any, dict[str, str]]
API_KEY = "acme-test-key-0123456789"

ACME_YAML = """
providers:
  acme:
    type: declarative
    base_url: {base_url}
    api_key: ${{ACME_KEY}}
    status:
      url: "{{base_url}}/v1/jobs/{{taskId}}"
      headers: {{Authorization: "Bearer {{api_key}}"}}
    state: "data.status"
    states: {{done: succeeded, error: failed, queued: running, running: running}}
    video_urls: "data.outputs[].url"
    progress: "data.progress"
    error_message: "data.error.message"
    error_codes: [{{match: "(?i)nsfw|policy", code: moderation_rejected}}]
models:
  "acme-*": acme
"""


def queued(progress: str = "5") -> Answer:
    return (202, {"data": {"status": "Queued", "progress": progress}}, {})


def running(progress: Any = "40") -> Answer:
    return (200, {"data": {"status": "RUNNING", "progress": progress}}, {})


def done(urls: list[str], as_string: bool = True) -> Answer:
    outputs: Any = [{"url": u, "thumbnail": u + ".jpg"} for u in urls]
    return (
        200,
        {"data": {"status": "Done", "outputs": json.dumps(outputs) if as_string else outputs}},
        {},
    )


def error(message: str) -> Answer:
    return (200, {"data": {"status": "error", "error": {"message": message}}}, {})


class AcmeEmulator:
    def __init__(self) -> None:
        self.scripts: dict[str, list[Answer]] = {}
        self.calls: list[dict[str, Any]] = []
        self.video_bytes = Path(sample_video_path()).read_bytes()
        self.url = ""
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/v1/jobs/{task_id:path}", self.status),
                Route("/files/{name}.mp4", self.video),
            ]
        )

    def script(self, task_id: str, answers: list[Answer]) -> None:
        with self._lock:
            self.scripts[task_id] = list(answers)

    def calls_to(self, prefix: str) -> list[dict[str, Any]]:
        with self._lock:
            return [c for c in self.calls if c["raw_path"].startswith(prefix)]

    def _record(self, request: Request) -> str:
        auth = request.headers.get("authorization", "")
        with self._lock:
            self.calls.append({"raw_path": request.scope["raw_path"].decode(), "auth": auth})
        return auth

    async def status(self, request: Request) -> Response:
        auth = self._record(request)
        task_id = request.path_params["task_id"]
        with self._lock:
            queue = self.scripts.get(task_id)
            if auth != f"Bearer {API_KEY}":
                answer: Answer = (401, {"error": "invalid api key"}, {})
            elif not queue:
                answer = (404, {"error": "no such job"}, {})
            else:
                answer = queue.pop(0) if len(queue) > 1 else queue[0]
        status, body, headers = answer
        if isinstance(body, str):
            return Response(body, status_code=status, headers=headers, media_type="text/html")
        return JSONResponse(body, status_code=status, headers=headers)

    async def video(self, request: Request) -> Response:
        self._record(request)
        return Response(self.video_bytes, media_type="video/mp4")
