"""S3-compatible blob storage (AWS S3, MinIO, Cloudflare R2, Backblaze B2) through aioboto3.

``storage.url: s3://BUCKET/PREFIX``. One long-lived client per process, opened with the app.
A video is streamed straight into a multipart upload through one bounded buffer (one part,
``part_size_mb``, at least 5 MiB): memory stays flat whatever the video size. Each part carries
its Content-MD5, which S3 checks; the finished object's size is checked with a HEAD. A failed
upload is aborted, so no invisible parts are left behind, and nothing is visible before the
upload completes. Links are presigned GETs (SigV4, at most 7 days) or plain URLs under
``public_base_url`` when a CDN fronts the bucket.

Metadata is read with PyAV through ranged GETs (a seekable reader that fetches only the
blocks FFmpeg asks for: the header, and the ``moov`` box wherever it is), so probing a large
video neither downloads it nor holds it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aioboto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..config import secret_text
from ..errors import BlobError, ConfigError
from ..interfaces import PluginContext, StoredBlob
from ..media import probe_fileobj
from ..model import VideoMetadata

log = structlog.get_logger(__name__)

MIB = 1024 * 1024
MIN_PART = 5 * MIB
MAX_PARTS = 10_000
#: SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_S = 7 * 24 * 3600

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
}


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix/"); the prefix may be empty."""
    match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/.*)?", url.strip())
    if not match:
        raise ConfigError(f"storage.url {url!r} is not an s3://BUCKET/PREFIX URL")
    prefix = (match.group(2) or "").strip("/")
    return match.group(1), f"{prefix}/" if prefix else ""


