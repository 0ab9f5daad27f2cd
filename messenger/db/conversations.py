"""Conversations (channels) and their members (users_channels): create, find, list, join."""

from dataclasses import dataclass

import asyncpg

from messenger.db.columns import select_list
from messenger.db.feed import WOKEN, write_feed
from messenger.db.pool import Executor
from messenger.db.timestamps import ISO_UTC
from messenger.schemas import LISTED_CONVERSATION_KEYS


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


# A ListedConversation over `c` (a channels row) and `u` (the other participant's users row);
# the `conversation` event carries the same.
LISTED_CONVERSATION = select_list(
    LISTED_CONVERSATION_KEYS,
    {"id": "c.id::text", "inserted_at": ISO_UTC.format(column="c.inserted_at"), "name": "u.name"},
)


def _list_conversations(extra: str = "") -> str:
    return f"""
SELECT {LISTED_CONVERSATION}{extra}
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
