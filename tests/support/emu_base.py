"""What every provider emulator shares: scripted answers over real HTTP, and video files.

``script(key, [answer, ...])`` queues answers for one endpoint key (usually a task id); each
request takes the next one and the last repeats. An answer is ``(http_status, body,
headers)``: a dict or list is sent as JSON, a str as is (HTML, cut-off JSON).

Video routes on the emulator's own host: ``/files/{name}.mp4`` (the sample MP4) and
``/files/expired/{name}.mp4`` (HTTP 410, as a CDN answers a dead link). ``downloads`` records
each fetch with the auth headers it carried, so tests can see where a key went.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.servers import serve_in_thread
from webhook_poller.adapters.demo import sample_video_path

Answer = tuple[int, Any, dict[str, str]]

#: Header names that may carry a key; recorded on every request.
AUTH_HEADERS = ("authorization", "x-goog-api-key", "x-api-key")

HTML = "<html><body><h1>502 Bad Gateway</h1></body></html>"

_seq = itertools.count()


def unique(name: str) -> str:
    return f"{name}-{next(_seq)}"


def respond(answer: Answer) -> Response:
    status, body, headers = answer
    if isinstance(body, str):
        return Response(body, status_code=status, headers=headers, media_type="text/html")
    return Response(
        json.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


class ScriptedEmulator:
    """Base class: subclasses add their status routes in ``provider_routes``."""

    def __init__(self) -> None:
        self.url = ""
        self.scripts: dict[str, list[Answer]] = {}
        self.calls: list[dict[str, Any]] = []
        self.downloads: list[dict[str, Any]] = []
        self.video_bytes = Path(sample_video_path()).read_bytes()
        self._lock = threading.Lock()

    # --- scripting ----------------------------------------------------------------------

    def script(self, key: str, answers: list[Answer]) -> None:
        with self._lock:
            self.scripts[key] = list(answers)

    def next_answer(self, key: str) -> Answer | None:
        with self._lock:
            queue = self.scripts.get(key)
            if not queue:
                return None
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def record(self, request: Request, key: str) -> None:
        with self._lock:
            self.calls.append(
                {
                    "time": time.monotonic(),
                    "path": request.url.path,
                    "raw_path": request.scope.get("raw_path", b"").decode("latin-1"),
                    "query": dict(request.query_params),
                    "key": key,
                    "auth": {h: request.headers[h] for h in AUTH_HEADERS if h in request.headers},
                }
            )

    def calls_for(self, key: str) -> list[dict[str, Any]]:
        with self._lock:
            return [c for c in self.calls if c["key"] == key]

    def expired_fetches(self) -> int:
        with self._lock:
            return sum(1 for d in self.downloads if d["expired"])

    # --- files --------------------------------------------------------------------------

    def video_url(self, name: str) -> str:
        return f"{self.url}/files/{name}.mp4"

    def expired_url(self, name: str) -> str:
        return f"{self.url}/files/expired/{name}.mp4"

    def _download(self, request: Request, expired: bool) -> None:
        with self._lock:
            self.downloads.append(
                {
                    "path": request.url.path,
                    "expired": expired,
                    "auth": {h: request.headers[h] for h in AUTH_HEADERS if h in request.headers},
                }
            )

    async def video(self, request: Request) -> Response:
        self._download(request, expired=False)
        return Response(self.video_bytes, media_type="video/mp4")

    async def expired(self, request: Request) -> Response:
        self._download(request, expired=True)
        return Response("<Error>Gone</Error>", status_code=410, media_type="application/xml")

    def file_routes(self) -> list[Route]:
        return [
            Route("/files/expired/{name}.mp4", self.expired),
            Route("/files/{name}.mp4", self.video),
        ]

    @contextlib.contextmanager
    def serving(self, app: Any) -> Iterator[str]:
        with serve_in_thread(app) as url:
            self.url = url
            yield url


class FileHost(ScriptedEmulator):
    """A bare CDN: only the video routes, no key expected (it records any that come)."""

    def __init__(self) -> None:
        super().__init__()
        from starlette.applications import Starlette

        self.app = Starlette(routes=self.file_routes())

    @contextlib.contextmanager
    def start(self) -> Iterator[FileHost]:
        with self.serving(self.app):
            yield self
