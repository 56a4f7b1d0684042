"""One analytics record per finished job (the record of the n8n template), logged and
optionally appended to a JSONL file (``analytics.jsonl_path``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, cast

import structlog

from .model import Job, iso
from .shapes import AnalyticsRecord, VideoMetadata

if TYPE_CHECKING:
    from .services import Services

log = structlog.get_logger(__name__)


def human_duration(seconds: float) -> str:
    """``392.4`` -> ``"6m 32s"``, as the template logs it."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def record(job: Job) -> AnalyticsRecord:
    first = cast(VideoMetadata, job.videos[0].metadata.to_dict() if job.videos else {})
    return {
        "jobId": job.id,
        "sessionId": job.session_id,
        "taskId": job.task_id,
        "model": job.model,
        "provider": job.provider,
        "status": job.state.value,
        "errorCode": job.error_code.value if job.error_code else None,
        "attempts": job.attempts,
        "totalTime": human_duration(job.elapsed_s()),
        "totalSeconds": round(job.elapsed_s(), 3),
        "videoKey": job.videos[0].key if job.videos else None,
        "videoUrl": job.videos[0].key if job.videos else None,
        "videoCount": len(job.videos),
        "metadata": first,
        "finishedAt": iso(job.finished_at),
    }


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")


async def job_finished(services: Services, job: Job) -> None:
    data = record(job)
    log.info("job_summary", **{k: v for k, v in data.items() if k not in ("jobId", "taskId")})
    target = services.settings.analytics.jsonl_path
    if target:
        try:
            await asyncio.to_thread(_append, Path(target), json.dumps(data))
        except OSError as exc:
            log.warning("analytics_write_failed", error=str(exc))
