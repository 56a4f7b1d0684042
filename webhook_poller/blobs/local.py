"""Local-disk blob storage, the embedded default (``storage.url: file://./data/videos``).

Writes go to a unique ``.part`` file beside the target and become visible with one
``os.replace`` after an fsync, so nothing half-written is ever served. A ``.part`` left by a
kill is removed once stale (untouched for ``stale_part_s``, default
``storage.download_timeout_s``, the longest a download may run): at start, in the
retention sweep and when a key in its folder is deleted; folders left empty go too. Keys are
checked so a key can never point outside the root: a key of the layout the service writes
(:func:`webhook_poller.pipeline.video_key`) by its characters alone, any other by resolving
it. The service serves these files itself
through signed links, so :meth:`url_for` returns ``None``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ..errors import BlobError, ConfigError
from ..interfaces import PluginContext, StoredBlob
from ..media import probe_path
from ..model import VideoMetadata


def file_root(url: str) -> Path:
    """``file://./rel/dir`` -> ./rel/dir (from the working directory); ``file:///abs`` -> /abs."""
    prefix = "file://"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigError(f"storage.url {url!r} is not a file:// URL")
    return Path(url[len(prefix) :])


class LocalBlobStorage:
    """Blobs as files under one root directory. Options: ``url`` (file://...)."""

    def __init__(self, options: Mapping[str, Any], context: PluginContext | None = None) -> None:
        self.root = file_root(str(options["url"])).absolute()
        #: the root with symlinks resolved, once: every key check compares against it
        self._real_root = self.root.resolve()
        self._real_root_text = str(self._real_root)
        stale = options.get("stale_part_s") or options.get("download_timeout_s") or 600.0
        self.stale_part_s = float(stale)

    async def open(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        self._real_root = self.root.resolve()  # the root may only exist from now on
        self._real_root_text = str(self._real_root)
        await self.remove_stale_parts()

    def _is_stale_part(self, path: Path, now: float) -> bool:
        try:
            return (
                path.name.startswith(".")
                and path.name.endswith(".part")
                and path.is_file()
                and path.stat().st_mtime < now - self.stale_part_s
            )
        except OSError:
            return False

    async def remove_stale_parts(self) -> int:
        """Remove every stale ``.part`` under the root and the folders that leaves empty."""

        def sweep() -> int:
            now = time.time()
            removed = 0
            for path in list(self.root.rglob(".*.part")):
                if self._is_stale_part(path, now):
                    path.unlink(missing_ok=True)
                    removed += 1
                    self._prune_empty(path.parent)
            return removed

        return await asyncio.to_thread(sweep)

    def _prune_empty(self, folder: Path) -> None:
        root = self._real_root
        folder = folder.resolve()
        while folder != root and folder.is_relative_to(root):
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return await asyncio.to_thread(lambda: self.root.is_dir() and os.access(self.root, os.W_OK))

    def local_path(self, key: str) -> Path:
        """The file for ``key``; refuses keys that would leave the root.

        A key of our own layout (``v2/`` + three safe segments + ``<index>.mp4``, no segment
        starting with a dot) cannot leave the root by its spelling, so it is joined without
        resolving symlinks (that ``realpath`` was 6 % of the event loop on the completion
        path). Any other key (an older layout, anything else) is resolved and must stay
        under the resolved root."""
        if _OWN_KEY.fullmatch(key):
            return Path(f"{self._real_root_text}/{key}")
        pure = PurePosixPath(key)
        if (
            not key
            or "\x00" in key
            or "\\" in key
            or pure.is_absolute()
            or any(part in ("..", ".", "") for part in key.split("/"))
        ):
            raise BlobError(f"unsafe storage key {key!r}", transient=False)
        path = (self._real_root / pure).resolve()
        if not path.is_relative_to(self._real_root):
            raise BlobError(f"unsafe storage key {key!r}", transient=False)
        return path

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        max_bytes: int,
        filename: str | None = None,
    ) -> StoredBlob:
        target = self.local_path(key)
        tmp = target.with_name(_part_name(target.name))
        digest = hashlib.sha256()
        size = 0
        # Few thread hand-overs per video: one to create the folder and open the part file,
        # one per WRITE_BUFFER_BYTES of chunks, one to flush, fsync, close and rename. Each
        # hand-over costs the event loop a thread switch, which cost more than the fsync.
        buffer: list[bytes] = []
        buffered = 0
        try:
            fh: IO[bytes] = await asyncio.to_thread(_open_part, tmp)
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise BlobError(
                            f"the video is larger than the {max_bytes}-byte limit",
                            transient=False,
                        )
                    digest.update(chunk)
                    buffer.append(chunk)
                    buffered += len(chunk)
                    if buffered >= WRITE_BUFFER_BYTES:
                        await asyncio.to_thread(fh.writelines, buffer)
                        buffer, buffered = [], 0
                # durable before visible: the data is fsynced before the rename
                await asyncio.to_thread(_finish_part, fh, buffer, tmp, target)
            except BaseException:
                # on the loop, so a second cancellation cannot skip the clean-up
                _discard_part(fh, tmp)
                raise
        except OSError as exc:
            raise BlobError(f"could not write the video to disk: {exc.strerror}") from exc
        return StoredBlob(
            key=key, size_bytes=size, sha256=digest.hexdigest(), content_type=content_type
        )

    async def read(self, key: str, *, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        path = self.local_path(key)
        try:
            fh: IO[bytes] = await asyncio.to_thread(path.open, "rb")
        except OSError as exc:
            raise BlobError(f"no stored video at {key!r}", transient=False) from exc
        try:
            while chunk := await asyncio.to_thread(fh.read, chunk_size):
                yield chunk
        finally:
            await asyncio.to_thread(fh.close)

    async def size(self, key: str) -> int | None:
        path = self.local_path(key)
        try:
            return (await asyncio.to_thread(path.stat)).st_size
        except OSError:
            return None

    async def url_for(self, key: str, *, expires_s: int, filename: str | None = None) -> str | None:
        return None

    async def delete(self, key: str) -> None:
        path = self.local_path(key)
        await asyncio.to_thread(self._delete_sync, path)

    def _delete_sync(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        now = time.time()
        with contextlib.suppress(OSError):
            for sibling in path.parent.glob(".*.part"):
                if self._is_stale_part(sibling, now):
                    sibling.unlink(missing_ok=True)
        self._prune_empty(path.parent)

    async def probe_metadata(self, key: str) -> VideoMetadata:
        return await probe_path(self.local_path(key))

    async def keys_older_than(self, cutoff: datetime) -> list[str]:
        def scan() -> list[str]:
            keys = []
            limit = cutoff.astimezone(UTC).timestamp()
            for path in self.root.rglob("*"):
                if path.is_file() and not path.name.endswith(".part"):
                    if path.stat().st_mtime < limit:
                        keys.append(path.relative_to(self.root).as_posix())
            return keys

        return await asyncio.to_thread(scan)


#: A key as :func:`webhook_poller.pipeline.video_key` writes it: ``v2``, three segments of
#: ``[A-Za-z0-9._-]`` that do not start with a dot (so never ``.``, ``..`` or a hidden
#: ``.part`` name), and the index. ``fullmatch`` also rules out a trailing newline.
_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}"
_OWN_KEY = re.compile(rf"v2/{_SEGMENT}/{_SEGMENT}/{_SEGMENT}/[0-9]{{1,9}}\.mp4", re.ASCII)

#: Part files are named per process (its pid), per start (a random tag: another host on a
#: shared folder, a reused pid) and per write (a counter), without a urandom call per video.
_PART_TAG = secrets.token_hex(4)
_PART_SEQ = itertools.count()


def _part_name(name: str) -> str:
    return f".{name}.{os.getpid():x}-{_PART_TAG}-{next(_PART_SEQ):x}.part"


#: Chunks are gathered up to this many bytes before one write on the I/O thread.
WRITE_BUFFER_BYTES = 1 << 20


def _open_part(tmp: Path) -> IO[bytes]:
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp.open("wb")


def _finish_part(fh: IO[bytes], rest: list[bytes], tmp: Path, target: Path) -> None:
    """Write the last chunks, fsync, close, and only then make the file visible."""
    try:
        fh.writelines(rest)
        fh.flush()
        os.fsync(fh.fileno())
    finally:
        fh.close()
    os.replace(tmp, target)


def _discard_part(fh: IO[bytes], tmp: Path) -> None:
    fh.close()
    tmp.unlink(missing_ok=True)
