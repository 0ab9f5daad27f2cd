"""Per-user event feeds: read a user's events after a position, rendered from the real tables.

The statements that write events are the sends, conversation creations and view horizons in
`db` (see db.write_feed and migration 0006). A user's positions are 1, 2, 3, ... without gaps
and commit in order, so "every event after N" is exact on every instance. Rows older than
FEED_RETENTION are swept; a reader that finds a gap where swept rows were starts over.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg

from messenger import db
from messenger.responses import render_json
from messenger.settings import Settings

logger = logging.getLogger("messenger.feed")

SWEEP_BATCH = 10_000
SWEEP_BATCHES = 100  # per sweep, so one sweep stays bounded

# The user's position, then up to $3 of their events after position $2, each with what the
# REST routes show of it: a message as `GET /conversations/{id}/messages` lists it, a
# conversation as `GET /conversations` lists it to this user. Columns are read by position:
# the lateral parts reuse the routes' select lists, whose names overlap.
READ_FEED = f"""
SELECT me.feed_seq, f.seq, f.kind, f.channel_id::text, f.message_index::text, f.actor_id::text,
       extract(epoch FROM clock_timestamp() - f.created_at)::float8,
       msg.*, conv.*
FROM users me
LEFT JOIN LATERAL (
    SELECT * FROM feed WHERE feed.user_id = me.id AND feed.seq > $2 ORDER BY feed.seq LIMIT $3
) f ON true
LEFT JOIN LATERAL (
    SELECT {db.MESSAGE_COLUMNS}
    FROM messages m JOIN users u ON u.id = m.user_id
    WHERE f.kind = 'message' AND m.channel_id = f.channel_id AND m.index = f.message_index
) msg ON true
LEFT JOIN LATERAL (
    SELECT {db.CONVERSATION_COLUMNS}
    FROM channels c
    JOIN users_channels other ON other.channel_id = c.id AND other.user_id <> me.id
    JOIN users u ON u.id = other.user_id
    WHERE f.kind = 'conversation' AND c.id = f.channel_id
) conv ON true
WHERE me.id = $1
ORDER BY f.seq
"""
_MESSAGE = slice(7, 7 + len(db.MESSAGE_KEYS))
_CONVERSATION = slice(_MESSAGE.stop, _MESSAGE.stop + len(db.CONVERSATION_KEYS))

POSITIONS = "SELECT id, feed_seq FROM users WHERE id = ANY($1::bigint[])"

SWEEP_FEED = """
DELETE FROM feed WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM feed
    WHERE created_at <= now() - make_interval(secs => $1)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
))
"""


@dataclass(frozen=True, slots=True)
class Event:
    position: int
    name: str  # the SSE event name: message, conversation, horizon; "" if gone (skip it)
    data: bytes  # compact JSON
    age: float  # seconds from the event's transaction to this read


@dataclass(frozen=True, slots=True)
class FeedRead:
    """What one read found.

    `head` is the user's latest position (None: no such user). `events` continue the
    position read after, in order; `gap` says the event after the last of them was swept.
    """

    head: int | None
    events: list[Event]
    gap: bool


def _event(row: asyncpg.Record) -> Event | None:
    """The event of a feed row; None when what it names is gone (a deleted conversation)."""
    position, kind, conversation_id, index, actor_id, age = tuple(row[1:7])
    data: object
    if kind == "message":
        message = tuple(row[_MESSAGE])
        if message[0] is None:
            return None
        data = {
            "conversation_id": conversation_id,
            "message": dict(zip(db.MESSAGE_KEYS, message, strict=True)),
        }
    elif kind == "conversation":
        conversation = tuple(row[_CONVERSATION])
        if conversation[0] is None:
            return None
        data = {"conversation": dict(zip(db.CONVERSATION_KEYS, conversation, strict=True))}
    else:
        data = {"conversation_id": conversation_id, "user_id": actor_id, "index": index}
    return Event(position, kind, render_json(data), age)


async def read_feed(conn: db.Executor, user_id: int, after: int, limit: int) -> FeedRead:
    """Up to `limit` of the user's events after position `after`, oldest first, in one read.

    An event whose conversation or message was deleted comes with an empty name: the
    reader moves past its position without writing it.
    """
    rows = await conn.fetch(READ_FEED, user_id, after, limit)
    if not rows:
        return FeedRead(None, [], False)
    head: int = rows[0][0]
    events: list[Event] = []
    expected = after + 1
    for row in rows:
        position = row[1]
        if position is None:  # no events after `after`
            break
        if position != expected:
            return FeedRead(head, events, True)
        expected += 1
        event = _event(row)
        if event is None:
            event = Event(position, "", b"", 0.0)  # nothing to show: the reader skips it
        events.append(event)
    gap = not events and head > after
    return FeedRead(head, events, gap)


async def position(conn: db.Executor, user_id: int) -> int | None:
    """The user's latest feed position; None if there is no such user."""
    value: int | None = await conn.fetchval("SELECT feed_seq FROM users WHERE id = $1", user_id)
    return value


async def positions(conn: db.Executor, user_ids: list[int]) -> dict[int, int]:
    """The latest feed position of each of these users."""
    return {row["id"]: row["feed_seq"] for row in await conn.fetch(POSITIONS, user_ids)}


async def sweep_feed(conn: db.Executor, retention: float, limit: int) -> int:
    """Delete up to `limit` events older than `retention` seconds; returns how many."""
    status: str = await conn.execute(SWEEP_FEED, retention, limit)
    return int(status.split()[-1])


class FeedSweeper:
    """Deletes events older than FEED_RETENTION every FEED_SWEEP_INTERVAL seconds.

    Instances sweep side by side; SKIP LOCKED keeps them apart.
    """

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.retention = settings.feed_retention
        self.interval = settings.feed_sweep_interval
        self.pool = pool
        self.deleted = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="feed-sweep")

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
                logger.warning("feed: sweep failed (%s); retrying later", error)

    async def sweep(self) -> int:
        deleted = 0
        for _ in range(SWEEP_BATCHES):
            count = await sweep_feed(self.pool, self.retention, SWEEP_BATCH)
            deleted += count
            if count < SWEEP_BATCH:
                break
        self.deleted += deleted
        return deleted
