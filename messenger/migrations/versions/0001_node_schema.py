"""The Node service's schema: users, channels, users_channels, messages.

A database the Node service created is adopted as it is: its tables are kept with their rows.

Revision ID: 0001_node_schema
Revises:
"""

import logging

from alembic import op
from sqlalchemy import text

revision = "0001_node_schema"
down_revision = None
branch_labels = None
depends_on = None

logger = logging.getLogger("alembic.runtime.migration")

NODE_SCHEMA = (
    """
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    inserted_at timestamp(0) NOT NULL DEFAULT now()
)""",
    """
CREATE TABLE channels (
    id bigserial PRIMARY KEY,
    inserted_at timestamp(0) NOT NULL DEFAULT now()
)""",
    """
CREATE TABLE users_channels (
    channel_id bigint NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_viewed_index bigint NOT NULL DEFAULT 0,
    inserted_at timestamp(0) NOT NULL DEFAULT now()
)""",
    "CREATE UNIQUE INDEX users_channels_channel_id_user_id_index"
    " ON users_channels (channel_id, user_id)",
    """
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    content text NOT NULL,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel_id bigint NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    index bigint NOT NULL,
    inserted_at timestamp(0) NOT NULL DEFAULT now()
)""",
)


def upgrade() -> None:
    connection = op.get_bind()
    existing = connection.execute(
        text(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
            " AND tablename IN ('users', 'channels', 'users_channels', 'messages')"
        )
    ).scalar_one()
    if existing == 4:
        logger.info("adopting the existing Node schema: tables and rows are kept as they are")
        return
    if existing:
        raise RuntimeError(
            f"found {existing} of the 4 Node tables (users, channels, users_channels, messages);"
            " refusing to guess: restore the missing ones or start from an empty database"
        )
    for statement in NODE_SCHEMA:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("messenger migrations only go forward")