def content_disposition(filename: str | None, kind: str = "inline") -> str | None:
    """A header value with an ASCII fallback name and the RFC 5987 UTF-8 name."""
    if not filename:
        return None
    ascii_name = re.sub(r"[^A-Za-z0-9._-]+", "_", filename).strip("._") or "video.mp4"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def describe(exc: Exception) -> tuple[str, bool]:
    """A user-readable reason for a storage failure, without secrets, and whether it is the
    storage's credentials (the operator must act) rather than the storage being away."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _CREDENTIAL_CODES or status == 403:
            return f"storage rejected our credentials ({code or status})", True
        if code == "NoSuchBucket":
            return "the storage bucket does not exist", True
        return f"storage answered an error ({code or status})", False
    if isinstance(exc, BotoCoreError):
        return f"storage unreachable ({type(exc).__name__})", False
    return f"storage failed ({type(exc).__name__})", False


class S3BlobStorage:
    """Options (the ``storage`` section): ``url``, ``endpoint_url``, ``region``,
    ``addressing_style`` (path | virtual | auto), ``access_key_id``, ``secret_access_key``
    (else the standard AWS chain: env, profile, instance role), ``public_base_url``,
    ``public_endpoint_url`` (the endpoint presigned links are made for, when the service
    reaches the storage at an address users cannot, such as ``http://minio:9000``),
    ``part_size_mb`` (default 8), ``max_attempts`` (botocore retries, default 4),
    ``connect_timeout_s``, ``read_timeout_s``."""

    def __init__(self, options: Mapping[str, Any], context: PluginContext | None = None) -> None:
        self.bucket, self.prefix = parse_s3_url(str(options["url"]))
        self.endpoint_url = options.get("endpoint_url") or None
        self.region = options.get("region") or "us-east-1"
        style = options.get("addressing_style") or "auto"
        if style not in ("path", "virtual", "auto"):
            raise ConfigError("storage.addressing_style must be path, virtual or auto")
        self.public_base_url = (options.get("public_base_url") or "").rstrip("/") or None
        self.public_endpoint_url = options.get("public_endpoint_url") or None
        part_mb = float(options.get("part_size_mb") or 8)
        if part_mb * MIB < MIN_PART:
            raise ConfigError("storage.part_size_mb must be at least 5 (S3's smallest part)")
        self.part_size = int(part_mb * MIB)
        self.config = Config(
            region_name=self.region,
            signature_version="s3v4",
            s3={"addressing_style": style},
            retries={"mode": "standard", "max_attempts": int(options.get("max_attempts") or 4)},
            connect_timeout=float(options.get("connect_timeout_s") or 10),
            read_timeout=float(options.get("read_timeout_s") or 60),
            # boto's default CRC checksums are refused by MinIO, B2 and others.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        key_id = secret_text(options.get("access_key_id")) or None
        secret = secret_text(options.get("secret_access_key")) or None
        if bool(key_id) != bool(secret):
            raise ConfigError("storage.access_key_id and storage.secret_access_key go together")
        self._session = (
            aioboto3.Session(aws_access_key_id=key_id, aws_secret_access_key=secret)
            if key_id
            else aioboto3.Session()
        )
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._presigner: Any = None

    # --- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        stack = contextlib.AsyncExitStack()
        self._client = await stack.enter_async_context(
            self._session.client("s3", endpoint_url=self.endpoint_url, config=self.config)
        )
        if self.public_endpoint_url:
            # Signing is local: this client never connects, it only puts the public host
            # into the links (SigV4 signs the host, so it cannot be swapped in afterwards).
            self._presigner = await stack.enter_async_context(
                self._session.client(
                    "s3", endpoint_url=self.public_endpoint_url, config=self.config
                )
            )
        self._stack = stack

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = None
        self._client = None
        self._presigner = None

    @property
    def s3(self) -> Any:
        if self._client is None:
            raise BlobError("storage is not open")
        return self._client

    async def ping(self) -> bool:
        try:
            await self.s3.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            log.warning("storage_unreachable", reason=describe(exc)[0])
            return False
        return True

    def object_key(self, key: str) -> str:
        if not key or key.startswith("/") or "\x00" in key or ".." in key.split("/"):
            raise BlobError(f"unsafe storage key {key!r}", transient=False)
        return self.prefix + key

    # --- writing -----------------------------------------------------------------------

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        max_bytes: int,
        filename: str | None = None,
    ) -> StoredBlob:
        name = self.object_key(key)
        extra: dict[str, Any] = {"ContentType": content_type}
        disposition = content_disposition(filename)
        if disposition:
            extra["ContentDisposition"] = disposition
        digest = hashlib.sha256()
        buffer = bytearray()
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        # One part uploads while the next one fills from the provider: download and upload
        # overlap, and memory stays at about two parts whatever the video size.
        uploading: asyncio.Task[dict[str, Any]] | None = None
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise BlobError(
                        f"the video is larger than the {max_bytes}-byte limit", transient=False
                    )
                digest.update(chunk)
                buffer += chunk
                while len(buffer) >= self.part_size:
                    if upload_id is None:
                        made = await self.s3.create_multipart_upload(
                            Bucket=self.bucket, Key=name, **extra
                        )
                        upload_id = str(made["UploadId"])
                    part = bytes(buffer[: self.part_size])
                    del buffer[: self.part_size]
                    if uploading is not None:
                        parts.append(await uploading)
                    uploading = asyncio.create_task(
                        self._upload_part(name, upload_id, len(parts) + 1, part)
                    )
            if uploading is not None:
                parts.append(await uploading)
                uploading = None
            if upload_id is None:
                await self.s3.put_object(
                    Bucket=self.bucket,
                    Key=name,
                    Body=bytes(buffer),
                    ContentMD5=_md5(buffer),
                    Metadata={"sha256": digest.hexdigest()},
                    **extra,
                )
            else:
                if buffer:
                    parts.append(
                        await self._upload_part(name, upload_id, len(parts) + 1, bytes(buffer))
                    )
                await self.s3.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
                upload_id = None
            buffer = bytearray()
            stored = await self.s3.head_object(Bucket=self.bucket, Key=name)
            if int(stored["ContentLength"]) != size:
                await self._delete_quietly(name)
                raise BlobError(
                    f"storage kept {stored['ContentLength']} bytes of {size}; upload discarded"
                )
        except BlobError:
            await self._stop(uploading)
            await self._abort(name, upload_id)
            raise
        except (ClientError, BotoCoreError, OSError) as exc:
            await self._stop(uploading)
            await self._abort(name, upload_id)
            reason, _ = describe(exc)
            raise BlobError(f"could not store the video: {reason}") from None
        except BaseException:
            await self._stop(uploading)
            await self._abort(name, upload_id)
            raise
        return StoredBlob(
            key=key, size_bytes=size, sha256=digest.hexdigest(), content_type=content_type
        )

    @staticmethod
    async def _stop(task: asyncio.Task[Any] | None) -> None:
        """Cancel a part still uploading and wait for it, before the upload is aborted."""
        if task is None:
            return
        task.cancel()  # a no-op when it has finished
        with contextlib.suppress(BaseException):  # its error is the one being handled
            await task

    async def _upload_part(
        self, name: str, upload_id: str, number: int, data: bytes
    ) -> dict[str, Any]:
        if number > MAX_PARTS:
            raise BlobError(
                "the video needs more than 10,000 parts; raise part_size_mb", transient=False
            )
        answer = await self.s3.upload_part(
            Bucket=self.bucket,
            Key=name,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            # hashlib lets go of the GIL: the part's MD5 runs beside the download
            ContentMD5=await asyncio.to_thread(_md5, data),
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    async def _abort(self, name: str, upload_id: str | None) -> None:
        if upload_id is None:
            return
        try:
            await asyncio.shield(
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            )
        except Exception as exc:
            # A bucket lifecycle rule (AbortIncompleteMultipartUpload) is the safety net.
            log.warning("multipart_abort_failed", reason=describe(exc)[0])

    async def _delete_quietly(self, name: str) -> None:
        with contextlib.suppress(Exception):
            await self.s3.delete_object(Bucket=self.bucket, Key=name)

    # --- reading -----------------------------------------------------------------------

    async def read(self, key: str, *, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        try:
            answer = await self.s3.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except (ClientError, BotoCoreError) as exc:
            raise BlobError(f"could not read the video: {describe(exc)[0]}") from None
        body = answer["Body"]
        try:
            while chunk := await body.read(chunk_size):
                yield chunk
        finally:
            body.close()

    async def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` inclusive."""
        answer = await self.s3.get_object(
            Bucket=self.bucket, Key=self.object_key(key), Range=f"bytes={start}-{end}"
        )
        async with answer["Body"] as body:
            data: bytes = await body.read()
        return data

    async def size(self, key: str) -> int | None:
        try:
            head = await self.s3.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError:
            return None
        return int(head["ContentLength"])

    async def url_for(self, key: str, *, expires_s: int, filename: str | None = None) -> str | None:
        name = self.object_key(key)
        if self.public_base_url:
            return f"{self.public_base_url}/{quote(name)}"
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": name}
        disposition = content_disposition(filename)
        if disposition:
            params["ResponseContentDisposition"] = disposition
        signer = self._presigner if self._presigner is not None else self.s3
        url: str = await signer.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=max(1, min(int(expires_s), MAX_PRESIGN_S))
        )
        return url

    async def delete(self, key: str) -> None:
        try:
            await self.s3.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        except (ClientError, BotoCoreError) as exc:
            raise BlobError(f"could not delete the video: {describe(exc)[0]}") from None

    async def probe_metadata(self, key: str) -> VideoMetadata:
        size = await self.size(key)
        if size is None:
            return VideoMetadata()
        reader = _RangeReader(self, key, size, asyncio.get_running_loop())
        try:
            return await asyncio.to_thread(probe_fileobj, io.BufferedReader(reader), size)
        except Exception as exc:  # metadata never fails a job
            log.warning("metadata_unreadable", reason=str(exc)[:200])
            return VideoMetadata(size_bytes=size)

    async def keys_older_than(self, cutoff: datetime) -> list[str]:
        keys: list[str] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", ()):
                if item["LastModified"] < cutoff:
                    keys.append(str(item["Key"])[len(self.prefix) :])
        return keys


