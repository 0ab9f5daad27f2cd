"""Per-conversation message counters, one conversation per pair of users, indexes for every query.

Fixes of the Node schema: a send takes the next index from `channels.last_index` (one row lock
per conversation instead of locking and scanning its messages), `(channel_id, index)` is unique,
and the pair of members is a unique key so two users can share only one conversation.

Data from the Node service is brought along: duplicate indexes its race left behind are
renumbered, counters and pairs are backfilled, and the output says what was changed.

Revision ID: 0002_counters_and_pairs
Revises: 0001_node_schema
"""

import logging

from alembic import op
from sqlalchemy import text

revision = "0002_counters_and_pairs"
down_revision = "0001_node_schema"
branch_labels = None
depends_on = None

logger = logging.getLogger("alembic.runtime.migration")

RENUMBER_DUPLICATE_INDEXES = """
WITH affected AS (
    SELECT DISTINCT channel_id FROM messages GROUP BY channel_id, index HAVING count(*) > 1
),
renumbered AS (
    SELECT m.id, row_number() OVER (PARTITION BY m.channel_id ORDER BY m.inserted_at, m.id) AS index
    FROM messages m JOIN affected USING (channel_id)
)
UPDATE messages SET index = renumbered.index
FROM renumbered
WHERE messages.id = renumbered.id AND messages.index <> renumbered.index
RETURNING messages.channel_id
"""

BACKFILL_PAIRS = """
WITH pairs AS (
    SELECT channel_id, min(user_id) AS low_user_id, max(user_id) AS high_user_id
    FROM users_channels GROUP BY channel_id HAVING count(DISTINCT user_id) = 2
),
first_of_pair AS (
    SELECT DISTINCT ON (low_user_id, high_user_id) channel_id, low_user_id, high_user_id
    FROM pairs ORDER BY low_user_id, high_user_id, channel_id
)
UPDATE channels SET low_user_id = first_of_pair.low_user_id,
                    high_user_id = first_of_pair.high_user_id
FROM first_of_pair WHERE channels.id = first_of_pair.channel_id
"""


def upgrade() -> None:
    connection = op.get_bind()
    op.execute(
        """
        ALTER TABLE channels
            ADD COLUMN last_index bigint NOT NULL DEFAULT 0,
            ADD COLUMN low_user_id bigint,
            ADD COLUMN high_user_id bigint,
            ADD CONSTRAINT channels_pair_is_ordered CHECK (low_user_id < high_user_id)
        """
    )

    changed = connection.execute(text(RENUMBER_DUPLICATE_INDEXES)).scalars().all()
    if changed:
        conversations = sorted(set(changed))
        logger.warning(
            "renumbered %d messages with duplicate indexes in %d conversations (ids %s),"
            " in order of inserted_at, id",
            len(changed),
            len(conversations),
            ", ".join(map(str, conversations)),
        )

    counted = connection.execute(
        text(
            "UPDATE channels SET last_index = top.index FROM"
            " (SELECT channel_id, max(index) AS index FROM messages GROUP BY channel_id) AS top"
            " WHERE channels.id = top.channel_id"
        )
    ).rowcount
    logger.info("message counters set for %d conversations", counted)

    paired = connection.execute(text(BACKFILL_PAIRS)).rowcount
    unpaired = connection.execute(
        text("SELECT array_agg(id ORDER BY id) FROM channels WHERE low_user_id IS NULL")
    ).scalar_one()
    logger.info("member pairs recorded for %d conversations", paired)
    if unpaired:
        logger.warning(
            "conversations %s keep their messages but have no member pair (a second"
            " conversation of the same two users, or not exactly two members)",
            ", ".join(map(str, unpaired)),
        )

    op.execute("CREATE UNIQUE INDEX messages_channel_id_index_key ON messages (channel_id, index)")
    op.execute(
        "CREATE UNIQUE INDEX channels_member_pair_key ON channels (low_user_id, high_user_id)"
    )
    op.execute(
        "CREATE INDEX users_channels_user_id_channel_id_index"
        " ON users_channels (user_id, channel_id)"
    )
    # Timestamps are UTC whatever the session's time zone.
    for table in ("users", "channels", "users_channels", "messages"):
        op.execute(
            f"ALTER TABLE {table} ALTER COLUMN inserted_at SET DEFAULT (now() AT TIME ZONE 'utc')"
        )


def downgrade() -> None:
    raise NotImplementedError("messenger migrations only go forward")
