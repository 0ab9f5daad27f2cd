"""The transactional outbox: its backlog, the relay's claims, failures and parked events."""

import asyncpg

from messenger.db.pool import Connection, Executor

OUTBOX_BACKLOG = """
SELECT count(*) AS pending,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_seconds
FROM outbox
"""


async def outbox_backlog(conn: Executor) -> tuple[int, float]:
    """How many events wait in the outbox, and how long the oldest has waited (seconds)."""
    row = await conn.fetchrow(OUTBOX_BACKLOG)
    assert row is not None
    return int(row["pending"]), float(row["oldest_age_seconds"])


async def outbox_parked(conn: Executor) -> int:
    """How many events wait in outbox_parked for an operator."""
    return int(await conn.fetchval("SELECT count(*) FROM outbox_parked"))


OUTBOX_LOCK_SPACE = 0x6F757462  # "outb": first key of the per-conversation advisory locks

# Claims and deletes in one statement; the caller's transaction stays open until the broker
# confirmed the batch, and a rollback puts the rows back. Rows of conversations another relay
# is publishing are skipped whole (advisory lock per conversation, held to the end of the
# transaction), which keeps each conversation in order.
CLAIM_OUTBOX = f"""
DELETE FROM outbox
WHERE id IN (
    SELECT id FROM outbox
    WHERE pg_try_advisory_xact_lock({OUTBOX_LOCK_SPACE}, (channel_id % 2147483647)::int)
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
RETURNING id, channel_id, user_id, message_index, participant_ids, created_at
"""


async def claim_outbox(conn: Connection, limit: int) -> list[asyncpg.Record]:
    """Take up to `limit` pending events, oldest first; call inside a transaction."""
    rows = await conn.fetch(CLAIM_OUTBOX, limit)
    return sorted(rows, key=lambda row: int(row["id"]))


async def delete_outbox(conn: Connection, ids: list[int]) -> None:
    await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", ids)


RECORD_OUTBOX_FAILURES = """
UPDATE outbox SET attempts = outbox.attempts + 1, last_error = failed.reason
FROM unnest($1::bigint[], $2::text[]) AS failed(id, reason)
WHERE outbox.id = failed.id
RETURNING outbox.id, outbox.attempts
"""


async def record_outbox_failures(conn: Connection, reasons: dict[int, str]) -> dict[int, int]:
    """Count a failed publish on each event and keep its reason; returns attempts so far."""
    rows = await conn.fetch(RECORD_OUTBOX_FAILURES, list(reasons), list(reasons.values()))
    return {int(row["id"]): int(row["attempts"]) for row in rows}


PARK_OUTBOX = """
WITH parked AS (
    DELETE FROM outbox WHERE id = ANY($1::bigint[])
    RETURNING id, channel_id, user_id, message_index, participant_ids, created_at, attempts,
              last_error
)
INSERT INTO outbox_parked
    (id, channel_id, user_id, message_index, participant_ids, created_at, attempts, last_error)
SELECT * FROM parked
RETURNING id
"""


async def park_outbox(conn: Connection, ids: list[int]) -> list[int]:
    """Move events the broker keeps refusing out of the way, into outbox_parked."""
    return [int(row["id"]) for row in await conn.fetch(PARK_OUTBOX, ids)]
