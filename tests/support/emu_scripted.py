"""The scripted-answer core shared by the direct-provider emulators (emu_runway, emu_luma,
emu_kling, emu_minimax): real HTTP on 127.0.0.1, like kie_emulator.

``script(key, [answer, ...])`` queues answers for one task (or one file); each request takes
the next one and the last repeats. An answer is ``(http_status, body, headers)``: a dict or
list is sent as JSON, a str as it is (``text/html`` unless a content-type header is given,
so truncated JSON can be sent as ``application/json``).

Result videos are served under ``/files/{name}.mp4``, and ``/files/expired/{name}.mp4``
answers HTTP 410 as a CDN does for a dead link. :meth:`cdn_video` names them on
``localhost`` instead of ``127.0.0.1``: the same server, but another host than the API's
base URL, so a test can check the API key never travels with a download.

Create calls (``POST /generate`` submissions) are recorded in ``creates`` (path, JSON body,
headers, the task id given or None). ``create_answers`` holds answers for the next create
calls in turn (``refuse_creates(n)`` queues n documented 429s); when it is empty the
subclass creates a task that is pending once and then succeeds with a video on the CDN host
(:meth:`cdn_video`). ``lose_create_answers`` makes the next create calls start the task and
answer 502 anyway, as a proxy that lost the provider's answer would; ``create_delay_s`` holds
the answer to a create call whose task already exists (time to kill the caller).

Each emulator is also a ``CaseEmulator`` of the contract suite (tests/support/
provider_cases.py): ``task_id(name)``, ``scenario(task_id, name)`` from the subclass's
:meth:`scenarios`, ``expired_fetches()``, and ``start()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.support.servers import serve_in_thread
from webhook_poller.adapters.demo import sample_video_path

Answer = tuple[int, Any, dict[str, str]]

_seq = itertools.count()


def json_answer(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return (status, body, dict(headers or {}))


def html(status: int = 200) -> Answer:
    """A proxy's HTML page instead of JSON."""
    return (status, "<html><body>502 Bad Gateway</body></html>", {})


def truncated(text: str = '{"status": "RUNN') -> Answer:
    """JSON cut off mid-way, sent as application/json."""
    return (200, text, {"content-type": "application/json"})


