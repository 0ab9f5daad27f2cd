"""Per-user event feeds: a user's events after a position, as a stream writes them; the sweep.

The statements that write events are the sends, conversation creations and view horizons in
`db` (see db.feed and migration 0006). A user's positions are 1, 2, 3, ... without gaps
and commit in order, so "every event after N" is exact on every instance. Rows older than
FEED_RETENTION are swept; a reader that finds a gap where swept rows were starts over.
"""

import logging
import time
from dataclasses import dataclass

import asyncpg

from messenger import db
from messenger.responses import render_json
from messenger.schemas import LISTED_CONVERSATION_KEYS, LISTED_MESSAGE_KEYS
from messenger.settings import Settings
from messenger.sweeper import Sweeper

logger = logging.getLogger("messenger.feed")

SWEEP_BATCH = 10_000
_MESSAGE = slice(db.FEED_COLUMNS, db.FEED_COLUMNS + len(LISTED_MESSAGE_KEYS))
_CONVERSATION = slice(_MESSAGE.stop, _MESSAGE.stop + len(LISTED_CONVERSATION_KEYS))


@dataclass(frozen=True, slots=True)
class Event:
    position: int
    name: str  # the SSE event name: message, conversation, horizon; "" if gone (skip it)
    data: bytes  # compact JSON
    age: float  # seconds from the event's transaction to this read
    read_at: float = 0.0  # time.monotonic() of the read


@dataclass(frozen=True, slots=True)
class FeedRead:
    """What one read found.

    `head` is the user's latest position (None: no such user). `events` continue the
    position read after, in order; `gap` says the event after the last of them was swept.
    """

    head: int | None
    events: list[Event]
    gap: bool


def _event(row: asyncpg.Record, read_at: float) -> Event:
    """The event of a feed row; with an empty name when what it names is gone (a deleted
    conversation): the reader moves past its position without writing it."""
    position, kind, conversation_id, index, actor_id, age = tuple(row[2 : db.FEED_COLUMNS])
    data: object
    if kind == "message":
        message = tuple(row[_MESSAGE])
        if message[0] is None:
            return Event(position, "", b"", age, read_at)
        data = {
            "conversation_id": conversation_id,
            "message": dict(zip(LISTED_MESSAGE_KEYS, message, strict=True)),
        }
    elif kind == "conversation":
        conversation = tuple(row[_CONVERSATION])
        if conversation[0] is None:
            return Event(position, "", b"", age, read_at)
        data = {"conversation": dict(zip(LISTED_CONVERSATION_KEYS, conversation, strict=True))}
    else:
        data = {"conversation_id": conversation_id, "user_id": actor_id, "index": index}
    return Event(position, kind, render_json(data), age, read_at)


def _found(rows: list[asyncpg.Record], after: int, read_at: float) -> FeedRead:
    """One wanted feed's rows (all of one `n`, in order) as what a reader gets."""
    head: int = rows[0][1]
    events: list[Event] = []
    expected = after + 1
    for row in rows:
        position = row[2]
        if position is None:  # no events after `after`
            break
        if position != expected:
            return FeedRead(head, events, True)
        expected += 1
        events.append(_event(row, read_at))
    return FeedRead(head, events, not events and head > after)


async def read_many(
    conn: db.Executor, wanted: list[tuple[int, int]], limit: int
) -> dict[tuple[int, int], FeedRead]:
    """For each (user id, position): up to `limit` of the user's events after it, oldest
    first, all in one statement. A user that does not exist is left out."""
    rows = await db.read_feeds(conn, wanted, limit)
    read_at = time.monotonic()
    by_n: dict[int, list[asyncpg.Record]] = {}
    for row in rows:
        by_n.setdefault(row[0], []).append(row)
    return {wanted[n - 1]: _found(group, wanted[n - 1][1], read_at) for n, group in by_n.items()}


async def read(conn: db.Executor, user_id: int, after: int, limit: int) -> FeedRead:
    """Up to `limit` of the user's events after position `after` (see read_many)."""
    found = await read_many(conn, [(user_id, after)], limit)
    return found.get((user_id, after), FeedRead(None, [], False))


def feed_sweeper(settings: Settings, pool: asyncpg.Pool) -> Sweeper:
    """Deletes events older than FEED_RETENTION every FEED_SWEEP_INTERVAL seconds."""
    return Sweeper(
        "feed",
        db.sweep_feed,
        pool,
        age=settings.feed_retention,
        interval=settings.feed_sweep_interval,
        batch=SWEEP_BATCH,
    )
