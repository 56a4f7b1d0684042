"""Zapier, as docs/zapier.md sets it up: a *Webhooks by Zapier → POST* action hands the task
over (form or JSON payload, Zapier's headers, every value a string, ``context__chatId``
unflattened into ``context``), and the result comes back to a *Catch Hook* URL given as
``callbackUrl``. The Catch Hook here answers the way Zapier's does: 200 with
``{"status": "success", ...}``, and 429 with ``Retry-After`` when it is rate-limited.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import serve_in_thread
from tests.support.service import CALLBACK_SECRET, base_config, run_service, wait_for

TOKEN = "zapier-test-token-7f3a9c1d2e4b5a6f"
HOOK_PATH = "/hooks/catch/1234567/abc1def/"
#: The headers a Webhooks by Zapier POST action sends besides the ones the user adds
#: (Headers: Authorization | Bearer ...). Content-Type follows the Payload Type.
ZAPIER_HEADERS = {"User-Agent": "Zapier", "Accept": "*/*", "Accept-Encoding": "gzip, deflate"}
#: Zapier's step limit: the POST action must be answered well within it.
ZAPIER_STEP_LIMIT_S = 30.0


class CatchHook:
    """A Zapier Catch Hook: records each POST and answers like hooks.zapier.com."""

    def __init__(self, rate_limited_first: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.rate_limited_first = rate_limited_first
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route(HOOK_PATH, self.catch, methods=["POST"])])

    async def catch(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.requests.append(
                {"headers": dict(request.headers), "raw": body, "body": json.loads(body)}
            )
            limited = len(self.requests) <= self.rate_limited_first
        if limited:
            return JSONResponse(
                {"status": "error", "message": "Rate limited"},
                status_code=429,
                headers={"Retry-After": "1"},
            )
        return JSONResponse(
            {
                "attempt": str(uuid.uuid4()),
                "id": str(uuid.uuid4()),
                "request_id": uuid.uuid4().hex[:16],
                "status": "success",
            }
        )

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        with serve_in_thread(self.app) as url:
            yield url + HOOK_PATH


def zapier_post(url: str, content: bytes, content_type: str) -> httpx.Response:
    """POST exactly as the Zapier action does: raw body, its headers, the user's token."""
    headers = {
        **ZAPIER_HEADERS,
        "Content-Type": content_type,
        "Authorization": f"Bearer {TOKEN}",
    }
    started = time.monotonic()
    response = httpx.post(f"{url}/poll-video", content=content, headers=headers, timeout=10)
    assert time.monotonic() - started < ZAPIER_STEP_LIMIT_S / 10
    return response


def form_body(hook_url: str, task_id: str) -> bytes:
    """Payload Type: Form. Every value is text; context is one field holding JSON."""
    data = {
        "sessionId": "zap-user-1",
        "taskId": task_id,
        "model": "demo",
        "attempt": "1",
        "callbackUrl": hook_url,
        "context": '{"chatId": "555", "zap": "video"}',
    }
    return urlencode(data).encode()


def json_body(hook_url: str, task_id: str) -> bytes:
    """Payload Type: Json, Unflatten: yes. Values stay strings; ``context__chatId`` and
    ``context__zap`` become the nested ``context`` object."""
    data = {
        "sessionId": "zap-user-1",
        "taskId": task_id,
        "model": "demo",
        "attempt": "1",
        "callbackUrl": hook_url,
        "context": {"chatId": "555", "zap": "video"},
    }
    return json.dumps(data).encode()


SHAPES = [
    ("form", "application/x-www-form-urlencoded", form_body),
    ("form", "application/x-www-form-urlencoded; charset=utf-8", form_body),
    ("json", "application/json", json_body),
    ("json", "application/json; charset=utf-8", json_body),
]


@pytest.mark.parametrize(
    "payload_type,content_type,build", SHAPES, ids=[f"{s[0]}-{i}" for i, s in enumerate(SHAPES)]
)
def test_zapier_post_action_and_catch_hook(
    tmp_path: Path, payload_type: str, content_type: str, build: Any
) -> None:
    hook = CatchHook()
    cfg = base_config(tmp_path, server={"auth_token": TOKEN})
    with hook.serving() as hook_url, run_service(cfg) as url:
        resp = zapier_post(url, build(hook_url, f"zap-{payload_type}-1"), content_type)
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["ok"] is True and answer["status"] == "queued", answer
        job_id = answer["jobId"]
        # what Zapier's next steps can map from the POST action's output
        assert answer["statusUrl"].endswith(f"/jobs/{job_id}")

        [caught] = wait_for(lambda: list(hook.requests), timeout=20)
        event = caught["body"]
        assert event["event"] == "video.succeeded"
        assert event["jobId"] == job_id and event["sessionId"] == "zap-user-1"
        assert event["context"] == {"chatId": "555", "zap": "video"}
        video = httpx.get(event["videoUrls"][0])  # signed: works without the token
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        assert caught["headers"]["content-type"] == "application/json"
        Webhook(CALLBACK_SECRET).verify(caught["raw"], caught["headers"])

        auth = {"Authorization": f"Bearer {TOKEN}"}
        job = httpx.get(f"{url}/jobs/{job_id}", headers=auth).json()
        [delivery] = job["deliveries"]
        assert delivery["target"] == "callback" and delivery["status"] == "sent"
        assert job["context"] == {"chatId": "555", "zap": "video"} and job["attempts"] >= 1


def test_failed_video_and_rate_limited_catch_hook(tmp_path: Path) -> None:
    """A failed generation reaches the Zap as video.failed with its error code; a Catch Hook
    answering 429 (Zapier's per-hook limit) gets the same event again, once, with the same
    webhook-id, after the Retry-After pause."""
    hook = CatchHook(rate_limited_first=1)
    cfg = base_config(tmp_path, server={"auth_token": TOKEN})
    with hook.serving() as hook_url, run_service(cfg) as url:
        body = json_body(hook_url, "zap-fail-moderation")
        resp = zapier_post(url, body, "application/json")
        assert resp.status_code == 200, resp.text
        job_id = resp.json()["jobId"]
        first, second = wait_for(lambda: hook.requests if len(hook.requests) >= 2 else None)
        assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
        event = second["body"]
        assert event["event"] == "video.failed" and event["jobId"] == job_id
        assert event["error"]["code"] and event["videoUrls"] == []
        auth = {"Authorization": f"Bearer {TOKEN}"}

        def sent() -> dict[str, Any] | None:
            job = httpx.get(f"{url}/jobs/{job_id}", headers=auth).json()
            [delivery] = job["deliveries"]
            return delivery if delivery["status"] == "sent" else None

        delivery = wait_for(sent)
        assert delivery["attempts"] == 2
        time.sleep(0.5)
        assert len(hook.requests) == 2  # sent once it was accepted, never again


def test_zapier_post_without_the_token_is_refused(tmp_path: Path) -> None:
    """A Zap whose Headers field lacks the token gets a clear 401, and nothing is stored."""
    cfg = base_config(tmp_path, server={"auth_token": TOKEN})
    with run_service(cfg) as url:
        resp = httpx.post(
            f"{url}/poll-video",
            content=form_body("https://hooks.zapier.com/hooks/catch/1/a/", "zap-no-token"),
            headers={**ZAPIER_HEADERS, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert resp.status_code == 401
        assert resp.headers["content-type"].startswith("application/json")