def _md5(data: bytes | bytearray) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class _RangeReader(io.RawIOBase):
    """A read-only, seekable file over an S3 object, for PyAV in a worker thread: each read
    fetches whole blocks with ranged GETs on the event loop, keeping a few blocks cached."""

    BLOCK = 512 * 1024
    CACHED_BLOCKS = 8

    def __init__(
        self, storage: S3BlobStorage, key: str, size: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__()
        self.storage = storage
        self.key = key
        self.length = size
        self.loop = loop
        self.pos = 0
        self.fetched = 0
        self.blocks: OrderedDict[int, bytes] = OrderedDict()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def _block(self, index: int) -> bytes:
        if index in self.blocks:
            self.blocks.move_to_end(index)
            return self.blocks[index]
        start = index * self.BLOCK
        end = min(self.length, start + self.BLOCK) - 1
        future = asyncio.run_coroutine_threadsafe(
            self.storage.read_range(self.key, start, end), self.loop
        )
        data = future.result(timeout=60)
        self.fetched += len(data)
        self.blocks[index] = data
        if len(self.blocks) > self.CACHED_BLOCKS:
            self.blocks.popitem(last=False)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.pos >= self.length or not len(view):
            return 0
        index, offset = divmod(self.pos, self.BLOCK)
        data = self._block(index)[offset : offset + len(view)]
        view[: len(data)] = data
        self.pos += len(data)
        return len(data)
