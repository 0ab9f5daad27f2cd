"""This instance's open event streams: the limit, the wake-ups, the end at shutdown.

`stream` serves each stream (GET /events); this registry knows them by user, so a wake-up
for some users (from this instance's sends or another's notification, see wakeups) reaches
their streams, and every FEED_POLL_INTERVAL it re-reads the positions of all of them.
"""

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from messenger import db
from messenger.errors import STREAMS_FULL, Unavailable
from messenger.settings import Settings

logger = logging.getLogger("messenger.streams")


@dataclass(eq=False, slots=True)
class Listener:
    """One open stream, as the registry sees it: whose it is, where it is, how to wake it."""

    user_id: int
    position: int
    signal: asyncio.Event = field(default_factory=asyncio.Event)


class Streams:
    """This instance's open streams: the limit, the wake-ups, the end at shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limit = settings.sse_max_streams
        self.by_user: dict[int, set[Listener]] = {}
        self.count = 0
        self.closing = False
        self.dropped = 0  # streams of clients that stopped reading

    def open(self, user_id: int, position: int) -> Listener:
        if self.closing or self.count >= self.limit:
            raise Unavailable(STREAMS_FULL)
        listener = Listener(user_id, position)
        self.by_user.setdefault(user_id, set()).add(listener)
        self.count += 1
        return listener

    def close(self, listener: Listener) -> None:
        listeners = self.by_user.get(listener.user_id)
        if listeners is None or listener not in listeners:
            return
        listeners.discard(listener)
        if not listeners:
            del self.by_user[listener.user_id]
        self.count -= 1

    def wake(self, user_ids: Iterable[int] | None) -> None:
        """Make these users' streams read their feed again (None: every stream)."""
        if user_ids is None:
            for listeners in self.by_user.values():
                for listener in listeners:
                    listener.signal.set()
            return
        for user_id in user_ids:
            for listener in self.by_user.get(user_id, ()):
                listener.signal.set()

    def end_all(self) -> None:
        """Shutdown: every stream ends after the event it is writing, and no new one opens."""
        self.closing = True
        self.wake(None)

    async def poll(self, pool: db.Pool) -> None:
        """Re-read every FEED_POLL_INTERVAL the positions of the users with a stream here, and
        wake the streams that are behind: a wake-up that never came delays, never loses."""
        while True:
            await asyncio.sleep(self.settings.feed_poll_interval)
            if not self.by_user:
                continue
            try:
                heads = await db.feed_positions(pool, list(self.by_user))
            except db.DATABASE_ERRORS as error:
                logger.warning("streams: reading feed positions failed (%r)", error)
                continue
            for user_id, head in heads.items():
                for listener in self.by_user.get(user_id, ()):
                    if listener.position < head:
                        listener.signal.set()
