"""Micro-bench of the paths issue 15 measures, before and after :mod:`webhook_poller.shapes`.

"Before" is the code of a git ref (default ``main``), loaded from git into this process;
"after" is the working tree. Both run in turn in the same process, so the machine's noise
hits them alike. Prints median µs per call over the rounds and after/before ratios.

    PYTHONPATH=. .venv/bin/python -m bench.shapes_micro --rounds 31

* intake: read the body (``inputs.load_json`` on the raw bytes) + ``Api.validate_intake``
* job answer: ``job_json`` + the bytes of the ``GET /jobs/{id}`` answer
* job_json alone, and the event payload + the bytes a webhook target receives
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import statistics
import subprocess
import sys
import timeit
import types
from datetime import timedelta
from typing import Any

from starlette.responses import JSONResponse

from webhook_poller import inputs, views
from webhook_poller.app import Api
from webhook_poller.config import settings_from_mapping
from webhook_poller.errors import RequestRejected
from webhook_poller.interfaces import VideoRef
from webhook_poller.model import (
    Delivery,
    DeliveryStatus,
    Event,
    Job,
    JobState,
    StoredVideo,
    VideoMetadata,
    new_job_id,
    utcnow,
)


def _git_module(ref: str, path: str, name: str) -> types.ModuleType:
    """``path`` at ``ref`` as a module of the webhook_poller package (relative imports work)."""
    source = subprocess.run(
        ["git", "show", f"{ref}:{path}"], check=True, capture_output=True, text=True
    ).stdout
    spec = importlib.util.spec_from_loader(f"webhook_poller.{name}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "webhook_poller"
    sys.modules[module.__name__] = module
    exec(compile(source, f"{ref}:{path}", "exec"), module.__dict__)
    return module


def _old_validate_intake(ref: str, old_inputs: types.ModuleType) -> Any:
    """``validate_intake`` and its helpers exactly as ``ref`` had them (in ``app.py``'s
    ``Api``, or in ``routes/intake.py`` once the routes were split out)."""
    for path in ("webhook_poller/routes/intake.py", "webhook_poller/app.py"):
        shown = subprocess.run(["git", "show", f"{ref}:{path}"], capture_output=True, text=True)
        if shown.returncode == 0 and "def _required_str" in shown.stdout:
            source = shown.stdout
            break
    else:
        raise SystemExit(f"no validate_intake at {ref}")
    tree = ast.parse(source)
    wanted = {"_pick", "_required_str", "_flag", "_attempt", "_json_object"}
    parts = [
        ast.get_source_segment(source, n) for n in tree.body if getattr(n, "name", "") in wanted
    ]
    method = next(
        m
        for n in tree.body
        if isinstance(n, ast.ClassDef)
        for m in n.body
        if getattr(m, "name", "") == "validate_intake"
    )
    body = ast.get_source_segment(source, method)
    assert body is not None
    parts.append(
        body.replace("    def validate_intake", "def validate_intake", 1).replace("\n    ", "\n")
    )
    namespace: dict[str, Any] = {
        "inputs": old_inputs,
        "json": json,
        "RequestRejected": RequestRejected,
        "MAX_ID_LEN": 256,
        "Any": Any,
        "Mapping": dict,
    }
    exec("from __future__ import annotations\n" + "\n\n".join(p for p in parts if p), namespace)
    return namespace["validate_intake"]


def _sample_job() -> tuple[Job, list[VideoRef], list[Delivery]]:
    now = utcnow()
    meta = VideoMetadata(
        size_bytes=1_234_567,
        duration_s=8.0,
        width=1280,
        height=720,
        codec="h264",
        content_type="video/mp4",
        sha256="ab" * 32,
    )
    job = Job(
        id=new_job_id("kie", "task-1234567890"),
        session_id="sess-42",
        task_id="task-1234567890",
        model="veo3_fast",
        provider="kie",
        state=JobState.SUCCEEDED,
        created_at=now - timedelta(seconds=75),
        updated_at=now,
        due_at=now,
        finished_at=now,
        callback_url="https://n8n.example.com/webhook/abc",
        context={"chatId": 12345, "lang": "en", "tags": ["a", "b"]},
        videos=(StoredVideo(0, "videos/k/0.mp4", meta),),
        polls=3,
    )
    refs = [VideoRef(0, "https://cdn.example.com/v/0.mp4?sig=abc", "videos/k/0.mp4", meta)]
    deliveries = [
        Delivery(
            job_id=job.id,
            run=0,
            event=Event.SUCCEEDED,
            target=target,
            webhook_id="wh-" + target,
            payload={},
            status=DeliveryStatus.SENT,
            attempts=1,
            sent_at=now,
        )
        for target in ("callback", "telegram")
    ]
    return job, refs, deliveries


def _median_us(fn: Any, number: int, rounds: int) -> list[float]:
    return [t / number * 1e6 for t in timeit.repeat(fn, number=number, repeat=rounds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--ref", default=None, help="git ref of the 'before' code (default: merge-base with main)"
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--number", type=int, default=5000)
    args = parser.parse_args()
    if args.ref is None:
        args.ref = subprocess.run(
            ["git", "merge-base", "HEAD", "main"], check=True, capture_output=True, text=True
        ).stdout.strip()

    old_inputs = _git_module(args.ref, "webhook_poller/inputs.py", "_bench_old_inputs")
    old_views = _git_module(args.ref, "webhook_poller/views.py", "_bench_old_views")
    old_validate = _old_validate_intake(args.ref, old_inputs)

    settings = settings_from_mapping({"storage": {"url": "file:///tmp/bench-shapes"}})
    api = Api(settings)
    api.services = types.SimpleNamespace(adapters={"kie": object()})  # type: ignore[assignment]
    raw = json.dumps(
        {
            "sessionId": "sess-42",
            "taskId": "task-1234567890",
            "model": "veo3_fast",
            "provider": "kie",
            "callbackUrl": "https://n8n.example.com/webhook/abc",
            "context": {"chatId": 12345, "lang": "en"},
        }
    ).encode()
    small = json.dumps({"sessionId": "sess-42", "taskId": "task-1", "model": "veo3_fast"}).encode()
    job, refs, deliveries = _sample_job()
    base = "https://poller.example.com"

    def intake_before() -> Any:
        return old_validate(api, old_inputs.load_json(raw))

    def intake_after() -> Any:
        return api.validate_intake(inputs.load_json(raw))

    def small_before() -> Any:
        return old_validate(api, old_inputs.load_json(small))

    def small_after() -> Any:
        return api.validate_intake(inputs.load_json(small))

    def answer_before() -> bytes:
        body = old_views.job_json(job, refs, base, deliveries=deliveries)
        return JSONResponse({"ok": True, **body}).body

    def answer_after() -> bytes:
        return bytes(views.job_answer(views.job_json(job, refs, base, deliveries=deliveries)).body)

    def event_before() -> str:
        payload = old_views.event_payload(job, Event.SUCCEEDED, refs, base)
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)

    def event_after() -> str:
        payload = views.event_payload(job, Event.SUCCEEDED, refs, base)
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)

    # the same answers, or the comparison means nothing
    assert intake_before() == intake_after().model_dump()
    assert small_before() == small_after().model_dump()
    assert json.loads(answer_before()) == json.loads(answer_after())
    assert event_before() == event_after()

    cases = {
        "intake parse+validate (all fields)": (intake_before, intake_after),
        "intake parse+validate (3 fields)": (small_before, small_after),
        "job answer (job_json+bytes)": (answer_before, answer_after),
        "job_json alone": (
            lambda: old_views.job_json(job, refs, base, deliveries=deliveries),
            lambda: views.job_json(job, refs, base, deliveries=deliveries),
        ),
        "event payload+bytes": (event_before, event_after),
    }
    samples: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in cases}
    for _ in range(args.rounds):  # in turn, so noise hits both alike
        for name, (before, after) in cases.items():
            samples[name][0].extend(_median_us(before, args.number, 1))
            samples[name][1].extend(_median_us(after, args.number, 1))
    print(
        f"| path ({args.rounds} rounds x {args.number}) | before µs | after µs "
        "| after/before | min before | min after |"
    )
    print("|---|---|---|---|---|---|")
    for name, (b, a) in samples.items():
        mb, ma = statistics.median(b), statistics.median(a)
        print(f"| {name} | {mb:.2f} | {ma:.2f} | {ma / mb:.2f} | {min(b):.2f} | {min(a):.2f} |")


if __name__ == "__main__":
    main()
