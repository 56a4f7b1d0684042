"""A local KIE.ai over real HTTP: scripted status answers per task, and video files.

``KieEmulator().script(task_id, [answer, ...])`` queues answers for one task; each poll takes
the next one and the last repeats. The create endpoints (Veo ``generate``, Market
``createTask``) record every call in ``creates``, answer ``create_answers`` in turn (then
success), and script each new task to finish after one pending poll with a video served by
the emulator itself, or as ``task_script`` (or, for Veo, ``generate_script``) says.
An answer is ``(http_status, body, headers)`` where body
is a dict (sent as JSON) or a str (sent as is). Body builders follow KIE's documented shapes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from webhook_poller.adapters.demo import sample_video_path

Answer = tuple[int, Any, dict[str, str]]
API_KEY = "test-kie-key"


def ok(data: Any) -> Answer:
    return (200, {"code": 200, "msg": "success", "data": data}, {})


def veo_pending() -> Answer:
    return ok(
        {"taskId": "x", "successFlag": 0, "response": None, "errorCode": None, "errorMessage": ""}
    )


def veo_success(urls: list[str]) -> Answer:
    return ok(
        {
            "taskId": "x",
            "successFlag": 1,
            "errorCode": None,
            "errorMessage": "",
            "response": {
                "taskId": "x",
                "resultUrls": urls,
                "originUrls": [],
                "resolution": "1080p",
            },
        }
    )


def veo_failed(code: int, message: str) -> Answer:
    return ok(
        {
            "taskId": "x",
            "successFlag": 2,
            "errorCode": code,
            "errorMessage": message,
            "response": None,
        }
    )


def market(
    state: str, urls: list[str] | None = None, fail_code: str = "", fail_msg: str = ""
) -> Answer:
    result = json.dumps({"resultUrls": urls}) if urls is not None else ""
    return (
        200,
        {
            "code": 200,
            "message": "success",
            "data": {
                "taskId": "x",
                "model": "sora-2-text-to-video",
                "state": state,
                "param": "{}",
                "resultJson": result,
                "failCode": fail_code,
                "failMsg": fail_msg,
                "costTime": 15000,
                "completeTime": 1698765432000,
                "createTime": 1698765400000,
            },
        },
        {},
    )


def runway(
    state: str,
    video_url: str = "",
    fail_code: int | None = None,
    fail_msg: str = "",
    expire_flag: int = 0,
) -> Answer:
    """KIE's Runway wrapper record (docs.kie.ai/runway-api/get-ai-video-details)."""
    return ok(
        {
            "taskId": "ee603959-debb-48d1-98c4-a6d1c717eba6",
            "parentTaskId": "",
            "generateParam": {"prompt": "a cat", "imageUrl": "", "expandPrompt": True},
            "state": state,
            "generateTime": "2023-08-15 14:30:45",
            "videoInfo": {
                "videoId": "485da89c-7fca-4340-8c04-101025b2ae71",
                "videoUrl": video_url,
                "imageUrl": "https://file.com/k/xxxxxxx.png",
            },
            "failCode": fail_code,
            "failMsg": fail_msg,
            "expireFlag": expire_flag,
        }
    )


def envelope(code: int, msg: str) -> Answer:
    return (200, {"code": code, "msg": msg, "data": None}, {})


