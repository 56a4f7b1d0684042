"""After the provider says "done": stream each video into blob storage, then read metadata.

Both steps are safe to repeat after a crash: a video already recorded on the job is not
fetched again, blob writes become visible only when complete, and a repeated write of the
same key replaces the object.

Result custody: provider links do not live long (Replicate 1 h). A download refused with
403, 404 or 410 means the link expired; the provider is polled once more for a fresh link
and the download is tried once again before the job fails with ``download_failed``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from . import media, net, submission
from .errors import BlobError, DownloadError, UnsafeURL, WebhookPollerError
from .interfaces import Downloads, PollStatus
from .model import ErrorCode, Job, JobState, StoredVideo, VideoMetadata, transition
from .policy import Outcome, PollPolicy, backoff_s

if TYPE_CHECKING:
    from .interfaces import ProviderAdapter, StoredBlob
    from .services import Services

log = structlog.get_logger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_part(value: str, limit: int = 80) -> str:
    """One path segment from outside input: no separators, no dot-dot, bounded length.

    The hash of the raw value is always appended, so two different values never give the
    same segment, even when one is spelled like the other's escaped form (``T/x`` against
    ``T_x-<hash of "T/x">``).
    """
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    cleaned = (_UNSAFE.sub("_", value).strip("._") or "x")[: limit - len(digest) - 1]
    return f"{cleaned}-{digest}"


def video_key(job: Job, index: int) -> str:
    """Where a job's video goes: one folder per (provider, session, task), so the key is
    injective in all four. Keys are recorded on the job when stored and read from there, so
    videos stored under the older ``session/task/index`` layout stay readable."""
    return (
        f"v2/{safe_part(job.provider)}/{safe_part(job.session_id)}/"
        f"{safe_part(job.task_id)}/{index}.mp4"
    )


async def _sniffed(
    chunks: AsyncIterator[bytes], header_type: str | None, max_bytes: int
) -> tuple[str, AsyncIterator[bytes]]:
    """Peek at the first bytes: refuse what is not video, name its real type, cap the size."""
    first = b""
    async for chunk in chunks:
        first += chunk
        if len(first) >= 64:
            break
    sniffed = media.sniff_video_type(first)
    declared = (header_type or "").split(";")[0].strip().lower()
    if sniffed is None and not declared.startswith("video/"):
        raise DownloadError(
            f"the result is not a video (content type {declared or 'unknown'})", transient=False
        )
    content_type = sniffed or declared

    async def replay() -> AsyncIterator[bytes]:
        seen = len(first)
        if seen > max_bytes:
            raise DownloadError(f"the video is over the {max_bytes}-byte limit")
        if first:
            yield first
        async for chunk in chunks:
            seen += len(chunk)
            if seen > max_bytes:
                raise DownloadError(f"the video is over the {max_bytes}-byte limit")
            yield chunk

    return content_type, replay()


async def _store_one(
    services: Services, adapter: ProviderAdapter | None, job: Job, index: int, url: str
) -> StoredBlob:
    settings = services.settings
    key = video_key(job, index)
    limit = settings.storage.max_video_bytes
    custom = (
        await adapter.download(url, services.provider_http)
        if adapter is not None and isinstance(adapter, Downloads)
        else None
    )

    async def put(source: AsyncIterator[bytes], declared_type: str | None) -> StoredBlob:
        content_type, chunks = await _sniffed(source, declared_type, limit)
        return await services.blobs.put_stream(
            key,
            chunks,
            content_type=content_type,
            max_bytes=limit,
            filename=f"{job.id}-{index}.mp4",
        )

    if custom is not None:
        return await put(custom, None)
    async with net.open_stream(
        services.http,
        url,
        max_bytes=limit,
        deadline_s=settings.storage.download_timeout_s,
        allow_private=settings.security.allow_private_urls,
        allowed=settings.security.allowlist(),
        accept=net.is_video_content_type,
    ) as stream:
        return await put(stream.iter_bytes(), stream.content_type)


async def download_step(
    services: Services,
    adapter: ProviderAdapter | None,
    policy: PollPolicy,
    job: Job,
    now: datetime,
) -> Outcome:
    """Fetch every result URL not yet stored; move to ``storing`` when all are in.

    ``adapter`` is None when the job's provider was removed from the config after the job
    got its links: the links are still fetched as plain URLs, but an expired one cannot be
    refreshed."""
    done = {v.index for v in job.videos}
    videos = list(job.videos)
    refreshed = False
    for index, url in enumerate(job.result_urls):
        if index in done:
            continue
        try:
            try:
                blob = await _store_one(services, adapter, job, index, url)
            except DownloadError as exc:
                if refreshed or not exc.link_expired or adapter is None:
                    raise
                refreshed = True
                job = await _fresh_links(services, adapter, job, exc)
                url = job.result_urls[index]
                blob = await _store_one(services, adapter, job, index, url)
        except UnsafeURL as exc:
            return policy.failed(job, now, ErrorCode.DOWNLOAD_FAILED, f"video URL refused: {exc}")
        except DownloadError as exc:
            if exc.transient:
                return _retry(services, policy, job, now, ErrorCode.DOWNLOAD_FAILED, str(exc))
            return policy.failed(job, now, ErrorCode.DOWNLOAD_FAILED, str(exc))
        except BlobError as exc:
            if exc.transient:
                return _retry(services, policy, job, now, ErrorCode.STORAGE_FAILED, str(exc))
            return policy.failed(job, now, ErrorCode.STORAGE_FAILED, str(exc))
        meta = VideoMetadata(
            size_bytes=blob.size_bytes, sha256=blob.sha256, content_type=blob.content_type
        )
        videos.append(StoredVideo(index=index, key=blob.key, metadata=meta))
        services.metrics.bytes_downloaded.labels(job.provider).inc(blob.size_bytes)
        log.info("video_stored", index=index, size_bytes=blob.size_bytes, host=net.redact_url(url))
        # Record each stored video at once, so a crash does not fetch it again.
        job = dataclasses.replace(job, videos=tuple(videos), transient_failures=0)
        job = await services.store.save(job, expected_version=job.version)
    moved = transition(job, JobState.STORING, now=now, due_at=now, transient_failures=0)
    return Outcome(moved, [])


async def _fresh_links(
    services: Services, adapter: ProviderAdapter, job: Job, cause: DownloadError
) -> Job:
    """Poll the provider once more for the job's result links (the old ones expired).

    Returns the job with the new links recorded; raises the original ``DownloadError``
    (final) when the provider has no fresh link to give.
    """
    log.info("result_link_expired", status=cause.status, provider=job.provider)
    gate = services.gates.get(job.provider)
    if gate is not None:
        await gate.acquire()
    try:
        result = await submission.poll_job(adapter, job, services.provider_http, gate)
    except WebhookPollerError as exc:
        log.warning("result_link_refresh_failed", error=str(exc)[:200])
        raise DownloadError(f"{cause} (link expired; the provider could not refresh it)") from None
    except Exception:  # an adapter bug must not end the loop
        log.exception("result_link_refresh_crashed")
        raise DownloadError(f"{cause} (link expired; the refresh failed)") from None
    urls = tuple(result.video_urls)
    if result.status is not PollStatus.SUCCEEDED or len(urls) < len(job.result_urls):
        raise DownloadError(f"{cause} (link expired; the provider gave no fresh link)")
    job = dataclasses.replace(job, result_urls=urls)
    saved = await services.store.save(job, expected_version=job.version)
    log.info("result_link_refreshed", provider=job.provider)
    return saved


def _retry(
    services: Services, policy: PollPolicy, job: Job, now: datetime, code: ErrorCode, why: str
) -> Outcome:
    failures = job.transient_failures + 1
    polling = services.settings.polling
    if failures > polling.max_download_retries:
        return policy.failed(job, now, code, f"{why} (gave up after {failures} tries)")
    delay = backoff_s(failures, polling.backoff_base_s, polling.backoff_max_s, policy.rng)
    log.warning("download_retry_scheduled", failures=failures, delay_s=round(delay, 1), error=why)
    return Outcome(
        dataclasses.replace(
            job,
            transient_failures=failures,
            due_at=now + timedelta(seconds=delay),
            updated_at=now,
        ),
        [],
    )


async def storing_step(services: Services, job: Job, now: datetime) -> Job:
    """Read each video's metadata (never fails the job); return the job with it filled in."""
    videos = []
    for video in job.videos:
        meta = video.metadata
        if meta.duration_s is None and meta.width is None:
            try:
                probed = await services.blobs.probe_metadata(video.key)
            except Exception as exc:  # metadata is a nice-to-have, never a failure
                log.warning("metadata_unreadable", index=video.index, error=str(exc))
                probed = VideoMetadata()
            meta = dataclasses.replace(
                probed,
                size_bytes=meta.size_bytes or probed.size_bytes,
                sha256=meta.sha256,
                content_type=meta.content_type or probed.content_type,
            )
        videos.append(dataclasses.replace(video, metadata=meta))
    return dataclasses.replace(job, videos=tuple(videos))
