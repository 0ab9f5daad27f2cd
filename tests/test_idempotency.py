"""Idempotent sends: the Idempotency-Key header, retries, races, expiry and the sweep.

Real PostgreSQL and RabbitMQ; events are read from a queue of each test's own.
"""

import asyncio
import contextlib
import re
import signal
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from messenger import db
from messenger.db import batches
from messenger.errors import (
    IDEMPOTENCY_KEY_INVALID,
    IDEMPOTENCY_KEY_REPEATED,
    IDEMPOTENCY_KEY_REUSED,
)
from messenger.idempotency import key_sweeper
from messenger.settings import Settings
from tests import factories, test_events
from tests.conftest import TABLES, app_client
from tests.processes import serve, service_env

queue = test_events.queue  # a RabbitMQ queue of the test's own
settings = test_events.settings  # the app with its relay publishing to that queue
take = test_events.take
eventually_empty = test_events.eventually_empty

DAY = 24 * 3600.0
TIMESTAMP = re.compile(rb'"inserted_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z"')


async def post(
    client: httpx.AsyncClient,
    conversation: str,
    user_id: int,
    content: str = "hello",
    key: str | bytes | None = None,
) -> httpx.Response:
    headers: list[tuple[str, str | bytes]] = [("User-Id", str(user_id))]
    if key is not None:
        headers.append(("Idempotency-Key", key))
    return await client.post(
        f"/conversations/{conversation}/messages", headers=headers, json={"content": content}
    )


async def stored(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM messages"))


async def published(pool: asyncpg.Pool, queue: str, expected: int) -> int:
    """How many events reached `queue` once the outbox is empty: `expected` and any extra."""
    assert await eventually_empty(pool)
    return len(await take(queue, expected + 1, within=1.5))


@pytest.fixture
async def pair(client: httpx.AsyncClient, pool: asyncpg.Pool) -> tuple[str, int, int]:
    """A conversation of Alice and Bob: (its id, Alice's id, Bob's id)."""
    alice, bob = await factories.users(pool, "Alice", "Bob")
    return await factories.conversation(client, alice, bob), alice, bob


# The header ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        b"",
        b"x" * 256,
        b"two words",
        b"tab\there",
        b"bell\x07",
        b"caf\xc3\xa9",  # UTF-8 for non-ASCII
        b"latin\xe9",
    ],
    ids=["empty", "256 chars", "space", "tab", "control", "utf-8", "latin-1"],
)
async def test_a_malformed_key_is_a_400_naming_the_header_and_stores_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool, pair: tuple[str, int, int], key: bytes
) -> None:
    conversation, alice, _ = pair

    response = await post(client, conversation, alice, key=key)

    assert response.status_code == 400
    assert response.json() == {"error": IDEMPOTENCY_KEY_INVALID}
    assert "Idempotency-Key" in IDEMPOTENCY_KEY_INVALID
    assert await stored(pool) == 0


async def test_the_longest_and_oddest_visible_keys_are_accepted(
    client: httpx.AsyncClient, pair: tuple[str, int, int]
) -> None:
    conversation, alice, _ = pair
    for key in ("k" * 255, "!", "~\"'{}[]\\,;=", '"quoted"'):
        response = await post(client, conversation, alice, key=key)
        assert response.status_code == 201, (key, response.text)