class KieEmulator:
    """The emulated provider; ``calls`` records (time, path, task id, auth header).

    ``POST /api/v1/veo/generate`` answers a new task id, scripted with ``generate_script``
    (called with the request's base URL and the JSON body), or else pending then a success
    with one of our video files; ``generated`` records each body with its task id.
    """

    def __init__(self) -> None:
        self.scripts: dict[str, list[Answer]] = {}
        self.calls: list[dict[str, Any]] = []
        self.generated: list[dict[str, Any]] = []
        self.generate_script: Any = None
        #: paths of result downloads refused as expired (HTTP 410)
        self.expired_fetches: list[str] = []
        self.video_bytes = Path(sample_video_path()).read_bytes()
        self._lock = threading.Lock()
        #: every create call: time, path, JSON body, auth header, the task id given (or None)
        self.creates: list[dict[str, Any]] = []
        #: answers to the next create calls, in turn; when empty a task is created
        self.create_answers: list[Answer] = []
        #: seconds a create call is held after it was recorded (to kill the caller meanwhile)
        self.create_delay_s = 0.0
        #: the emulator's own URL, for the result videos of created tasks
        self.base_url = ""
        #: task id -> its status answers; default one pending poll, then success
        self.task_script: Callable[[str, str], list[Answer]] | None = None
        self.app = Starlette(
            routes=[
                Route("/api/v1/veo/generate", self.create, methods=["POST"]),
                Route("/api/v1/jobs/createTask", self.create, methods=["POST"]),
                Route("/api/v1/veo/record-info", self.status),
                Route("/api/v1/jobs/recordInfo", self.status),
                Route("/api/v1/runway/record-detail", self.status),
                Route("/files/expired/{name}.mp4", self.expired),
                Route("/files/{name}.mp4", self.video),
                Route("/files/not-video", self.html),
                Route("/files/redirect", self.redirect),
            ]
        )

    def script(self, task_id: str, answers: list[Answer]) -> None:
        with self._lock:
            self.scripts[task_id] = list(answers)

    def calls_for(self, task_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [c for c in self.calls if c["task_id"] == task_id]

    async def status(self, request: Request) -> Response:
        task_id = request.query_params.get("taskId", "")
        auth = request.headers.get("authorization", "")
        with self._lock:
            self.calls.append(
                {
                    "time": time.monotonic(),
                    "path": request.url.path,
                    "task_id": task_id,
                    "auth": auth,
                }
            )
            queue = self.scripts.get(task_id)
            if auth != f"Bearer {API_KEY}":
                answer: Answer = (
                    401,
                    {"code": 401, "msg": "You do not have access permissions"},
                    {},
                )
            elif not queue:
                answer = (200, {"code": 404, "msg": "Task not found"}, {})
            else:
                answer = queue.pop(0) if len(queue) > 1 else queue[0]
        status, body, headers = answer
        if isinstance(body, str):
            return Response(body, status_code=status, headers=headers, media_type="text/html")
        return JSONResponse(body, status_code=status, headers=headers)

    def created_tasks(self) -> list[str]:
        with self._lock:
            return [c["task_id"] for c in self.creates if c["task_id"]]

    def _default_script(self, path: str, task_id: str, base: str) -> list[Answer]:
        url = f"{base}/files/{task_id}.mp4"
        if "veo" in path:
            return [veo_pending(), veo_success([url])]
        return [market("generating"), market("success", [url])]

    async def create(self, request: Request) -> Response:
        """Veo ``generate`` and Market ``createTask``: record the call, then answer the next
        of ``create_answers`` or a new task id scripted by ``task_script`` (else by
        ``generate_script(base, body)`` for Veo, else one pending poll and success)."""
        body = await request.body()
        auth = request.headers.get("authorization", "")
        base = self.base_url or str(request.base_url).rstrip("/")
        with self._lock:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            record: dict[str, Any] = {
                "time": time.monotonic(),
                "path": request.url.path,
                "body": parsed,
                "auth": auth,
                "task_id": None,
            }
            self.creates.append(record)
            if auth != f"Bearer {API_KEY}":
                answer: Answer = (
                    200,
                    {"code": 401, "msg": "You do not have access permissions"},
                    {},
                )
            elif self.create_answers:
                answer = self.create_answers.pop(0)
            else:
                veo = "veo" in request.url.path
                task_id = f"{'veo' if veo else 'market'}_task_{len(self.creates)}"
                record["task_id"] = task_id
                if veo:
                    self.generated.append({"task_id": task_id, "body": parsed})
                if self.task_script is not None:
                    answers = self.task_script(request.url.path, task_id)
                elif veo and self.generate_script is not None:
                    answers = self.generate_script(base, parsed)
                else:
                    answers = self._default_script(request.url.path, task_id, base)
                self.scripts[task_id] = list(answers)
                answer = ok({"taskId": task_id})
            delay = self.create_delay_s
        if delay:
            await asyncio.sleep(delay)
        status, out, headers = answer
        return JSONResponse(out, status_code=status, headers=headers)

    async def video(self, request: Request) -> Response:
        return Response(self.video_bytes, media_type="video/mp4")

    async def expired(self, request: Request) -> Response:
        """A result link past its lifetime, as a CDN answers it."""
        with self._lock:
            self.expired_fetches.append(request.url.path)
        return Response("<Error>Gone</Error>", status_code=410, media_type="application/xml")

    async def html(self, request: Request) -> Response:
        return Response("<html>nope</html>", media_type="text/html")

    async def redirect(self, request: Request) -> Response:
        return Response(status_code=302, headers={"location": request.query_params["to"]})
