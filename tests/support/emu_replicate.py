"""A local Replicate over real HTTP: ``GET /v1/predictions/{id}`` with a Bearer token.

Prediction bodies carry every documented field, traps included: ``urls.get`` / ``urls.web``
are API links (not results), ``input`` holds an input image URL, ``output`` is a string, a
list or an object, ``error`` is a string, ``aborted`` is a status most SDKs do not know.
Also a :class:`~tests.support.provider_cases.CaseEmulator` for the contract suite.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.emu_base import HTML, Answer, ScriptedEmulator, respond, unique

API_TOKEN = "r8_test-replicate-token"
E005 = (
    "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
)


def prediction(
    pid: str,
    status: str,
    output: Any = None,
    *,
    error: str | None = None,
    data_removed: bool = False,
    base: str = "https://api.replicate.com",
) -> Answer:
    return (
        200,
        {
            "id": pid,
            "model": "google/veo-3",
            "version": "hidden",
            "input": {"prompt": "a cat", "image": "https://example.com/input-cat.png"},
            "logs": "Generating...",
            "output": output,
            "data_removed": data_removed,
            "error": error,
            "status": status,
            "created_at": "2026-12-02T12:00:00.000Z",
            "started_at": "2026-12-02T12:00:01.000Z" if status != "starting" else None,
            "completed_at": None,
            "urls": {
                "get": f"{base}/v1/predictions/{pid}",
                "cancel": f"{base}/v1/predictions/{pid}/cancel",
                "stream": f"https://stream.replicate.com/v1/files/{pid}",
                "web": f"https://replicate.com/p/{pid}",
            },
            "metrics": {"predict_time": 61.2} if status == "succeeded" else {},
        },
        {},
    )


class ReplicateEmulator(ScriptedEmulator):
    def __init__(self) -> None:
        super().__init__()
        #: every create call: path, JSON body, auth header, the prediction id given (or None)
        self.creates: list[dict[str, Any]] = []
        #: answers to the next create calls, in turn; when empty a prediction is created
        self.create_answers: list[Answer] = []
        self.app = Starlette(
            routes=[
                Route("/v1/predictions/{pid}", self.get_prediction),
                Route(
                    "/v1/models/{owner}/{name}/predictions",
                    self.create_prediction,
                    methods=["POST"],
                ),
                *self.file_routes(),
            ]
        )

    async def create_prediction(self, request: Request) -> Response:
        """Create: 201 with a ``starting`` prediction that succeeds on the second poll."""
        body = json.loads(await request.body() or b"null")
        record: dict[str, Any] = {
            "path": request.url.path,
            "body": body,
            "auth": request.headers.get("authorization", ""),
            "task_id": None,
        }
        with self._lock:
            self.creates.append(record)
            answer = self.create_answers.pop(0) if self.create_answers else None
        if record["auth"] != f"Bearer {API_TOKEN}":
            return respond((401, {"title": "Unauthenticated", "status": 401}, {}))
        if answer is not None:
            return respond(answer)
        pid = unique("pred")
        record["task_id"] = pid
        self.script(
            pid, [prediction(pid, "processing"), prediction(pid, "succeeded", self.video_url(pid))]
        )
        _status, created, headers = prediction(pid, "starting")
        return respond((201, created, headers))

    async def get_prediction(self, request: Request) -> Response:
        pid = request.path_params["pid"]
        self.record(request, pid)
        if request.headers.get("authorization") != f"Bearer {API_TOKEN}":
            return respond(
                (
                    401,
                    {
                        "title": "Unauthenticated",
                        "detail": "You did not pass a valid authentication token",
                        "status": 401,
                    },
                    {},
                )
            )
        answer = self.next_answer(pid)
        if answer is None:
            answer = (404, {"title": "Not found", "detail": "Not found.", "status": 404}, {})
        return respond(answer)

    @contextlib.contextmanager
    def start(self) -> Iterator[ReplicateEmulator]:
        with self.serving(self.app):
            yield self

    # --- the contract suite's CaseEmulator ----------------------------------------------

    def task_id(self, name: str) -> str:
        return unique(name.replace("_", ""))

    def scenario(self, task_id: str, name: str) -> None:
        a, b = self.video_url(f"{task_id}-a"), self.video_url(f"{task_id}-b")
        p = task_id
        answers: dict[str, list[Answer]] = {
            "running": [prediction(p, "processing")],
            "success_one": [prediction(p, "succeeded", a)],
            "success_many": [prediction(p, "succeeded", [a, b])],
            "moderation": [prediction(p, "failed", error=E005)],
            "failure": [prediction(p, "failed", error="CUDA out of memory")],
            "rate_limited": [
                (
                    429,
                    {"detail": "Request was throttled. Your rate limit resets in ~7s."},
                    {"Retry-After": "7"},
                )
            ],
            "server_error": [(500, {"detail": "Internal server error", "status": 500}, {})],
            "html": [(200, HTML, {})],
            "truncated": [(200, json.dumps(prediction(p, "succeeded", a)[1])[:80], {})],
            "success_no_url": [prediction(p, "succeeded", None)],
            "expired_link": [
                prediction(p, "succeeded", self.expired_url(p)),
                prediction(p, "succeeded", a),
            ],
        }
        self.script(task_id, answers[name])
