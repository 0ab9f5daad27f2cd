"""The transactional outbox: one row per new_message event, written with the message.

The relay publishes rows in id order and deletes each one only after RabbitMQ confirmed it.

Revision ID: 0003_outbox
Revises: 0002_counters_and_pairs
"""

from alembic import op

revision = "0003_outbox"
down_revision = "0002_counters_and_pairs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE outbox (
            id bigserial PRIMARY KEY,
            channel_id bigint NOT NULL,
            user_id bigint NOT NULL,
            message_index bigint NOT NULL,
            participant_ids bigint[] NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            attempts integer NOT NULL DEFAULT 0,
            last_error text
        )
        """
    )


def downgrade() -> None:
    raise NotImplementedError("messenger migrations only go forward")
