"""A fast local KIE.ai for the benchmarks: the Veo ``record-info`` shape over real HTTP.

A task whose id starts with ``never`` is pending forever; any other task is pending for
``--polls - 1`` checks, then succeeds with a link to a small MP4 served here. ``/stats``
counts the status checks answered.

    python -m bench.fast_provider --port 8098 --polls 2
"""

from __future__ import annotations

import argparse
from collections import Counter

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from webhook_poller.adapters.demo import sample_video_path

POLLS = 2
seen: Counter[str] = Counter()
VIDEO = sample_video_path().read_bytes()


async def record_info(request: Request) -> JSONResponse:
    task = request.query_params.get("taskId", "")
    seen[task] += 1
    seen["__total__"] += 1
    if task.startswith("never") or seen[task] < POLLS:
        data = {"taskId": task, "successFlag": 0, "response": None, "errorCode": None}
    else:
        url = f"{request.base_url}files/{task}.mp4"
        data = {
            "taskId": task,
            "successFlag": 1,
            "errorCode": None,
            "errorMessage": "",
            "response": {"taskId": task, "resultUrls": [url], "resolution": "720p"},
        }
    return JSONResponse({"code": 200, "msg": "success", "data": data})


async def video(request: Request) -> Response:
    return Response(VIDEO, media_type="video/mp4")


async def stats(request: Request) -> JSONResponse:
    return JSONResponse({"status_checks": seen["__total__"]})


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route("/api/v1/veo/record-info", record_info),
        Route("/files/{name}.mp4", video),
        Route("/stats", stats),
        Route("/healthz", healthz),
    ]
)


def main() -> None:
    global POLLS
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--polls", type=int, default=2)
    args = parser.parse_args()
    POLLS = args.polls
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
