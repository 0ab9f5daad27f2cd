"""Parked events: ones RabbitMQ refused RELAY_MAX_ATTEMPTS times, out of the outbox's way.

The relay moves such a row here whole (same id, attempts and last error), so the events of
its conversation behind it go on; an operator publishes it again by moving it back.

Revision ID: 0004_outbox_parked
Revises: 0003_outbox
"""

from alembic import op

revision = "0004_outbox_parked"
down_revision = "0003_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE outbox_parked (
            id bigint PRIMARY KEY,
            channel_id bigint NOT NULL,
            user_id bigint NOT NULL,
            message_index bigint NOT NULL,
            participant_ids bigint[] NOT NULL,
            created_at timestamptz NOT NULL,
            attempts integer NOT NULL,
            last_error text,
            parked_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
