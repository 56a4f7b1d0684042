"""Video facts: recognise a video from its first bytes, read its metadata.

An MP4's facts come from its ``moov`` box alone (:mod:`webhook_poller.mp4`); PyAV opens
the container only for what that reader cannot answer (other containers, unknown codecs,
fragmented files). Metadata is a nice-to-have: :func:`probe_file` never raises, it returns
what it could read.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import IO, Any

import structlog

from .model import VideoMetadata
from .mp4 import read_moov

log = structlog.get_logger(__name__)

_FTYP_BRANDS_QT = (b"qt  ",)


def sniff_video_type(head: bytes) -> str | None:
    """The content type the first bytes announce, or None when they are not a video we know."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        return "video/quicktime" if brand in _FTYP_BRANDS_QT else "video/mp4"
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    return None


def _probe(source: str | IO[bytes], size: int | None) -> VideoMetadata:
    if size is not None:
        try:
            if isinstance(source, str):
                with open(source, "rb") as fh:
                    facts = read_moov(fh, size)
            else:
                facts = read_moov(source, size)
                source.seek(0)
        except (OSError, ValueError) as exc:
            log.debug("moov_unreadable", error=str(exc)[:200])
            facts = None
        if facts is not None and facts.complete:
            return VideoMetadata(
                size_bytes=size,
                duration_s=facts.duration_s,
                width=facts.width,
                height=facts.height,
                codec=facts.codec,
            )
    return _probe_with_pyav(source, size)


def _probe_with_pyav(source: str | IO[bytes], size: int | None) -> VideoMetadata:
    import av  # imported lazily: PyAV loads FFmpeg, which start-up does not need

    facts: dict[str, Any] = {"size_bytes": size}
    try:
        with av.open(source, mode="r") as container:
            if container.duration is not None:
                facts["duration_s"] = round(container.duration / 1_000_000, 3)
            if container.streams.video:
                stream = container.streams.video[0]
                facts["width"] = stream.codec_context.width or None
                facts["height"] = stream.codec_context.height or None
                facts["codec"] = stream.codec_context.name
                if facts.get("duration_s") is None and stream.duration and stream.time_base:
                    facts["duration_s"] = round(float(stream.duration * stream.time_base), 3)
    except Exception as exc:  # unreadable metadata never fails a job
        log.debug("metadata_probe_failed", error=str(exc)[:200])
    return VideoMetadata(**facts)


def probe_file(path: str | os.PathLike[str]) -> VideoMetadata:
    """Duration, size, resolution and codec of a video file; never raises."""
    try:
        size = Path(path).stat().st_size
    except OSError:
        return VideoMetadata()
    return _probe(str(path), size)


def probe_fileobj(fileobj: IO[bytes], size: int | None = None) -> VideoMetadata:
    """The same for a seekable binary file object."""
    return _probe(fileobj, size)


async def probe_path(path: str | os.PathLike[str]) -> VideoMetadata:
    """:func:`probe_file` off the event loop."""
    return await asyncio.to_thread(probe_file, path)
