"""The HTTP edge, one module per route group: intake, jobs, downloads, live, ops.

Each group lists its endpoints with :class:`Endpoint`, and each endpoint declares its auth
and body limit next to its path. Nothing in a handler checks the bearer token: the
edge's gate (:class:`~webhook_poller.routes.gate.AuthGate`) does, from these declarations,
and a route that declares nothing needs the token. The public ones are listed in
:data:`PUBLIC`; ``tests/test_routes_auth.py`` walks the built app and holds both to it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Handler = Callable[[Request], Awaitable[Response]]


class Auth(StrEnum):
    """Who may call an endpoint."""

    #: the bearer token ``server.auth_token`` (when one is set); the default
    TOKEN = "token"
    #: anyone: probes, the spec, the dashboard shell, and callers that prove themselves by
    #: a signature the handler checks (provider pushes, the Telegram webhook)
    PUBLIC = "public"
    #: a signed link in the query string, checked by the handler; without one, the token
    SIGNED = "signed"


@dataclass(frozen=True)
class Endpoint:
    """One route: ``path``, its handler, its methods, who may call it and its body limit.

    ``body_limit`` in bytes; ``None`` means ``server.max_body_bytes``.
    """

    path: str
    handler: Handler
    methods: tuple[str, ...]
    auth: Auth = Auth.TOKEN
    body_limit: int | None = None

    def route(self) -> Route:
        return Route(self.path, self.handler, methods=list(self.methods))


#: Every path answered without the token, and why.
PUBLIC: dict[str, Auth] = {
    "/healthz": Auth.PUBLIC,  # liveness probe
    "/readyz": Auth.PUBLIC,  # readiness probe
    "/openapi.json": Auth.PUBLIC,  # the spec, for workflow tools to import
    "/": Auth.PUBLIC,  # the dashboard shell; its data comes from token routes
    "/callbacks/{provider}": Auth.PUBLIC,  # the provider's signature
    "/telegram/webhook": Auth.PUBLIC,  # X-Telegram-Bot-Api-Secret-Token
    "/jobs/{job_id}/videos/{index}": Auth.SIGNED,  # signed link or token
    "/jobs/{job_id}/download.zip": Auth.SIGNED,  # signed link or token
    # plug-in routes are the adapter's own (the demo's sample video, fetched by our poller)
    "/providers/{name}": Auth.PUBLIC,
}
