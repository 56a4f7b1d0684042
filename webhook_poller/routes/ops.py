"""Operations routes: probes (``/healthz``, ``/readyz``), ``/metrics`` and the spec.

The probes and the spec are public; ``/metrics`` needs the token.
"""

from __future__ import annotations

import contextlib

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import metrics as metrics_mod
from ..openapi import openapi_document
from . import Auth, Endpoint
from .base import ApiBase


def endpoints(api: OpsRoutes) -> list[Endpoint]:
    """GET routes only: no body is read."""
    return [
        Endpoint("/healthz", api.healthz, ("GET",), auth=Auth.PUBLIC),
        Endpoint("/readyz", api.readyz, ("GET",), auth=Auth.PUBLIC),
        Endpoint("/openapi.json", api.openapi, ("GET",), auth=Auth.PUBLIC),
        Endpoint("/metrics", api.metrics, ("GET",)),
    ]


class OpsRoutes(ApiBase):
    """Handlers of the ops group."""

    async def metrics(self, request: Request) -> Response:
        svc = self.svc
        counts = await self._store_call(svc.store.count_by_state())
        inflight = len(self.scheduler.inflight) if self.scheduler is not None else 0
        svc.metrics.set_counts(counts, inflight)
        return Response(svc.metrics.render(), media_type=metrics_mod.CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document(self.settings))

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def readyz(self, request: Request) -> Response:
        checks: dict[str, bool] = {"store": False, "storage": False, "scheduler": False}
        if self.services is not None:
            with contextlib.suppress(Exception):
                checks["store"] = await self.services.store.ping()
            with contextlib.suppress(Exception):
                checks["storage"] = await self.services.blobs.ping()
            checks["scheduler"] = self.scheduler is not None and self.scheduler.healthy
        ready = all(checks.values())
        return JSONResponse(
            {"ok": ready, "checks": checks},
            status_code=200 if ready else 503,
            headers=None if ready else {"Retry-After": "5"},
        )
