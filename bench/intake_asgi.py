"""(a) Intake without HTTP: the app's own CPU per ``POST /poll-video``, called as ASGI.

Builds the app from a loopback config on SQLite (the bench's, quiet logs), runs its
lifespan, and sends ``--requests`` new jobs through ``app(scope, receive, send)``, 32 in
flight so group commits form as under wrk; prints the process CPU (the loop and the
store's writer thread) per request. No socket, no uvicorn: what is left is our
middlewares, Starlette, the route and the store, so a change there shows without wrk's
and the kernel's share. Run it in turn against an export of another commit:

    PYTHONPATH=. python -m bench.intake_asgi --requests 10000 --rounds 3
    (cd /tmp/main-export && PYTHONPATH=. python -m bench.intake_asgi)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from typing import Any

import uvloop

from webhook_poller.app import create_app
from webhook_poller.config import settings_from_mapping
from webhook_poller.logging import configure


def _scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/poll-video",
        "raw_path": b"/poll-video",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _run(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="wp-bench-asgi-")
    settings = settings_from_mapping(
        {
            "server": {"host": "127.0.0.1", "port": 8000},
            "store": {"url": f"sqlite:///{tmp}/jobs.db"},
            "storage": {"url": f"file://{tmp}/videos"},
            "logging": {"level": args.log_level},
            "providers": {"demo": {"first_poll_delay_s": 3600}},
        }
    )
    configure(settings.logging.level, "json")
    app = create_app(settings)

    async def one(n: int) -> None:
        body = json.dumps(
            {"sessionId": f"bench-{n % 1000}", "taskId": f"a-{n}", "model": "demo", "attempt": 1}
        ).encode()
        given = False
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(_scope(body), receive, send)
        if status != [200]:
            raise SystemExit(f"request {n} answered {status}")

    async with app.router.lifespan_context(app):
        for r in range(args.rounds):
            todo = iter(range(r * args.requests, (r + 1) * args.requests))

            async def worker(todo: Any = todo) -> None:
                for n in todo:
                    await one(n)

            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            print(
                f"round {r}: CPU {1e6 * cpu / args.requests:.1f} us/req, "
                f"wall {1e6 * wall / args.requests:.1f} us/req",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--log-level", default="WARNING")
    uvloop.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
