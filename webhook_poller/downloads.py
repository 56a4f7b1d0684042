"""All of a job's videos as one streamed ZIP (stream-zip), never held in memory or on disk.

Videos are already compressed, so members are deflated at level 0: the archive costs no CPU
worth mentioning, streams with data descriptors, and ZIP64 is chosen when a member needs it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING

from stream_zip import ZIP_64, ZIP_AUTO, Method, async_stream_zip

from .model import Job, StoredVideo

if TYPE_CHECKING:
    from .services import Services

_MODE = 0o100644


def member_name(job: Job, video: StoredVideo) -> str:
    ext = {"video/webm": "webm", "video/quicktime": "mov"}.get(
        video.metadata.content_type or "", "mp4"
    )
    return f"{job.id}-{video.index}.{ext}"


async def zip_stream(services: Services, job: Job) -> AsyncIterator[bytes]:
    modified = job.finished_at or job.updated_at

    async def members() -> AsyncIterator[tuple[str, datetime, int, Method, AsyncIterator[bytes]]]:
        for video in sorted(job.videos, key=lambda v: v.index):
            size = video.metadata.size_bytes
            method = ZIP_AUTO(size, level=0) if size is not None else ZIP_64
            yield (member_name(job, video), modified, _MODE, method, services.blobs.read(video.key))

    async for chunk in async_stream_zip(members()):
        yield chunk
