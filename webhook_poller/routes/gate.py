"""The one auth check of the HTTP edge, applied by the edge (``routes/edge.py``) in front of
the router.

For each request it finds the route the router will pick (the first full match), reads the
auth and body limit that route declared, and

* answers 401 (``WWW-Authenticate: Bearer``) to a ``token`` route without the right
  bearer token, before the handler runs or the body is read;
* lets a ``signed`` route through when the token is right or the query carries a link
  signature (``sig``), which the handler then verifies;
* lets a ``public`` route through: its handler checks the caller's own signature, if any.

A route nobody declared needs the token; a route may be public only when it is in
:data:`~webhook_poller.routes.PUBLIC`. Paths that match no route, or only with another
method, go on to the router untouched (404, 405 with ``Allow``, the trailing-slash
redirect), as before. The Host and cross-site guard (``guard.py``) runs before this one.

The edge runs the route the gate found itself; for the rest (plug-in mounts) it hands the
route to the router (:class:`GatedRouter`), which runs it without scanning the route table
a second time.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import SecretStr
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.types import Receive, Scope, Send

from ..errors import Unauthorized
from . import PUBLIC, Auth, Endpoint

#: Scope keys the gate sets for the handlers: the token verdict and the body limit.
TOKEN_OK = "webhook_poller.token_ok"
BODY_LIMIT = "webhook_poller.body_limit"
#: Scope key for the route the gate found, read (and removed) by :class:`GatedRouter`.
MATCHED = "webhook_poller.route"
#: Route types whose match the gate repeats with a regex test.
_PLAIN = (Route, Mount)


@dataclass(frozen=True)
class Policy:
    """What a route declared: who may call it and how large a body it reads."""

    auth: Auth = Auth.TOKEN
    body_limit: int | None = None


#: Routes nobody declared: the token, the server's body limit.
DEFAULT = Policy()


def unauthorized() -> Unauthorized:
    return Unauthorized("missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


def require_token(request: Request) -> None:
    """For a ``signed`` handler whose link did not verify: the token the gate saw, or 401."""
    if not request.scope.get(TOKEN_OK, False):
        raise unauthorized()


def declared_limit(request: Request) -> int | None:
    limit: int | None = request.scope.get(BODY_LIMIT)
    return limit


class AuthGate:
    """The rules in the module docstring, applied by the edge (:class:`~.edge.Edge`).

    ``policies`` pairs routes of the app with what they declared; ``token`` is
    ``server.auth_token`` (``None``: no token, every route open, as on loopback by default).
    """

    def __init__(
        self,
        policies: Iterable[tuple[BaseRoute, Policy]],
        token: SecretStr | None,
    ) -> None:
        self.policies = {id(route): policy for route, policy in policies}
        self._token = token.get_secret_value().encode() if token is not None else None

    def admit(self, scope: Scope, route: BaseRoute, authorization: str | None) -> bool:
        """Whether the request may go on to ``route`` (else the answer is the 401); sets the
        token verdict and the route's body limit in the scope for the handler."""
        policy = self.policies.get(id(route), DEFAULT)
        token_ok = self._token_ok(authorization)
        scope[TOKEN_OK] = token_ok
        scope[BODY_LIMIT] = policy.body_limit
        if token_ok or policy.auth is Auth.PUBLIC:
            return True
        return policy.auth is Auth.SIGNED and _has_signature(scope)

    def _token_ok(self, header: str | None) -> bool:
        if self._token is None:
            return True
        scheme, _, value = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self._token
        )


def find_route(scope: Scope) -> tuple[BaseRoute, re.Match[str] | None] | None:
    """The route the router will run (the first full match) and, for our own routes and
    mounts, their path regex's match: a plain regex test instead of ``Route.matches``,
    which builds a child scope per route tried (about 40 us a request over the whole
    table). ``None`` when the router's answer is a 404, 405 or redirect."""
    path = scope["path"] if not scope.get("root_path") else None
    method = scope["method"]
    route: BaseRoute
    for route in scope["app"].routes:
        # exact types only: a subclass may match differently
        if path is not None and isinstance(route, Route | Mount) and type(route) in _PLAIN:
            match = route.path_regex.match(path)
            if match is None:
                continue
            methods = getattr(route, "methods", None)
            if methods and method not in methods:
                continue
            return route, match
        if route.matches(scope)[0] is Match.FULL:
            return route, None
    return None


class GatedRouter(Router):
    """Starlette's router, running the route :class:`AuthGate` found for this request.

    The gate's lookup is the router's own rule (the first full match), so the router need
    not try the whole table again (a child scope per route tried). Without the gate's
    answer (a 404, 405 or redirect, or no gate in front) it routes as Starlette does.
    """

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: BaseRoute | None = scope.pop(MATCHED, None)
        if route is not None:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope.setdefault("router", self)
                scope["route"] = route
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
        await super().app(scope, receive, send)


def _has_signature(scope: Scope) -> bool:
    return bool(Request(scope).query_params.get("sig"))


def policies_of(endpoints: Iterable[Endpoint]) -> list[tuple[BaseRoute, Policy]]:
    """Routes and their policies; a route declared public but missing from ``PUBLIC`` is a
    bug and fails at startup, so opening an endpoint takes two deliberate edits."""
    out: list[tuple[BaseRoute, Policy]] = []
    for endpoint in endpoints:
        if endpoint.auth is not Auth.TOKEN and PUBLIC.get(endpoint.path) is not endpoint.auth:
            raise RuntimeError(
                f"{endpoint.path} is declared {endpoint.auth.value} but is not listed as such "
                "in webhook_poller.routes.PUBLIC"
            )
        out.append((endpoint.route(), Policy(endpoint.auth, endpoint.body_limit)))
    return out
