"""Idempotency keys: the stored answer of a key, and the sweep of old keys."""

import asyncpg

from messenger.db.messages import MEMBERS_WOKEN, SENT_MESSAGE
from messenger.db.pool import Executor

# A send's key is claimed by the send itself (db.messages.SEND_MESSAGES); here, what a key
# younger than $4 seconds stored, for a send that raced the first one with it.
STORED_ANSWER = f"""
SELECT true AS replayed, {SENT_MESSAGE}, {MEMBERS_WOKEN}
FROM idempotency_keys k
JOIN messages message ON message.id = k.message_id
JOIN users author ON author.id = message.user_id
WHERE k.channel_id = $1 AND k.user_id = $2 AND k.key = $3
  AND k.created_at > now() - make_interval(secs => $4)
"""


async def stored_answer(
    conn: Executor, channel_id: int, user_id: int, key: str, ttl: float
) -> asyncpg.Record | None:
    """The message a key younger than `ttl` seconds stored, as a replayed send has it."""
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
