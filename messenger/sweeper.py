"""Background deletion of rows past their age, a bounded batch at a time (keys, feed events)."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from messenger import db

logger = logging.getLogger("messenger.sweeper")

# db.sweep_*: (pool, age in seconds, most rows) -> rows deleted
Delete = Callable[[asyncpg.Pool, float, int], Awaitable[int]]


class Sweeper:
    """Every `interval` seconds, deletes rows older than `age` seconds with `delete`, `batch`
    rows a statement, until a batch comes back short or `batches` statements ran.

    Short statements hold their row locks for milliseconds; the round's bound works a huge
    backlog off over several rounds. Instances sweep side by side (the statements SKIP LOCKED
    rows); a failed round is logged and the next interval tries again.
    """

    def __init__(
        self,
        name: str,
        delete: Delete,
        pool: asyncpg.Pool,
        *,
        age: float,
        interval: float,
        batch: int,
        batches: int = 100,
    ) -> None:
        self.name = name
        self.delete = delete
        self.pool = pool
        self.age = age
        self.interval = interval
        self.batch = batch
        self.batches = batches
        self.deleted = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"{self.name} sweep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except db.DATABASE_ERRORS as error:
                logger.warning("%s: sweep failed (%s); retrying later", self.name, error)

    async def sweep(self) -> int:
        """Delete rows past their age until a batch comes back short; returns how many."""
        deleted = 0
        for _ in range(self.batches):
            count = await self.delete(self.pool, self.age, self.batch)
            deleted += count
            if count < self.batch:
                break
        self.deleted += deleted
        if deleted:
            logger.debug("%s: %d deleted", self.name, deleted)
        return deleted
