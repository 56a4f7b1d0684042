"""A local fal.ai queue over real HTTP (``Authorization: Key <key>``).

``GET /{owner}/{app}/requests/{id}/status`` answers 202 while IN_QUEUE / IN_PROGRESS and 200
once COMPLETED; ``GET /{owner}/{app}/requests/{id}`` answers the model output, or a
``{"detail": [...]}`` error with ``X-Fal-Retryable``. Status and result are scripted apart:
``script_status(id, [...])`` and ``script_result(id, [...])``. Only the first two segments
of the app id are routed, as on fal; a longer path is a 404 the adapter must never cause.
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

API_KEY = "test-fal-key:secret"
MODEL = "fal-ai/kling-video/v2/master/text-to-video"


def in_queue(rid: str, position: int = 3) -> Answer:
    return (
        202,
        {
            "status": "IN_QUEUE",
            "queue_position": position,
            "request_id": rid,
            "response_url": f"https://queue.fal.run/fal-ai/kling-video/requests/{rid}",
        },
        {},
    )


def in_progress(rid: str) -> Answer:
    return (
        202,
        {"status": "IN_PROGRESS", "request_id": rid, "logs": [{"message": "step 3/50"}]},
        {},
    )


def completed(rid: str, **extra: Any) -> Answer:
    return (
        200,
        {
            "status": "COMPLETED",
            "request_id": rid,
            "logs": [],
            "metrics": {"inference_time": "61.5"},
            "response_url": f"https://queue.fal.run/fal-ai/kling-video/requests/{rid}",
            **extra,
        },
        {},
    )


def video_file(url: str) -> dict[str, Any]:
    return {
        "url": url,
        "content_type": "video/mp4",
        "file_name": "output.mp4",
        "file_size": "1048576",
    }


def result(url: str | None, *, wrapped: bool = False) -> Answer:
    body: dict[str, Any] = {"video": video_file(url)} if url else {"seed": 42}
    if wrapped:
        body = {"status": "COMPLETED", "logs": [], "response": body}
    return (200, body, {})


def results(urls: list[str]) -> Answer:
    return (200, {"videos": [video_file(u) for u in urls], "seed": "7"}, {})


def error(status: int, kind: str, msg: str, retryable: bool = False) -> Answer:
    return (
        status,
        {
            "detail": [
                {
                    "loc": ["body", "prompt"],
                    "msg": msg,
                    "type": kind,
                    "url": f"https://docs.fal.ai/errors#{kind}",
                    "input": "a prompt",
                }
            ]
        },
        {"X-Fal-Retryable": "true" if retryable else "false"},
    )


class FalEmulator(ScriptedEmulator):
    def __init__(self) -> None:
        super().__init__()
        #: every submit: path, JSON body, auth header, the request id given (or None)
        self.creates: list[dict[str, Any]] = []
        #: answers to the next submits, in turn; when empty a request is queued
        self.create_answers: list[Answer] = []
        self.app = Starlette(
            routes=[
                *self.file_routes(),
                Route("/{owner}/{app}/requests/{rid}/status", self.status),
                Route("/{owner}/{app}/requests/{rid}", self.result),
                Route("/{model:path}", self.submit, methods=["POST"]),
            ]
        )

    async def submit(self, request: Request) -> Response:
        """Queue a request: in progress on the first status call, then completed."""
        record: dict[str, Any] = {
            "path": request.url.path,
            "body": json.loads(await request.body() or b"null"),
            "auth": request.headers.get("authorization", ""),
            "task_id": None,
        }
        with self._lock:
            self.creates.append(record)
            answer = self.create_answers.pop(0) if self.create_answers else None
        if record["auth"] != f"Key {API_KEY}":
            return respond((401, {"detail": "Invalid credentials"}, {}))
        if answer is not None:
            return respond(answer)
        rid = unique("req")
        record["task_id"] = rid
        app = "/".join(request.path_params["model"].split("/")[:2])
        base = f"{self.url}/{app}/requests/{rid}"
        self.script_status(rid, [in_progress(rid), completed(rid)])
        self.script_result(rid, [result(self.video_url(rid))])
        return respond(
            (
                200,
                {
                    "request_id": rid,
                    "response_url": base,
                    "status_url": f"{base}/status",
                    "cancel_url": f"{base}/cancel",
                },
                {},
            )
        )

    def script_status(self, rid: str, answers: list[Answer]) -> None:
        self.script(f"status:{rid}", answers)

    def script_result(self, rid: str, answers: list[Answer]) -> None:
        self.script(f"result:{rid}", answers)

    def _answer(self, request: Request, key: str) -> Response:
        self.record(request, key)
        if request.headers.get("authorization") != f"Key {API_KEY}":
            return respond((401, {"detail": "Invalid credentials"}, {}))
        answer = self.next_answer(key)
        if answer is None:
            answer = (404, {"detail": "Request not found"}, {})
        return respond(answer)

    async def status(self, request: Request) -> Response:
        return self._answer(request, f"status:{request.path_params['rid']}")

    async def result(self, request: Request) -> Response:
        return self._answer(request, f"result:{request.path_params['rid']}")

    @contextlib.contextmanager
    def start(self) -> Iterator[FalEmulator]:
        with self.serving(self.app):
            yield self

    # --- the contract suite's CaseEmulator ----------------------------------------------

    def task_id(self, name: str) -> str:
        return unique(f"7f0c-{name}")

    def scenario(self, task_id: str, name: str) -> None:
        r = task_id
        a, b = self.video_url(f"{r}-a"), self.video_url(f"{r}-b")
        status: list[Answer] = [completed(r)]
        answers: dict[str, list[Answer]] = {
            "success_one": [result(a)],
            "success_many": [results([a, b])],
            "moderation": [
                error(422, "content_policy_violation", "The content could not be processed")
            ],
            "failure": [error(504, "generation_timeout", "Generation timed out")],
            "success_no_url": [result(None)],
            "expired_link": [result(self.expired_url(r)), result(a, wrapped=True)],
        }
        if name == "running":
            status = [in_progress(r)]
        elif name == "rate_limited":
            status = [(429, {"detail": "Too many requests"}, {"Retry-After": "7"})]
        elif name == "server_error":
            status = [(503, {"detail": "Service unavailable"}, {})]
        elif name == "html":
            status = [(200, HTML, {})]
        elif name == "truncated":
            status = [(200, json.dumps(completed(r)[1])[:40], {})]
        self.script_status(r, status)
        self.script_result(r, answers.get(name, [result(a)]))
