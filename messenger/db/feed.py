"""Per-user event feeds (migration 0006): the CTEs that write them, positions, the sweep.

A send, a new conversation and a view horizon each give every member an event at the next
position of their feed, in the statement that makes it (`write_feed`). A user's positions
are 1, 2, 3, ... without gaps and commit in order, so "every event after N" is exact on
every instance. Feed rows hold ids only; `feed_events` reads them back as events.
"""

from messenger.db.pool import Executor


def write_feed(
    *,
    members: str,
    after: str,
    event: str,
    source: str,
    count: str = "1",
    seq: str = "positions.feed_seq",
) -> str:
    """CTEs that give each member `count` events at the next positions of their feed.

    `members` selects the user ids; `after` names a CTE whose rows must exist, and which
    runs first (a send locks the conversation's counter row before any user's); `event` is
    the select list (channel_id, message_index, actor_id, kind) over `source`, which joins
    `positions` (each member's last position after the statement: `feed_seq`); `seq` is each
    event's position over `source` (that last position when `count` is 1). Users are locked
    in ascending id order, so two statements never wait for each other's users in a cycle;
    the next event of a user waits for that user's row until the previous one committed, so
    positions become visible in order. `fed` returns the ids of the users whose streams to
    wake.
    """
    return f"""
readers AS (
    SELECT u.id FROM users u
    WHERE u.id IN ({members}) AND EXISTS (SELECT FROM {after})
    ORDER BY u.id
    FOR NO KEY UPDATE OF u
),
positions AS (
    UPDATE users SET feed_seq = users.feed_seq + {count}
    FROM readers WHERE users.id = readers.id
    RETURNING users.id, users.feed_seq
),
fed AS (
    INSERT INTO feed (user_id, seq, channel_id, message_index, actor_id, kind)
    SELECT positions.id, {seq}, {event}
    FROM {source}
    RETURNING user_id
)"""


# The users whose feeds a statement wrote, over `fed`.
WOKEN = "ARRAY(SELECT DISTINCT user_id FROM fed ORDER BY user_id) AS woken"

FEED_POSITION = "SELECT feed_seq FROM users WHERE id = $1"
FEED_POSITIONS = "SELECT id, feed_seq FROM users WHERE id = ANY($1::bigint[])"

SWEEP_FEED = """
DELETE FROM feed WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM feed
    WHERE created_at <= now() - make_interval(secs => $1)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
))
"""


async def feed_position(conn: Executor, user_id: int) -> int | None:
    """The user's latest feed position; None if there is no such user."""
    value: int | None = await conn.fetchval(FEED_POSITION, user_id)
    return value


async def feed_positions(conn: Executor, user_ids: list[int]) -> dict[int, int]:
    """The latest feed position of each of these users."""
    return {row["id"]: row["feed_seq"] for row in await conn.fetch(FEED_POSITIONS, user_ids)}


async def sweep_feed(conn: Executor, retention: float, limit: int) -> int:
    """Delete up to `limit` events older than `retention` seconds; returns how many."""
    status: str = await conn.execute(SWEEP_FEED, retention, limit)
    return int(status.split()[-1])
