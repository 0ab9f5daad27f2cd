"""Messages: sends (messages, counter, outbox and feed events in one statement) and page reads."""

from dataclasses import dataclass

import asyncpg

from messenger.db.columns import select_list
from messenger.db.feed import WOKEN, write_feed
from messenger.db.pool import Connection, Executor
from messenger.db.timestamps import ISO_UTC
from messenger.schemas import LISTED_MESSAGE_KEYS, SENT_MESSAGE_KEYS

# The members of conversation $1, and the `message` feed event of `message` (see db.feed).
MEMBERS = "SELECT user_id FROM users_channels WHERE channel_id = $1"
MESSAGE_EVENT = "message.channel_id, message.index, message.user_id, 'message'"

# A send's outbox event, over `message` ($1 the conversation).
WRITE_EVENT = f"""
event AS (
    INSERT INTO outbox (channel_id, user_id, message_index, participant_ids)
    SELECT message.channel_id, message.user_id, message.index,
           ARRAY({MEMBERS} ORDER BY user_id)
    FROM message ORDER BY message.index
)"""

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

# A batch of sends into conversation $1: $2 the senders and $3 their contents, in arrival
# order (`n`). The senders who are members (`author`) get consecutive indexes in that order
# from one update of the counter row; each message its outbox event, and each member a
# `message` event per message at consecutive positions of their feed. One row per message.
SEND_MESSAGES = f"""
WITH sends AS (
    SELECT sends.n, sends.sender, sends.content
    FROM unnest($2::bigint[], $3::text[]) WITH ORDINALITY AS sends(sender, content, n)
),
author AS MATERIALIZED (
    SELECT sends.n, sends.sender, sends.content, u.name,
           row_number() OVER (ORDER BY sends.n) AS k
    FROM sends
    JOIN users_channels uc ON uc.channel_id = $1 AND uc.user_id = sends.sender
    JOIN users u ON u.id = sends.sender
),
counter AS (
    UPDATE channels SET last_index = last_index + (SELECT count(*) FROM author)
    WHERE id = $1 AND EXISTS (SELECT FROM author)
    RETURNING last_index - (SELECT count(*) FROM author) AS base
),
message AS (
    INSERT INTO messages (content, user_id, channel_id, index)
    SELECT author.content, author.sender, $1, counter.base + author.k
    FROM counter, author ORDER BY author.k
    RETURNING id, content, index, user_id, channel_id, inserted_at
),
{WRITE_EVENT},
{
    write_feed(
        members=MEMBERS,
        after="message",
        event=MESSAGE_EVENT,
        source="positions, message, counter",
        count="(SELECT count(*) FROM author)",
        seq="positions.feed_seq - (SELECT count(*) FROM author) + message.index - counter.base",
    )
}
SELECT author.n, {SENT_MESSAGE}, {WOKEN}
FROM counter JOIN author ON true JOIN message ON message.index = counter.base + author.k
"""


async def send_messages(
    conn: Connection, channel_id: int, sends: list[tuple[int, str]]
) -> list[asyncpg.Record | None]:
    """Append these (sender, content) sends in one statement and its commit, in this order.

    Each gets its sent message, with `woken` listing the members whose streams to wake, or
    None if its sender is no member. The counter row of the conversation is taken first, so
    statements of one conversation queue up behind each other; then the members' rows, for
    the moment the statement and its commit take (see db.feed). One statement for many sends
    is what lets a busy conversation take more sends than commits (see db.batches).
    """
    rows = await conn.fetch(
        SEND_MESSAGES, channel_id, [sender for sender, _ in sends], [text for _, text in sends]
    )
    answers: list[asyncpg.Record | None] = [None] * len(sends)
    for row in rows:
        answers[row["n"] - 1] = row
    return answers


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
