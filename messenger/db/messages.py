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

# What a replayed send answers in place of WOKEN: the members, whose feeds the first one wrote.
MEMBERS_WOKEN = f"ARRAY({MEMBERS} ORDER BY user_id) AS woken"

# Two statements store a batch of sends into conversation $1, in arrival order (`n`), from
# $2 the senders and $3 their contents; senders who are no members get no row.
# SEND_MESSAGES_WITH_KEYS also takes $4 their Idempotency-Keys (NULL: none) and $5 a key's
# lifetime in seconds, for a batch with a key in it:
# - A key younger than that which this statement's snapshot sees (`earlier`) answers with its
#   message (`replayed`), and nothing is written for it.
# - Otherwise `claim` inserts the key, naming the message id it takes from the sequence. A
#   send racing another with the same key waits in that insert (unique index) until the other
#   commits, then inserts nothing, so it stores nothing and gets no row: its caller reads the
#   stored answer. An expired key still in the table is taken over. Keys are claimed in one
#   order, (sender, key), so two statements never wait for each other's keys in a cycle; a
#   batch never holds one key twice (db.batches).
# In both, the sends to store (`author`) get consecutive indexes in arrival order from one
# update of the counter row (taken after the keys); each message its outbox event, and each
# member a `message` event per message at consecutive positions of their feed.
_MEMBER = """
    JOIN users_channels uc ON uc.channel_id = $1 AND uc.user_id = sends.sender
    JOIN users u ON u.id = sends.sender"""

_CLAIMS = f"""
member AS MATERIALIZED (
    SELECT sends.n, sends.sender, sends.content, sends.key, u.name
    FROM sends{_MEMBER}
),
earlier AS MATERIALIZED (
    SELECT member.n, k.message_id
    FROM member JOIN idempotency_keys k
        ON k.channel_id = $1 AND k.user_id = member.sender AND k.key = member.key
    WHERE k.created_at > now() - make_interval(secs => $5)
),
claim AS (
    INSERT INTO idempotency_keys (channel_id, user_id, key, message_id)
    SELECT $1, member.sender, member.key, nextval(pg_get_serial_sequence('messages', 'id'))
    FROM member
    WHERE member.key IS NOT NULL AND member.n NOT IN (SELECT n FROM earlier)
    ORDER BY member.sender, member.key
    ON CONFLICT (channel_id, user_id, key) DO UPDATE
        SET message_id = excluded.message_id, created_at = excluded.created_at
        WHERE idempotency_keys.created_at <= now() - make_interval(secs => $5)
    RETURNING user_id, key, message_id
),
author AS MATERIALIZED (
    SELECT member.n, member.sender, member.content, member.name, claim.message_id,
           row_number() OVER (ORDER BY member.n) AS k
    FROM member LEFT JOIN claim ON claim.user_id = member.sender AND claim.key = member.key
    WHERE member.key IS NULL OR claim.message_id IS NOT NULL
),"""

_AUTHORS = f"""
author AS MATERIALIZED (
    SELECT sends.n, sends.sender, sends.content, u.name,
           row_number() OVER (ORDER BY sends.n) AS k
    FROM sends{_MEMBER}
),"""


def _send_statement(*, keyed: bool) -> str:
    keys = ", $4::text[]" if keyed else ""
    new_id = "coalesce(author.message_id, nextval(pg_get_serial_sequence('messages', 'id')))"
    feed = write_feed(
        members=MEMBERS,
        after="message",
        event=MESSAGE_EVENT,
        source="positions, message, counter",
        count="(SELECT count(*) FROM author)",
        seq="positions.feed_seq - (SELECT count(*) FROM author) + message.index - counter.base",
    )
    replays = f"""UNION ALL
SELECT earlier.n, true, {SENT_MESSAGE}, {MEMBERS_WOKEN}
FROM earlier
JOIN messages message ON message.id = earlier.message_id
JOIN users author ON author.id = message.user_id"""
    return f"""
WITH sends AS (
    SELECT *
    FROM unnest($2::bigint[], $3::text[]{keys}) WITH ORDINALITY
        AS sends(sender, content{", key" if keyed else ""}, n)
),{_CLAIMS if keyed else _AUTHORS}
counter AS (
    UPDATE channels SET last_index = last_index + (SELECT count(*) FROM author)
    WHERE id = $1 AND EXISTS (SELECT FROM author)
    RETURNING last_index - (SELECT count(*) FROM author) AS base
),
message AS (
    INSERT INTO messages ({"id, " if keyed else ""}content, user_id, channel_id, index)
    SELECT {new_id + ", " if keyed else ""}author.content, author.sender, $1,
           counter.base + author.k
    FROM counter, author ORDER BY author.k
    RETURNING id, content, index, user_id, channel_id, inserted_at
),
{WRITE_EVENT},
{feed}
SELECT author.n, false AS replayed, {SENT_MESSAGE}, {WOKEN}
FROM counter JOIN author ON true JOIN message ON message.index = counter.base + author.k
{replays if keyed else ""}"""


SEND_MESSAGES = _send_statement(keyed=False)
SEND_MESSAGES_WITH_KEYS = _send_statement(keyed=True)

Send = tuple[int, str, str | None]  # sender, content, Idempotency-Key


async def send_messages(
    conn: Connection, channel_id: int, sends: list[Send], key_ttl: float
) -> list[asyncpg.Record | None]:
    """Append these sends in one statement and its commit, in this order; see the statements.

    Each gets its sent message (`replayed` when a key's earlier answer), with `woken` listing
    the members whose streams to wake, or None: its sender is no member, or a send racing it
    with its key stored first (`stored_answer` finds that one). The counter row of the
    conversation is taken after the keys, so statements of one conversation queue up behind
    each other; then the members' rows, for the moment the statement and its commit take (see
    db.feed). One statement for many sends is what lets a busy conversation take more sends
    than commits (see db.batches).
    """
    senders, contents = [send[0] for send in sends], [send[1] for send in sends]
    keys = [send[2] for send in sends]
    if any(key is not None for key in keys):
        rows = await conn.fetch(
            SEND_MESSAGES_WITH_KEYS, channel_id, senders, contents, keys, key_ttl
        )
    else:
        rows = await conn.fetch(SEND_MESSAGES, channel_id, senders, contents)
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
