"""Bounded waits on the request path: pool, row lock and statement timeouts answer 503."""

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest

from messenger import db, jobs
from messenger.db import batches
from messenger.errors import DATABASE_BUSY, DATABASE_UNAVAILABLE, Unavailable
from messenger.settings import Settings
from tests import factories
from tests.conftest import app_client, base_settings
from tests.private_postgres import private_postgres
from tests.processes import serve, service_env


@contextlib.asynccontextmanager
async def locked(pool: asyncpg.Pool, conversation: str) -> AsyncIterator[None]:
    """Hold the conversation's counter row from outside, as another transaction would."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM channels WHERE id = $1 FOR UPDATE", int(conversation))
        yield


async def lock_waiters(pool: asyncpg.Pool, database: str) -> int:
    value: int = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = $1 AND wait_event_type = 'Lock' AND application_name = 'messenger'",
        database,
    )
    return value


async def wait_for_lock_waiters(pool: asyncpg.Pool, database: str, count: int) -> None:
    async with asyncio.timeout(10):
        while await lock_waiters(pool, database) < count:
            await asyncio.sleep(0.02)


async def send(client: httpx.AsyncClient, conversation: str, user_id: int) -> httpx.Response:
    return await client.post(
        f"/conversations/{conversation}/messages",
        headers={"User-Id": str(user_id)},
        json={"content": "hello"},
    )


async def timed(request: asyncio.Future[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


def assert_busy(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {"error": DATABASE_BUSY}
    assert response.headers["retry-after"] == "1"


async def test_pool_connections_carry_the_lock_and_statement_timeouts(settings: Settings) -> None:
    configured = settings.model_copy(
        update={"pg_lock_timeout": 0.25, "pg_statement_timeout": 1.5, "pg_pool_max": 2}
    )
    pool = await db.create_pool(configured)
    try:
        # Set at connect time for every connection, so nothing is SET per request and the
        # pool's release without a reset statement cannot carry one request's state to another.
        for _ in range(4):
            assert await pool.fetchval("SHOW lock_timeout") == "250ms"
            assert await pool.fetchval("SHOW statement_timeout") == "1500ms"
    finally:
        await pool.close()


async def test_a_locked_conversation_stalls_only_its_own_senders(
    settings: Settings, pool: asyncpg.Pool, clean: None
) -> None:
    lock_timeout = 3.0
    small = settings.model_copy(
        update={"pg_pool_max": 8, "pg_lock_timeout": lock_timeout, "pg_acquire_timeout": 4.0}
    )
    async with app_client(small) as client:
        a, b, c, d = await factories.users(pool, "Ada", "Grace", "Alan", "Edsger")
        stuck = await factories.conversation(client, a, b)
        other = await factories.conversation(client, c, d)
        await factories.send(client, other, c)

        async with locked(pool, stuck):
            stuck_sends = [asyncio.ensure_future(send(client, stuck, a)) for _ in range(8)]
            # Two statements wait on the lock, the other six stuck senders in their line.
            await wait_for_lock_waiters(pool, small.pgdatabase, batches.IN_FLIGHT)
            others = [
                *(client.get(f"/conversations/{other}/messages") for _ in range(10)),
                *(send(client, other, d) for _ in range(6)),
                client.get("/conversations", headers={"User-Id": str(c)}),
            ]
            answered = await asyncio.gather(*(timed(asyncio.ensure_future(r)) for r in others))
            stuck_answers = await asyncio.gather(*stuck_sends)

        assert [response.status_code for response, _ in answered] == [200] * 10 + [201] * 6 + [200]
        # They did not wait for the stuck senders' lock timeout.
        assert max(seconds for _, seconds in answered) < lock_timeout
        for response in stuck_answers:
            assert_busy(response)
        # Nothing of the refused sends was stored: the next message is the first.
        assert (await factories.send(client, stuck, a))["index"] == 1


async def test_requests_get_503_after_the_acquire_timeout_when_every_connection_is_held(
    settings: Settings, pool: asyncpg.Pool, clean: None
) -> None:
    tiny = settings.model_copy(
        update={"pg_pool_max": 2, "pg_acquire_timeout": 0.5, "pg_lock_timeout": 10.0}
    )
    async with app_client(tiny) as client:
        a, b, c, d = await factories.users(pool, "Ada", "Grace", "Alan", "Edsger")
        first = await factories.conversation(client, a, b)
        second = await factories.conversation(client, c, d)

        async with locked(pool, first), locked(pool, second):
            holders = [
                asyncio.ensure_future(send(client, first, a)),
                asyncio.ensure_future(send(client, second, c)),
            ]
            await wait_for_lock_waiters(pool, tiny.pgdatabase, 2)  # both connections held
            read = asyncio.ensure_future(client.get(f"/conversations/{first}/messages"))
            await asyncio.sleep(0.1)
            # Readiness has its own connection: a busy pool is not a database that is down.
            ready = await client.get("/health/ready")
            assert ready.status_code == 200
            assert ready.json()["database"] is True
            assert ready.json()["pool"]["busy"] is True
            assert ready.json()["pool"]["waiting"] >= 1
            assert_busy(await read)
        assert [response.status_code for response in await asyncio.gather(*holders)] == [201, 201]
        assert (await client.get("/health/ready")).json()["pool"]["busy"] is False
        metrics = (await client.get("/metrics")).text
        assert "messenger_db_pool_timeouts_total 1.0" in metrics


async def test_a_statement_over_the_statement_timeout_is_a_503(
    settings: Settings, pool: asyncpg.Pool, clean: None
) -> None:
    short = settings.model_copy(update={"pg_statement_timeout": 0.3, "pg_lock_timeout": 10.0})
    async with app_client(short) as client:
        a, b = await factories.users(pool, "Ada", "Grace")
        conversation = await factories.conversation(client, a, b)
        async with locked(pool, conversation):
            assert_busy(await send(client, conversation, a))
        assert (await factories.send(client, conversation, a))["index"] == 1


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        ConnectionRefusedError(111, "Connection refused"),
    ],
)
async def test_a_connection_broken_by_a_restart_is_database_unavailable(
    error: BaseException,
) -> None:
    with pytest.raises(Unavailable) as raised:
        async with db.unavailable_as_503():
            raise error
    assert raised.value.text == DATABASE_UNAVAILABLE


async def test_a_client_error_of_postgresql_is_not_turned_into_a_503() -> None:
    with pytest.raises(asyncpg.exceptions.CharacterNotInRepertoireError):
        async with db.unavailable_as_503():
            raise asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence")


async def test_a_release_with_nothing_to_wait_for_returns_the_connection_in_place(
    settings: Settings,
) -> None:
    pool = await db.create_pool(settings.model_copy(update={"pg_pool_max": 1}))
    try:
        async with pool.acquire() as conn:
            first = await conn.fetchval("SELECT pg_backend_pid()")
        # Given back before `async with` ended: no task of its own to wait for.
        assert pool.get_idle_size() == 1
        assert await pool.fetchval("SELECT pg_backend_pid()") == first
    finally:
        await pool.close()


async def test_a_connection_released_inside_a_transaction_is_rolled_back(
    settings: Settings,
) -> None:
    pool = await db.create_pool(settings.model_copy(update={"pg_pool_max": 1}))
    try:
        transaction = None
        async with pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute("CREATE TEMPORARY TABLE left_open (id int)")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            exists = "SELECT to_regclass('pg_temp.left_open') IS NOT NULL"
            assert await conn.fetchval(exists) is False
    finally:
        await pool.close()


async def test_a_request_cancelled_after_its_statement_still_returns_its_connection(
    settings: Settings,
) -> None:
    pool = await db.create_pool(settings.model_copy(update={"pg_pool_max": 1}))
    try:
        answered = asyncio.Event()

        async def request() -> None:
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
                answered.set()
                await asyncio.sleep(10)

        task = asyncio.ensure_future(request())
        await answered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(2):
            assert await pool.fetchval("SELECT 2") == 2
    finally:
        await pool.close()


async def test_a_connection_killed_mid_statement_is_replaced_not_reused(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    single = await db.create_pool(settings.model_copy(update={"pg_pool_max": 1}))
    try:
        killed = await single.fetchval("SELECT pg_backend_pid()")
        sleeping = asyncio.ensure_future(single.fetchval("SELECT pg_sleep(5)"))
        async with asyncio.timeout(5):
            while not await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", killed
            ):
                await asyncio.sleep(0.02)
        await pool.execute("SELECT pg_terminate_backend($1)", killed)
        with pytest.raises(db.DATABASE_ERRORS):
            await sleeping
        assert await single.fetchval("SELECT pg_backend_pid()") != killed
    finally:
        await single.close()


@dataclass
class SendLoad:
    """Senders that post into conversations until told to stop, recording every answer."""

    url: str
    conversations: list[tuple[str, int]]  # (conversation id, a member's user id)
    answers: list[tuple[float, int, str | None]] = field(default_factory=list)  # time, status, id
    failures: list[str] = field(default_factory=list)  # no HTTP answer at all
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def sender(self, client: httpx.AsyncClient, number: int) -> None:
        conversation, user_id = self.conversations[number % len(self.conversations)]
        while not self.stop.is_set():
            try:
                response = await send(client, conversation, user_id)
            except httpx.HTTPError as error:
                self.failures.append(repr(error))
                continue
            message_id = None
            if response.status_code == 201:
                message_id = response.json()["message"]["id"]
            elif response.status_code == 503:
                assert response.headers["retry-after"] == "1"
                assert response.json()["error"] in {DATABASE_UNAVAILABLE, DATABASE_BUSY}
            self.answers.append((time.monotonic(), response.status_code, message_id))

    async def run(self, senders: int) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=15) as client:
            await asyncio.gather(*(self.sender(client, number) for number in range(senders)))


async def test_postgresql_restarts_under_load_give_only_201_and_503_and_lose_nothing() -> None:
    with private_postgres() as cluster:
        settings = base_settings(pgport=cluster.port, pgdatabase="messenger_restart")
        await asyncio.to_thread(jobs.run_migrate, settings)
        conn = await asyncpg.connect(**db.connect_kwargs(settings))
        try:
            users = [
                await conn.fetchval("INSERT INTO users (name) VALUES ($1) RETURNING id", name)
                for name in ("Ada", "Grace", "Alan", "Edsger")
            ]
        finally:
            await conn.close()

        with serve(service_env(settings)) as service:
            async with httpx.AsyncClient(base_url=service.url) as client:
                conversations = [
                    (await factories.conversation(client, users[0], users[1]), users[0]),
                    (await factories.conversation(client, users[2], users[3]), users[2]),
                ]
            load = SendLoad(service.url, conversations)
            running = asyncio.ensure_future(load.run(senders=16))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(cluster.restart, "fast")
            await asyncio.sleep(1.5)
            await asyncio.to_thread(cluster.restart, "immediate")
            restarted = time.monotonic()
            await asyncio.sleep(2.0)
            load.stop.set()
            await running

        statuses = Counter(status for _, status, _ in load.answers)
        assert load.failures == []
        assert set(statuses) <= {201, 503}, statuses
        assert any(at > restarted and status == 201 for at, status, _ in load.answers)
        acknowledged = [message_id for _, _, message_id in load.answers if message_id]
        conn = await asyncpg.connect(**db.connect_kwargs(settings))
        try:
            stored = await conn.fetchval(
                "SELECT count(*) FROM messages WHERE id = ANY($1::bigint[])",
                [int(message_id) for message_id in acknowledged],
            )
        finally:
            await conn.close()
        assert stored == len(acknowledged) > 0
