"""A local Kling API over real HTTP: ``GET /v1/videos/{text2video|image2video}/{task_id}``.

Shapes follow Kling's API docs: the envelope ``{code: 0, message: "SUCCEED", request_id,
data}`` (non-zero codes inside it, sometimes with HTTP 200), ``task_status`` submitted /
processing / succeed / failed, ``task_status_msg``, ``task_result.videos[{id, url,
duration}]`` with the duration as a string and times in epoch ms. Authentication is a JWT
(HS256, ``iss`` = access key) checked here with joserfc, or the static test token.
A task scripted for one kind is unknown (HTTP 404, code 1203) to the other.

Create calls: ``POST /v1/videos/text2video`` and ``/v1/videos/image2video`` (``image``
required) answer the envelope with ``data {task_id, task_status: submitted, task_info
{external_task_id}}``; a task can then be read by its ``external_task_id`` as well. A
missing ``model_name`` or ``prompt`` is HTTP 400 with code 1201; a second task with the
same ``external_task_id`` is refused with 1201, as Kling asks it to be unique.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.emu_scripted import Answer, ScriptedEmulator, html, json_answer, truncated

ACCESS_KEY = "ak-test-kling"
SECRET_KEY = "sk-test-kling-0123456789abcdef"
API_TOKEN = "kling-static-test-token"

_task_numbers = itertools.count(866889456698785798)


def envelope(code: int, message: str, data: Any = None, status: int = 200) -> Answer:
    return json_answer(
        {"code": code, "message": message, "request_id": "req-1", "data": data}, status
    )


def task(status: str, **fields: Any) -> Answer:
    data: dict[str, Any] = {
        "task_id": "793457123456789",
        "task_status": status,
        "task_status_msg": "",
        "created_at": 1722769557708,
        "updated_at": 1722769557708,
    }
    data.update(fields)
    return envelope(0, "SUCCEED", data)


def submitted() -> Answer:
    return task("submitted")


def processing() -> Answer:
    return task("processing")


def succeed(urls: list[str]) -> Answer:
    videos = [{"id": f"v{i}", "url": u, "duration": "5.1"} for i, u in enumerate(urls)]
    return task("succeed", task_result={"videos": videos})


def failed(message: str) -> Answer:
    return task("failed", task_status_msg=message)


def _jwt_ok(value: str) -> bool:
    try:
        token = jwt.decode(value, OctKey.import_key(SECRET_KEY), algorithms=["HS256"])
    except (JoseError, ValueError):
        return False
    claims = token.claims
    now = time.time()
    return claims.get("iss") == ACCESS_KEY and float(claims.get("nbf", now + 1)) <= now < float(
        claims.get("exp", 0)
    )


def authorized(request: Request) -> bool:
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer "):
        return False
    value = header.removeprefix("Bearer ")
    return value == API_TOKEN or _jwt_ok(value)


class KlingEmulator(ScriptedEmulator):
    def __init__(self) -> None:
        super().__init__(
            [
                Route("/v1/videos/{kind}", self.create, methods=["POST"]),
                Route("/v1/videos/{kind}/{task_id:path}", self.status),
            ],
            authorized,
        )
        self.kinds: dict[str, str] = {}
        #: external_task_id -> task_id of the tasks created here
        self.external: dict[str, str] = {}

    def script_kind(self, task_id: str, kind: str, answers: list[Answer]) -> None:
        self.kinds[task_id] = kind
        self.script(task_id, answers)

    def rate_limited_create(self) -> Answer:
        return json_answer(
            {"code": 1302, "message": "Rate limit exceeded", "request_id": "r"},
            429,
            {"Retry-After": "1"},
        )

    async def create(self, request: Request) -> Response:
        record, answer = await self.begin_create(request)
        if not authorized(request):
            return self.render(envelope(1000, "Authentication failed", None, 401))
        if answer is not None:
            return self.render(answer)
        kind = request.path_params["kind"]
        body = record["body"] if isinstance(record["body"], dict) else {}
        needed = ["model_name", "prompt"] + (["image"] if kind == "image2video" else [])
        external = body.get("external_task_id")
        if any(not body.get(name) for name in needed) or external in self.external:
            return self.render(envelope(1201, "Invalid request parameters", None, 400))
        task_id = str(next(_task_numbers))
        if external:
            self.external[external] = task_id
        info = {"external_task_id": external} if external else {}
        video = {"id": "v0", "url": self.cdn_video(task_id), "duration": "5.1"}
        answers = [
            task("processing", task_id=task_id, task_info=info),
            task("succeed", task_id=task_id, task_info=info, task_result={"videos": [video]}),
        ]
        self.script_kind(task_id, kind, answers)
        data = {
            "task_id": task_id,
            "task_status": "submitted",
            "task_info": info,
            "created_at": 1722769557708,
            "updated_at": 1722769557708,
        }
        return await self.finish_create(record, task_id, envelope(0, "SUCCEED", data))

    async def status(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        task_id = self.external.get(task_id, task_id)
        kind = request.path_params["kind"]
        unknown = envelope(1203, "Resource not found", None, 404)
        if self.kinds.get(task_id, "text2video") != kind:
            with self._lock:
                self.calls.append(
                    {
                        "time": time.monotonic(),
                        "path": request.url.path,
                        "key": task_id,
                        "query": {},
                        "headers": dict(request.headers),
                    }
                )
            return self.render(unknown)
        return self.answer(
            request,
            task_id,
            missing=unknown,
            unauthorized=envelope(1000, "Authentication failed", None, 401),
        )

    def scenarios(self, task_id: str) -> dict[str, list[Answer]]:
        a, b = self.video(f"{task_id}-a"), self.video(f"{task_id}-b")
        return {
            "running": [processing()],
            "success_one": [succeed([a])],
            "success_many": [succeed([a, b])],
            "moderation": [failed("Failure to pass the risk control system")],
            "failure": [failed("Generation failed, please try again")],
            "rate_limited": [
                json_answer(
                    {"code": 1302, "message": "Rate limit exceeded", "request_id": "r"},
                    429,
                    {"Retry-After": "7"},
                )
            ],
            "server_error": [envelope(5000, "Server internal error", None, 500)],
            "html": [html(502)],
            "truncated": [truncated('{"code": 0, "message": "SUCCEED", "data": {"task_st')],
            "success_no_url": [succeed([])],
            "expired_link": [succeed([self.expired_video(task_id)]), succeed([a])],
        }
