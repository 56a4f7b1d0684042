"""Command line: ``webhook-poller serve [--config PATH] [--host H] [--port P] [--workers N]``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import uvicorn

from .app import create_app
from .config import Settings, check_listen_safety, load_settings
from .errors import ConfigError
from .logging import configure
from .workers import default_workers, serve_workers


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """How the service is served; bench/ serves its bare-Starlette baseline the same way."""
    return uvicorn.Config(**uvicorn_options(app, settings))


def uvicorn_options(app: Any, settings: Settings) -> dict[str, Any]:
    return {
        "app": app,
        "host": settings.server.host,
        "port": settings.server.port,
        "lifespan": "on",
        # Access logs would print signed video links; our own logs are redacted.
        "access_log": False,
        "log_level": settings.logging.level.lower(),
        "timeout_graceful_shutdown": int(settings.server.shutdown_grace_s) + 5,
        "proxy_headers": True,
    }


def serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        if args.host:
            settings.server.host = args.host
        if args.port is not None:
            settings.server.port = args.port
        check_listen_safety(settings)
    except ConfigError as exc:
        print(f"webhook-poller: {exc}", file=sys.stderr)  # noqa: T201 - CLI error output
        return 2
    workers = default_workers() if args.workers is None else args.workers
    if workers < 1:
        print("webhook-poller: --workers must be at least 1", file=sys.stderr)  # noqa: T201
        return 2
    configure(settings.logging.level, settings.logging.format)
    if workers > 1:
        return serve_workers(settings, args.config, workers, uvicorn_options(None, settings))
    app = create_app(settings)
    config = uvicorn_config(app, settings)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="webhook-poller",
        description="Wait for AI video generations, store the video, tell your workflow.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the HTTP service and the poll loop")
    p_serve.add_argument("--config", help="YAML config file (default: $WEBHOOK_POLLER_CONFIG)")
    p_serve.add_argument("--host", help="override server.host")
    p_serve.add_argument("--port", type=int, help="override server.port")
    p_serve.add_argument(
        "--workers",
        type=int,
        help="processes, each serving HTTP and running the poll loop (default: one per core)",
    )
    p_serve.set_defaults(func=serve)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
