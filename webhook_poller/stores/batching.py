"""Group commit: concurrent callers' writes share one store round trip.

Intake under load has many requests waiting on the store at once. Each caller still waits
until its own write is durable, but the writes that arrive while one batch is being
committed go out together in the next (one SQLite transaction, one Redis pipeline), so a
busy store does a few large commits instead of many small ones. With one caller at a time a
batch holds one write and nothing waits longer than before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """``await submit(item)`` returns ``commit([... item ...])``'s result for that item.

    ``commit`` returns one result per item, in order; an exception instance as a result is
    raised to that item's caller only, an exception raised by ``commit`` to the whole batch.
    """

    def __init__(
        self,
        commit: Callable[[list[T]], Awaitable[Sequence[R | Exception]]],
        max_batch: int = 256,
    ) -> None:
        self._commit = commit
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            try:
                results = await self._commit([item for item, _ in batch])
            except Exception as exc:  # every caller of this batch sees the store's error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:  # cancelled (shutdown): no caller may wait forever
                for _, future in batch + self._pending:
                    if not future.done():
                        future.cancel()
                self._pending = []
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):  # this item alone failed (a lost lease)
                    future.set_exception(result)
                else:
                    future.set_result(result)
