"""Error answers of the HTTP edge: one JSON envelope for every refusal.

``{"ok": false, "error": {"code", "message", "field"?}}``; a 405 names every method the
path serves in ``Allow``; a crash answers a bare 500 and is logged, revealing nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from ..errors import RequestRejected

log = structlog.get_logger(__name__)


def error_response(exc: RequestRejected) -> JSONResponse:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.field:
        error["field"] = exc.field
    error.update(exc.extra)
    return JSONResponse(
        {"ok": False, "error": error}, status_code=exc.status_code, headers=exc.headers
    )


async def _rejected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestRejected)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(
        RequestRejected(
            exc.detail or "request refused",
            status_code=exc.status_code,
            code=codes.get(exc.status_code, "bad_request"),
            headers=headers or None,
        )
    )


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path: Starlette names only the first route's."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


async def _crashed(request: Request, exc: Exception) -> Response:
    log.error("request_crashed", path=request.url.path, error_type=type(exc).__name__)
    return JSONResponse(
        {"ok": False, "error": {"code": "internal_error", "message": "internal error"}},
        status_code=500,
    )


#: The app's exception handlers, by class: refusals, Starlette's 404/405, everything else.
EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    RequestRejected: _rejected,
    HTTPException: _http_error,
    Exception: _crashed,
}
