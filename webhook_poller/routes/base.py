"""What every route group shares: the running services, body reading, job lookup.

The groups (``intake``, ``jobs``, ``downloads``, ``live``, ``ops``) are mixins of
:class:`ApiBase`; ``app.Api`` combines them, so a handler reads ``self.svc`` and
``self.settings`` wherever it lives. Auth is not here: see :mod:`.gate`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import structlog
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from .. import inputs, live, shapes
from ..config import Settings
from ..errors import NotFound, PayloadTooLarge, RequestRejected, ServiceUnavailable
from ..model import Job, JobState
from ..scheduler import Scheduler
from ..services import Services
from .gate import declared_limit

log = structlog.get_logger(__name__)
T = TypeVar("T")

MAX_ID_LEN = shapes.MAX_ID_LEN


class ApiBase:
    """The state of the running app shared by every route group, and their helpers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: Services | None = None
        self.scheduler: Scheduler | None = None
        self._live_all: live.SharedSnapshot | None = None
        self._live_all_for: Services | None = None

    @property
    def svc(self) -> Services:
        if self.services is None:
            raise ServiceUnavailable("the service is starting", headers={"Retry-After": "1"})
        return self.services

    # --- helpers -----------------------------------------------------------------------

    async def read_body(self, request: Request, limit: int | None = None) -> bytes:
        limit = limit or declared_limit(request) or self.settings.server.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and (not declared.isascii() or not declared.isdigit() or len(declared) > 18):
            raise RequestRejected("the Content-Length header is not a number", status_code=400)
        if declared and int(declared) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        return await _receive_body(request, limit)

    async def read_object(self, request: Request) -> dict[str, Any]:
        """The body as a mapping: JSON whatever the content type says when it is JSON, else
        a URL-encoded or multipart form (string fields only)."""
        body = await self.read_body(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            return await _multipart_fields(request.headers, body)
        if ctype == "application/x-www-form-urlencoded" and body.lstrip()[:1] not in (b"{", b"["):
            try:
                pairs = parse_qsl(
                    body.decode("utf-8"), keep_blank_values=True, strict_parsing=False
                )
            except UnicodeDecodeError:
                raise RequestRejected("the form body is not UTF-8", status_code=400) from None
            return dict(pairs)
        if not body.strip():
            raise RequestRejected("the body is empty; send a JSON object", status_code=400)
        data = inputs.load_json(body)
        if not isinstance(data, dict):
            raise RequestRejected("the body must be a JSON object", status_code=400)
        return data

    async def get_job(self, job_id: str) -> Job:
        if len(job_id) > MAX_ID_LEN:
            raise NotFound("no such job")
        job = await self._store_call(self.svc.store.get(job_id))
        if job is None:
            raise NotFound("no such job")
        return job

    @staticmethod
    async def _store_call(awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except RequestRejected:
            raise
        except Exception as exc:
            log.warning("store_unreachable", error=str(exc)[:200])
            raise ServiceUnavailable(
                "the job store is unreachable; retry shortly", headers={"Retry-After": "5"}
            ) from None

    async def _use_once(self, key: str, expires: str) -> None:
        """Record the first use of a single-use link; refuse every later one (410)."""
        until = datetime.fromtimestamp(int(expires), UTC)
        if not await self._store_call(self.svc.store.use_once(key, until)):
            raise RequestRejected(
                "this single-use download link was used already",
                status_code=410,
                code="link_used",
            )

    async def _position(self, job: Job) -> int | None:
        if job.state is not JobState.QUEUED:
            return None
        position: int | None = await self._store_call(self.svc.store.queue_position(job))
        return position


async def _receive_body(request: Request, limit: int) -> bytes:
    """The body, read from ``receive`` with ``Request.stream``'s rules (a disconnect raises
    ``ClientDisconnect``) but without its async generator, resumed per chunk: about 1 us a
    request. More than ``limit`` bytes is a 413, found as soon as the chunk arrives."""
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the body is larger than {limit} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            request._is_disconnected = True  # as Request.stream notes it
            raise ClientDisconnect()
    request._stream_consumed = True  # a second read fails as after Request.stream
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _int_param(value: Any, field: str, *, default: int, low: int, high: int) -> int:
    return inputs.client_int(value, field, default=default, low=low, high=high)


async def _multipart_fields(headers: Headers, body: bytes) -> dict[str, Any]:
    """The text fields of a ``multipart/form-data`` body; file parts are refused."""

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(headers, stream(), max_files=0).parse()
    except (MultiPartException, ValueError, KeyError) as exc:
        message = getattr(exc, "message", None) or "the multipart form could not be read"
        raise RequestRejected(message, status_code=400) from None
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str):
            raise RequestRejected("file parts are not accepted", status_code=400)
        fields[key] = value
    return fields
