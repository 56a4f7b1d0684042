"""A local Runway API over real HTTP: ``GET /v1/tasks/{id}`` with scripted task objects.

Shapes follow Runway's docs and ``runwayml/sdk-python`` ``TaskRetrieveResponse``:
PENDING / THROTTLED / RUNNING (``progress`` 0..1) / SUCCEEDED (``output[]``) / FAILED
(``failure``, ``failureCode``) / CANCELLED. Like Runway, a request without the
``X-Runway-Version`` header is refused with 400, a wrong key with 401, an unknown task 404.

Create calls: ``POST /v1/text_to_video`` (``model``, ``promptText``, ``ratio``, ``duration``
required) and ``POST /v1/image_to_video`` (``promptImage`` too) answer ``{id}``; a body
missing a required field is a 400 ``{error, issues}``, as Runway's validation answers.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.emu_scripted import Answer, ScriptedEmulator, html, json_answer, truncated

API_KEY = "key_" + "0123456789abcdef" * 8  # the documented key_<128 hex> form, test-only
VERSION = "2024-11-06"


def task(status: str, **fields: Any) -> Answer:
    body: dict[str, Any] = {
        "id": "17f20503-6c24-4c16-946b-35dbbce2af2f",
        "status": status,
        "createdAt": "2024-06-27T19:49:32.334Z",
    }
    body.update(fields)
    return json_answer(body)


def pending() -> Answer:
    return task("PENDING")


def throttled() -> Answer:
    return task("THROTTLED")


def running(progress: Any = 0.42) -> Answer:
    return task("RUNNING", progress=progress)


def succeeded(urls: list[str]) -> Answer:
    return task("SUCCEEDED", output=urls)


def failed(code: str | None, failure: str = "An unexpected error occurred.") -> Answer:
    fields: dict[str, Any] = {"failure": failure}
    if code is not None:
        fields["failureCode"] = code
    return task("FAILED", **fields)


def cancelled() -> Answer:
    return task("CANCELLED")


class RunwayEmulator(ScriptedEmulator):
    def __init__(self) -> None:
        super().__init__(
            [
                Route("/v1/tasks/{task_id:path}", self.status),
                Route("/v1/text_to_video", self.create, methods=["POST"]),
                Route("/v1/image_to_video", self.create, methods=["POST"]),
            ],
            lambda r: r.headers.get("authorization") == f"Bearer {API_KEY}",
        )

    async def status(self, request: Request) -> Response:
        if request.headers.get("x-runway-version") != VERSION:
            return self.render(json_answer({"error": "Invalid API version"}, 400))
        return self.answer(
            request,
            request.path_params["task_id"],
            missing=json_answer({"error": "Task not found"}, 404),
            unauthorized=json_answer({"error": "Incorrect API key provided"}, 401),
        )

    async def create(self, request: Request) -> Response:
        record, answer = await self.begin_create(request)
        if not self.authorized(request):
            return self.render(json_answer({"error": "Incorrect API key provided"}, 401))
        if request.headers.get("x-runway-version") != VERSION:
            return self.render(json_answer({"error": "Invalid API version"}, 400))
        if answer is not None:
            return self.render(answer)
        body = record["body"] if isinstance(record["body"], dict) else {}
        required = ["model", "promptText", "ratio", "duration"]
        if request.url.path.endswith("image_to_video"):
            required.append("promptImage")
        missing = [name for name in required if name not in body]
        if missing:
            issues = [{"path": [name], "message": "Required"} for name in missing]
            return self.render(
                json_answer({"error": "Validation of body failed", "issues": issues}, 400)
            )
        task_id = str(uuid.uuid4())
        self.script(task_id, [running(0.5), succeeded([self.cdn_video(task_id)])])
        return await self.finish_create(record, task_id, json_answer({"id": task_id}))

    def scenarios(self, task_id: str) -> dict[str, list[Answer]]:
        a, b = self.video(f"{task_id}-a"), self.video(f"{task_id}-b")
        return {
            "running": [running(0.3)],
            "success_one": [succeeded([a])],
            "success_many": [succeeded([a, b])],
            "moderation": [failed("SAFETY.INPUT.TEXT", "The prompt was flagged.")],
            "failure": [failed("INTERNAL.BAD_OUTPUT.CODE01")],
            "rate_limited": [
                json_answer({"error": "Too many requests"}, 429, {"Retry-After": "7"})
            ],
            "server_error": [json_answer({"error": "Service unavailable"}, 503)],
            "html": [html(502)],
            "truncated": [truncated()],
            "success_no_url": [succeeded([])],
            "expired_link": [succeeded([self.expired_video(task_id)]), succeeded([a])],
        }
