"""(a) The HTTP edge alone: CPU per request of the app called as ASGI for answers that touch
no store (``GET /healthz``, a trailing-slash redirect, a 404), so what is measured is the
edge's layers (guard, gate, routing, error answers) and the answer's building. Compare
with ``--bare``: the same paths through ``bench/bare_app.py``'s plain Starlette app.

    PYTHONPATH=. python -m bench.edge_asgi --requests 20000 --rounds 2
    (cd /tmp/main-export && PYTHONPATH=. python -m bench.edge_asgi)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import uvloop

from bench.intake_asgi import _scope as intake_scope
from webhook_poller.app import create_app
from webhook_poller.config import settings_from_mapping
from webhook_poller.logging import configure


def _scope(path: str) -> dict[str, Any]:
    """``bench.intake_asgi``'s request, as a GET of ``path`` without a body."""
    scope = intake_scope(b"")
    scope.update(method="GET", path=path, raw_path=path.encode())
    scope["headers"] = [(b"host", b"127.0.0.1:8000"), (b"accept", b"*/*")]
    return scope


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    return None


async def _run(args: argparse.Namespace) -> None:
    if args.bare:
        from bench.bare_app import app as bare

        await _rounds(bare, args, ["/healthz"])
        return
    tmp = tempfile.mkdtemp(prefix="wp-bench-edge-")
    settings = settings_from_mapping(
        {
            "server": {"host": "127.0.0.1", "port": 8000},
            "store": {"url": f"sqlite:///{tmp}/jobs.db"},
            "storage": {"url": f"file://{tmp}/videos"},
            "logging": {"level": "WARNING"},
        }
    )
    configure(settings.logging.level, "json")
    app = create_app(settings, run_scheduler=False)
    async with app.router.lifespan_context(app):
        await _rounds(app, args, ["/healthz", "/jobs/", "/no-such-path"])


async def _rounds(app: Any, args: argparse.Namespace, paths: list[str]) -> None:
    for r in range(args.rounds):
        for path in paths:
            cpu0 = time.process_time()
            for _ in range(args.requests):
                await app(_scope(path), _receive, _send)
            cpu = time.process_time() - cpu0
            print(f"round {r} GET {path}: CPU {1e6 * cpu / args.requests:.1f} us/req", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bare", action="store_true", help="bench/bare_app.py instead")
    uvloop.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
