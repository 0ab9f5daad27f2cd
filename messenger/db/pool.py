"""The PostgreSQL connection pool and its bounded waits, and the errors that mean "not now".

Every wait for PostgreSQL is bounded: a pool connection within PG_ACQUIRE_TIMEOUT, a lock
within PG_LOCK_TIMEOUT, a statement within PG_STATEMENT_TIMEOUT. A check connection of its own
answers readiness and metrics without queueing behind requests.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy

from messenger.errors import DATABASE_BUSY, DATABASE_UNAVAILABLE, Unavailable
from messenger.gate import Gate
from messenger.settings import Settings

logger = logging.getLogger("messenger.db")

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Executor = Connection | asyncpg.Pool


class PoolBusy(TimeoutError):
    """No pool connection came free within PG_ACQUIRE_TIMEOUT."""


# Errors that mean "PostgreSQL is not there right now", as opposed to a bug in a statement.
# InternalClientError is asyncpg losing track of a connection that broke mid-operation, as
# during a restart (asyncpg issue #1069: "cannot switch to state 12; another operation (2) is
# in progress").
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)
# Errors that mean "PostgreSQL is there but a wait ran out": no pool connection in time,
# PG_LOCK_TIMEOUT waiting for a row another transaction holds, PG_STATEMENT_TIMEOUT.
BUSY_ERRORS: tuple[type[BaseException], ...] = (
    PoolBusy,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.QueryCanceledError,
)
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    *UNAVAILABLE_ERRORS,
    *BUSY_ERRORS,
    asyncpg.PostgresError,
)
# After these the connection cannot be trusted with another statement: close it rather than
# hand it to the next request.
BROKEN_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)


def connect_kwargs(
    settings: Settings, *, database: str | None = None, application_name: str = "messenger"
) -> dict[str, Any]:
    password = settings.pgpassword.get_secret_value() if settings.pgpassword else None
    return {
        "host": settings.pghost,
        "port": settings.pgport,
        "user": settings.pguser,
        "password": password,
        "database": database or settings.pgdatabase,
        "server_settings": {"application_name": application_name, "timezone": "UTC"},
    }


async def keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection to the pool without asyncpg's reset statement.

    That statement (RESET ALL, UNLISTEN *, CLOSE ALL, unlocking advisory locks) costs a round
    trip per request, and serving never changes session state: no SET, LISTEN, cursors or
    session-level advisory locks. asyncpg still rolls back a transaction left open.
    """