async def test_a_key_given_twice_with_different_values_is_a_400(
    client: httpx.AsyncClient, pool: asyncpg.Pool, pair: tuple[str, int, int]
) -> None:
    conversation, alice, _ = pair
    headers = [("User-Id", str(alice)), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")]

    response = await client.post(
        f"/conversations/{conversation}/messages", headers=headers, json={"content": "x"}
    )

    assert response.status_code == 400
    assert response.json() == {"error": IDEMPOTENCY_KEY_REPEATED}
    assert await stored(pool) == 0
    headers[-1] = ("Idempotency-Key", "a")  # the same value twice is one key
    again = await client.post(
        f"/conversations/{conversation}/messages", headers=headers, json={"content": "x"}
    )
    assert again.status_code == 201


async def test_a_send_with_a_key_answers_the_bytes_a_send_without_one_does(
    settings: Settings, pool: asyncpg.Pool, clean: None
) -> None:
    """The same first send on an empty database, without and with a key: the same response,
    byte for byte but for the timestamp (whole seconds: the two may fall on either side)."""
    answers = []
    for key in (None, "first-send"):
        await pool.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        async with app_client(settings) as client:
            alice, bob = await factories.users(pool, "Alice", "Bob")
            conversation = await factories.conversation(client, alice, bob)
            response = await post(client, conversation, alice, "same words", key)
        assert response.status_code == 201
        answers.append(response)

    without, with_key = answers
    assert TIMESTAMP.search(without.content)
    assert TIMESTAMP.search(with_key.content)
    assert TIMESTAMP.sub(b"T", without.content) == TIMESTAMP.sub(b"T", with_key.content)
    assert TIMESTAMP.sub(b"T", without.content) == (
        b'{"message":{"id":"1","content":"same words","index":1,"user_id":1,'
        b'"username":"Alice","conversation_id":1,T}}'
    )
    skip = {"x-request-id"}
    assert [(k, v) for k, v in without.headers.items() if k not in skip] == [
        (k, v) for k, v in with_key.headers.items() if k not in skip
    ]


# Retries ------------------------------------------------------------------------------------


async def test_a_retry_after_a_lost_response_gets_the_first_answer_and_stores_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool, pair: tuple[str, int, int], queue: str
) -> None:
    conversation, alice, bob = pair
    first = await post(client, conversation, alice, "are you there?", key="retry-1")
    await asyncio.sleep(1.1)  # a new message now would get a later inserted_at
    await factories.send(client, conversation, bob, "in between")

    retry = await post(client, conversation, alice, "are you there?", key="retry-1")

    assert first.status_code == retry.status_code == 201
    assert retry.content == first.content
    assert first.json()["message"]["index"] == 1
    assert await stored(pool) == 2  # the first send and Bob's, nothing from the retry
    assert await published(pool, queue, 2) == 2


async def test_reusing_a_key_for_other_content_is_a_422_and_stores_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool, pair: tuple[str, int, int]
) -> None:
    conversation, alice, _ = pair
    first = await post(client, conversation, alice, "lunch at noon?", key="k")

    other = await post(client, conversation, alice, "lunch at one?", key="k")

    assert first.status_code == 201
    assert other.status_code == 422
    assert other.json() == {"error": IDEMPOTENCY_KEY_REUSED}
    assert await stored(pool) == 1
    again = await post(client, conversation, alice, "lunch at noon?", key="k")
    assert again.content == first.content


async def test_keys_of_two_senders_or_two_conversations_do_not_collide(
    client: httpx.AsyncClient, pool: asyncpg.Pool, pair: tuple[str, int, int]
) -> None:
    conversation, alice, bob = pair
    carol = (await factories.users(pool, "Carol"))[0]
    other_conversation = await factories.conversation(client, alice, carol)

    answers = [
        await post(client, conversation, alice, "hi", key="same"),
        await post(client, conversation, bob, "hi", key="same"),
        await post(client, other_conversation, alice, "hi", key="same"),
    ]

    assert [a.status_code for a in answers] == [201, 201, 201]
    assert len({a.json()["message"]["id"] for a in answers}) == 3
    assert await stored(pool) == 3


async def test_an_expired_key_allows_a_new_message_before_the_sweep_removed_it(
    client: httpx.AsyncClient, pool: asyncpg.Pool, pair: tuple[str, int, int]
) -> None:
    conversation, alice, _ = pair
    first = await post(client, conversation, alice, "good morning", key="daily")
    # A day and a second ago: older than the default IDEMPOTENCY_KEY_TTL of 24 h.
    await pool.execute("UPDATE idempotency_keys SET created_at = now() - interval '1 day 1 s'")

    second = await post(client, conversation, alice, "good morning", key="daily")
    other = await post(client, conversation, alice, "good evening", key="daily")
    third = await post(client, conversation, alice, "good morning", key="daily")

    assert second.status_code == 201
    assert second.json()["message"]["index"] == 2
    assert second.json()["message"]["id"] != first.json()["message"]["id"]
    assert other.status_code == 422  # the key is fresh again, naming the second message
    assert third.content == second.content
    assert await stored(pool) == 2
    assert await pool.fetchval("SELECT count(*) FROM idempotency_keys") == 1


