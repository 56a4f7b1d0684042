"""Command line: ``webhook-poller serve | check-config | init-config`` and ``--version``.

``serve --workers N`` runs N worker processes (default: one per core, ``workers.py``).

Every config error comes out the same way, before anything listens: one line on stderr that
names the key, exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from . import __version__
from .app import create_app
from .config import Settings, check_listen_safety, load_settings
from .errors import ConfigError
from .interfaces import ReceivesBotUpdates
from .logging import configure
from .services import Services, build_services, close_plugins
from .workers import default_workers, serve_workers

EXIT_CONFIG = 2
EXAMPLE_CONFIG = "config.example.yaml"


class HeadTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol with a deadline for the request head.

    uvicorn bounds only the idle time after a response (``timeout_keep_alive``); a
    connection that sends nothing, or half a header a byte at a time, stays open for ever.
    Here a deadline starts when a connection opens, or when the first byte of a new request
    arrives, and closes the connection unless the head is complete by then. It is not reset
    by further bytes, so a slow trickle does not keep it alive.
    """

    head_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = asyncio.get_running_loop().call_later(
                self.head_timeout_s, self._head_timed_out
            )

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        if before is None or before.response_complete:
            self._arm_head_timer()
        super().data_received(data)
        # a new request cycle means its head was read completely
        if self.cycle is not before and self.cycle is not None:
            self._disarm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)


def http_protocol(head_timeout_s: float) -> type[asyncio.Protocol]:
    """The protocol class for one server, with its head deadline."""
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"head_timeout_s": head_timeout_s})


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """How the service is served; bench/ serves its bare-Starlette baseline the same way."""
    return uvicorn.Config(app, **uvicorn_options(settings))


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """``uvicorn.Config``'s keywords but the app (``serve --workers`` uses them too)."""
    server = settings.server
    return {
        "host": server.host,
        "port": server.port,
        "lifespan": "on",
        "http": http_protocol(server.header_timeout_s),
        "timeout_keep_alive": server.keep_alive_timeout_s,
        "limit_concurrency": server.max_connections,
        # Access logs would print signed video links; our own logs are redacted.
        "access_log": False,
        # uvicorn's records go to the root logger's handler (webhook_poller.logging: the
        # same format and redaction as ours) instead of uvicorn's own formatters.
        "log_config": None,
        "log_level": settings.logging.level.lower(),
        "timeout_graceful_shutdown": int(settings.server.shutdown_grace_s) + 5,
        "proxy_headers": True,
    }


def _fail(message: object) -> int:
    print(f"webhook-poller: {message}", file=sys.stderr)  # noqa: T201 - CLI error output
    return EXIT_CONFIG


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _prepare(args: argparse.Namespace) -> tuple[Settings, Services]:
    """Load and check the settings and construct every plug-in (constructors check their own
    options too), without opening anything or listening."""
    settings = load_settings(args.config)
    if getattr(args, "host", None):
        settings.server.host = args.host
    if getattr(args, "port", None) is not None:
        settings.server.port = args.port
    check_listen_safety(settings)
    configure(settings.logging.level, settings.logging.format)
    return settings, build_services(settings)


async def _discard(services: Services) -> None:
    """Close what construction made (HTTP clients); nothing was opened."""
    await close_plugins(services)
    await services.http.aclose()
    await services.provider_http.aclose()


def serve(args: argparse.Namespace) -> int:
    try:
        settings, services = _prepare(args)
    except ConfigError as exc:
        return _fail(_one_line(exc))
    workers = default_workers() if args.workers is None else args.workers
    if workers > 1:
        asyncio.run(_discard(services))  # checked here; each worker builds its own
        return serve_workers(settings, args.config, workers, uvicorn_options(settings))
    app = create_app(settings, services_factory=lambda _settings: services)
    config = uvicorn_config(app, settings)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


def check_config(args: argparse.Namespace) -> int:
    try:
        _settings, services = _prepare(args)
    except ConfigError as exc:
        return _fail(_one_line(exc))
    asyncio.run(_discard(services))
    where = args.config or "the embedded defaults"
    print(f"webhook-poller: the configuration in {where} is valid")  # noqa: T201
    return 0