def _milliseconds(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


class Pool(asyncpg.Pool):
    """asyncpg's pool with every wait bounded.

    `acquire()` waits its turn at a first-come-first-served gate (none for a pool nobody
    queues for), then for a connection, PG_ACQUIRE_TIMEOUT seconds in all, connecting
    included; after that it raises PoolBusy. A connection that broke during the block is
    closed instead of going back to the pool.

    A conversation's sends hold at most two connections at a time (db.batches), so one whose
    counter row is locked (or just very busy) never takes every connection from the others.
    """

    def __init__(self, *, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = Gate(self.get_max_size())  # first come, first served
        self.acquire_timeout = acquire_timeout
        self.busy_count = 0  # acquires that ran out of time, for /metrics
        self.send_lines: dict[int, Any] = {}  # conversations gathering sends (db.batches)

    def ran_out(self) -> PoolBusy:
        """Count a wait for a connection that ran out of time, and the error that says so."""
        self.busy_count += 1
        return PoolBusy(f"no database connection within {self.acquire_timeout:g}s")

    def acquire(self, *, timeout: float | None = None) -> "_AcquireContext":
        timeout = self.acquire_timeout if timeout is None else timeout
        return _BoundedAcquire(self, timeout)

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:  # noqa: ASYNC109  # asyncpg's signature
        """Give a connection back in place when nothing about it can make the release wait.

        asyncpg runs every release in a task of its own under `asyncio.shield`, so that a
        cancelled request still returns its connection: a task, a shield and two turns of the
        event loop per request, for a release that, without a transaction to roll back, a
        cancellation in flight, or a connection to close, never waits (keep_session resets
        nothing), so no cancellation can stop it halfway. Anything else goes asyncpg's way.
        `timeout` bounds nothing on this path: nothing waits.
        """
        con: Any = getattr(connection, "_con", None)
        holder: Any = getattr(connection, "_holder", None)
        if (
            con is None
            or holder is None
            or holder._pool is not self
            or holder._in_use is None
            or con.is_closed()
            or con._top_xact is not None
            or con._protocol.is_in_transaction()
            or con._protocol._is_cancelling()
            or con._protocol.queries_count >= holder._max_queries
            or holder._generation != self._generation
        ):
            await super().release(connection, timeout=timeout)
            return
        # What holder.release does on this path, without its timeout scope and reset calls:
        # with no transaction, listener or session state (keep_session), they do nothing.
        con._on_release()
        con._listeners.clear()
        con._log_listeners.clear()
        holder._timeout = None
        holder._release()
        holder._setup_inactive_callback()


if TYPE_CHECKING:
    _AcquireContext = PoolAcquireContext[asyncpg.Record]
else:  # not subscriptable at run time
    _AcquireContext = PoolAcquireContext


class _BoundedAcquire(_AcquireContext):
    __slots__ = ("in_line",)

    def __init__(self, pool: Pool, timeout: float) -> None:
        super().__init__(pool, timeout)
        self.in_line = False  # holds a place at the pool's gate

    async def __aenter__(self) -> "PoolConnectionProxy[asyncpg.Record]":
        pool = self.pool
        assert isinstance(pool, Pool)
        try:
            async with asyncio.timeout(self.timeout):
                self.timeout = None  # the whole wait is bounded here, the gate included
                await pool.gate.enter()
                self.in_line = True
                return await super().__aenter__()
        except BaseException as error:
            self._leave_gate()
            if isinstance(error, TimeoutError):
                raise pool.ran_out() from None
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        exc = exc_info[1] if len(exc_info) > 1 else None
        try:
            if isinstance(exc, BROKEN_CONNECTION_ERRORS) and self.connection is not None:
                self.connection.terminate()
            try:
                await super().__aexit__(*exc_info)
            except DATABASE_ERRORS as error:
                if exc is not None:
                    raise
                # The block's work is done (a statement answered, a transaction committed):
                # the client gets its answer; asyncpg has already closed the connection.
                logger.warning("releasing a database connection failed: %r", error)
        finally:
            self._leave_gate()

    def _leave_gate(self) -> None:
        if self.in_line:
            self.in_line = False
            pool = self.pool
            assert isinstance(pool, Pool)
            pool.gate.leave()

    def __await__(self) -> Generator[Any, None, "PoolConnectionProxy[asyncpg.Record]"]:
        # A bare `await pool.acquire()` could not give its place in line back on release.
        raise TypeError("use `async with pool.acquire() as conn`")


def pool_server_settings(settings: Settings) -> dict[str, str]:
    """Session settings of every pool connection, fixed at connect time.

    They are sent in the startup packet, never with SET, so no request changes session state
    and connections can go back to the pool without a reset statement (see keep_session).
    """
    return {
        "lock_timeout": _milliseconds(settings.pg_lock_timeout),
        "statement_timeout": _milliseconds(settings.pg_statement_timeout),
    }


async def create_pool(settings: Settings) -> Pool:
    """The request pool: it starts empty, so the service comes up even while PostgreSQL does
    not, and requests queue for its connections first come, first served."""
    kwargs = connect_kwargs(settings)
    kwargs["server_settings"] = {**kwargs["server_settings"], **pool_server_settings(settings)}
    pool = Pool(
        **kwargs,
        acquire_timeout=settings.pg_acquire_timeout,
        reset=keep_session,
        min_size=0,
        max_size=settings.pg_pool_max,
        max_queries=50_000,
        command_timeout=settings.pg_command_timeout,
        max_inactive_connection_lifetime=300,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
    )
    return await pool


T = TypeVar("T")


class CheckConnection:
    """A connection of its own, outside the request pool, for readiness and metrics.

    A check must tell "PostgreSQL is down" from "the pool is busy", so it never queues behind
    requests. One connection is kept and reused; one that fails or times out is closed, and
    the next check connects again, within the same short timeout.
    """

    def __init__(self, settings: Settings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    async def run(self, check: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with asyncio.timeout(self.timeout), self._lock:
            try:
                if self._conn is None or self._conn.is_closed():
                    kwargs = connect_kwargs(self.settings)
                    kwargs["server_settings"] = {
                        **kwargs["server_settings"],
                        "application_name": "messenger-check",
                        "statement_timeout": _milliseconds(self.timeout),
                    }
                    self._conn = await asyncpg.connect(**kwargs)
                return await check(self._conn)
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None


async def check_reachable(pool: asyncpg.Pool, settings: Settings) -> bool:
    """Log once at start whether PostgreSQL answers; the service serves 503s until it does."""
    try:
        await pool.fetchval("SELECT 1", timeout=5)
    except DATABASE_ERRORS as error:
        logger.warning(
            "PostgreSQL at %s:%s is not reachable yet (%s); requests get 503 until it is",
            settings.pghost,
            settings.pgport,
            error.__class__.__name__,
        )
        return False
    return True


class unavailable_as_503:  # used as `async with db.unavailable_as_503():`
    """Turn "cannot reach PostgreSQL" and "a wait ran out" into the 503 a client gets.

    Other PostgreSQL errors stay what they are: a statement a client's input broke is a bug
    to fix with a 4xx check, not a reason to tell the client to retry. (A class, not an
    asynccontextmanager: every request passes through it, and a generator costs more.)
    """

    __slots__ = ()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> None:  # never swallows an error
        if isinstance(error, BUSY_ERRORS):
            raise Unavailable(DATABASE_BUSY) from error
        if isinstance(error, UNAVAILABLE_ERRORS):
            raise Unavailable(DATABASE_UNAVAILABLE) from error
