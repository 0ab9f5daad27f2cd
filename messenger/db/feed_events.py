"""A user's feed events read back with what the REST routes show of each (see db.feed)."""

import asyncpg

from messenger.db.conversations import CONVERSATION_COLUMNS
from messenger.db.messages import MESSAGE_COLUMNS
from messenger.db.pool import Executor

# The user's position, then up to $3 of their events after position $2, each with what the
# REST routes show of it: a message as `GET /conversations/{id}/messages` lists it, a
# conversation as `GET /conversations` lists it to this user. Columns are read by position
# (FEED_COLUMNS, then the message's, then the conversation's): the names overlap.
READ_FEED = f"""
SELECT me.feed_seq, f.seq, f.kind, f.channel_id::text, f.message_index::text, f.actor_id::text,
       extract(epoch FROM clock_timestamp() - f.created_at)::float8,
       msg.*, conv.*
FROM users me
LEFT JOIN LATERAL (
    SELECT * FROM feed WHERE feed.user_id = me.id AND feed.seq > $2 ORDER BY feed.seq LIMIT $3
) f ON true
LEFT JOIN LATERAL (
    SELECT {MESSAGE_COLUMNS}
    FROM messages m JOIN users u ON u.id = m.user_id
    WHERE f.kind = 'message' AND m.channel_id = f.channel_id AND m.index = f.message_index
) msg ON true
LEFT JOIN LATERAL (
    SELECT {CONVERSATION_COLUMNS}
    FROM channels c
    JOIN users_channels other ON other.channel_id = c.id AND other.user_id <> me.id
    JOIN users u ON u.id = other.user_id
    WHERE f.kind = 'conversation' AND c.id = f.channel_id
) conv ON true
WHERE me.id = $1
ORDER BY f.seq
"""
# head, position, kind, conversation id, index (a horizon's), actor id, age in seconds
FEED_COLUMNS = 7


async def read_feed(conn: Executor, user_id: int, after: int, limit: int) -> list[asyncpg.Record]:
    """The rows of READ_FEED: none if there is no such user; one with a NULL position when
    the user has no event after `after`."""
    return await conn.fetch(READ_FEED, user_id, after, limit)
