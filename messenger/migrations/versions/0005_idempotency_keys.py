"""Idempotency keys of message sends: one row per (conversation, sender, key) for a while.

A row names the message its first request stored, so a retry is answered with that message.
No foreign keys: rows live for IDEMPOTENCY_KEY_TTL and are swept, and a send should not pay
for a referential check. The serving role gets access from `migrate`'s grant on all tables.

Revision ID: 0005_idempotency_keys
Revises: 0004_outbox_parked
"""

from alembic import op

revision = "0005_idempotency_keys"
down_revision = "0004_outbox_parked"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE idempotency_keys (
            channel_id bigint NOT NULL,
            user_id bigint NOT NULL,
            key text NOT NULL CHECK (key ~ '^[!-~]{1,255}$'),
            message_id bigint NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (channel_id, user_id, key)
        )
        """
    )
    # The sweep deletes the oldest rows first.
    op.execute("CREATE INDEX idempotency_keys_created_at_index ON idempotency_keys (created_at)")


def downgrade() -> None:
    raise NotImplementedError("messenger migrations only go forward")
