"""This instance's open event streams: the limit, the feed reads, the wake-ups, the end.

`stream` serves each stream (GET /events) and writes what its listener here holds. The
registry knows the listeners by user: a wake-up for some users (this instance's own writes,
or another instance's notification, see wakeups) marks their listeners, and one reader reads
the feeds of every marked listener in one statement, however many were woken at once, and
hands each its events. Every FEED_POLL_INTERVAL it also compares the users' latest positions
with what it read for them, so a wake-up that never came delays an event and never loses it.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from messenger import db, feed
from messenger.errors import STREAMS_FULL, Unavailable
from messenger.settings import Settings

logger = logging.getLogger("messenger.streams")

READ_BATCH = 200  # events per listener per read
READ_LISTENERS = 500  # listeners per statement
READ_RETRY = 1.0  # seconds before reading again after the database failed


class Signal:
    """asyncio.Event's set/clear/wait for one waiter, without the Event's deque of waiters
    (about 600 bytes): there are as many of these as streams."""

    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._flag = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    async def wait(self) -> None:
        if self._flag:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


@dataclass(eq=False, slots=True)
class Listener:
    """One open stream as the registry sees it.

    `fetched` is the position of the last event read for it, `events` what was read and not
    yet written (a reset is an event named "reset"), `signal` wakes its stream.
    """

    user_id: int
    fetched: int
    events: deque[feed.Event] = field(default_factory=deque)
    signal: Signal = field(default_factory=Signal)
    more: bool = False  # the last read was full, or skipped while events waited


class Streams:
    """This instance's open streams: the limit, the feed reads, the wake-ups, the end."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limit = settings.sse_max_streams
        self.by_user: dict[int, set[Listener]] = {}
        self.count = 0
        self.closing = False
        self.dropped = 0  # streams of clients that stopped reading
        self.reads = 0  # statements that read feeds
        self._wanted: dict[Listener, None] = {}  # marked for the next read, in order
        self._ready = asyncio.Event()

    def admit(self) -> None:
        """Refuse a stream (503) while the instance is full or ending its streams."""
        if self.closing or self.count >= self.limit:
            raise Unavailable(STREAMS_FULL)

    def open(self, user_id: int, position: int) -> Listener:
        """Register a stream that has delivered up to `position`; it reads at once."""
        self.admit()
        listener = Listener(user_id, position)
        self.by_user.setdefault(user_id, set()).add(listener)
        self.count += 1
        self.want(listener)
        return listener

    def close(self, listener: Listener) -> None:
        listeners = self.by_user.get(listener.user_id)
        if listeners is None or listener not in listeners:
            return
        listeners.discard(listener)
        if not listeners:
            del self.by_user[listener.user_id]
        self._wanted.pop(listener, None)
        self.count -= 1

    def want(self, listener: Listener) -> None:
        """Read this listener's feed soon; while it holds a full read unwritten, only later."""
        if len(listener.events) >= READ_BATCH:
            listener.more = True
            return
        self._wanted[listener] = None
        self._ready.set()

    def wake(self, user_ids: Iterable[int] | None) -> None:
        """These users have new events (None: anyone may have): read their feeds."""
        if user_ids is None:
            groups: Iterable[set[Listener]] = list(self.by_user.values())
        else:
            groups = [self.by_user[u] for u in user_ids if u in self.by_user]
        for listeners in groups:
            for listener in listeners:
                self.want(listener)

    def end_all(self) -> None:
        """Shutdown: every stream ends after the event it is writing, and no new one opens."""
        self.closing = True
        for listeners in self.by_user.values():
            for listener in listeners:
                listener.signal.set()

    async def read(self, pool: db.Pool) -> None:
        """The reader: one statement for the listeners marked since the last one."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._wanted:
                batch = list(self._wanted)[:READ_LISTENERS]
                for listener in batch:
                    del self._wanted[listener]
                try:
                    await self._read(pool, batch)
                except db.DATABASE_ERRORS as error:
                    # The poll marks them again; streams keep their heartbeats meanwhile.
                    logger.warning("streams: reading feeds failed (%r)", error)
                    await asyncio.sleep(READ_RETRY)

    async def _read(self, pool: db.Pool, batch: list[Listener]) -> None:
        wanted = list({(listener.user_id, listener.fetched): None for listener in batch})
        found = await feed.read_many(pool, wanted, READ_BATCH)
        self.reads += 1
        for listener in batch:
            read = found.get((listener.user_id, listener.fetched))
            if read is None or read.head is None:
                continue  # the user is gone; the stream goes on with heartbeats only
            if read.gap:
                # Events after the position were swept (FEED_RETENTION): the client reloads
                # through the REST routes and goes on from the latest position.
                listener.events.clear()
                listener.events.append(feed.Event(read.head, "reset", b"{}", 0.0))
                listener.fetched = read.head
            else:
                listener.events.extend(read.events)
                if read.events:
                    listener.fetched = read.events[-1].position
            listener.more = len(read.events) == READ_BATCH
            if listener.more:
                self.want(listener)
            listener.signal.set()

    async def poll(self, pool: db.Pool) -> None:
        """Every FEED_POLL_INTERVAL, read the latest positions of the users with a stream
        here and mark the listeners behind them."""
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
                    if listener.fetched < head:
                        self.want(listener)
