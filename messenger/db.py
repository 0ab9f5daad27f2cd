"""PostgreSQL access: the connection pool and every SQL statement, behind small typed functions.

Each function takes a connection (or the pool) first and issues one statement. Timestamps
and the ids the Node service returned as strings are formatted by PostgreSQL, so rows go to
the client without per-row work in Python.
"""

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from messenger.errors import DATABASE_UNAVAILABLE, Unavailable
from messenger.settings import Settings

logger = logging.getLogger("messenger.db")

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Executor = Connection | asyncpg.Pool

# `inserted_at` columns hold UTC wall-clock time with whole seconds (timestamp(0)).
ISO_UTC = """to_char({column}, 'YYYY-MM-DD"T"HH24:MI:SS".000Z"')"""

# Errors that mean "PostgreSQL is not there right now", as opposed to a bug in a statement.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InterfaceError,
)
DATABASE_ERRORS: tuple[type[BaseException], ...] = (*UNAVAILABLE_ERRORS, asyncpg.PostgresError)


def connect_kwargs(
    settings: Settings, *, database: str | None = None, application_name: str = "messenger"
) -> dict[str, Any]:
    password = settings.pgpassword.get_secret_value() if settings.pgpassword else None
    return {
        "host": settings.pghost,
        "port": settings.pgport,
        "user": settings.pguser,
        "password": password,
        "database": database or settings.pgdatabase,
        "server_settings": {"application_name": application_name, "timezone": "UTC"},
    }


async def keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection to the pool without asyncpg's reset statement.

    That statement (RESET ALL, UNLISTEN *, CLOSE ALL, unlocking advisory locks) costs a round
    trip per request, and serving never changes session state: no SET, LISTEN, cursors or
    session-level advisory locks. asyncpg still rolls back a transaction left open.
    """


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """A pool that starts empty, so the service comes up even while PostgreSQL does not."""
    pool = asyncpg.create_pool(
        **connect_kwargs(settings),
        reset=keep_session,
        min_size=0,
        max_size=settings.pg_pool_max,
        command_timeout=settings.pg_command_timeout,
        max_inactive_connection_lifetime=300,
    )
    return await pool


async def check_reachable(pool: asyncpg.Pool, settings: Settings) -> bool:
    """Log once at start whether PostgreSQL answers; the service serves 503s until it does."""
    try:
        await pool.fetchval("SELECT 1", timeout=5)
    except DATABASE_ERRORS as error:
        logger.warning(
            "PostgreSQL at %s:%s is not reachable yet (%s); requests get 503 until it is",
            settings.pghost,
            settings.pgport,
            error.__class__.__name__,
        )
        return False
    return True


@contextlib.asynccontextmanager
async def unavailable_as_503() -> AsyncIterator[None]:
    """Turn "cannot reach PostgreSQL" into the domain error a client gets as 503."""
    try:
        yield
    except UNAVAILABLE_ERRORS as error:
        raise Unavailable(DATABASE_UNAVAILABLE) from error


@dataclass(frozen=True, slots=True)
class NewConversation:
    id: str | None
    inserted_at: str | None
    known_participants: int


CREATE_CONVERSATION = f"""
WITH participants AS (
    SELECT id FROM users WHERE id = ANY(ARRAY[$1, $2]::bigint[])
),
channel AS (
    INSERT INTO channels (low_user_id, high_user_id)
    SELECT $1, $2 WHERE (SELECT count(*) FROM participants) = 2
    ON CONFLICT (low_user_id, high_user_id) DO NOTHING
    RETURNING id, inserted_at
),
members AS (
    INSERT INTO users_channels (channel_id, user_id)
    SELECT channel.id, participants.id FROM channel, participants
)
SELECT channel.id::text AS id, {ISO_UTC.format(column="channel.inserted_at")} AS inserted_at,
       (SELECT count(*) FROM participants) AS known_participants
