"""A local "provider CDN" for the S3 benchmark: ``GET /video.mp4?mb=N`` streams N MiB of
bytes (one random MiB repeated, never held whole), with a Content-Length.

    python -m bench.byte_source --port 8097
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

MIB = 1024 * 1024
BLOCK = os.urandom(MIB)


async def video(request: Request) -> StreamingResponse:
    mb = int(request.query_params.get("mb", "16"))

    async def body() -> AsyncIterator[bytes]:
        for _ in range(mb):
            yield BLOCK

    return StreamingResponse(
        body(), media_type="video/mp4", headers={"Content-Length": str(mb * MIB)}
    )


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/video.mp4", video), Route("/healthz", healthz)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
