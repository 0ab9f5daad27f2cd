"""Idempotency keys: a send made once per key, its stored answer, and the sweep of old keys."""

import asyncpg

from messenger.db.feed import WOKEN, write_feed
from messenger.db.messages import MEMBERS, MESSAGE_EVENT, SENT_MESSAGE, WRITE_EVENT
from messenger.db.pool import Executor

# The sender, if a member: $1 conversation, $2 sender ($3 content).
SENDER = """
author AS (
    SELECT u.name
    FROM users_channels uc JOIN users u ON u.id = uc.user_id
    WHERE uc.channel_id = $1 AND uc.user_id = $2
)"""

# Each member's `message` event, written by the send itself (see db.feed).
WRITE_MESSAGE_FEED = write_feed(
    members=MEMBERS,
    after="message",
    event=MESSAGE_EVENT,
    source="positions, message",
)

# What a replayed send answers in place of WOKEN: the members, whose feeds the first one wrote.
MEMBERS_WOKEN = f"ARRAY({MEMBERS} ORDER BY user_id) AS woken"


# $4 the key, $5 its lifetime in seconds. A key younger than that which this statement's
# snapshot sees (`earlier`) answers with its message. Otherwise `claim` inserts the key first,
# naming the message id it takes from the sequence; everything else hangs on it. A request
# racing another with the same key waits in that insert (unique index) until the other
# commits, then inserts nothing, so it stores nothing: its caller reads the stored answer.
# An expired key still in the table is taken over (ON CONFLICT ... WHERE expired).
SEND_MESSAGE_WITH_KEY = f"""
WITH earlier AS (
    SELECT message_id FROM idempotency_keys
    WHERE channel_id = $1 AND user_id = $2 AND key = $4
      AND created_at > now() - make_interval(secs => $5)
),
{SENDER},
claim AS (
    INSERT INTO idempotency_keys (channel_id, user_id, key, message_id)
    SELECT $1, $2, $4, nextval(pg_get_serial_sequence('messages', 'id'))
    WHERE EXISTS (SELECT FROM author) AND NOT EXISTS (SELECT FROM earlier)
    ON CONFLICT (channel_id, user_id, key) DO UPDATE
        SET message_id = excluded.message_id, created_at = excluded.created_at
        WHERE idempotency_keys.created_at <= now() - make_interval(secs => $5)
    RETURNING message_id
),
counter AS (
    UPDATE channels SET last_index = last_index + 1
    WHERE id = $1 AND EXISTS (SELECT FROM claim)
    RETURNING last_index
),
message AS (
    INSERT INTO messages (id, content, user_id, channel_id, index)
    SELECT claim.message_id, $3, $2, $1, counter.last_index FROM claim, counter
    RETURNING id, content, index, user_id, channel_id, inserted_at
),
{WRITE_EVENT},
{WRITE_MESSAGE_FEED}
SELECT false AS replayed, {SENT_MESSAGE}, {WOKEN}
FROM message, author
UNION ALL
SELECT true, {SENT_MESSAGE}, {MEMBERS_WOKEN}
FROM earlier
JOIN messages message ON message.id = earlier.message_id
JOIN users author ON author.id = message.user_id
"""

STORED_ANSWER = f"""
SELECT true AS replayed, {SENT_MESSAGE}, {MEMBERS_WOKEN}
FROM idempotency_keys k
JOIN messages message ON message.id = k.message_id
JOIN users author ON author.id = message.user_id
WHERE k.channel_id = $1 AND k.user_id = $2 AND k.key = $3
  AND k.created_at > now() - make_interval(secs => $4)
"""


async def send_message_with_key(
    conn: Executor, channel_id: int, user_id: int, content: str, key: str, ttl: float
) -> asyncpg.Record | None:
    """Send as `send_message` does, once per key: a key the sender used in this conversation
    less than `ttl` seconds ago answers with the message it stored (`replayed` true, its
    content may differ from `content`), and nothing is written.

    None if the user is no member, or if a concurrent request with the key stored its
    message after this statement began: `stored_answer` then finds that message.
    """
    return await conn.fetchrow(SEND_MESSAGE_WITH_KEY, channel_id, user_id, content, key, ttl)


async def stored_answer(
    conn: Executor, channel_id: int, user_id: int, key: str, ttl: float
) -> asyncpg.Record | None:
    """The message a key younger than `ttl` seconds stored, as `send_message_with_key` has it."""
    return await conn.fetchrow(STORED_ANSWER, channel_id, user_id, key, ttl)


SWEEP_IDEMPOTENCY_KEYS = """
DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM idempotency_keys
    WHERE created_at <= now() - make_interval(secs => $1)
    ORDER BY created_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
))
"""


async def sweep_idempotency_keys(conn: Executor, ttl: float, limit: int) -> int:
    """Delete up to `limit` expired keys, skipping rows a send holds; returns how many."""
    status: str = await conn.execute(SWEEP_IDEMPOTENCY_KEYS, ttl, limit)
    return int(status.split()[-1])
