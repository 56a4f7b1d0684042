"""The S3 emulator for tests: moto's server mode in its own process, over real HTTP, plus a
fault proxy in front of it that can answer like a troubled S3 (500 on a part, a refused
access key) while passing everything else through."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
from botocore.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.servers import free_port, serve_in_thread

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key-not-real"


class MotoServer:
    """``python -m moto.server`` on a free port; killed on stop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("moto server exited at start")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/moto-api/", timeout=1).status_code < 500:
                    return self
            time.sleep(0.1)
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def client(self, endpoint: str | None = None) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=endpoint or self.url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def make_bucket(self, name: str) -> str:
        s3 = self.client()
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)
        s3.close()
        return name

    def keys(self, bucket: str) -> list[str]:
        s3 = self.client()
        try:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            return [o["Key"] for page in pages for o in page.get("Contents", ())]
        finally:
            s3.close()

    def pending_uploads(self, bucket: str) -> list[dict[str, Any]]:
        s3 = self.client()
        try:
            return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", ()))
        finally:
            s3.close()


_S3_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
    "<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
)


class FaultProxy:
    """An HTTP proxy to moto that can fail chosen requests the way S3 does.

    ``fail_parts``: how many UploadPart requests to answer with 500 InternalError;
    ``deny_key``: an access key id answered with 403 InvalidAccessKeyId.
    ``seen`` counts requests by kind (UploadPart, CreateMultipartUpload, ...).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.fail_parts = 0
        self.deny_key: str | None = None
        self.seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/{path:path}", self.handle, methods=["GET", "PUT", "POST", "DELETE", "HEAD"])
            ]
        )

    @staticmethod
    def kind(request: Request) -> str:
        q = request.query_params
        if request.method == "PUT" and "partNumber" in q:
            return "UploadPart"
        if request.method == "POST" and "uploads" in q:
            return "CreateMultipartUpload"
        if request.method == "POST" and "uploadId" in q:
            return "CompleteMultipartUpload"
        if request.method == "DELETE" and "uploadId" in q:
            return "AbortMultipartUpload"
        return f"{request.method}"

    async def handle(self, request: Request) -> Response:
        kind = self.kind(request)
        with self._lock:
            self.seen[kind] += 1
            fail_part = kind == "UploadPart" and self.fail_parts > 0
            if fail_part:
                self.fail_parts -= 1
        auth = request.headers.get("authorization", "")
        if self.deny_key and f"Credential={self.deny_key}/" in auth:
            body = _S3_ERROR.format(
                code="InvalidAccessKeyId", message="The AWS Access Key Id does not exist."
            )
            return Response(body, status_code=403, media_type="application/xml")
        body = await request.body()
        if fail_part:
            body = _S3_ERROR.format(code="InternalError", message="We encountered an error.")
            return Response(body, status_code=500, media_type="application/xml")
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with httpx.AsyncClient(timeout=60) as client:
            upstream = await client.request(
                request.method,
                f"{self.upstream}{request.url.path}",
                params=request.url.query,
                content=body,
                headers=headers,
            )
        dropped = {"transfer-encoding", "connection", "content-encoding"}
        if request.method != "HEAD":
            dropped.add("content-length")  # the body is passed whole; Starlette sets it
        passed = {k: v for k, v in upstream.headers.items() if k.lower() not in dropped}
        return Response(upstream.content, status_code=upstream.status_code, headers=passed)

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        with serve_in_thread(self.app) as url:
            yield url
