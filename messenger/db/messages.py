"""Messages: a send (message, counter, outbox and feed events in one statement) and page reads."""

from dataclasses import dataclass

import asyncpg

from messenger.db.columns import select_list
from messenger.db.feed import WOKEN, write_feed
from messenger.db.pool import Executor, Pool
from messenger.db.timestamps import ISO_UTC
from messenger.schemas import LISTED_MESSAGE_KEYS, SENT_MESSAGE_KEYS

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

# Each member's `message` event, written by the send itself (see db.feed).
WRITE_MESSAGE_FEED = write_feed(
    members="SELECT user_id FROM users_channels WHERE channel_id = $1",
    after="message",
    event="message.channel_id, message.index, message.user_id, 'message'",
    source="positions, message",
)

# What a replayed send answers in place of WOKEN: the members, whose feeds the first one wrote.
MEMBERS_WOKEN = """ARRAY(
    SELECT user_id FROM users_channels WHERE channel_id = message.channel_id ORDER BY user_id
) AS woken"""

# A SentMessage over `message` (a messages row) and `author` (its sender's users row).
SENT_MESSAGE = select_list(
    SENT_MESSAGE_KEYS,
    {
        "id": "message.id::text",
        "content": "message.content",
        "index": "message.index",
        "user_id": "message.user_id",
        "username": "author.name",
        "conversation_id": "message.channel_id",
        "inserted_at": ISO_UTC.format(column="message.inserted_at"),
    },
)

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
    members' rows, for the moment the statement and its commit take (see db.feed).
    """
    if isinstance(conn, Pool):
        async with conn.acquire(conversation=channel_id) as held:
            return await held.fetchrow(SEND_MESSAGE, channel_id, user_id, content)
    return await conn.fetchrow(SEND_MESSAGE, channel_id, user_id, content)


# A ListedMessage over `m` (a messages row) and `u` (its sender's users row).
MESSAGE_COLUMNS = select_list(
    LISTED_MESSAGE_KEYS,
    {
        "id": "m.id::text",
        "content": "m.content",
        "user_id": "m.user_id::text",
        "channel_id": "m.channel_id::text",
        "index": "m.index::text",
        "inserted_at": ISO_UTC.format(column="m.inserted_at"),
        "username": "u.name",
    },
)

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
SELECT {", ".join(f"page.{key}" for key in LISTED_MESSAGE_KEYS)},
       conversation.last_index, conversation.reader_allowed
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
