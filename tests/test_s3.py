"""S3 storage against moto over real HTTP: multipart streaming, presigned and CDN links,
faults (unreachable, a 500 on a part, a refused key) and the whole service on S3."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import av
import httpx
import pytest

from tests.support.s3_server import ACCESS_KEY, SECRET_KEY, FaultProxy, MotoServer
from tests.support.servers import free_port
from tests.support.service import base_config, run_service, wait_status
from webhook_poller.blobs.s3 import S3BlobStorage, parse_s3_url
from webhook_poller.errors import BlobError, ConfigError

pytestmark = pytest.mark.s3

MIB = 1024 * 1024


def options(endpoint: str, bucket: str, **extra) -> dict:
    return {
        "url": f"s3://{bucket}/out",
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "addressing_style": "path",
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "part_size_mb": 5,
        **extra,
    }


def new_bucket(server: MotoServer) -> str:
    return server.make_bucket(f"b-{uuid.uuid4().hex[:12]}")


async def stream(total: int, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    block = os.urandom(chunk)
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield block[:n]
        sent += n


def test_url_parsing_and_options():
    assert parse_s3_url("s3://my-bucket/a/b/") == ("my-bucket", "a/b/")
    assert parse_s3_url("s3://my-bucket") == ("my-bucket", "")
    with pytest.raises(ConfigError):
        parse_s3_url("s3://")
    with pytest.raises(ConfigError, match="part_size_mb"):
        S3BlobStorage(options("http://x", "bucket", part_size_mb=1))
    with pytest.raises(ConfigError, match="go together"):
        S3BlobStorage({"url": "s3://bucket", "access_key_id": "only-the-id"})


async def test_multipart_stream_is_verified_and_typed(moto_server):
    bucket = new_bucket(moto_server)
    proxy = FaultProxy(moto_server.url)
    with proxy.serving() as endpoint:
        storage = S3BlobStorage(options(endpoint, bucket))
        await storage.open()
        try:
            stored = await storage.put_stream(
                "j/0.mp4",
                stream(12 * MIB + 123),
                content_type="video/mp4",
                max_bytes=10**9,
                filename="j-0.mp4",
            )
            assert stored.size_bytes == 12 * MIB + 123
            assert proxy.seen["UploadPart"] == 3 and proxy.seen["CompleteMultipartUpload"] == 1
            s3 = moto_server.client()
            head = s3.head_object(Bucket=bucket, Key="out/j/0.mp4")
            s3.close()
            assert head["ContentLength"] == stored.size_bytes
            assert head["ContentType"] == "video/mp4"
            assert 'filename="j-0.mp4"' in head["ContentDisposition"]
            url = await storage.url_for("j/0.mp4", expires_s=10 * 24 * 3600)
            assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["604800"], "capped at 7 d"
        finally:
            await storage.close()


async def test_public_base_url_gives_plain_links(moto_server):
    storage = S3BlobStorage(
        options(moto_server.url, "any-bucket", public_base_url="https://cdn.example.com/")
    )
    url = await storage.url_for("j/0 a.mp4", expires_s=60)
    assert url == "https://cdn.example.com/out/j/0%20a.mp4"


async def test_presigned_links_carry_the_public_endpoint(moto_server):
    """The service talks to the storage on an inside address; links carry the public one."""
    bucket = new_bucket(moto_server)
    public = moto_server.url.replace("127.0.0.1", "localhost")
    storage = S3BlobStorage(options(moto_server.url, bucket, public_endpoint_url=public))
    await storage.open()
    try:
        await storage.put_stream("j/0.mp4", stream(1000), content_type="video/mp4", max_bytes=10**6)
        url = await storage.url_for("j/0.mp4", expires_s=60)
        assert url is not None and url.startswith(f"{public}/{bucket}/out/j/0.mp4?")
        assert "X-Amz-Signature" in url
        async with httpx.AsyncClient() as client:
            fetched = await client.get(url)
        assert fetched.status_code == 200 and len(fetched.content) == 1000
    finally:
        await storage.close()


async def test_a_500_on_a_part_is_retried(moto_server):
    bucket = new_bucket(moto_server)
    proxy = FaultProxy(moto_server.url)
    proxy.fail_parts = 1
    with proxy.serving() as endpoint:
        storage = S3BlobStorage(options(endpoint, bucket))
        await storage.open()
        try:
            stored = await storage.put_stream(
                "r/0.mp4", stream(6 * MIB), content_type="video/mp4", max_bytes=10**9
            )
        finally:
            await storage.close()
    assert stored.size_bytes == 6 * MIB
    assert proxy.seen["UploadPart"] == 3, "the failed part was sent again"
    assert moto_server.keys(bucket) == ["out/r/0.mp4"]


async def test_persistent_500s_abort_the_upload(moto_server):
    bucket = new_bucket(moto_server)
    proxy = FaultProxy(moto_server.url)
    proxy.fail_parts = 100
    with proxy.serving() as endpoint:
        storage = S3BlobStorage(options(endpoint, bucket, max_attempts=2))
        await storage.open()
        try:
            with pytest.raises(BlobError) as caught:
                await storage.put_stream(
                    "x/0.mp4", stream(11 * MIB), content_type="video/mp4", max_bytes=10**9
                )
        finally:
            await storage.close()
    assert caught.value.transient is True
    assert "storage answered an error (InternalError)" in str(caught.value)
    assert proxy.seen["AbortMultipartUpload"] == 1
    assert moto_server.pending_uploads(bucket) == [], "no orphaned parts"
    assert moto_server.keys(bucket) == [], "nothing half-written visible"


async def test_refused_credentials_say_so_without_the_secret(moto_server):
    bucket = new_bucket(moto_server)
    proxy = FaultProxy(moto_server.url)
    proxy.deny_key = ACCESS_KEY
    with proxy.serving() as endpoint:
        storage = S3BlobStorage(options(endpoint, bucket))
        await storage.open()
        try:
            assert await storage.ping() is False
            with pytest.raises(BlobError) as caught:
                await storage.put_stream(
                    "c/0.mp4", stream(1000), content_type="video/mp4", max_bytes=10**9
                )
        finally:
            await storage.close()
    message = str(caught.value)
    assert "rejected our credentials (InvalidAccessKeyId)" in message
    assert SECRET_KEY not in message and ACCESS_KEY not in message


async def test_unreachable_storage_is_transient():
    storage = S3BlobStorage(
        options(f"http://127.0.0.1:{free_port()}", "nowhere", max_attempts=1, connect_timeout_s=1)
    )
    await storage.open()
    try:
        assert await storage.ping() is False
        with pytest.raises(BlobError) as caught:
            await storage.put_stream(
                "u/0.mp4", stream(1000), content_type="video/mp4", max_bytes=10**9
            )
    finally:
        await storage.close()
    assert caught.value.transient is True
    assert "storage unreachable" in str(caught.value)


def service_config(tmp_path, endpoint: str, bucket: str, **extra) -> dict:
    cfg = base_config(tmp_path, **extra)
    cfg["storage"] = {
        "url": f"s3://{bucket}/videos",
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "addressing_style": "path",
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "max_attempts": 1,
    }
    return cfg


def test_service_on_s3_end_to_end(tmp_path, moto_server):
    """A demo job lands in the bucket with metadata; its link is presigned; delete cleans up."""
    bucket = new_bucket(moto_server)
    cfg = service_config(tmp_path, moto_server.url, bucket)
    with run_service(cfg) as url, httpx.Client(base_url=url) as client:
        job_id = client.post(
            "/poll-video", json={"sessionId": "s", "taskId": "s3-1", "model": "demo"}
        ).json()["jobId"]
        done = wait_status(client, job_id, {"succeeded", "failed"})
        assert done["status"] == "succeeded", done
        [key] = moto_server.keys(bucket)
        assert key.startswith("videos/")
        [link] = done["videoUrls"]
        assert "X-Amz-Signature=" in link and link.startswith(moto_server.url)
        video = httpx.get(link)
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        with av.open(io.BytesIO(video.content)) as container:
            assert container.streams.video
        meta = done["metadata"][0]
        assert meta["width"] > 0 and meta["duration_s"] > 0 and meta["codec"] == "h264"
        assert meta["size_bytes"] == len(video.content)
        redirect = client.get(f"/jobs/{job_id}/videos/0", follow_redirects=False)
        assert redirect.status_code == 302
        assert redirect.headers["location"].startswith(f"{moto_server.url}/{bucket}/videos/")
        assert client.get("/readyz").json()["checks"]["storage"] is True
        assert client.delete(f"/jobs/{job_id}").json()["deleted"] is True
        assert moto_server.keys(bucket) == []


def test_storage_failure_fails_the_job_clearly_and_retry_recovers(tmp_path, moto_server):
    bucket = new_bucket(moto_server)
    proxy = FaultProxy(moto_server.url)
    with proxy.serving() as endpoint:
        proxy.deny_key = ACCESS_KEY
        cfg = service_config(tmp_path, endpoint, bucket, polling={"max_download_retries": 2})
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            job_id = client.post(
                "/poll-video", json={"sessionId": "s", "taskId": "s3-bad", "model": "demo"}
            ).json()["jobId"]
            failed = wait_status(client, job_id, {"succeeded", "failed"})
            assert failed["status"] == "failed"
            assert failed["error"]["code"] == "storage_failed"
            assert failed["error"]["message"] == (
                "The video was generated but we could not save it. Retry later."
            )
            assert "rejected our credentials" in failed["error"]["reason"]
            assert SECRET_KEY not in str(failed)
            assert moto_server.keys(bucket) == []
            proxy.deny_key = None  # the operator fixes the key
            assert client.post(f"/jobs/{job_id}/retry").status_code == 200
            done = wait_status(client, job_id, {"succeeded", "failed"})
            assert done["status"] == "succeeded", done
            assert len(moto_server.keys(bucket)) == 1
