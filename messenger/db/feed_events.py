"""Users' feed events read back with what the REST routes show of each (see db.feed)."""

import asyncpg

from messenger.db.conversations import LISTED_CONVERSATION
from messenger.db.messages import MESSAGE_COLUMNS
from messenger.db.pool import Executor

# For each wanted (user $1[n], position $2[n]): n, the user's latest position, then up to $3
# of their events after that position, each with what the REST routes show of it: a message
# as `GET /conversations/{id}/messages` lists it, a conversation as `GET /conversations` lists
# it to this user. One statement for every stream an instance wakes at once. Columns are read
# by position (FEED_COLUMNS, then the message's, then the conversation's): the names overlap.
READ_FEEDS = f"""
SELECT want.n, me.feed_seq, f.seq, f.kind, f.channel_id::text, f.message_index::text,
       f.actor_id::text, extract(epoch FROM clock_timestamp() - f.created_at)::float8,
       msg.*, conv.*
FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS want(user_id, after, n)
JOIN users me ON me.id = want.user_id
LEFT JOIN LATERAL (
    SELECT * FROM feed
    WHERE feed.user_id = want.user_id AND feed.seq > want.after
    ORDER BY feed.seq LIMIT $3
) f ON true
LEFT JOIN LATERAL (
    SELECT {MESSAGE_COLUMNS}
    FROM messages m JOIN users u ON u.id = m.user_id
    WHERE f.kind = 'message' AND m.channel_id = f.channel_id AND m.index = f.message_index
) msg ON true
LEFT JOIN LATERAL (
    SELECT {LISTED_CONVERSATION}
    FROM channels c
    JOIN users_channels other ON other.channel_id = c.id AND other.user_id <> me.id
    JOIN users u ON u.id = other.user_id
    WHERE f.kind = 'conversation' AND c.id = f.channel_id
) conv ON true
ORDER BY want.n, f.seq
"""
# n, head, position, kind, conversation id, index (a horizon's), actor id, age in seconds
FEED_COLUMNS = 8


async def read_feeds(
    conn: Executor, wanted: list[tuple[int, int]], limit: int
) -> list[asyncpg.Record]:
    """The rows of READ_FEEDS for (user id, position) pairs: none for a user that does not
    exist; one with a NULL position for a user with no event after that position."""
    users = [user_id for user_id, _ in wanted]
    positions = [position for _, position in wanted]
    return await conn.fetch(READ_FEEDS, users, positions, limit)
