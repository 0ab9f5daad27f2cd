"""Per-user event feeds: what each user's live stream (GET /events) delivers, in commit order.

`users.feed_seq` is the position of the user's latest event. The statement that makes an event
(a send, a new conversation, a view horizon) raises the counter of each participant under that
user's row lock and writes a `feed` row at the new position, in its own transaction. The next
event of the same user waits for that lock until the previous one committed, so a user's
positions become visible in order, with no gaps: a stream that read position N has seen every
event up to N, whichever transaction took its id or timestamp first.

Rows hold only what identifies the event; the stream renders it from the real tables when it
reads it. They are kept for FEED_RETENTION seconds (a BRIN index on `created_at` serves the
sweep and costs a send next to nothing).

Revision ID: 0006_user_feeds
Revises: 0005_idempotency_keys
"""

from alembic import op

revision = "0006_user_feeds"
down_revision = "0005_idempotency_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE users ADD COLUMN feed_seq bigint NOT NULL DEFAULT 0")
    op.execute(
        """
        CREATE TABLE feed (
            user_id bigint NOT NULL,
            seq bigint NOT NULL,
            kind text NOT NULL CHECK (kind IN ('message', 'conversation', 'horizon')),
            channel_id bigint NOT NULL,
            message_index bigint,
            actor_id bigint,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, seq)
        )
        """
    )
    op.execute("CREATE INDEX feed_created_at_brin ON feed USING brin (created_at)")


def downgrade() -> None:
    raise NotImplementedError("messenger migrations only go forward")