FROM (SELECT 1) AS one LEFT JOIN channel ON true
"""

FIND_CONVERSATION_BETWEEN = """
SELECT id::text FROM channels WHERE low_user_id = $1 AND high_user_id = $2
"""


async def create_conversation(conn: Executor, low_id: int, high_id: int) -> NewConversation:
    """Create the conversation of two distinct users (low_id < high_id) in one statement.

    `id` is None when a participant is unknown or the pair already has a conversation.
    """
    row = await conn.fetchrow(CREATE_CONVERSATION, low_id, high_id)
    assert row is not None
    return NewConversation(row["id"], row["inserted_at"], row["known_participants"])


async def find_conversation_between(conn: Executor, low_id: int, high_id: int) -> str | None:
    """The id of the conversation the two users share, read after a refused insert."""
    value = await conn.fetchval(FIND_CONVERSATION_BETWEEN, low_id, high_id)
    return None if value is None else str(value)


LIST_CONVERSATIONS = f"""
SELECT c.id::text AS id, {ISO_UTC.format(column="c.inserted_at")} AS inserted_at, u.name
FROM users_channels mine
JOIN channels c ON c.id = mine.channel_id
JOIN users_channels other ON other.channel_id = mine.channel_id AND other.user_id <> mine.user_id
JOIN users u ON u.id = other.user_id
WHERE mine.user_id = $1
ORDER BY c.id
"""


async def list_conversations(conn: Executor, user_id: int) -> list[asyncpg.Record]:
    """The user's conversations, each with the other participant's name."""
    return await conn.fetch(LIST_CONVERSATIONS, user_id)


SEND_MESSAGE = f"""
WITH author AS (
    SELECT u.name
    FROM users_channels uc JOIN users u ON u.id = uc.user_id
    WHERE uc.channel_id = $1 AND uc.user_id = $2
),
counter AS (
    UPDATE channels SET last_index = last_index + 1
    WHERE id = $1 AND EXISTS (SELECT FROM author)
    RETURNING last_index
),
message AS (
    INSERT INTO messages (content, user_id, channel_id, index)
    SELECT $3, $2, $1, last_index FROM counter
    RETURNING id, content, index, user_id, channel_id, inserted_at
),
event AS (
    INSERT INTO outbox (channel_id, user_id, message_index, participant_ids)
    SELECT message.channel_id, message.user_id, message.index,
           ARRAY(SELECT user_id FROM users_channels WHERE channel_id = $1 ORDER BY user_id)
    FROM message
)
SELECT message.id::text AS id, message.content, message.index, message.user_id,
       (SELECT name FROM author) AS username, message.channel_id,
       {ISO_UTC.format(column="message.inserted_at")} AS inserted_at
FROM message
"""


async def send_message(
    conn: Executor, channel_id: int, user_id: int, content: str
) -> asyncpg.Record | None:
    """Append a message and its outbox event in one statement; None if the user is no member.

    The counter row of the conversation is the only lock taken, so senders of one
    conversation queue up behind each other and nobody else waits.
    """
    return await conn.fetchrow(SEND_MESSAGE, channel_id, user_id, content)


MEMBERSHIP = """
SELECT EXISTS (SELECT FROM channels WHERE id = $1) AS conversation_exists,
       EXISTS (SELECT FROM users_channels WHERE channel_id = $1 AND user_id = $2) AS is_member
"""


@dataclass(frozen=True, slots=True)
class Membership:
    conversation_exists: bool
    is_member: bool


async def membership(conn: Executor, channel_id: int, user_id: int | None) -> Membership:
    row = await conn.fetchrow(MEMBERSHIP, channel_id, user_id)
    assert row is not None
    return Membership(row["conversation_exists"], row["is_member"])


MESSAGE_COLUMNS = f"""
m.id::text AS id, m.content, m.user_id::text AS user_id, m.channel_id::text AS channel_id,
m.index::text AS index, {ISO_UTC.format(column="m.inserted_at")} AS inserted_at,
u.name AS username
"""

# A reader who names themselves ($4) must be a member; an anonymous read is allowed.
READER_IS_MEMBER = """
($4::bigint IS NULL OR EXISTS (SELECT FROM users_channels WHERE channel_id = $1 AND user_id = $4))
""".strip()

LIST_MESSAGES_AFTER = f"""
SELECT {MESSAGE_COLUMNS}
FROM messages m JOIN users u ON u.id = m.user_id
WHERE m.channel_id = $1 AND m.index > $2 AND {READER_IS_MEMBER}
ORDER BY m.index
LIMIT $3
"""

LIST_MESSAGES_BEFORE = f"""
SELECT id, content, user_id, channel_id, index, inserted_at, username FROM (
    SELECT {MESSAGE_COLUMNS}, m.index AS position
    FROM messages m JOIN users u ON u.id = m.user_id
    WHERE m.channel_id = $1 AND m.index < $2 AND {READER_IS_MEMBER}
    ORDER BY m.index DESC
    LIMIT $3
) AS page
ORDER BY position
"""


async def list_messages_after(
    conn: Executor, channel_id: int, after_index: int, limit: int, reader_id: int | None
) -> list[asyncpg.Record]:
    """Up to `limit` messages with an index above `after_index`, oldest first.

    Empty when the conversation is unknown or `reader_id` is not a member of it.
    """
    return await conn.fetch(LIST_MESSAGES_AFTER, channel_id, after_index, limit, reader_id)


async def list_messages_before(
    conn: Executor, channel_id: int, before_index: int, limit: int, reader_id: int | None
) -> list[asyncpg.Record]:
    """The `limit` messages just below `before_index`, oldest first (empty as above)."""
    return await conn.fetch(LIST_MESSAGES_BEFORE, channel_id, before_index, limit, reader_id)


SET_VIEW_HORIZON = """
UPDATE users_channels SET last_viewed_index = $3
WHERE channel_id = $1 AND user_id = $2
RETURNING 1
"""


async def set_view_horizon(conn: Executor, channel_id: int, user_id: int, index: int) -> bool:
    """Store the user's last viewed index; False if the user is not a member."""
    return await conn.fetchval(SET_VIEW_HORIZON, channel_id, user_id, index) is not None


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
