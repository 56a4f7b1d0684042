"""A local webhook receiver for the benchmarks: verifies each signed callback, counts jobs.

Every POST is checked with the Standard Webhooks signature (the secret the bench configures
as ``callbacks.secret``); ``/stats`` answers how many distinct jobs were announced with
``video.succeeded``, how many requests came and how many signatures failed.

    python -m bench.callback_receiver --port 8099
"""

from __future__ import annotations

import argparse
import json

import uvicorn
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.service import CALLBACK_SECRET

webhook = Webhook(CALLBACK_SECRET)
succeeded: set[str] = set()
counts = {"requests": 0, "bad_signatures": 0}


async def hook(request: Request) -> JSONResponse:
    body = await request.body()
    counts["requests"] += 1
    try:
        webhook.verify(body, dict(request.headers))
    except Exception:
        counts["bad_signatures"] += 1
        return JSONResponse({"ok": False}, status_code=400)
    payload = json.loads(body)
    if payload.get("event") == "video.succeeded":
        succeeded.add(request.url.path)  # one path per job: /hook/<task id>
    return JSONResponse({"ok": True})


async def stats(request: Request) -> JSONResponse:
    return JSONResponse({"succeeded": len(succeeded), **counts})


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route("/hook/{name}", hook, methods=["POST"]),
        Route("/stats", stats),
        Route("/healthz", healthz),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
