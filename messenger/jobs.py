"""One-off jobs: create the database, migrate it, grant the serving role, seed; wait for the schema.

The migrator's jobs run with elevated credentials (`PGUSER` may create databases and roles);
serving instances connect as `APP_DB_USER`, which gets data access and nothing else, and wait
with it until the schema is the one their image carries.
"""

import asyncio
import logging
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError

from messenger.db import DATABASE_ERRORS, UNAVAILABLE_ERRORS, connect_kwargs
from messenger.settings import Settings

logger = logging.getLogger("messenger.jobs")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"  # package data: in every install
MAINTENANCE_DATABASE = "postgres"
SEED_LOCK = 0x73656564  # "seed"
GRANT_LOCK = 0x6772616E  # "gran"
INSERT_MISSING_USERS = """
INSERT INTO users (name)
SELECT name FROM unnest($1::text[]) WITH ORDINALITY AS seed(name, position)
WHERE NOT EXISTS (SELECT FROM users WHERE users.name = seed.name)
ORDER BY position
RETURNING id, name
"""
PROGRESS_EVERY = 10.0  # seconds between two progress lines of wait-for-schema saying the same
SEED_USERS = ("James Blanderphone", "Normalavian Ropetoter", "Flambaravo Chortleblatt")


class JobFailed(Exception):
    """A job could not do its work; the text says what to do about it."""