class ScriptedEmulator:
    """One emulated provider; ``calls`` records every API request, ``downloads`` every file
    request (with the headers it carried)."""

    def __init__(self, routes: list[BaseRoute], authorized: Callable[[Request], bool]) -> None:
        self.scripts: dict[str, list[Answer]] = {}
        self.calls: list[dict[str, Any]] = []
        self.downloads: list[dict[str, Any]] = []
        self.video_bytes = Path(sample_video_path()).read_bytes()
        self.authorized = authorized
        self.creates: list[dict[str, Any]] = []
        self.create_answers: list[Answer] = []
        self.lose_create_answers = 0
        self.create_delay_s = 0.0
        self.url = ""
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                *routes,
                Route("/files/expired/{name}.mp4", self.serve_expired),
                Route("/files/{name}.mp4", self.serve_video),
            ]
        )

    # --- scripting ---------------------------------------------------------------------

    def script(self, key: str, answers: list[Answer]) -> None:
        with self._lock:
            self.scripts[key] = list(answers)

    def calls_for(self, task_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [c for c in self.calls if c["key"] == task_id]

    def video(self, name: str) -> str:
        """A result URL on the API's own host."""
        return f"{self.url}/files/{name}.mp4"

    def expired_video(self, name: str) -> str:
        """A result URL that answers HTTP 410 (the link expired)."""
        return f"{self.url}/files/expired/{name}.mp4"

    def cdn_video(self, name: str) -> str:
        """A result URL on another host name (same server): a CDN, as far as names go."""
        return f"{self.url.replace('127.0.0.1', 'localhost')}/files/{name}.mp4"

    # --- create calls ------------------------------------------------------------------

    def rate_limited_create(self) -> Answer:
        """The family's documented answer to a create call over its rate limit."""
        return json_answer({"error": "Too many requests"}, 429, {"Retry-After": "1"})

    def refuse_creates(self, count: int = 1) -> None:
        with self._lock:
            self.create_answers.extend([self.rate_limited_create()] * count)

    async def begin_create(self, request: Request) -> tuple[dict[str, Any], Answer | None]:
        """Record a create call; return (its record, the scripted answer to send, if any)."""
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            body = None
        record: dict[str, Any] = {
            "time": time.monotonic(),
            "path": request.url.path,
            "body": body,
            "headers": dict(request.headers),
            "task_id": None,
        }
        with self._lock:
            self.creates.append(record)
            answer = self.create_answers.pop(0) if self.create_answers else None
        return record, answer

    async def finish_create(self, record: dict[str, Any], task_id: str, answer: Answer) -> Response:
        """A task was created: pending once, then a video on the CDN host."""
        record["task_id"] = task_id
        if self.create_delay_s:
            await asyncio.sleep(self.create_delay_s)
        with self._lock:
            lost = self.lose_create_answers > 0
            self.lose_create_answers -= 1 if lost else 0
        if lost:
            return self.render(json_answer({"error": "Bad gateway"}, 502))
        return self.render(answer)

    def created_tasks(self) -> list[str]:
        with self._lock:
            return [c["task_id"] for c in self.creates if c["task_id"]]

    # --- serving -----------------------------------------------------------------------

    def answer(self, request: Request, key: str, missing: Answer, unauthorized: Answer) -> Response:
        """Record the call and send the next scripted answer for ``key``."""
        with self._lock:
            self.calls.append(
                {
                    "time": time.monotonic(),
                    "path": request.url.path,
                    "query": dict(request.query_params),
                    "key": key,
                    "headers": dict(request.headers),
                }
            )
            queue = self.scripts.get(key)
            if not self.authorized(request):
                chosen = unauthorized
            elif not queue:
                chosen = missing
            else:
                chosen = queue.pop(0) if len(queue) > 1 else queue[0]
        return self.render(chosen)

    @staticmethod
    def render(answer: Answer) -> Response:
        status, body, headers = answer
        if isinstance(body, str):
            media = headers.get("content-type", "text/html")
            rest = {k: v for k, v in headers.items() if k != "content-type"}
            return Response(body, status_code=status, headers=rest, media_type=media)
        return JSONResponse(body, status_code=status, headers=headers)

    async def serve_video(self, request: Request) -> Response:
        with self._lock:
            self.downloads.append(
                {"path": request.url.path, "headers": dict(request.headers), "expired": False}
            )
        return Response(self.video_bytes, media_type="video/mp4")

    async def serve_expired(self, request: Request) -> Response:
        with self._lock:
            self.downloads.append(
                {"path": request.url.path, "headers": dict(request.headers), "expired": True}
            )
        return Response("<Error>Gone</Error>", status_code=410, media_type="application/xml")

    # --- the contract suite's CaseEmulator -----------------------------------------------

    def task_id(self, name: str) -> str:
        return f"{name}-{next(_seq)}"

    def scenarios(self, task_id: str) -> dict[str, list[Answer]]:
        """Scenario name -> answers for ``task_id`` (see provider_cases.SCENARIOS)."""
        raise NotImplementedError

    def scenario(self, task_id: str, name: str) -> None:
        self.script(task_id, self.scenarios(task_id)[name])

    def expired_fetches(self) -> int:
        with self._lock:
            return sum(1 for d in self.downloads if d["expired"])

    @contextlib.contextmanager
    def start(self) -> Iterator[ScriptedEmulator]:
        with self.serving() as emu:
            yield emu

    @contextlib.contextmanager
    def serving(self) -> Iterator[ScriptedEmulator]:
        with serve_in_thread(self.app) as url:
            self.url = url
            yield self