# Races --------------------------------------------------------------------------------------


async def test_50_concurrent_requests_with_one_key_store_one_message_and_one_event(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    pair: tuple[str, int, int],
    queue: str,
    settings: Settings,
) -> None:
    conversation, alice, _ = pair

    # Held until both statements the conversation may have under way wait, so the requests
    # really race: the first waits for the counter row, the second for the first one's key,
    # the others in the conversation's line (db.batches), one statement each, as no statement
    # carries a key twice.
    async with holding_counter_lock(pool, int(conversation)):
        storm = asyncio.gather(
            *(post(client, conversation, alice, "only once", key="storm") for _ in range(50))
        )
        await wait_until_blocked(pool, "idempotency_keys", count=batches.IN_FLIGHT)
    answers = await storm

    assert {a.status_code for a in answers} == {201}
    assert len({a.content for a in answers}) == 1
    assert await stored(pool) == 1
    assert await published(pool, queue, 1) == 1


@pytest.fixture
async def conversation_of_two(pool: asyncpg.Pool, clean: None) -> tuple[int, int]:
    """A conversation of Alice and Bob made in SQL, for tests of the statements themselves."""
    alice, bob = await factories.users(pool, "Alice", "Bob")
    conversation = await pool.fetchval("INSERT INTO channels DEFAULT VALUES RETURNING id")
    await pool.execute(
        "INSERT INTO users_channels (channel_id, user_id) VALUES ($1, $2), ($1, $3)",
        conversation,
        alice,
        bob,
    )
    return conversation, alice


async def test_a_request_racing_the_first_waits_for_it_then_reads_its_answer(
    pool: asyncpg.Pool, conversation_of_two: tuple[int, int]
) -> None:
    """The race, step by step: the second statement blocks on the first one's key until it
    commits, then stores nothing; the stored answer is the first one's message."""
    conversation, alice = conversation_of_two
    async with pool.acquire() as first, pool.acquire() as second:
        transaction = first.transaction()
        await transaction.start()
        mine = await db.send_message(first, conversation, alice, "hi", "race", DAY)
        assert mine is not None
        assert not mine["replayed"]
        racing = asyncio.create_task(
            db.send_message(second, conversation, alice, "hi", "race", DAY)
        )
        await wait_until_blocked(pool, "idempotency_keys")
        assert not racing.done()
        await transaction.commit()
        assert await asyncio.wait_for(racing, 10) is None

    answer = await db.stored_answer(pool, conversation, alice, "race", DAY)
    assert answer is not None
    sent = {name: value for name, value in dict(mine).items() if name != "n"}  # its place
    assert dict(answer) == {**sent, "replayed": True}
    assert await stored(pool) == 1
    assert await pool.fetchval("SELECT last_index FROM channels WHERE id = $1", conversation) == 1


async def test_a_request_racing_a_first_that_fails_stores_the_message_itself(
    pool: asyncpg.Pool, conversation_of_two: tuple[int, int]
) -> None:
    conversation, alice = conversation_of_two
    async with pool.acquire() as first, pool.acquire() as second:
        transaction = first.transaction()
        await transaction.start()
        assert await db.send_message(first, conversation, alice, "hi", "race", DAY)
        racing = asyncio.create_task(
            db.send_message(second, conversation, alice, "hi", "race", DAY)
        )
        await wait_until_blocked(pool, "idempotency_keys")
        await transaction.rollback()  # say the first request's client went away mid-statement
        theirs = await asyncio.wait_for(racing, 10)

    assert theirs is not None
    assert not theirs["replayed"]
    assert theirs["index"] == 1
    assert await stored(pool) == 1


