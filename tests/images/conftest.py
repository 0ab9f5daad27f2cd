"""Shared by the image tests: podman, the images scripts/test-images built, and a fresh
database with its own migrator and application roles (dropped afterwards, with its queue).

The containers use the host's network: they reach this machine's PostgreSQL, RabbitMQ and the
Consul double on 127.0.0.1, and every request the tests make goes to 127.0.0.1."""

import asyncio
import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("MESSENGER_TEST_IMAGE", "localhost/messenger:test-images")
LOAD_BALANCER_IMAGE = os.environ.get(
    "MESSENGER_TEST_LOAD_BALANCER_IMAGE", "localhost/messenger-load-balancer:test-images"
)
PGHOST = os.environ.get("PGHOST", "127.0.0.1")
PGPORT = os.environ.get("PGPORT", "5432")
AMQPHOST = os.environ.get("AMQPHOST", "127.0.0.1")
AMQPPORT = os.environ.get("AMQPPORT", "5672")


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {result.returncode}\n{result.stderr}")
    return result


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@dataclass
class Database:
    """A database of its own on the shared server, with its own roles and queue name."""

    name: str
    migrator: str
    migrator_password: str
    app_user: str
    app_password: str
    queue: str

    def job_env(self) -> list[str]:
        """`podman run` options of the migrator role, as the deploy script passes them."""
        return env_options(
            MESSENGER_ENV="production",
            MESSENGER_ROLE="migrator",
            PGHOST=PGHOST,
            PGPORT=PGPORT,
            PGUSER=self.migrator,
            PGPASSWORD=self.migrator_password,
            PGDATABASE=self.name,
            APP_DB_USER=self.app_user,
            APP_DB_PASSWORD=self.app_password,
        )

    async def connect(self, as_app: bool = False) -> asyncpg.Connection:
        user, password = (
            (self.app_user, self.app_password)
            if as_app
            else (self.migrator, self.migrator_password)
        )
        return await asyncpg.connect(
            host=PGHOST, port=int(PGPORT), user=user, password=password, database=self.name
        )

    def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async def fetch() -> list[asyncpg.Record]:
            conn = await self.connect()
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()

        return asyncio.run(fetch())


def env_options(**values: str) -> list[str]:
    return [option for name, value in values.items() for option in ("-e", f"{name}={value}")]


async def _admin(statement: str, *args: Any) -> None:
    conn = await asyncpg.connect(
        host=PGHOST,
        port=int(PGPORT),
        user=os.environ.get("PGUSER", "postgres"),
        database="postgres",
    )
    try:
        await conn.execute(await conn.fetchval(statement, *args))
    finally:
        await conn.close()


async def _delete_queue(name: str) -> None:
    connection = await aio_pika.connect(f"amqp://guest:guest@{AMQPHOST}:{AMQPPORT}/", timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)


@contextlib.contextmanager
def fresh_database() -> Iterator[Database]:
    """A superuser migrator role of its own (as the tutorial's postgres image makes one); the
    database and the application role are left for the migrator job to create."""
    db = Database(
        name=unique("messenger_img"),
        migrator=unique("messenger_img_migrator"),
        migrator_password=uuid.uuid4().hex,
        app_user=unique("messenger_img_app"),
        app_password=uuid.uuid4().hex,
        queue=unique("messenger_img_queue"),
    )
    asyncio.run(
        _admin(
            "SELECT format('CREATE ROLE %I LOGIN SUPERUSER PASSWORD %L', $1::text, $2::text)",
            db.migrator,
            db.migrator_password,
        )
    )
    try:
        yield db
    finally:
        asyncio.run(
            _admin("SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', $1::text)", db.name)
        )
        for role in (db.app_user, db.migrator):
            asyncio.run(_admin("SELECT format('DROP ROLE IF EXISTS %I', $1::text)", role))
        with contextlib.suppress(Exception):
            asyncio.run(_delete_queue(db.queue))


def wait_for_health(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url}/health did not answer within {timeout}s")


def walk_tutorial(url: str) -> None:
    """The tutorial's walk: a conversation between the seeded users 1 and 2, two messages, read."""
    with httpx.Client(base_url=url, timeout=10) as client:
        created = client.post("/conversations", json={"participant_ids": [1, 2]})
        assert created.status_code == 201, created.text
        conversation = created.json()["conversation"]["id"]
        for user, content in ((1, "This is the first message"), (2, "This is the second message")):
            sent = client.post(
                f"/conversations/{conversation}/messages",
                headers={"User-Id": str(user)},
                json={"content": content},
            )
            assert sent.status_code == 201, sent.text
        read = client.get(f"/conversations/{conversation}/messages")
        assert read.status_code == 200, read.text
        assert [message["content"] for message in read.json()["messages"]] == [
            "This is the first message",
            "This is the second message",
        ]


@pytest.fixture(scope="session")
def db() -> Iterator[Database]:
    with fresh_database() as db:
        yield db
