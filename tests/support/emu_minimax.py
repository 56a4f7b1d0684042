"""A local MiniMax API over real HTTP: ``GET /v1/query/video_generation?task_id=`` and
``GET /v1/files/retrieve?file_id=``.

Shapes follow platform.minimax.io's video-generation-query and video-generation-download
pages: capitalised ``status`` (Preparing / Queueing / Processing / Success / Fail), only a
``file_id`` (a string) on success, ``file.download_url`` from the files API (``file_id`` an
int there), and ``base_resp {status_code, status_msg}`` carrying errors inside HTTP 200
(1004 auth, 1008 balance, 1002 rate limit, 1026/1027 sensitive content). Files are
scripted under the key ``file:<file_id>``.

Create calls: ``POST /v1/video_generation`` answers ``{task_id, base_resp}``; a wrong key is
``base_resp`` 1004 and a missing ``model`` or ``prompt`` 2013, both with HTTP 200 as
MiniMax answers them. A ``callback_url`` is first checked the way MiniMax does: a POST of
``{"challenge": ...}`` that must be echoed (``challenges`` records the answers).
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.emu_scripted import Answer, ScriptedEmulator, html, json_answer, truncated

API_KEY = "minimax-test-key-71d2"

_file_ids = itertools.count()


def base_resp(code: int = 0, msg: str = "success") -> dict[str, Any]:
    return {"status_code": code, "status_msg": msg}


def query(status: str, file_id: str = "", **fields: Any) -> Answer:
    body: dict[str, Any] = {
        "task_id": "106916112212032",
        "status": status,
        "file_id": file_id,
        "base_resp": base_resp(),
    }
    body.update(fields)
    return json_answer(body)


def preparing() -> Answer:
    return query("Preparing")


def queueing() -> Answer:
    return query("Queueing")


def processing() -> Answer:
    return query("Processing")


def success(file_id: str) -> Answer:
    return query("Success", file_id, video_width=1366, video_height=768)


def fail(msg: str = "") -> Answer:
    return query("Fail", base_resp=base_resp(0, msg or "success"))


def error(code: int, msg: str) -> Answer:
    """An error carried in ``base_resp`` with HTTP 200."""
    return json_answer({"task_id": "", "status": "", "base_resp": base_resp(code, msg)})


def file(url: str | None, file_id: int = 205258526306433) -> Answer:
    info: dict[str, Any] = {
        "file_id": file_id,
        "bytes": 0,
        "created_at": 1700469398,
        "filename": "output_aigc.mp4",
        "purpose": "video_generation",
    }
    if url is not None:
        info["download_url"] = url
    return json_answer({"file": info, "base_resp": base_resp()})


class MinimaxEmulator(ScriptedEmulator):
    def __init__(self) -> None:
        super().__init__(
            [
                Route("/v1/video_generation", self.create, methods=["POST"]),
                Route("/v1/query/video_generation", self.query),
                Route("/v1/files/retrieve", self.retrieve),
            ],
            lambda r: r.headers.get("authorization") == f"Bearer {API_KEY}",
        )
        self.challenges: list[Any] = []

    def rate_limited_create(self) -> Answer:
        return json_answer({"task_id": "", "base_resp": base_resp(1002, "rate limit exceeded")})

    async def create(self, request: Request) -> Response:
        record, answer = await self.begin_create(request)
        if not self.authorized(request):
            return self.render(error(1004, "login fail: Please carry the API secret key"))
        if answer is not None:
            return self.render(answer)
        body = record["body"] if isinstance(record["body"], dict) else {}
        if not body.get("model") or not body.get("prompt"):
            return self.render(error(2013, "invalid params"))
        callback = body.get("callback_url")
        if callback:
            async with httpx.AsyncClient() as http:
                echoed = await http.post(callback, json={"challenge": "minimax-check-1"})
            self.challenges.append(echoed.json() if echoed.status_code == 200 else None)
        task_id = str(106916112212032 + next(_file_ids))
        file_id = str(305258526306433 + next(_file_ids))
        self.script(task_id, [processing(), success(file_id)])
        self.script(f"file:{file_id}", [file(self.cdn_video(task_id))])
        created = json_answer({"task_id": task_id, "base_resp": base_resp()})
        return await self.finish_create(record, task_id, created)

    async def query(self, request: Request) -> Response:
        return self.answer(
            request,
            request.query_params.get("task_id", ""),
            missing=error(2013, "invalid params, task not found"),
            unauthorized=error(1004, "login fail: Please carry the API secret key"),
        )

    async def retrieve(self, request: Request) -> Response:
        return self.answer(
            request,
            "file:" + request.query_params.get("file_id", ""),
            missing=error(2013, "file not found"),
            unauthorized=error(1004, "login fail: Please carry the API secret key"),
        )

    def scenario(self, task_id: str, name: str) -> None:
        """A query answer for ``task_id`` and, for the successes, the file it points to."""
        file_id = str(205258526306433 + next(_file_ids))
        a = self.video(f"{task_id}-a")
        files = {
            "success_one": [file(a)],
            "success_no_url": [file(None)],
            "expired_link": [file(self.expired_video(task_id)), file(a)],
        }
        self.script(f"file:{file_id}", files.get(name, [file(a)]))
        queries: dict[str, list[Answer]] = {
            "running": [processing()],
            "success_one": [success(file_id)],
            "moderation": [error(1026, "input new_sensitive")],
            "failure": [fail("video generation failed")],
            "rate_limited": [
                json_answer({"base_resp": base_resp(1002, "rate limit")}, 429, {"Retry-After": "7"})
            ],
            "server_error": [json_answer({"error": "bad gateway"}, 502)],
            "html": [html(502)],
            "truncated": [truncated('{"task_id": "1", "status": "Succ')],
            "success_no_url": [success(file_id)],
            "expired_link": [success(file_id)],
        }
        self.script(task_id, queries[name])
