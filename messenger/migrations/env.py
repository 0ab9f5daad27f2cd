"""Alembic environment: runs the hand-written migrations over asyncpg, one migrator at a time."""

import asyncio
import logging

from alembic import context
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from messenger.settings import Settings, load_settings

# Every migrator takes this transaction-level advisory lock before reading the schema version,
# so a second migrator started at the same time waits and then finds nothing left to do.
MIGRATION_LOCK = 0x6D657373  # "mess"

logger = logging.getLogger("alembic.env")


def database_url(settings: Settings) -> URL:
    return URL.create(
        "postgresql+asyncpg",
        username=settings.pguser,
        password=settings.pgpassword.get_secret_value() if settings.pgpassword else None,
        host=settings.pghost,
        port=settings.pgport,
        database=settings.pgdatabase,
    )


def run_locked(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transactional_ddl=True)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def run_online(settings: Settings) -> None:
    engine = create_async_engine(
        database_url(settings),
        connect_args={"server_settings": {"application_name": "messenger-migrate"}},
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_locked)
    finally:
        await engine.dispose()


settings = context.config.attributes.get("settings") or load_settings()
if context.is_offline_mode():
    context.configure(url=database_url(settings).render_as_string(hide_password=True))
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_online(settings))
