"""Idempotent sends: the `Idempotency-Key` header, and the background sweep of expired keys."""

import asyncio
import contextlib
import logging
import re

import asyncpg
from starlette.requests import Request

from messenger import db
from messenger.errors import IDEMPOTENCY_KEY_INVALID, IDEMPOTENCY_KEY_REPEATED, BadRequest
from messenger.settings import Settings

logger = logging.getLogger("messenger.idempotency")

HEADER = "idempotency-key"
# Visible ASCII (0x21-0x7E): no spaces, control characters or anything a proxy may re-encode.
VALID_KEY = re.compile(r"[!-~]{1,255}")
# Rows deleted per statement: a short statement holds its row locks for milliseconds, so a
# send that takes over an expired key the sweep is deleting waits for one batch at most.
SWEEP_BATCH = 1000
SWEEP_BATCHES = 100  # per round at most, so a huge backlog is worked off over several rounds


def idempotency_key(request: Request) -> str | None:
    """The request's `Idempotency-Key`, or None without one; a malformed one is a 400."""
    values = request.headers.getlist(HEADER)
    if not values:
        return None
    if len(set(values)) > 1:
        raise BadRequest(IDEMPOTENCY_KEY_REPEATED)
    key = values[0]
    if not VALID_KEY.fullmatch(key):
        raise BadRequest(IDEMPOTENCY_KEY_INVALID)
    return key


class KeySweeper:
    """Deletes expired keys every IDEMPOTENCY_SWEEP_INTERVAL seconds, a batch at a time.

    Expiry does not depend on it (a send ignores a key older than IDEMPOTENCY_KEY_TTL): it
    only keeps the table small. Instances sweep side by side; SKIP LOCKED keeps them apart.
    """

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.ttl = settings.idempotency_key_ttl
        self.interval = settings.idempotency_sweep_interval
        self.pool = pool
        self.deleted = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="idempotency-key-sweep")

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
                logger.warning("idempotency keys: sweep failed (%s); retrying later", error)

    async def sweep(self) -> int:
        """Delete expired keys until a batch comes back short; returns how many."""
        deleted = 0
        for _ in range(SWEEP_BATCHES):
            count = await db.sweep_idempotency_keys(self.pool, self.ttl, SWEEP_BATCH)
            deleted += count
            if count < SWEEP_BATCH:
                break
        self.deleted += deleted
        if deleted:
            logger.debug("idempotency keys: %d expired keys deleted", deleted)
        return deleted
