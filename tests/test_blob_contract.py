"""One contract for every BlobStorage: local files and S3 (moto over HTTP) behave the same."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.s3_server import ACCESS_KEY, SECRET_KEY, MotoServer
from webhook_poller.adapters.demo import sample_video_path
from webhook_poller.blobs.local import LocalBlobStorage
from webhook_poller.blobs.s3 import S3BlobStorage
from webhook_poller.errors import BlobError
from webhook_poller.interfaces import BlobStorage

BACKENDS = ["file", pytest.param("s3", marks=pytest.mark.s3)]


def s3_options(server: MotoServer, bucket: str, **extra) -> dict:
    return {
        "url": f"s3://{bucket}/videos",
        "endpoint_url": server.url,
        "region": "us-east-1",
        "addressing_style": "path",
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        **extra,
    }


@pytest.fixture(params=BACKENDS)
async def blobs(request, tmp_path) -> AsyncIterator[BlobStorage]:
    if request.param == "file":
        storage: BlobStorage = LocalBlobStorage({"url": f"file://{tmp_path}/blobs"})
    else:
        server: MotoServer = request.getfixturevalue("moto_server")
        bucket = server.make_bucket(f"contract-{uuid.uuid4().hex[:10]}")
        storage = S3BlobStorage(s3_options(server, bucket))
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


async def chunks_of(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def read_all(storage: BlobStorage, key: str) -> bytes:
    return b"".join([c async for c in storage.read(key)])


async def test_round_trip_with_size_and_sha256(blobs):
    data = os.urandom(300_000)
    stored = await blobs.put_stream(
        "jobs/a/0.mp4",
        chunks_of(data),
        content_type="video/mp4",
        max_bytes=10**9,
        filename="a-0.mp4",
    )
    assert stored.size_bytes == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert await read_all(blobs, "jobs/a/0.mp4") == data
    assert await blobs.size("jobs/a/0.mp4") == len(data)
    assert await blobs.size("jobs/a/missing.mp4") is None
    assert await blobs.ping()


async def test_over_the_limit_leaves_nothing_visible(blobs):
    with pytest.raises(BlobError) as caught:
        await blobs.put_stream(
            "jobs/big/0.mp4", chunks_of(b"x" * 200_000), content_type="video/mp4", max_bytes=100_000
        )
    assert caught.value.transient is False
    assert await blobs.size("jobs/big/0.mp4") is None
    assert await blobs.keys_older_than(datetime.now(UTC) + timedelta(days=1)) == []


async def test_delete_is_idempotent(blobs):
    await blobs.put_stream(
        "jobs/d/0.mp4", chunks_of(b"abc"), content_type="video/mp4", max_bytes=100
    )
    await blobs.delete("jobs/d/0.mp4")
    await blobs.delete("jobs/d/0.mp4")
    assert await blobs.size("jobs/d/0.mp4") is None


async def test_keys_older_than(blobs):
    await blobs.put_stream(
        "jobs/o/0.mp4", chunks_of(b"old"), content_type="video/mp4", max_bytes=100
    )
    later = datetime.now(UTC) + timedelta(minutes=5)
    earlier = datetime.now(UTC) - timedelta(minutes=5)
    assert await blobs.keys_older_than(later) == ["jobs/o/0.mp4"]
    assert await blobs.keys_older_than(earlier) == []


async def test_metadata_of_a_real_video_and_of_garbage(blobs):
    sample = sample_video_path().read_bytes()
    await blobs.put_stream(
        "jobs/m/0.mp4", chunks_of(sample, 4096), content_type="video/mp4", max_bytes=10**7
    )
    meta = await blobs.probe_metadata("jobs/m/0.mp4")
    assert meta.width and meta.height and meta.duration_s and meta.codec == "h264"
    assert meta.size_bytes == len(sample)
    await blobs.put_stream(
        "jobs/m/1.mp4",
        chunks_of(b"not a video at all" * 100),
        content_type="video/mp4",
        max_bytes=10**7,
    )
    junk = await blobs.probe_metadata("jobs/m/1.mp4")
    assert junk.width is None and junk.duration_s is None, "unreadable media is not an error"


@pytest.mark.parametrize("key", ["../escape.mp4", "/abs.mp4", "a/../../b.mp4"])
async def test_unsafe_keys_are_refused(blobs, key):
    with pytest.raises(BlobError):
        await blobs.put_stream(key, chunks_of(b"x"), content_type="video/mp4", max_bytes=10)


async def test_links(blobs):
    await blobs.put_stream(
        "jobs/l/0.mp4",
        chunks_of(b"video-bytes"),
        content_type="video/mp4",
        max_bytes=100,
        filename="l-0.mp4",
    )
    url = await blobs.url_for("jobs/l/0.mp4", expires_s=600, filename="l-0.mp4")
    if isinstance(blobs, LocalBlobStorage):
        assert url is None, "the service signs its own links to local files"
        return
    assert url is not None
    async with httpx.AsyncClient() as client:
        got = await client.get(url)
    assert got.status_code == 200 and got.content == b"video-bytes"
    assert got.headers["content-type"] == "video/mp4"
    assert 'filename="l-0.mp4"' in got.headers["content-disposition"]
