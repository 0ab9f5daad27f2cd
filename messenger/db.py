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


def connect_kwargs(settings: Settings, *, database: str | None = None) -> dict[str, Any]:
    password = settings.pgpassword.get_secret_value() if settings.pgpassword else None
    return {
        "host": settings.pghost,
        "port": settings.pgport,
        "user": settings.pguser,
        "password": password,
        "database": database or settings.pgdatabase,
        "server_settings": {"application_name": "messenger", "timezone": "UTC"},
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


# The parts of a send shared by SEND_MESSAGE and SEND_MESSAGE_WITH_KEY: $1 conversation,
# $2 sender, $3 content.
SENDER = """
author AS (
    SELECT u.name
    FROM users_channels uc JOIN users u ON u.id = uc.user_id
    WHERE uc.channel_id = $1 AND uc.user_id = $2
)"""

WRITE_EVENT = """
event AS (
    INSERT INTO outbox (channel_id, user_id, message_index, participant_ids)
    SELECT message.channel_id, message.user_id, message.index,
           ARRAY(SELECT user_id FROM users_channels WHERE channel_id = $1 ORDER BY user_id)
    FROM message
)"""

# Over `message` (a messages row) and `author` (its sender's users row).
SENT_MESSAGE = f"""
message.id::text AS id, message.content, message.index, message.user_id,
author.name AS username, message.channel_id,
{ISO_UTC.format(column="message.inserted_at")} AS inserted_at
"""

SEND_MESSAGE = f"""
WITH {SENDER},
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
{WRITE_EVENT}
SELECT {SENT_MESSAGE}
FROM message, author
"""


async def send_message(
    conn: Executor, channel_id: int, user_id: int, content: str
) -> asyncpg.Record | None:
    """Append a message and its outbox event in one statement; None if the user is no member.

    The counter row of the conversation is the only lock taken, so senders of one
    conversation queue up behind each other and nobody else waits.
    """
    return await conn.fetchrow(SEND_MESSAGE, channel_id, user_id, content)


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
{WRITE_EVENT}
SELECT false AS replayed, {SENT_MESSAGE}
FROM message, author
UNION ALL
SELECT true, {SENT_MESSAGE}
FROM earlier
JOIN messages message ON message.id = earlier.message_id
JOIN users author ON author.id = message.user_id
"""

STORED_ANSWER = f"""
SELECT true AS replayed, {SENT_MESSAGE}
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


OUTBOX_LOCK_SPACE = 0x6F757462  # "outb": first key of the per-conversation advisory locks

# Rows of conversations another relay is publishing are skipped whole (advisory lock per
# conversation, held to the end of the transaction), which keeps each conversation in order.
CLAIM_OUTBOX = f"""
SELECT id, channel_id, user_id, message_index, participant_ids, created_at
FROM outbox
WHERE pg_try_advisory_xact_lock({OUTBOX_LOCK_SPACE}, (channel_id % 2147483647)::int)
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""


async def claim_outbox(conn: Connection, limit: int) -> list[asyncpg.Record]:
    """Lock up to `limit` pending events, oldest first; call inside a transaction."""
    return await conn.fetch(CLAIM_OUTBOX, limit)


async def delete_outbox(conn: Connection, ids: list[int]) -> None:
    await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", ids)


async def record_outbox_failure(conn: Connection, outbox_id: int, reason: str) -> int:
    """Count a failed publish of one event and keep the reason; returns its attempts so far."""
    attempts = await conn.fetchval(
        "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1"
        " RETURNING attempts",
        outbox_id,
        reason,
    )
    return int(attempts)
