"""A local Luma Dream Machine API over real HTTP: ``GET /dream-machine/v1/generations/{id}``.

Shapes follow ``lumalabs/lumaai-api`` openapi.yaml and ``lumaai-python``
``types/generation.py``: ``state`` queued / dreaming / completed / failed, the video in
``assets.video`` next to ``assets.image`` and ``assets.progress_video`` (not results),
input keyframe URLs under ``request``, ``failure_reason`` (``state_reason`` in v1alpha).

Create calls: ``POST /dream-machine/v1/generations`` answers 201 with the Generation
(``state`` queued); no ``prompt`` is a 400 ``{detail}``.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.emu_scripted import Answer, ScriptedEmulator, html, json_answer, truncated

API_KEY = "luma-test-key-9f3c"
INPUT_IMAGE = "https://storage.cdn-luma.com/dream_machine/input/frame0.jpg"


def generation(state: str, assets: dict[str, Any] | None = None, **fields: Any) -> Answer:
    body: dict[str, Any] = {
        "id": "b25edc94-ce8c-450d-8235-68a26d0724a4",
        "generation_type": "video",
        "state": state,
        "failure_reason": None,
        "created_at": "2024-12-01T10:00:00.000Z",
        "assets": assets,
        "model": "ray-2",
        "request": {
            "prompt": "a tiger walking in snow",
            "keyframes": {"frame0": {"type": "image", "url": INPUT_IMAGE}},
        },
    }
    body.update(fields)
    return json_answer(body)


def queued() -> Answer:
    return generation("queued")


def dreaming() -> Answer:
    return generation("dreaming", assets={"progress_video": "https://x.example/progress.mp4"})


def completed(video: Any) -> Answer:
    return generation(
        "completed",
        assets={"video": video, "image": "https://storage.cdn-luma.com/thumb.jpg"},
    )


def failed(reason: str, key: str = "failure_reason") -> Answer:
    return generation("failed", **{key: reason})


class LumaEmulator(ScriptedEmulator):
    def __init__(self) -> None:
        super().__init__(
            [
                Route("/dream-machine/v1/generations", self.create, methods=["POST"]),
                Route("/dream-machine/v1/generations/{generation_id:path}", self.status),
            ],
            lambda r: r.headers.get("authorization") == f"Bearer {API_KEY}",
        )

    async def status(self, request: Request) -> Response:
        return self.answer(
            request,
            request.path_params["generation_id"],
            missing=json_answer({"detail": "Generation not found"}, 404),
            unauthorized=json_answer({"detail": "Invalid API key"}, 401),
        )

    def rate_limited_create(self) -> Answer:
        return json_answer({"detail": "Too many requests"}, 429, {"Retry-After": "1"})

    async def create(self, request: Request) -> Response:
        record, answer = await self.begin_create(request)
        if not self.authorized(request):
            return self.render(json_answer({"detail": "Invalid API key"}, 401))
        if answer is not None:
            return self.render(answer)
        body = record["body"] if isinstance(record["body"], dict) else {}
        if not body.get("prompt"):
            return self.render(json_answer({"detail": "prompt is required"}, 400))
        task_id = str(uuid.uuid4())
        video = self.cdn_video(task_id)
        self.script(task_id, [generation("dreaming", id=task_id), completed(video)])
        _status, created, _headers = generation("queued", id=task_id, request=body)
        return await self.finish_create(record, task_id, json_answer(created, 201))

    def scenarios(self, task_id: str) -> dict[str, list[Answer]]:
        a = self.video(f"{task_id}-a")
        return {
            "running": [dreaming()],
            "success_one": [completed(a)],
            "moderation": [failed("400: prompt not allowed because advanced moderation failed")],
            "failure": [failed("Internal server error")],
            "rate_limited": [
                json_answer({"detail": "Too many requests"}, 429, {"Retry-After": "7"})
            ],
            "server_error": [json_answer({"detail": "Internal server error"}, 500)],
            "html": [html(502)],
            "truncated": [truncated('{"id": "x", "state": "comp')],
            "success_no_url": [completed(None)],
            "expired_link": [completed(self.expired_video(task_id)), completed(a)],
        }
