"""A local Gemini API (Veo long-running operations) over real HTTP.

``GET /v1beta/{operation name}`` answers scripted operation bodies keyed by the operation
name (slashes and all); the key goes in ``x-goog-api-key``. Result files live on the API
host, ``/v1beta/files/{id}:download?alt=media``, and need the key (403 without it; an id
starting with ``gone-`` answers 410, an expired file);
``redirect_to`` sends them on to another host, as Google's storage redirect does.
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

API_KEY = "test-gemini-key"
MODEL = "veo-3.0-generate-001"
RESPONSE_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse"


def op_name(name: str) -> str:
    return f"models/{MODEL}/operations/{name}"


def running(name: str) -> Answer:
    """``done`` is absent while the operation runs; there is no progress field."""
    return (200, {"name": name, "metadata": {"@type": "type.googleapis.com/x.Metadata"}}, {})


def done(name: str, uris: list[str], *, sdk_spelling: bool = False) -> Answer:
    key = "generatedVideos" if sdk_spelling else "generatedSamples"
    return (
        200,
        {
            "name": name,
            "done": True,
            "response": {
                "@type": RESPONSE_TYPE,
                "generateVideoResponse": {key: [{"video": {"uri": u}} for u in uris]},
            },
        },
        {},
    )


def safety_block(name: str, count: Any = 1) -> Answer:
    return (
        200,
        {
            "name": name,
            "done": True,
            "response": {
                "@type": RESPONSE_TYPE,
                "generateVideoResponse": {
                    "raiMediaFilteredCount": count,
                    "raiMediaFilteredReasons": [
                        "Unable to generate videos because the prompt may violate our policies."
                    ],
                },
            },
        },
        {},
    )


def op_error(name: str, code: int, message: str) -> Answer:
    return (200, {"name": name, "done": True, "error": {"code": code, "message": message}}, {})


def http_error(status: int, message: str, grpc_status: str) -> Answer:
    return (status, {"error": {"code": status, "message": message, "status": grpc_status}}, {})


class GeminiEmulator(ScriptedEmulator):
    def __init__(self, redirect_to: str | None = None) -> None:
        super().__init__()
        self.redirect_to = redirect_to
        #: every create call: path, JSON body, key header, the operation name given (or None)
        self.creates: list[dict[str, Any]] = []
        #: answers to the next create calls, in turn; when empty an operation is started
        self.create_answers: list[Answer] = []
        self.app = Starlette(
            routes=[
                Route("/v1beta/models/{model}:predictLongRunning", self.create, methods=["POST"]),
                Route("/v1beta/files/{file:path}", self.file),
                Route("/v1beta/{name:path}", self.operation),
                *self.file_routes(),
            ]
        )

    async def create(self, request: Request) -> Response:
        """Start an operation that is done on its second poll with one file on this host."""
        record: dict[str, Any] = {
            "path": request.url.path,
            "body": json.loads(await request.body() or b"null"),
            "key": request.headers.get("x-goog-api-key", ""),
            "task_id": None,
        }
        with self._lock:
            self.creates.append(record)
            answer = self.create_answers.pop(0) if self.create_answers else None
        if record["key"] != API_KEY:
            return respond(http_error(400, "API key not valid. Please pass a valid API key.", "X"))
        if answer is not None:
            return respond(answer)
        name = f"models/{request.path_params['model']}/operations/{unique('op')}"
        record["task_id"] = name
        self.script(name, [running(name), done(name, [self.file_uri(name.rsplit("/", 1)[-1])])])
        return respond((200, {"name": name}, {}))

    def file_uri(self, file_id: str) -> str:
        return f"{self.url}/v1beta/files/{file_id}:download?alt=media"

    async def operation(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.record(request, name)
        if request.headers.get("x-goog-api-key") != API_KEY:
            return respond(
                (
                    400,
                    {
                        "error": {
                            "code": 400,
                            "message": "API key not valid. Please pass a valid API key.",
                            "status": "INVALID_ARGUMENT",
                            "details": [
                                {
                                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                    "reason": "API_KEY_INVALID",
                                }
                            ],
                        }
                    },
                    {},
                )
            )
        answer = self.next_answer(name)
        if answer is None:
            answer = http_error(404, f"Operation {name} not found", "NOT_FOUND")
        return respond(answer)

    async def file(self, request: Request) -> Response:
        file_id = request.path_params["file"].removesuffix(":download")
        self.record(request, f"file:{file_id}")
        if request.headers.get("x-goog-api-key") != API_KEY:
            return respond(http_error(403, "The caller does not have permission", "DENIED"))
        if file_id.startswith("gone-"):
            return await self.expired(request)
        if self.redirect_to:
            return Response(
                status_code=302, headers={"location": f"{self.redirect_to}/files/{file_id}.mp4"}
            )
        return await self.video(request)

    @contextlib.contextmanager
    def start(self) -> Iterator[GeminiEmulator]:
        with self.serving(self.app):
            yield self

    # --- the contract suite's CaseEmulator ----------------------------------------------

    def task_id(self, name: str) -> str:
        return op_name(unique(name))

    def scenario(self, task_id: str, name: str) -> None:
        a, b = self.file_uri(f"{task_id.rsplit('/', 1)[-1]}-a"), self.file_uri("b")
        answers: dict[str, list[Answer]] = {
            "running": [running(task_id)],
            "success_one": [done(task_id, [a])],
            "success_many": [done(task_id, [a, b])],
            "moderation": [safety_block(task_id, "1")],
            "failure": [op_error(task_id, 13, "Internal error encountered.")],
            "rate_limited": [
                (
                    429,
                    {"error": {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}},
                    {"Retry-After": "7"},
                )
            ],
            "server_error": [
                http_error(503, "The service is currently unavailable.", "UNAVAILABLE")
            ],
            "html": [(200, HTML, {})],
            "truncated": [(200, json.dumps(done(task_id, [a])[1])[:60], {})],
            "success_no_url": [done(task_id, [])],
            "expired_link": [
                done(task_id, [self.file_uri(f"gone-{task_id.rsplit('/', 1)[-1]}")]),
                done(task_id, [a]),
            ],
        }
        self.script(task_id, answers[name])
