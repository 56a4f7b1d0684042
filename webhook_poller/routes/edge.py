"""The HTTP edge in one ASGI pass: Host and cross-site checks, the bearer-token gate, the
route hand-over and the JSON error answers, in front of Starlette's router.

Starlette would run a request through ``ServerErrorMiddleware``, our guard, our gate,
``ExceptionMiddleware``, the router, the route and ``request_response``: seven coroutines
resumed at every await, and four of them wrap ``send``. :class:`Edge` is that app with the
same answers in one layer: for a route of ours (a plain :class:`~starlette.routing.Route`
with an async handler) it checks the request (``guard.RequestGuard``), admits it
(``gate.AuthGate``), calls the handler and sends its answer itself, with ``send`` as the
server gave it. Everything else (the router's 404, 405 and trailing-slash redirect,
plug-in mounts, lifespan) goes through Starlette's own stack, unchanged.

What it keeps, as Starlette's layers did:

* an exception with a handler (:data:`~.errors.EXCEPTION_HANDLERS`: refusals, Starlette's
  ``HTTPException``) answers that handler's JSON; after the answer started, a
  ``RuntimeError`` instead, as ``wrap_app_handling_exceptions`` raises;
* any other exception answers the JSON 500 (``_crashed``, logged, nothing revealed) unless
  the answer started, and is raised again for the server to log (uvicorn then closes the
  connection), as ``ServerErrorMiddleware`` does;
* a redirect to the Host we were called by is made relative
  (:func:`~webhook_poller.guard.relative_self_redirect`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

from starlette._utils import is_async_callable
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, ExceptionHandler, Lifespan, Message, Receive, Scope, Send

from .. import guard
from ..config import ServerSettings
from .errors import EXCEPTION_HANDLERS, error_response
from .gate import MATCHED, AuthGate, GatedRouter, Policy, find_route, unauthorized

Endpoint = Callable[[Request], Awaitable[Any]]

#: ``Response.__call__``: an answer whose class keeps it is sent as its two messages here.
_SEND_AS_IS = Response.__call__
_STARTED_ALREADY = "Caught handled exception, but response already started."


class _Cycle:
    """One request's answer: whether it has started, and the ``send`` for answers that
    send themselves (streams, files), which notes the start and fixes redirects."""

    __slots__ = ("host", "send", "started")

    def __init__(self, send: Send, host: str) -> None:
        self.send = send
        self.host = host
        self.started = False

    async def deliver(self, response: Any, scope: Scope, receive: Receive) -> None:
        if type(response).__call__ is not _SEND_AS_IS:
            await response(scope, receive, self.tracked)
            return
        start = {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
        if 300 <= response.status_code < 400:
            guard.relative_self_redirect(start, self.host)
        self.started = True
        await self.send(start)
        await self.send({"type": "http.response.body", "body": response.body})
        if response.background is not None:
            await response.background()

    async def tracked(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if 300 <= message["status"] < 400:
                guard.relative_self_redirect(message, self.host)
            self.started = True
        await self.send(message)


class Edge(Starlette):
    """Starlette with the guard, the gate and the error handlers in one pass (see the
    module docstring). ``policies`` pairs the routes with what each declared."""

    def __init__(
        self,
        policies: Sequence[tuple[BaseRoute, Policy]],
        server: ServerSettings,
        lifespan: Lifespan[Any],
    ) -> None:
        super().__init__(
            routes=[route for route, _ in policies],
            lifespan=lifespan,
            exception_handlers=EXCEPTION_HANDLERS,
        )
        # the same router, but it runs the route the gate found instead of looking it up again
        self.router = GatedRouter(self.router.routes, lifespan=lifespan)
        # the slow path's answers (the router's redirect) get the guard's relative Location
        self.add_middleware(guard.RelativeRedirects)
        self.guard = guard.RequestGuard(server)
        self.gate = AuthGate(policies, server.auth_token)
        self._fast = False
        self._handlers: tuple[dict[Any, ExceptionHandler], dict[int, ExceptionHandler]]
        self._handlers = ({}, {})
        self._errors: ServerErrorMiddleware | None = None
        #: per route (by id, with the route to tell a reused id): its handler when the edge
        #: may call it itself, else ``None``
        self._endpoints: dict[int, tuple[BaseRoute, Endpoint | None]] = {}

    def build_middleware_stack(self) -> ASGIApp:
        """Starlette's stack, for the slow path. The fast path takes its error handlers, and
        runs only while the stack is ours alone (no other middleware, no body limit, no
        debug): else every request takes the stack, after the guard and the gate."""
        stack = super().build_middleware_stack()
        layers: list[Any] = []
        app: Any = stack
        while not isinstance(app, GatedRouter):
            layers.append(app)
            app = app.app
        errors, exceptions = layers[0], layers[-1]
        assert isinstance(errors, ServerErrorMiddleware)
        assert isinstance(exceptions, ExceptionMiddleware)
        self._errors = errors
        self._handlers = (exceptions._exception_handlers, exceptions._status_handlers)
        self._fast = (
            len(layers) == 3 and isinstance(layers[1], guard.RelativeRedirects) and not self.debug
        )
        return stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        if scope["type"] == "http":
            try:
                found = await self._admit(scope, receive, send)
            except Exception as exc:
                await self._crash(scope, receive, send, exc, started=False)
            if found is None:
                return
            route, match, host = found
            if route is not None:
                endpoint = self._endpoint(route) if match is not None and self._fast else None
                if endpoint is not None and match is not None:
                    await self._run(route, endpoint, match, scope, receive, _Cycle(send, host))
                    return
                scope[MATCHED] = route  # a mount (or a handler the edge leaves): the router
        await self.middleware_stack(scope, receive, send)

    async def _admit(
        self, scope: Scope, receive: Receive, send: Send
    ) -> tuple[BaseRoute | None, re.Match[str] | None, str] | None:
        """The guard, then the gate: the route to run (``None`` for the router's own answer)
        with its path match and the Host header, or ``None`` once refused."""
        host, fetch_site, origin, authorization = guard.edge_headers(scope["headers"])
        refusal = self.guard.refusal(scope, host, fetch_site, origin)
        if refusal is not None:
            await refusal(send)
            return None
        found = find_route(scope)
        if found is None:  # 404 / 405 / redirect: the router's answer, as before
            return None, None, host
        route, match = found
        if not self.gate.admit(scope, route, authorization):
            await error_response(unauthorized())(scope, receive, send)
            return None
        return route, match, host

    def _endpoint(self, route: BaseRoute) -> Endpoint | None:
        """The handler the edge may call itself: a plain ``Route``'s async function or
        method, wrapped by nothing but Starlette's ``request_response``."""
        known = self._endpoints.get(id(route))
        if known is not None and known[0] is route:
            return known[1]
        endpoint = getattr(route, "endpoint", None)
        app = getattr(route, "app", None)
        plain = (
            type(route) is Route
            and getattr(app, "__qualname__", "") == "request_response.<locals>.app"
            and is_async_callable(endpoint)
        )
        self._endpoints[id(route)] = (route, endpoint if plain else None)
        return endpoint if plain else None

    async def _run(
        self,
        route: BaseRoute,
        endpoint: Endpoint,
        match: re.Match[str],
        scope: Scope,
        receive: Receive,
        cycle: _Cycle,
    ) -> None:
        """The route's handler and its answer, with Starlette's exception rules."""
        assert isinstance(route, Route)
        params = match.groupdict()
        for key, value in params.items():
            params[key] = route.param_convertors[key].convert(value)
        if "router" not in scope:
            scope["router"] = self.router
        scope["route"] = route
        scope["endpoint"] = endpoint
        scope["path_params"] = params
        scope["starlette.exception_handlers"] = self._handlers
        request = Request(scope, receive, cycle.send)
        try:
            try:
                await cycle.deliver(await endpoint(request), scope, receive)
            except Exception as exc:
                handler = self._handler_for(exc)
                if handler is None:
                    raise
                if cycle.started:
                    raise RuntimeError(_STARTED_ALREADY) from exc
                if is_async_callable(handler):
                    response = await handler(request, exc)
                else:
                    response = await run_in_threadpool(handler, request, exc)
                if response is not None:
                    await cycle.deliver(response, scope, receive)
                # reused exception instances accumulate tracebacks across requests
                exc.__traceback__ = None
        except Exception as exc:
            await self._crash(scope, receive, cycle.send, exc, started=cycle.started)

    def _handler_for(self, exc: Exception) -> Any:
        """Starlette's lookup: a status handler for an ``HTTPException``, else the first
        class of the exception's MRO with a handler."""
        handlers, status_handlers = self._handlers
        if isinstance(exc, HTTPException) and exc.status_code in status_handlers:
            return status_handlers[exc.status_code]
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None

    async def _crash(
        self, scope: Scope, receive: Receive, send: Send, exc: Exception, *, started: bool
    ) -> NoReturn:
        """``ServerErrorMiddleware``'s answer: the 500 handler's, unless the answer started;
        then the exception goes on to the server, which logs it."""
        errors = self._errors
        assert errors is not None
        request = Request(scope)
        handler: Any = errors.handler
        response: Any
        if errors.debug:
            response = await run_in_threadpool(errors.debug_response, request, exc)
        elif handler is None:
            response = errors.error_response(request, exc)
        elif is_async_callable(handler):
            response = await handler(request, exc)
        else:
            response = await run_in_threadpool(handler, request, exc)
        if not started:
            await response(scope, receive, send)
        raise exc
