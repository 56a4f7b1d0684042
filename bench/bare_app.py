"""The baseline for the intake benchmark: a bare Starlette endpoint that parses the same JSON
body and answers the same shape, with no validation model, no store and no scheduler.
Served by uvicorn with the service's own settings (``webhook_poller.cli.uvicorn_config``).

    python -m bench.bare_app --port 8099
"""

from __future__ import annotations

import argparse
import itertools

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from webhook_poller.cli import uvicorn_config
from webhook_poller.config import settings_from_mapping

_ids = itertools.count()


async def poll_video(request: Request) -> JSONResponse:
    body = await request.json()
    if not all(isinstance(body.get(k), str) for k in ("sessionId", "taskId", "model")):
        return JSONResponse({"ok": False}, status_code=422)
    job_id = f"job_{next(_ids):024x}"
    return JSONResponse(
        {
            "ok": True,
            "jobId": job_id,
            "status": "queued",
            "message": "Polling started",
            "statusUrl": f"http://127.0.0.1/jobs/{job_id}",
        }
    )


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[Route("/poll-video", poll_video, methods=["POST"]), Route("/healthz", healthz)]
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = settings_from_mapping(
        {"server": {"host": "127.0.0.1", "port": args.port}, "logging": {"level": "WARNING"}}
    )
    uvicorn.Server(uvicorn_config(app, settings)).run()


if __name__ == "__main__":
    main()
