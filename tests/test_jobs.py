"""The migrator role's jobs, run as production runs them: `python -m messenger migrate | seed`."""

import asyncio
import contextlib
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from pydantic import SecretStr

from messenger import db, jobs
from messenger.db import connect_kwargs
from messenger.errors import CONVERSATION_EXISTS
from messenger.settings import Settings
from tests import factories
from tests.conftest import app_client, base_settings, drop_database
from tests.processes import ROOT, free_port, service_env

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NODE_TABLES = ("users", "channels", "users_channels", "messages")
SECRET = "s3cr3t-migrator-password"

pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class Job:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@contextlib.asynccontextmanager
async def started(
    command: str, settings: Settings, **variables: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m messenger COMMAND` running against `settings`' server and database; killed
    on the way out if it has not ended."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "messenger",
        command,
        env=service_env(settings, LOG_LEVEL="info", **variables),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def job(command: str, settings: Settings, **variables: str) -> Job:
    """Run `python -m messenger COMMAND` to its end (at most 120 s)."""
    async with started(command, settings, **variables) as process:
        async with asyncio.timeout(120):
            stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return Job(process.returncode, stdout.decode(), stderr.decode())


def head(settings: Settings) -> str:
    revision = ScriptDirectory.from_config(jobs.alembic_config(settings)).get_current_head()
    assert revision is not None
    return revision


async def connect(settings: Settings, database: str | None = None) -> asyncpg.Connection:
    return await asyncpg.connect(**connect_kwargs(settings, database=database))


async def fetch(settings: Settings, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await connect(settings)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def schema_versions(settings: Settings) -> list[str]:
    return [row["version_num"] for row in await fetch(settings, "SELECT * FROM alembic_version")]


@pytest.fixture
async def fresh() -> AsyncIterator[Settings]:
    """Settings naming a database that does not exist yet; dropped after the test.

    The name needs quoting in SQL (a dash, capitals), as a careless CREATE DATABASE would show.
    """
    settings = base_settings(pgdatabase=f"Messenger-Jobs-{uuid.uuid4().hex[:10]}")
    yield settings
    await drop_database(settings)


@pytest.fixture
async def app_role(fresh: Settings) -> AsyncIterator[tuple[str, str]]:
    """A name and password for the least-privilege role; the role is dropped after the test."""
    role = f"messenger_app_{uuid.uuid4().hex[:10]}"
    yield role, f"app-{uuid.uuid4().hex}"
    await drop_database(fresh)  # first: the role's privileges on it would keep the role alive
    conn = await connect(fresh, "postgres")
    try:
        await conn.execute(
            await conn.fetchval("SELECT format('DROP ROLE IF EXISTS %I', $1::text)", role)
        )
    finally:
        await conn.close()


async def create_empty_database(settings: Settings) -> None:
    conn = await connect(settings, "postgres")
    try:
        await conn.execute(
            await conn.fetchval(
                "SELECT format('CREATE DATABASE %I', $1::text)", settings.pgdatabase
            )
        )
    finally:
        await conn.close()


@pytest.fixture
async def node_database(fresh: Settings) -> Settings:
    """A database as the Node service left it: its schema script and rows with its defects."""
    await create_empty_database(fresh)
    conn = await connect(fresh)
    try:
        for script in ("node_schema.sql", "node_rows.sql"):
            await conn.execute((FIXTURES / script).read_text())
    finally:
        await conn.close()
    return fresh


# Creating and migrating


async def test_migrate_creates_a_database_whose_name_needs_quoting_and_reaches_head(
    fresh: Settings,
) -> None:
    result = await job("migrate", fresh)

    assert result.returncode == 0, result.output
    assert f"database {fresh.pgdatabase!r} created" in result.stdout
    assert "Running upgrade  -> 0001_node_schema" in result.stdout
    assert result.stdout.rstrip().endswith("migrate: done")
    assert await schema_versions(fresh) == [head(fresh)]
    tables = await fetch(fresh, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert {row["tablename"] for row in tables} >= {*NODE_TABLES, "outbox", "alembic_version"}
    folded = await fetch(
        fresh, "SELECT FROM pg_database WHERE datname = $1", fresh.pgdatabase.lower()
    )
    assert folded == [], "the name must not be case-folded into another database"


async def test_rerunning_migrate_changes_nothing_and_keeps_the_data(fresh: Settings) -> None:
    assert (await job("migrate", fresh)).returncode == 0
    await fetch(fresh, "INSERT INTO users (name) VALUES ('kept')")

    again = await job("migrate", fresh)

    assert again.returncode == 0, again.output
    assert f"database {fresh.pgdatabase!r} exists" in again.stdout
    assert "Running upgrade" not in again.stdout
    assert await schema_versions(fresh) == [head(fresh)]
    assert [row["name"] for row in await fetch(fresh, "SELECT name FROM users")] == ["kept"]


async def test_two_migrators_started_together_both_succeed_and_migrate_once(
    fresh: Settings,
) -> None:
    first, second = await asyncio.gather(job("migrate", fresh), job("migrate", fresh))

    assert (first.returncode, second.returncode) == (0, 0), first.output + second.output
    both = first.stdout + second.stdout
    assert both.count("Running upgrade  -> 0001_node_schema") == 1, both
    assert both.count(f"database {fresh.pgdatabase!r} created") == 1, both
    assert await schema_versions(fresh) == [head(fresh)]


# Seeding


async def test_seed_creates_the_three_tutorial_users_once(fresh: Settings) -> None:
    assert (await job("migrate", fresh)).returncode == 0

    first = await job("seed", fresh)
    again = await job("seed", fresh)

    assert first.returncode == 0, first.output
    assert "seed: 3 users created, 0 already present" in first.stdout
    assert again.returncode == 0, again.output
    assert "seed: 0 users created, 3 already present" in again.stdout
    users = await fetch(fresh, "SELECT id, name FROM users ORDER BY id")
    assert [(row["id"], row["name"]) for row in users] == list(enumerate(jobs.SEED_USERS, start=1))


async def test_seed_before_migrate_says_to_migrate_first(fresh: Settings) -> None:
    await create_empty_database(fresh)

    result = await job("seed", fresh)

    assert result.returncode == 1
    assert "run `python -m messenger migrate` first" in result.stderr


# Adopting a database the Node service created


async def test_migrate_adopts_a_node_database_keeping_every_row(node_database: Settings) -> None:
    columns = "id, content, user_id, channel_id, inserted_at"
    messages_before = await fetch(node_database, f"SELECT {columns} FROM messages ORDER BY id")
    members_before = await fetch(node_database, "SELECT * FROM users_channels ORDER BY 1, 2")
    users_before = await fetch(node_database, "SELECT id, name, inserted_at FROM users ORDER BY id")

    result = await job("migrate", node_database)

    assert result.returncode == 0, result.output
    assert "adopting the existing Node schema" in result.stdout
    assert (
        "renumbered 4 messages with duplicate indexes in 2 conversations (ids 1, 2),"
        " in order of inserted_at, id"
    ) in result.stdout
    assert "conversations 4 keep their messages but have no member pair" in result.stdout
    assert await schema_versions(node_database) == [head(node_database)]
    assert await fetch(node_database, f"SELECT {columns} FROM messages ORDER BY id") == (
        messages_before
    )
    members_after = await fetch(
        node_database,
        "SELECT channel_id, user_id, last_viewed_index, inserted_at"
        " FROM users_channels ORDER BY 1, 2",
    )
    assert members_after == members_before
    assert await fetch(node_database, "SELECT id, name, inserted_at FROM users ORDER BY id") == (
        users_before
    )
    indexes = await fetch(node_database, "SELECT id, index FROM messages ORDER BY id")
    assert {row["id"]: row["index"] for row in indexes} == {
        # 1 renumbered by (inserted_at, id); 2 tied on time, by id; 3 and 4 as they were
        **{1: 1, 2: 2, 3: 3, 4: 4},
        **{5: 1, 6: 2},
        **{7: 1, 8: 2},
        9: 1,
    }


async def test_after_adopting_sends_continue_and_pairs_are_known(
    node_database: Settings,
) -> None:
    assert (await job("migrate", node_database)).returncode == 0
    async with app_client(node_database) as client:
        await check_sends_and_pairs_after_adoption(client)


async def check_sends_and_pairs_after_adoption(client: httpx.AsyncClient) -> None:
    # The next index of each conversation follows its highest (renumbered) one.
    next_indexes = {
        conversation: (await factories.send(client, conversation, sender))["index"]
        for conversation, sender in ((1, 1), (2, 3), (3, 2), (4, 2), (5, 4))
    }
    assert next_indexes == {1: 5, 2: 3, 3: 3, 4: 2, 5: 1}

    # An existing pair is refused naming its conversation; the duplicate pair names the first.
    for pair, existing in (([2, 1], 1), ([1, 3], 2), ([3, 2], 3), ([4, 2], 5)):
        refused = await client.post("/conversations", json={"participant_ids": pair})
        assert refused.status_code == 400, refused.text
        assert refused.json() == {"error": CONVERSATION_EXISTS.format(id=existing)}
    created = await client.post("/conversations", json={"participant_ids": [1, 4]})
    assert created.status_code == 201, created.text
    assert int(created.json()["conversation"]["id"]) > 5  # refused inserts use up ids


# Least privilege


async def migrate_granting(settings: Settings, app_role: tuple[str, str]) -> tuple[Job, Settings]:
    """Run migrate creating and granting `app_role`; the result, and settings logging in as it."""
    role, password = app_role
    result = await job("migrate", settings, APP_DB_USER=role, APP_DB_PASSWORD=password)
    assert result.returncode == 0, result.output
    return result, settings.model_copy(update={"pguser": role, "pgpassword": SecretStr(password)})


async def test_migrate_creates_the_application_role_with_data_access_only(
    fresh: Settings, app_role: tuple[str, str]
) -> None:
    role, password = app_role
    result, app = await migrate_granting(fresh, app_role)
    assert f"role {role!r} created" in result.stdout
    assert f"role {role!r} granted" in result.stdout
    assert password not in result.output
    assert (await job("seed", fresh)).returncode == 0

    conn = await connect(app)
    try:
        assert await conn.fetchval("SELECT count(*) FROM users") == 3
        await conn.execute("INSERT INTO users (name) VALUES ('Dora Quillfeather')")
        for statement in (
            "CREATE TABLE intruder (id int)",
            "DROP TABLE messages",
            "TRUNCATE users CASCADE",
            "ALTER TABLE users ADD COLUMN email text",
            "UPDATE alembic_version SET version_num = 'x'",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()

    async with app_client(app) as client:
        conversation = await factories.conversation(client, 1, 2)
        assert (await factories.send(client, conversation, 1))["index"] == 1
        listed = await client.get(f"/conversations/{conversation}/messages")
        assert [m["index"] for m in listed.json()["messages"]] == ["1"]
        horizon = await client.post(
            f"/conversations/{conversation}/view_horizon",
            headers={"User-Id": "2"},
            json={"index": 1},
        )
        assert horizon.status_code == 204
        keyed = {"User-Id": "1", "Idempotency-Key": "as-the-app-role"}
        path = f"/conversations/{conversation}/messages"
        sent = await client.post(path, headers=keyed, json={"content": "once"})
        retried = await client.post(path, headers=keyed, json={"content": "once"})
        assert sent.status_code == 201, sent.text
        assert retried.content == sent.content
    conn = await connect(app)
    try:  # the sweep of expired idempotency keys, with a lifetime of a microsecond
        assert await db.sweep_idempotency_keys(conn, 1e-6, 10) == 1
    finally:
        await conn.close()

    again = await job("migrate", fresh, APP_DB_USER=role, APP_DB_PASSWORD=password)
    assert again.returncode == 0, again.output
    assert "created" not in again.stdout
    assert f"role {role!r} granted" in again.stdout


async def test_migrators_started_together_all_grant_the_application_role(
    fresh: Settings, app_role: tuple[str, str]
) -> None:
    role, password = app_role
    results = await asyncio.gather(
        *(job("migrate", fresh, APP_DB_USER=role, APP_DB_PASSWORD=password) for _ in range(3))
    )
    assert [result.returncode for result in results] == [0, 0, 0], [r.output for r in results]
    assert sum(f"role {role!r} created" in result.stdout for result in results) == 1


async def test_migrate_refuses_an_application_role_that_is_the_migrator(fresh: Settings) -> None:
    result = await job("migrate", fresh, APP_DB_USER=fresh.pguser)
    assert result.returncode == 1
    assert "APP_DB_USER must differ from the migrator's PGUSER" in result.stderr


async def test_migrate_needs_a_password_to_create_the_application_role(
    fresh: Settings, app_role: tuple[str, str]
) -> None:
    role, _ = app_role
    result = await job("migrate", fresh, APP_DB_USER=role)
    assert result.returncode == 1
    assert f"role {role!r} does not exist; set APP_DB_PASSWORD to create it" in result.stderr


# Failing clearly


async def test_migrate_with_credentials_postgresql_refuses_says_so(fresh: Settings) -> None:
    stranger = f"no_such_role_{uuid.uuid4().hex[:8]}"
    result = await job(
        "migrate", fresh.model_copy(update={"pguser": stranger, "pgpassword": SecretStr(SECRET)})
    )
    assert result.returncode == 1
    assert (
        f"messenger migrate: failed: PostgreSQL refused the credentials of"
        f" {stranger}@{fresh.pghost}:{fresh.pgport}"
    ) in result.stderr
    assert "(check PGUSER/PGPASSWORD)" in result.stderr
    assert SECRET not in result.output


async def test_migrate_with_a_wrong_password_says_the_credentials_were_refused(
    fresh: Settings,
) -> None:
    wrong = fresh.model_copy(update={"pgpassword": SecretStr(SECRET)})
    try:
        await (await connect(wrong, "postgres")).close()
    except asyncpg.InvalidPasswordError:
        pass
    else:
        pytest.skip("this PostgreSQL trusts local connections: any password is accepted")
    result = await job("migrate", wrong)
    assert result.returncode == 1
    assert "PostgreSQL refused the credentials of" in result.stderr
    assert SECRET not in result.output


async def test_migrate_against_a_closed_port_says_it_cannot_reach_postgresql(
    fresh: Settings,
) -> None:
    port = free_port()
    result = await job("migrate", fresh.model_copy(update={"pgport": port}))
    assert result.returncode == 1
    assert (
        f"messenger migrate: failed: cannot reach PostgreSQL at"
        f" {fresh.pguser}@{fresh.pghost}:{port}"
    ) in result.stderr
    assert "(is it running? check PGHOST/PGPORT)" in result.stderr
    assert "Traceback" not in result.output


async def test_seed_against_a_closed_port_says_it_cannot_reach_postgresql(
    fresh: Settings,
) -> None:
    port = free_port()
    result = await job("seed", fresh.model_copy(update={"pgport": port}))
    assert result.returncode == 1
    assert "messenger seed: failed: cannot reach PostgreSQL at" in result.stderr
    assert "Traceback" not in result.output


# Waiting for the schema (the init container of a serving pod)

WAIT_QUICKLY = {"SCHEMA_WAIT_TIMEOUT": "3", "SCHEMA_WAIT_INTERVAL": "0.2"}


async def migrate_to(
    settings: Settings, revision: str, script_location: Path | None = None
) -> None:
    """Bring `settings`' database to `revision` with alembic, from another script directory
    when given (a newer image's migrations)."""
    config = jobs.alembic_config(settings)
    if script_location is not None:
        config.set_main_option("script_location", str(script_location))
    # env.py runs its own event loop: keep it off this test's loop.
    await asyncio.to_thread(command.upgrade, config, revision)


async def test_wait_for_schema_at_head_exits_0_as_the_application_role(
    fresh: Settings, app_role: tuple[str, str]
) -> None:
    _, app = await migrate_granting(fresh, app_role)

    result = await job("wait-for-schema", app, **WAIT_QUICKLY)

    assert result.returncode == 0, result.output
    assert f"wait-for-schema: the schema is at {head(fresh)}: ready" in result.stdout
    assert "waiting" not in result.stdout
    assert app_role[1] not in result.output


async def test_wait_for_schema_behind_head_waits_then_times_out_naming_both_revisions(
    fresh: Settings,
) -> None:
    await create_empty_database(fresh)
    await migrate_to(fresh, "0002_counters_and_pairs")
    started = asyncio.get_running_loop().time()

    result = await job("wait-for-schema", fresh, **WAIT_QUICKLY)

    assert result.returncode == 1, result.output
    assert asyncio.get_running_loop().time() - started >= 3
    assert (
        f"wait-for-schema: waiting: the schema is at 0002_counters_and_pairs;"
        f" this image needs {head(fresh)}"
    ) in result.stdout
    assert (
        f"messenger wait-for-schema: failed: the schema did not reach {head(fresh)} within 3s"
    ) in result.stderr
    assert "has the migrate job run and succeeded?" in result.stderr
    assert await schema_versions(fresh) == ["0002_counters_and_pairs"]  # it only reads


async def test_wait_for_schema_behind_head_returns_once_the_migrate_job_has_run(
    fresh: Settings,
) -> None:
    await create_empty_database(fresh)
    await migrate_to(fresh, "0001_node_schema")
    async with started(
        "wait-for-schema", fresh, SCHEMA_WAIT_TIMEOUT="60", SCHEMA_WAIT_INTERVAL="0.2"
    ) as waiter:
        assert waiter.stdout is not None
        async with asyncio.timeout(30):
            while b"waiting: the schema is at 0001_node_schema" not in (
                line := await waiter.stdout.readline()
            ):
                assert line, "wait-for-schema ended before it said it was waiting"
        assert waiter.returncode is None

        assert (await job("migrate", fresh)).returncode == 0

        async with asyncio.timeout(30):
            rest, errors = await waiter.communicate()
    assert waiter.returncode == 0, (rest + errors).decode()
    assert f"the schema is at {head(fresh)}: ready" in rest.decode()


async def test_wait_for_schema_ahead_of_head_fails_at_once_without_waiting(
    fresh: Settings, tmp_path: Path
) -> None:
    # A newer image: this image's migrations and one more on top of its head.
    newer = tmp_path / "migrations"
    shutil.copytree(jobs.MIGRATIONS, newer, ignore=shutil.ignore_patterns("__pycache__"))
    (newer / "versions" / "0099_future.py").write_text(
        f'"""A migration only a newer image carries."""\n\n'
        f"from alembic import op\n\n"
        f'revision = "0099_future"\n'
        f'down_revision = "{head(fresh)}"\n'
        f"branch_labels = None\ndepends_on = None\n\n\n"
        f"def upgrade() -> None:\n"
        f'    op.execute("CREATE TABLE future_feature (id bigint PRIMARY KEY)")\n\n\n'
        f"def downgrade() -> None:\n"
        f'    op.execute("DROP TABLE future_feature")\n'
    )
    assert (await job("migrate", fresh)).returncode == 0
    await migrate_to(fresh, "head", script_location=newer)
    assert await schema_versions(fresh) == ["0099_future"]
    started = asyncio.get_running_loop().time()

    result = await job("wait-for-schema", fresh, SCHEMA_WAIT_TIMEOUT="60")

    assert result.returncode == 1, result.output
    assert asyncio.get_running_loop().time() - started < 30  # not the 60 s bound
    assert (
        f"messenger wait-for-schema: failed: the database is at revision 0099_future, which"
        f" this image does not know (it stops at {head(fresh)}): a newer image migrated it"
    ) in result.stderr
    assert "waiting" not in result.stdout


async def test_wait_for_schema_says_why_it_waits_for_a_database_not_yet_created(
    fresh: Settings,
) -> None:
    result = await job("wait-for-schema", fresh, **WAIT_QUICKLY)

    assert result.returncode == 1
    assert f'database "{fresh.pgdatabase}" does not exist' in result.stdout
    assert "the schema did not reach" in result.stderr
    assert "Traceback" not in result.output


async def test_wait_for_schema_says_why_it_waits_for_an_empty_schema(fresh: Settings) -> None:
    await create_empty_database(fresh)

    result = await job("wait-for-schema", fresh, **WAIT_QUICKLY)

    assert result.returncode == 1
    assert "waiting: the schema is empty: no migration has run yet" in result.stdout


async def test_wait_for_schema_against_a_closed_port_says_it_cannot_reach_postgresql(
    fresh: Settings,
) -> None:
    port = free_port()
    result = await job("wait-for-schema", fresh.model_copy(update={"pgport": port}), **WAIT_QUICKLY)

    assert result.returncode == 1
    assert f"cannot reach PostgreSQL at {fresh.pguser}@{fresh.pghost}:{port}" in result.stdout
    assert "Traceback" not in result.output


# A plain install migrates (issue 16) ------------------------------------------------------


async def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> Job:
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(420):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return Job(process.returncode, stdout.decode(), stderr.decode())


@pytest.mark.timeout(600)
async def test_the_wheel_installed_into_a_fresh_venv_migrates_a_fresh_database(
    fresh: Settings, tmp_path: Path
) -> None:
    """The wheel carries its migrations: nothing of the source tree is on the path."""
    # Built from a copy: setuptools leaves build/ behind in the tree it builds.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT / "messenger", source / "messenger", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = await run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", "wheels", source, cwd=tmp_path
    )
    assert built.returncode == 0, built.output
    [wheel] = (tmp_path / "wheels").glob("messenger-*.whl")
    assert (await run(sys.executable, "-m", "venv", "venv", cwd=tmp_path)).returncode == 0
    venv = tmp_path / "venv" / "bin"
    installed = await run(
        venv / "python", "-m", "pip", "install", "--disable-pip-version-check", wheel, cwd=tmp_path
    )
    assert installed.returncode == 0, installed.output

    env = service_env(fresh, LOG_LEVEL="info")
    migrated = await run(venv / "python", "-m", "messenger", "migrate", cwd=tmp_path, env=env)

    assert migrated.returncode == 0, migrated.output
    assert (
        "site-packages/messenger"
        in (
            await run(
                venv / "python", "-c", "import messenger; print(messenger.__file__)", cwd=tmp_path
            )
        ).stdout
    )
    assert await schema_versions(fresh) == [head(fresh)]


async def test_migrate_without_its_migrations_fails_before_creating_the_database(
    fresh: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "MIGRATIONS", tmp_path / "missing")

    with pytest.raises(jobs.JobFailed, match="no migrations"):
        jobs.run_migrate(fresh)

    conn = await connect(fresh, "postgres")
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", fresh.pgdatabase
        )
    finally:
        await conn.close()
    assert found == 0
