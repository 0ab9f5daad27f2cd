"""Fixtures: a fresh PostgreSQL database per test session, migrated like production, and the app."""

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from messenger import jobs
from messenger.app import create_app
from messenger.db import connect_kwargs
from messenger.settings import Settings

TABLES = "feed, idempotency_keys, outbox, outbox_parked, messages, users_channels, channels, users"

# tests/images builds and runs the container images (minutes, podman as root): only
# scripts/test-images, which prepares podman and the images, collects it.
collect_ignore = [] if os.environ.get("MESSENGER_IMAGE_TESTS") == "1" else ["images"]


def base_settings(**overrides: object) -> Settings:
    """Settings of the test profile pointed at the services scripts/test provides."""
    values: dict[str, object] = {
        "messenger_env": "test",
        "pghost": os.environ.get("PGHOST", "127.0.0.1"),
        "amqphost": os.environ.get("AMQPHOST", "127.0.0.1"),
        "relay_enabled": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def bare_env(**values: str) -> dict[str, str]:
    """This process's environment without anything the service or libpq reads, plus `values`.

    A subprocess started with it sees only the configuration the test gives it, whatever the
    developer's shell has exported (tests.processes.service_env starts from a database instead).
    """
    read = {name.upper() for name in Settings.model_fields} | {"NODE_ENV"}
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in read and not name.startswith(("PG", "AMQP"))
    }
    env.update(values)
    return env


async def drop_database(settings: Settings) -> None:
    conn = await asyncpg.connect(**connect_kwargs(settings, database="postgres"))
    try:
        statement = await conn.fetchval(
            "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', $1::text)",
            settings.pgdatabase,
        )
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database() -> Iterator[Settings]:
    """A new database, created and migrated by the migrate job itself."""
    settings = base_settings(pgdatabase=f"messenger_test_{uuid.uuid4().hex[:12]}")
    jobs.run_migrate(settings)
    yield settings
    asyncio.run(drop_database(settings))


@pytest.fixture(scope="session")
async def pool(database: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(**connect_kwargs(database), min_size=1, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture
async def clean(pool: asyncpg.Pool) -> None:
    await pool.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")


@pytest.fixture
def settings(database: Settings) -> Settings:
    """The app's settings for one test; tests may copy them with changes."""
    return database


@pytest.fixture
async def client(settings: Settings, clean: None) -> AsyncIterator[httpx.AsyncClient]:
    """The real app, lifespan included, behind an in-process HTTP client, on an empty database."""
    async with app_client(settings) as client:
        yield client


@contextlib.asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app on `settings`, lifespan included, behind an in-process HTTP client."""
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://messenger") as client:
            yield client
