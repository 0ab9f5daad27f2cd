"""The bench's own database: created the way production's is (the migrate job, then the seed
job), filled with messages in one statement, dropped at the end."""

import os
import time
from dataclasses import dataclass

import asyncpg

from bench.shell import MESSENGER, run


@dataclass(frozen=True)
class Database:
    host: str
    port: int
    user: str
    name: str

    @classmethod
    def from_environment(cls, name: str) -> "Database":
        return cls(
            os.environ.get("PGHOST", "127.0.0.1"),
            int(os.environ.get("PGPORT", "5432")),
            os.environ.get("PGUSER", "postgres"),
            name,
        )

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.name,
            **extra,
        }

    def psql(self, sql: str, *, database: str | None = None) -> str:
        command = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql]
        return run(command, env=self.env(PGDATABASE=database or self.name)).strip()

    def exists(self) -> bool:
        # The name is one of scripts/bench's --database checks: letters, digits and _ only.
        sql = f"SELECT count(*) FROM pg_database WHERE datname = '{self.name}'"  # noqa: S608
        return self.psql(sql, database="postgres") == "1"

    def drop(self) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)', database="postgres")

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=os.environ.get("PGPASSWORD"),
            database=self.name,
        )


def create(database: Database) -> bool:
    """A fresh bench database built the way production's is: the migrate job, then seed.

    Returns whether a database of that name existed (and was dropped first)."""
    existed = database.exists()
    database.drop()
    env = database.env(MESSENGER_ENV="development", LOG_LEVEL="warning")
    run([*MESSENGER, "migrate"], env=env)
    run([*MESSENGER, "seed"], env=env)
    # Six users beside the three seeded ones: two users share one conversation, we need six.
    database.psql("INSERT INTO users (name) SELECT 'bench user ' || i FROM generate_series(4, 9) i")
    return existed


def fill(database: Database, conversation: int, user_id: int, count: int) -> float:
    """Give a conversation `count` messages with one INSERT ... SELECT; returns seconds taken."""
    started = time.monotonic()
    conversation, user_id, count = int(conversation), int(user_id), int(count)
    # Integers only: nothing to inject.
    database.psql(
        f"""
        BEGIN;
        INSERT INTO messages (content, user_id, channel_id, index)
        SELECT 'message number ' || i, {user_id}, {conversation}, i
        FROM generate_series(1, {count}) AS i;
        UPDATE channels SET last_index = {count} WHERE id = {conversation};
        COMMIT;
        """  # noqa: S608
    )
    return time.monotonic() - started
