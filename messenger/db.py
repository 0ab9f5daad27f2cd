"""PostgreSQL access: the connection pool and every SQL statement, behind small typed functions.

Each function takes a connection (or the pool) first and issues one statement. Timestamps
and the ids the Node service returned as strings are formatted by PostgreSQL, so rows go to
the client without per-row work in Python.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy

from messenger.errors import DATABASE_BUSY, DATABASE_UNAVAILABLE, Unavailable
from messenger.gate import Gate
from messenger.settings import Settings

logger = logging.getLogger("messenger.db")

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Executor = Connection | asyncpg.Pool

# `inserted_at` columns hold UTC wall-clock time with whole seconds (timestamp(0)).
ISO_UTC = """to_char({column}, 'YYYY-MM-DD"T"HH24:MI:SS".000Z"')"""


def write_feed(*, members: str, after: str, event: str, source: str) -> str:
    """CTEs that give each member an event at the next position of their feed (see 0006).

    `members` selects the user ids; `after` names a CTE whose rows must exist, and which
    runs first (the conversation's counter row is locked before any user's); `event` is the
    select list of (channel_id, message_index, actor_id, kind) over `positions`, `source`.
    Users are locked in ascending id order, so two statements never wait for each other's
    users in a cycle; under the lock, the position commits before the next one is taken.
    `fed` returns the ids of the users whose streams to wake.
    """
    return f"""