def _describe(error: BaseException, settings: Settings) -> str:
    where = f"{settings.pguser}@{settings.pghost}:{settings.pgport}"
    if isinstance(
        error, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return f"PostgreSQL refused the credentials of {where}: {error} (check PGUSER/PGPASSWORD)"
    if isinstance(error, asyncpg.InsufficientPrivilegeError):
        return f"{where} lacks a privilege the job needs: {error} (run it with the migrator user)"
    if isinstance(error, UNAVAILABLE_ERRORS):
        return f"cannot reach PostgreSQL at {where}: {error} (is it running? check PGHOST/PGPORT)"
    return f"{error.__class__.__name__}: {error}"


async def _connect(settings: Settings, database: str | None = None) -> asyncpg.Connection:
    return await asyncpg.connect(**connect_kwargs(settings, database=database), timeout=10)


async def ensure_database(settings: Settings) -> None:
    """Create `PGDATABASE` from the maintenance database when it does not exist yet."""
    name = settings.pgdatabase
    try:
        conn = await _connect(settings)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        print(f"database {name!r} exists")
        return
    conn = await _connect(settings, MAINTENANCE_DATABASE)
    try:
        statement = await conn.fetchval("SELECT format('CREATE DATABASE %I', $1::text)", name)
        try:
            await conn.execute(statement)
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            # A job creating it at the same moment makes PostgreSQL fail the catalog insert
            # (unique violation on pg_database) instead of reporting a duplicate database.
            print(f"database {name!r} was created by a concurrent job")
        else:
            print(f"database {name!r} created")
    finally:
        await conn.close()


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["settings"] = settings
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Bring the schema to `revision`; env.py holds an advisory lock so migrators take turns."""
    command.upgrade(alembic_config(settings), revision)


async def grant_application_role(settings: Settings) -> None:
    """Create the serving role if asked and give it data access only: no DDL, no TRUNCATE."""
    role = settings.app_db_user
    if role is None:
        print("APP_DB_USER not set: no application role granted")
        return
    if role == settings.pguser:
        raise JobFailed("APP_DB_USER must differ from the migrator's PGUSER")
    conn = await _connect(settings)
    try:
        # Migrators started together take turns here: concurrent GRANTs on one object fail
        # with "tuple concurrently updated". The lock goes with the connection.
        await conn.execute("SELECT pg_advisory_lock($1)", GRANT_LOCK)
        exists = await conn.fetchval(
            "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", role
        )
        if not exists:
            if settings.app_db_password is None:
                raise JobFailed(f"role {role!r} does not exist; set APP_DB_PASSWORD to create it")
            password = settings.app_db_password.get_secret_value()
            statement = await conn.fetchval(
                "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)",
                role,
                password,
            )
            try:
                await conn.execute(statement)
                print(f"role {role!r} created")
            except (asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
                print(f"role {role!r} was created by a concurrent job")
        statements = [
            "GRANT CONNECT ON DATABASE %I TO %I",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            "GRANT USAGE ON SCHEMA public TO %2$I",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %2$I",
            "REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM %2$I",
            "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO %2$I",
        ]
        async with conn.transaction():
            for template in statements:
                statement = await conn.fetchval(
                    "SELECT format($1::text, $2::text, $3::text)",
                    template,
                    settings.pgdatabase,
                    role,
                )
                await conn.execute(statement)
        print(f"role {role!r} granted SELECT, INSERT, UPDATE, DELETE and sequence usage")
    finally:
        await conn.close()


async def seed(settings: Settings) -> None:
    """Insert the tutorial's three users unless a user of that name exists."""
    conn = await _connect(settings)
    try:
        async with conn.transaction():
            # Concurrent seeds take turns, so none inserts a user another is inserting.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SEED_LOCK)
            names = await conn.fetch(INSERT_MISSING_USERS, list(SEED_USERS))
    finally:
        await conn.close()
    for row in names:
        print(f"user {row['id']} {row['name']!r} created")
    print(f"seed: {len(names)} users created, {len(SEED_USERS) - len(names)} already present")


async def schema_revision(settings: Settings) -> str | None:
    """The alembic revision the database is at; None before the first migration."""
    conn = await _connect(settings)
    try:
        revision: str | None = await conn.fetchval("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()
    return revision


def image_revisions(settings: Settings) -> tuple[str, frozenset[str]]:
    """The head revision this image's migrations reach, and every revision they know.

    Raises JobFailed when this installation carries no migrations.
    """
    missing = JobFailed(
        f"this installation carries no migrations at {MIGRATIONS}: the messenger package"
        " ships them in messenger/migrations/; reinstall it (pip install ., or the image)"
    )
    try:
        scripts = ScriptDirectory.from_config(alembic_config(settings))
        head = scripts.get_current_head()
    except CommandError as error:
        raise missing from error
    if head is None:
        raise missing
    return head, frozenset(script.revision for script in scripts.walk_revisions())


async def schema_behind(settings: Settings, head: str, known: frozenset[str]) -> str | None:
    """None when the database is at `head`; else why it is not (yet).

    Raises JobFailed when the database is at a revision this image does not know: a newer
    image migrated it, and waiting cannot help.
    """
    try:
        conn = await _connect(settings)
    except DATABASE_ERRORS as error:
        # Also a role or database the migrate job has not created yet.
        return _describe(error, settings)
    try:
        rows = await conn.fetch("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        return "the schema is empty: no migration has run yet"
    except asyncpg.InsufficientPrivilegeError:
        return f"{settings.pguser} may not read alembic_version yet (the migrate job grants it)"
    finally:
        await conn.close()
    revisions = sorted(row["version_num"] for row in rows)
    if revisions == [head]:
        return None
    if unknown := [revision for revision in revisions if revision not in known]:
        raise JobFailed(
            f"the database is at revision {', '.join(unknown)}, which this image does not know"
            f" (it stops at {head}): a newer image migrated it; deploy that image or a later one"
        )
    return f"the schema is at {', '.join(revisions) or 'no revision'}; this image needs {head}"


async def wait_for_schema(settings: Settings) -> None:
    """Return once the database is at this image's head revision, within SCHEMA_WAIT_TIMEOUT."""
    head, known = image_revisions(settings)
    timeout = settings.schema_wait_timeout
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    said, said_at = "", 0.0
    while True:
        remaining = deadline - loop.time()
        try:
            async with asyncio.timeout(max(remaining, 0.1)):
                reason = await schema_behind(settings, head, known)
        except TimeoutError:
            reason = f"PostgreSQL at {settings.pghost}:{settings.pgport} did not answer in time"
        if reason is None:
            print(f"wait-for-schema: the schema is at {head}: ready")
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise JobFailed(
                f"the schema did not reach {head} within {timeout:g}s: {reason}"
                " (has the migrate job run and succeeded? see its logs)"
            )
        # Progress: each new reason at once, the same one again every PROGRESS_EVERY seconds.
        if reason != said or loop.time() - said_at >= PROGRESS_EVERY:
            print(f"wait-for-schema: waiting: {reason} ({remaining:.0f}s left)", flush=True)
            said, said_at = reason, loop.time()
        await asyncio.sleep(min(settings.schema_wait_interval, remaining))


def run_wait_for_schema(settings: Settings) -> None:
    asyncio.run(wait_for_schema(settings))


def run_migrate(settings: Settings) -> None:
    image_revisions(settings)  # before anything is created: fail first without migrations
    try:
        asyncio.run(ensure_database(settings))
        before = asyncio.run(schema_revision(settings))
        upgrade(settings)
        after = asyncio.run(schema_revision(settings))
        if before == after:
            print(f"schema already at {after}: nothing to migrate")
        else:
            print(f"schema migrated from {before or 'empty'} to {after}")
        asyncio.run(grant_application_role(settings))
    except DBAPIError as error:
        # SQLAlchemy wraps the driver's exception; report the driver's words.
        cause = error.orig.__cause__ if error.orig is not None else None
        logger.debug("migration failed", exc_info=True)
        raise JobFailed(_describe(cause or error.orig or error, settings)) from error
    except DATABASE_ERRORS as error:
        raise JobFailed(_describe(error, settings)) from error
    print("migrate: done")


def run_seed(settings: Settings) -> None:
    try:
        asyncio.run(seed(settings))
    except asyncpg.UndefinedTableError as error:
        raise JobFailed("the schema is missing: run `python -m messenger migrate` first") from error
    except DATABASE_ERRORS as error:
        raise JobFailed(_describe(error, settings)) from error
