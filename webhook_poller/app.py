"""The HTTP edge: ``create_app(settings)`` builds the Starlette app and runs the scheduler in
its lifespan.

The routes live in route groups (:mod:`webhook_poller.routes`), each declaring its auth and
body limit; the edge (:mod:`webhook_poller.routes.edge`, one ASGI pass in front of the
router) checks Host and cross-site requests and enforces the bearer token
(:mod:`webhook_poller.routes.gate`) for every route not listed as public. Every error
answers the same JSON envelope ``{"ok": false, "error": {"code", "message", "field"?}}``;
a 500 reveals nothing and is logged. A job exists durably in the store before intake answers 200.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import structlog
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount

from .config import Settings
from .interfaces import HasRoutes
from .logging import configured_secrets, register_secrets
from .routes import PUBLIC, downloads, intake, jobs, live, ops
from .routes.edge import Edge
from .routes.gate import Policy, policies_of
from .routes.jobs import GROUPS
from .routes.live import LIVE_WINDOW
from .scheduler import Scheduler
from .services import Services, adapter_class, build_services

__all__ = ["GROUPS", "LIVE_WINDOW", "Api", "create_app"]

log = structlog.get_logger(__name__)


class Api(
    intake.IntakeRoutes,
    jobs.JobRoutes,
    downloads.DownloadRoutes,
    live.LiveRoutes,
    ops.OpsRoutes,
):
    """Route handlers of every group; holds the services of the running app."""


def create_app(
    settings: Settings,
    *,
    services_factory: Callable[[Settings], Services] = build_services,
    run_scheduler: bool = True,
) -> Starlette:
    """Build the app; the lifespan opens the plug-ins and runs the scheduler."""
    api = Api(settings)
    register_secrets(configured_secrets(settings.model_dump()))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = services_factory(settings)
        await services.open()
        api.services = services
        app.state.services = services
        scheduler = Scheduler(services)
        api.scheduler = scheduler
        app.state.scheduler = scheduler
        if run_scheduler:
            scheduler.start()
        log.info(
            "service_started", instance=services.instance_id, base_url=settings.server.base_url()
        )
        if not settings.server.is_loopback() and not settings.server.public_url:
            log.warning(
                "public_url_missing",
                host=settings.server.host,
                base_url=settings.server.base_url(),
                hint="links and statusUrl point at this base URL; set server.public_url to "
                "the address callers reach the service at",
            )
        try:
            yield
        finally:
            if run_scheduler:
                await scheduler.stop()
            await services.close()
            log.info("service_stopped")

    endpoints = [
        *intake.endpoints(api),
        *jobs.endpoints(api),
        *downloads.endpoints(api),
        *live.endpoints(api),
        *ops.endpoints(api),
    ]
    policies: list[tuple[BaseRoute, Policy]] = policies_of(endpoints)
    plugin = Policy(PUBLIC["/providers/{name}"])
    policies.extend((mount, plugin) for mount in _provider_routes(settings))
    app = Edge(policies, settings.server, lifespan)
    app.state.api = api
    return app


def _provider_routes(settings: Settings) -> list[Mount]:
    """Adapters may serve routes of their own (the demo video; later, push callbacks)."""
    mounts = []
    for name in dict.fromkeys(settings.models.values()):
        cls, _ = adapter_class(settings, name)
        if isinstance(cls, HasRoutes):
            mounts.append(Mount(f"/providers/{name}", routes=list(cls.routes())))
    return mounts