async def wait_until_blocked(
    pool: asyncpg.Pool, statement_part: str, count: int = 1, within: float = 10
) -> None:
    """Wait until `count` backends wait for a lock in statements containing `statement_part`."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database() AND strpos(query, $1) > 0",
            statement_part,
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"fewer than {count} statements with {statement_part!r} waited for a lock")


# A crash between the commit and the response ------------------------------------------------


async def test_a_send_committed_by_a_killed_instance_is_answered_after_restart_once(
    database: Settings, pool: asyncpg.Pool, queue: str, clean: None
) -> None:
    """The instance is stopped (SIGSTOP) while its statement waits for a row lock the test
    holds; the test releases the lock, the statement commits in PostgreSQL, and the instance
    is killed (SIGKILL) before it could read the result, so the client never gets an answer.
    Its retry with the key against a new instance gets the committed message."""
    alice, bob = await factories.users(pool, "Alice", "Bob")
    env = service_env(database, AMQP_QUEUE=queue, RELAY_ENABLED="true")
    body = {"content": "sent exactly once"}
    headers = {"User-Id": str(alice), "Idempotency-Key": "crash-1"}
    with serve(env) as first:
        async with httpx.AsyncClient(base_url=first.url, timeout=30) as http:
            created = await http.post("/conversations", json={"participant_ids": [alice, bob]})
            conversation = created.json()["conversation"]["id"]
            path = f"/conversations/{conversation}/messages"
            async with holding_counter_lock(pool, int(conversation)):
                lost = asyncio.create_task(http.post(path, headers=headers, json=body))
                await wait_until_blocked(pool, "idempotency_keys")
                first.process.send_signal(signal.SIGSTOP)
            await wait_for_committed(pool)
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=10)
            with pytest.raises(httpx.TransportError):
                await lost

    with serve(env) as second:
        async with httpx.AsyncClient(base_url=second.url, timeout=30) as http:
            retry = await http.post(path, headers=headers, json=body)
            assert await published(pool, queue, 1) == 1

    assert retry.status_code == 201
    message = retry.json()["message"]
    assert (message["index"], message["content"]) == (1, "sent exactly once")
    assert await stored(pool) == 1


@contextlib.asynccontextmanager
async def holding_counter_lock(pool: asyncpg.Pool, conversation: int) -> AsyncIterator[None]:
    """Lock the conversation's counter row, as a slow send would, until the block ends."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT FROM channels WHERE id = $1 FOR UPDATE", conversation)
        yield


async def wait_for_committed(pool: asyncpg.Pool, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while await stored(pool) == 0:
        assert time.monotonic() < deadline, "the stopped instance's send never committed"
        await asyncio.sleep(0.02)


# The sweep ----------------------------------------------------------------------------------


async def test_the_sweep_deletes_expired_keys_only_and_skips_locked_ones(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    pair: tuple[str, int, int],
    settings: Settings,
) -> None:
    conversation, alice, _ = pair
    for number in range(5):
        assert (await post(client, conversation, alice, key=f"k{number}")).status_code == 201
    await pool.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '2 days' WHERE key <> 'k4'"
    )
    sweeper = key_sweeper(settings, pool)

    async with pool.acquire() as conn, conn.transaction():
        # A send taking over expired key k0 holds its row: the sweep passes it by, unblocked.
        await conn.execute("SELECT FROM idempotency_keys WHERE key = 'k0' FOR UPDATE")
        assert await asyncio.wait_for(sweeper.sweep(), 5) == 3
    assert await sweeper.sweep() == 1
    assert await pool.fetchval("SELECT array_agg(key) FROM idempotency_keys") == ["k4"]
    assert await stored(pool) == 5


async def test_the_serving_instance_sweeps_expired_keys_in_the_background(
    settings: Settings, pool: asyncpg.Pool, clean: None
) -> None:
    quick = settings.model_copy(update={"idempotency_sweep_interval": 0.1})
    async with app_client(quick) as client:
        alice, bob = await factories.users(pool, "Alice", "Bob")
        conversation = await factories.conversation(client, alice, bob)
        await post(client, conversation, alice, key="old")
        await post(client, conversation, alice, key="new")
        await pool.execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '2 days' WHERE key = 'old'"
        )
        deadline = time.monotonic() + 10
        while await pool.fetchval("SELECT count(*) FROM idempotency_keys") > 1:
            assert time.monotonic() < deadline, "the sweep did not delete the expired key"
            await asyncio.sleep(0.05)
    assert await pool.fetchval("SELECT array_agg(key) FROM idempotency_keys") == ["new"]