readers AS (
    SELECT u.id FROM users u
    WHERE u.id IN ({members}) AND EXISTS (SELECT FROM {after})
    ORDER BY u.id
    FOR NO KEY UPDATE OF u
),
positions AS (
    UPDATE users SET feed_seq = users.feed_seq + 1
    FROM readers WHERE users.id = readers.id
    RETURNING users.id, users.feed_seq
),
fed AS (
    INSERT INTO feed (user_id, seq, channel_id, message_index, actor_id, kind)
    SELECT positions.id, positions.feed_seq, {event}
    FROM {source}
    RETURNING user_id
)"""


WOKEN = "ARRAY(SELECT user_id FROM fed ORDER BY user_id) AS woken"
# What a replayed send answers in its place: the members, whose feeds the first send wrote.
MEMBERS_WOKEN = """ARRAY(
    SELECT user_id FROM users_channels WHERE channel_id = message.channel_id ORDER BY user_id
) AS woken"""


class PoolBusy(TimeoutError):
    """No pool connection came free within PG_ACQUIRE_TIMEOUT."""


# Errors that mean "PostgreSQL is not there right now", as opposed to a bug in a statement.
# InternalClientError is asyncpg losing track of a connection that broke mid-operation, as
# during a restart (asyncpg issue #1069: "cannot switch to state 12; another operation (2) is
# in progress").
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)
# Errors that mean "PostgreSQL is there but a wait ran out": no pool connection in time,
# PG_LOCK_TIMEOUT waiting for a row another transaction holds, PG_STATEMENT_TIMEOUT.
BUSY_ERRORS: tuple[type[BaseException], ...] = (
    PoolBusy,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.QueryCanceledError,
)
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    *UNAVAILABLE_ERRORS,
    *BUSY_ERRORS,
    asyncpg.PostgresError,
)
# After these the connection cannot be trusted with another statement: close it rather than
# hand it to the next request.
BROKEN_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)


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


def _milliseconds(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


class Pool(asyncpg.Pool):
    """asyncpg's pool with every wait bounded.

    `acquire()` waits its turn at a first-come-first-served gate (none for a pool nobody
    queues for), then for a connection, PG_ACQUIRE_TIMEOUT seconds in all, connecting
    included; after that it raises PoolBusy. A connection that broke during the block is
    closed instead of going back to the pool.

    `acquire(conversation=id)` first waits in that conversation's own line, which holds at
    most three quarters of the connections: sends of one conversation queue for its counter
    row anyway, and a conversation whose row is locked (or just very busy) must not take
    every connection from everybody else. (Half was measured to cost a single busy
    conversation about a quarter of its sends per second on a loaded machine: fewer
    statements in flight leave gaps in the row's queue.)
    """

    def __init__(self, *, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = Gate(self.get_max_size())  # first come, first served
        self.acquire_timeout = acquire_timeout
        self.busy_count = 0  # acquires that ran out of time, for /metrics
        self.conversation_share = max(1, self.get_max_size() - self.get_max_size() // 4)
        self.lines: dict[int, Gate] = {}  # conversations with a send under way, and their line

    def acquire(
        self, *, timeout: float | None = None, conversation: int | None = None
    ) -> "_AcquireContext":
        timeout = self.acquire_timeout if timeout is None else timeout
        return _BoundedAcquire(self, timeout, conversation)


if TYPE_CHECKING:
    _AcquireContext = PoolAcquireContext[asyncpg.Record]
else:  # not subscriptable at run time
    _AcquireContext = PoolAcquireContext


class _BoundedAcquire(_AcquireContext):
    __slots__ = ("conversation", "entered")

    def __init__(self, pool: Pool, timeout: float, conversation: int | None) -> None:
        super().__init__(pool, timeout)
        self.conversation = conversation
        self.entered: list[Gate] = []

    async def __aenter__(self) -> "PoolConnectionProxy[asyncpg.Record]":
        pool = self.pool
        assert isinstance(pool, Pool)
        try:
            async with asyncio.timeout(self.timeout):
                self.timeout = None  # the whole wait is bounded here, the lines included
                if self.conversation is not None:
                    line = pool.lines.get(self.conversation)
                    if line is None:
                        line = pool.lines[self.conversation] = Gate(pool.conversation_share)
                    await self._enter(line)
                await self._enter(pool.gate)
                return await super().__aenter__()
        except BaseException as error:
            self._leave_lines()
            if isinstance(error, TimeoutError):
                pool.busy_count += 1
                raise PoolBusy(f"no database connection within {pool.acquire_timeout:g}s") from None
            raise

    async def _enter(self, line: Gate) -> None:
        await line.enter()
        self.entered.append(line)

    async def __aexit__(self, *exc_info: object) -> None:
        exc = exc_info[1] if len(exc_info) > 1 else None
        try:
            if isinstance(exc, BROKEN_CONNECTION_ERRORS) and self.connection is not None:
                self.connection.terminate()
            try:
                await super().__aexit__(*exc_info)
            except DATABASE_ERRORS as error:
                if exc is not None:
                    raise
                # The block's work is done (a statement answered, a transaction committed):
                # the client gets its answer; asyncpg has already closed the connection.
                logger.warning("releasing a database connection failed: %r", error)
        finally:
            self._leave_lines()

    def _leave_lines(self) -> None:
        pool = self.pool
        assert isinstance(pool, Pool)
        while self.entered:
            line = self.entered.pop()
            line.leave()
            if line is not pool.gate and line.in_use == 0 and self.conversation is not None:
                del pool.lines[self.conversation]  # nobody holds or waits: forget it

    def __await__(self) -> Generator[Any, None, "PoolConnectionProxy[asyncpg.Record]"]:
        # A bare `await pool.acquire()` could not give its place in line back on release.
        raise TypeError("use `async with pool.acquire() as conn`")


def pool_server_settings(settings: Settings) -> dict[str, str]:
    """Session settings of every pool connection, fixed at connect time.

    They are sent in the startup packet, never with SET, so no request changes session state
    and connections can go back to the pool without a reset statement (see keep_session).
    """
    return {
        "lock_timeout": _milliseconds(settings.pg_lock_timeout),
        "statement_timeout": _milliseconds(settings.pg_statement_timeout),
    }


async def create_pool(settings: Settings) -> Pool:
    """The request pool: it starts empty, so the service comes up even while PostgreSQL does
    not, and requests queue for its connections first come, first served."""
    kwargs = connect_kwargs(settings)
    kwargs["server_settings"] = {**kwargs["server_settings"], **pool_server_settings(settings)}
    pool = Pool(
        **kwargs,
        acquire_timeout=settings.pg_acquire_timeout,
        reset=keep_session,
        min_size=0,
        max_size=settings.pg_pool_max,
        max_queries=50_000,
        command_timeout=settings.pg_command_timeout,
        max_inactive_connection_lifetime=300,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
    )
    return await pool


T = TypeVar("T")


class CheckConnection:
    """A connection of its own, outside the request pool, for readiness and metrics.

    A check must tell "PostgreSQL is down" from "the pool is busy", so it never queues behind
    requests. One connection is kept and reused; one that fails or times out is closed, and
    the next check connects again, within the same short timeout.
    """

    def __init__(self, settings: Settings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    async def run(self, check: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with asyncio.timeout(self.timeout), self._lock:
            try:
                if self._conn is None or self._conn.is_closed():
                    kwargs = connect_kwargs(self.settings)
                    kwargs["server_settings"] = {
                        **kwargs["server_settings"],
                        "application_name": "messenger-check",
                        "statement_timeout": _milliseconds(self.timeout),
                    }
                    self._conn = await asyncpg.connect(**kwargs)
                return await check(self._conn)
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None


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
    """Turn "cannot reach PostgreSQL" and "a wait ran out" into the 503 a client gets.

    Other PostgreSQL errors stay what they are: a statement a client's input broke is a bug
    to fix with a 4xx check, not a reason to tell the client to retry.
    """
    try:
        yield
    except BUSY_ERRORS as error:
        raise Unavailable(DATABASE_BUSY) from error
    except UNAVAILABLE_ERRORS as error:
        raise Unavailable(DATABASE_UNAVAILABLE) from error


@dataclass(frozen=True, slots=True)
class NewConversation:
    id: str | None
    inserted_at: str | None
    known_participants: int
    woken: list[int]  # the participants whose feeds got the `conversation` event


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
),
{
    write_feed(
        members="$1, $2",
        after="channel",
        event="channel.id, NULL::bigint, NULL::bigint, 'conversation'",
        source="positions, channel",
    )
}
SELECT channel.id::text AS id, {ISO_UTC.format(column="channel.inserted_at")} AS inserted_at,
       (SELECT count(*) FROM participants) AS known_participants, {WOKEN}
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
    return NewConversation(
        row["id"], row["inserted_at"], row["known_participants"], list(row["woken"])
    )


async def find_conversation_between(conn: Executor, low_id: int, high_id: int) -> str | None:
    """The id of the conversation the two users share, read after a refused insert."""
    value = await conn.fetchval(FIND_CONVERSATION_BETWEEN, low_id, high_id)
    return None if value is None else str(value)


# One conversation as `GET /conversations` shows it to a member, over `c` (the channels row)
# and `u` (the other participant's users row); the `conversation` event carries the same.
CONVERSATION_COLUMNS = f"""
c.id::text AS id, {ISO_UTC.format(column="c.inserted_at")} AS inserted_at, u.name
"""
CONVERSATION_KEYS = ("id", "inserted_at", "name")


def _list_conversations(extra: str = "") -> str:
    return f"""
SELECT {CONVERSATION_COLUMNS}{extra}
FROM users_channels mine
JOIN channels c ON c.id = mine.channel_id
JOIN users_channels other ON other.channel_id = mine.channel_id AND other.user_id <> mine.user_id
JOIN users u ON u.id = other.user_id
WHERE mine.user_id = $1
ORDER BY c.id
"""


LIST_CONVERSATIONS = _list_conversations()
# Indexes are 1..last_index without gaps, so the messages above the horizon are counted
# from the counter; a horizon set above it counts none.
LIST_CONVERSATIONS_WITH_UNREAD = _list_conversations(
    ", c.last_index, greatest(c.last_index - mine.last_viewed_index, 0) AS unread"
)


async def list_conversations(
    conn: Executor, user_id: int, *, unread: bool = False
) -> list[asyncpg.Record]:
    """The user's conversations, each with the other participant's name; with `unread`, also
    the conversation's highest index and how many messages are above the user's horizon."""
    statement = LIST_CONVERSATIONS_WITH_UNREAD if unread else LIST_CONVERSATIONS
    return await conn.fetch(statement, user_id)


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

# Each member's `message` event, written by the send itself (see write_feed).
WRITE_MESSAGE_FEED = write_feed(
    members="SELECT user_id FROM users_channels WHERE channel_id = $1",
    after="message",
    event="message.channel_id, message.index, message.user_id, 'message'",
    source="positions, message",
)

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
{WRITE_EVENT},
{WRITE_MESSAGE_FEED}
SELECT {SENT_MESSAGE}, {WOKEN}
FROM message, author
"""


async def send_message(
    conn: Executor, channel_id: int, user_id: int, content: str
) -> asyncpg.Record | None:
    """Append a message, its outbox event and each member's feed event in one statement;
    None if the user is no member. `woken` lists the members whose streams to wake.

    The counter row of the conversation is taken first, so senders of one conversation queue
    up behind each other (from the pool, in the conversation's own line, see Pool); then the
    members' rows, for the moment the statement and its commit take (see write_feed).
    """
    if isinstance(conn, Pool):
        async with conn.acquire(conversation=channel_id) as held:
            return await held.fetchrow(SEND_MESSAGE, channel_id, user_id, content)
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
MESSAGE_KEYS = ("id", "content", "user_id", "channel_id", "index", "inserted_at", "username")

# The conversation's counter and whether the reader may read it, once per statement. A reader
# who names themselves ($4) must be a member; an anonymous read is allowed. MATERIALIZED keeps
# the membership check from being copied into the page's subquery.
CONVERSATION_FOR_READER = """
WITH conversation AS MATERIALIZED (
    SELECT last_index,
           ($4::bigint IS NULL OR EXISTS (
               SELECT FROM users_channels WHERE channel_id = $1 AND user_id = $4
           )) AS reader_allowed
    FROM channels WHERE id = $1
)
""".strip()

# The page is read only for an allowed reader whose copy of it ($5: valid while the counter
# is at most this; NULL: no copy) is out of date; otherwise the one row has NULL columns.
PAGE_WANTED = "conversation.reader_allowed AND ($5::bigint IS NULL OR conversation.last_index > $5)"


def _page_statement(cursor: str, order: str) -> str:
    """A read of one page: `cursor` bounds the indexes, `order` picks the end it starts from."""
    return f"""
{CONVERSATION_FOR_READER}
SELECT page.id, page.content, page.user_id, page.channel_id, page.index, page.inserted_at,
       page.username, conversation.last_index, conversation.reader_allowed
FROM conversation LEFT JOIN LATERAL (
    SELECT {MESSAGE_COLUMNS}, m.index AS position
    FROM messages m JOIN users u ON u.id = m.user_id
    WHERE m.channel_id = $1 AND {cursor} AND {PAGE_WANTED}
    ORDER BY m.index {order}
    LIMIT $3
) AS page ON true
ORDER BY page.position
"""


LIST_MESSAGES_AFTER = _page_statement("m.index > $2", "ASC")
LIST_MESSAGES_BEFORE = _page_statement("m.index < $2", "DESC")


@dataclass(frozen=True, slots=True)
class MessagePage:
    """What one read found: the conversation's counter, the reader's right, and the page.

    `last_index` is None when the conversation does not exist. `rows` is empty when there
    are no such messages, and also when the page was not read: the reader may not read it,
    or the caller's copy is still valid.
    """

    last_index: int | None
    reader_allowed: bool
    rows: list[asyncpg.Record]


def _message_page(rows: list[asyncpg.Record]) -> MessagePage:
    if not rows:
        return MessagePage(None, False, [])
    first = rows[0]
    if first["id"] is None:  # no page: the one row is the conversation's
        rows = []
    return MessagePage(first["last_index"], first["reader_allowed"], rows)


async def list_messages_after(
    conn: Executor,
    channel_id: int,
    after_index: int,
    limit: int,
    reader_id: int | None,
    valid_through: int | None = None,
) -> MessagePage:
    """Up to `limit` messages with an index above `after_index`, oldest first.

    One round trip reads the counter, checks the reader and, unless the caller's copy is
    still valid (`valid_through` at or above the counter), the page.
    """
    rows = await conn.fetch(
        LIST_MESSAGES_AFTER, channel_id, after_index, limit, reader_id, valid_through
    )
    return _message_page(rows)


async def list_messages_before(
    conn: Executor,
    channel_id: int,
    before_index: int,
    limit: int,
    reader_id: int | None,
    valid_through: int | None = None,
) -> MessagePage:
    """The `limit` messages just below `before_index`, oldest first (otherwise as above)."""
    rows = await conn.fetch(
        LIST_MESSAGES_BEFORE, channel_id, before_index, limit, reader_id, valid_through
    )
    return _message_page(rows)


SET_VIEW_HORIZON = f"""
WITH horizon AS (
    UPDATE users_channels SET last_viewed_index = $3
    WHERE channel_id = $1 AND user_id = $2
    RETURNING channel_id
),
{
    write_feed(
        members="SELECT user_id FROM users_channels WHERE channel_id = $1",
        after="horizon",
        event="$1::bigint, $3::bigint, $2::bigint, 'horizon'",
        source="positions",
    )
}
SELECT {WOKEN} FROM horizon
"""


async def set_view_horizon(
    conn: Executor, channel_id: int, user_id: int, index: int
) -> list[int] | None:
    """Store the user's last viewed index and give both members a `horizon` event; returns
    the users whose streams to wake, or None if the user is not a member."""
    woken: list[int] | None = await conn.fetchval(SET_VIEW_HORIZON, channel_id, user_id, index)
    return woken


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
