"""Local stand-ins for chat services, over real HTTP.

``TelegramEmulator`` answers the Bot API methods we use (getMe, sendVideo, sendMessage,
answerCallbackQuery, setWebhook) the way api.telegram.org does, parsing the real form or
multipart requests python-telegram-bot sends. With ``local_mode=True`` it is a server started
with ``telegram-bot-api --local``: a ``file://`` URI in place of an upload is read from disk,
as that server does; without it, such a URI is refused as the cloud refuses it.
``ChatWebhook`` is a Slack- or Discord-style incoming webhook. Both record every call and can
be scripted to answer errors (429 with retry_after, 400, 500) in turn.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import serve_in_thread

BOT_TOKEN = "123456:TEST-token-for-the-emulator_abcdef"


class TelegramEmulator:
    def __init__(self, token: str = BOT_TOKEN, local_mode: bool = False) -> None:
        self.token = token
        self.local_mode = local_mode
        self.calls: list[dict[str, Any]] = []
        #: queued error answers: (http status, description, retry_after or None)
        self.errors: list[tuple[int, str, int | None]] = []
        self._lock = threading.Lock()
        self._next_id = 100
        self.app = Starlette(
            routes=[
                Route("/bot{token}/{method}", self.handle, methods=["POST", "GET"]),
            ]
        )

    def base_url(self, url: str) -> str:
        return f"{url}/bot"

    async def handle(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return JSONResponse(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status_code=401
            )
        method = request.path_params["method"]
        fields: dict[str, Any] = {}
        files: dict[str, dict[str, Any]] = {}
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            form = await request.form()
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    files[key] = {
                        "filename": value.filename,
                        "size": len(data),
                        "head": data[:16],
                        "content_type": value.content_type,
                    }
                else:
                    fields[key] = value
            await form.close()
        elif ctype.startswith("application/json"):
            fields = await request.json()
        local_error = self._read_local_files(fields, files)
        call = {
            "method": method,
            "fields": fields,
            "files": files,
            "content_type": ctype,
            "at": time.monotonic(),
        }
        with self._lock:
            self.calls.append(call)
            error = self.errors.pop(0) if self.errors and method != "getMe" else None
            self._next_id += 1
            message_id = self._next_id
        error = error or local_error
        if error is not None:
            status, description, retry_after = error
            body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
            if retry_after is not None:
                body["parameters"] = {"retry_after": retry_after}
            return JSONResponse(body, status_code=status)
        if method == "getMe":
            return JSONResponse(
                {
                    "ok": True,
                    "result": {
                        "id": 123456,
                        "is_bot": True,
                        "first_name": "Poller",
                        "username": "poller_bot",
                    },
                }
            )
        if method in ("answerCallbackQuery", "setWebhook", "deleteWebhook"):
            return JSONResponse({"ok": True, "result": True})
        chat = {"id": int(fields.get("chat_id", 0)), "type": "private"}
        result: dict[str, Any] = {"message_id": message_id, "date": int(time.time()), "chat": chat}
        if method == "sendVideo":
            result["video"] = {
                "file_id": f"vid{message_id}",
                "file_unique_id": f"u{message_id}",
                "width": int(fields.get("width") or 0),
                "height": int(fields.get("height") or 0),
                "duration": int(fields.get("duration") or 0),
            }
            if fields.get("caption"):
                result["caption"] = fields["caption"]
        elif method == "sendMessage":
            result["text"] = fields.get("text", "")
        else:
            return JSONResponse(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status_code=404
            )
        return JSONResponse({"ok": True, "result": result})

    def _read_local_files(
        self, fields: dict[str, Any], files: dict[str, dict[str, Any]]
    ) -> tuple[int, str, int | None] | None:
        """``file://`` media fields: read from disk in local mode, refused otherwise."""
        for key in ("video", "photo", "document", "animation"):
            value = fields.get(key)
            if not (isinstance(value, str) and value.startswith("file://")):
                continue
            if not self.local_mode:
                return (400, "Bad Request: wrong HTTP URL specified", None)
            path = Path(unquote(urlsplit(value).path))
            if not path.is_file():
                return (400, "Bad Request: file not found", None)
            data = path.read_bytes()
            files[key] = {
                "filename": path.name,
                "size": len(data),
                "head": data[:16],
                "content_type": None,
                "local_path": str(path),
            }
        return None

    def sent(self, method: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                c
                for c in self.calls
                if c["method"] != "getMe" and (method is None or c["method"] == method)
            ]

    @staticmethod
    def markup(call: dict[str, Any]) -> dict[str, Any]:
        return json.loads(call["fields"]["reply_markup"])

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        with serve_in_thread(self.app) as url:
            yield url


class ChatWebhook:
    """An incoming-webhook endpoint; ``answers`` are (status, headers, body) used in turn."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[tuple[int, dict[str, str], Any]] = []
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append({"path": request.url.path, "body": body, "at": time.monotonic()})
            answer = self.answers.pop(0) if self.answers else (200, {}, "ok")
        status, headers, payload = answer
        if isinstance(payload, dict):
            return JSONResponse(payload, status_code=status, headers=headers)
        return Response(str(payload), status_code=status, headers=headers)

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        with serve_in_thread(self.app) as url:
            yield url
