"""(a) Intake: ``POST /poll-video`` against a bare Starlette endpoint, same uvicorn, same wrk.

Each round runs wrk for ``--seconds`` against the baseline, then against the service on
SQLite, then against the service on Redis (its own redis-server, appendfsync always), in
turn, so the machine's noise hits all three alike; the table gives medians over the rounds
and the service/baseline ratios. Every service answer is a 200 for a new job that is in
the store (WAL commit, or AOF fsync) before the answer is written.

    python -m bench.intake --rounds 5 --seconds 10
    python -m bench.intake --rounds 5 --seconds 10 --workers 1,2   # serve --workers N too
    python -m bench.intake --before /tmp/main-export   # and that tree's service, in turn

``--before`` takes a ``git archive`` export of an older commit (with ``adapters`` and
``notifiers`` linked into its ``webhook_poller/``, as the install maps them) and runs its
service beside this tree's, one worker, each store, in the same rounds.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.service import ServiceProcess

from . import harness

# jobs wait an hour before their first poll: this measures intake, not the loop
QUIET = {"providers": {"demo": {"first_poll_delay_s": 3600}}}


def _start(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    path: Path,
    redis_url: str,
    label: Callable[[str, int], str],
) -> dict[str, ServiceProcess]:
    """Every service of the run: this tree's per store and worker count, and ``--before``'s."""
    counts = [int(w) for w in args.workers.split(",")]
    services: dict[str, ServiceProcess] = {}
    stores = args.stores.split(",")
    trees: list[tuple[str, Path | None]] = [("", None)]
    if args.before is not None:
        trees.insert(0, (" (before)", args.before.resolve()))
    for tag, code in trees:
        for w in counts if code is None else [1]:
            name = label("sqlite", w) + tag
            if "sqlite" in stores:
                sq_cfg = harness.service_config(path / f"s{w}{tag}", "sqlite", **QUIET)
                services[name] = stack.enter_context(harness.service(sq_cfg, path, w, code=code))
        for w in counts if code is None else [1]:
            if "redis" not in stores:
                continue
            # each worker count (and tree) on its own Redis database
            db = w + (8 if code is not None else 0)
            rd_cfg = harness.service_config(
                path / f"r{w}{tag}", "redis", redis_url.rsplit("/", 1)[0] + f"/{db}", **QUIET
            )
            name = label("redis", w) + tag
            services[name] = stack.enter_context(harness.service(rd_cfg, path, w, code=code))
    return services


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", default="1", help="comma list of serve --workers N")
    parser.add_argument("--before", type=Path, help="an exported older tree to run in turn")
    parser.add_argument("--stores", default="sqlite,redis", help="comma list of stores")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    def label(store: str, workers: int) -> str:
        return store if counts == [1] else f"{store}, {workers} worker{'s' * (workers > 1)}"

    with contextlib.ExitStack() as stack:
        path = stack.enter_context(harness.workdir("intake"))
        redis = stack.enter_context(harness.redis_server(path))
        bare_url, _ = stack.enter_context(harness.python_server("bench.bare_app"))
        services = _start(stack, args, path, redis.url, label)
        targets = {"bare starlette": bare_url} | {n: s.url for n, s in services.items()}
        runs: dict[str, list[dict]] = {name: [] for name in targets}
        for name, url in targets.items():  # warm-up
            harness.wrk(url, seconds=2, connections=args.connections, prefix=f"w{name[0]}")
        for n in range(args.rounds):
            for name, url in targets.items():
                svc = services.get(name)
                cpu0 = harness.service_cpu_seconds(svc) if svc else 0.0
                result = harness.wrk(
                    url,
                    seconds=args.seconds,
                    connections=args.connections,
                    prefix=f"r{n}{name[0]}",
                )
                if result["errors"] or result["non2xx"]:
                    raise SystemExit(f"{name}: {result}")
                if svc is not None:  # CPU per request: what the machine's load cannot skew
                    cpu = harness.service_cpu_seconds(svc) - cpu0
                    result["cpu_us"] = 1e6 * cpu / max(1, result["requests"])
                runs[name].append(result)
                print(name, result, flush=True)
        stored = {name: httpx.get(f"{svc.url}/metrics").text for name, svc in services.items()}
    base_rps = harness.median([r["rps"] for r in runs["bare starlette"]])
    rows = []
    for name, results in runs.items():
        rps = harness.median([r["rps"] for r in results])
        rows.append(
            {
                "target": name,
                "req/s (median)": rps,
                "p50 ms": harness.median([r["p50_ms"] for r in results]),
                "p99 ms": harness.median([r["p99_ms"] for r in results]),
                "vs bare": f"{rps / base_rps:.2f}",
                "service CPU µs/req": harness.median([r.get("cpu_us", 0.0) for r in results])
                if name in services
                else "-",
            }
        )
    for name, text in stored.items():
        created = harness.counter_total(text, "webhook_poller_intake_total", result="created")
        print(f"{name}: {created:.0f} jobs created and stored")
    harness.report(
        f"Intake, wrk -t1 -c{args.connections}, {args.rounds} rounds of {args.seconds:g} s",
        rows,
    )


if __name__ == "__main__":
    main()