async def _set_webhook(services: Services, url: str, name: str | None) -> list[str]:
    try:
        targets = [
            n
            for n in services.notifiers
            if isinstance(n, ReceivesBotUpdates)
            and n.webhook_secret
            and (name is None or n.name == name)
        ]
        if not targets:
            raise ConfigError(
                "no telegram notifier with webhook_secret"
                + (f" named {name!r}" if name else "")
                + " in the config"
            )
        done = []
        for notifier in targets:
            await notifier.set_webhook(url)
            done.append(notifier.name)
        return done
    finally:
        await _discard(services)


def telegram_set_webhook(args: argparse.Namespace) -> int:
    """Register ``<server.public_url>/telegram/webhook`` (or ``--url``) with the Bot API,
    with the notifier's ``webhook_secret`` as ``secret_token``."""
    try:
        settings, services = _prepare(args)
        base = args.url or settings.server.public_url
        if not base:
            asyncio.run(_discard(services))
            return _fail("set server.public_url (the HTTPS address Telegram can reach) or --url")
        url = base.rstrip("/")
        if not url.endswith("/telegram/webhook"):
            url += "/telegram/webhook"
        names = asyncio.run(_set_webhook(services, url, args.notifier))
    except ConfigError as exc:
        return _fail(_one_line(exc))
    print(f"webhook-poller: Telegram now posts button presses of {', '.join(names)} to {url}")  # noqa: T201
    return 0


def example_config_text() -> str:
    """The documented config.example.yaml, as shipped inside the package."""
    return resources.files("webhook_poller").joinpath(EXAMPLE_CONFIG).read_text(encoding="utf-8")


def init_config(args: argparse.Namespace) -> int:
    target = Path(args.path)
    if target.exists() and not args.force:
        return _fail(f"{target} exists already; pass --force to overwrite it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(example_config_text(), encoding="utf-8")
    except OSError as exc:
        return _fail(f"cannot write {target}: {exc.strerror or exc}")
    print(f"webhook-poller: wrote {target}; edit it, then `webhook-poller serve --config {target}`")  # noqa: T201
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="webhook-poller",
        description="Wait for AI video generations, store the video, tell your workflow.",
    )
    parser.add_argument("--version", action="version", version=f"webhook-poller {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    config_help = "YAML config file (default: $WEBHOOK_POLLER_CONFIG)"
    p_serve = sub.add_parser("serve", help="run the HTTP service and the poll loop")
    p_serve.add_argument("--config", help=config_help)
    p_serve.add_argument("--host", help="override server.host")
    p_serve.add_argument("--port", type=int, help="override server.port")
    p_serve.add_argument(
        "--workers",
        type=_positive,
        help="processes, each serving HTTP and running the poll loop (default: one per core)",
    )
    p_serve.set_defaults(func=serve)
    p_check = sub.add_parser("check-config", help="check the config and exit (2 when invalid)")
    p_check.add_argument("--config", help=config_help)
    p_check.set_defaults(func=check_config)
    p_init = sub.add_parser("init-config", help="write the documented example config")
    p_init.add_argument("path", nargs="?", default="config.yaml", help="default: config.yaml")
    p_init.add_argument("--force", action="store_true", help="overwrite an existing file")
    p_init.set_defaults(func=init_config)
    p_tg = sub.add_parser("telegram", help="Telegram bot set-up")
    tg_sub = p_tg.add_subparsers(dest="telegram_command", required=True)
    p_hook = tg_sub.add_parser(
        "set-webhook", help="register POST /telegram/webhook with the Bot API (setWebhook)"
    )
    p_hook.add_argument("--config", help=config_help)
    p_hook.add_argument("--url", help="public base URL (default: server.public_url)")
    p_hook.add_argument("--notifier", help="the telegram notifier's name (default: all)")
    p_hook.set_defaults(func=telegram_set_webhook)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
