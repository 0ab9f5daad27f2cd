"""The outbox relay against a real RabbitMQ: outages, refusals, parking, shared outboxes, kills."""

import asyncio
import contextlib
import gc
import json
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator

import aio_pika
import aiormq
import asyncpg
import httpx
import pytest

from messenger.relay import OutboxRelay
from messenger.settings import Settings
from tests import factories, test_events
from tests.conftest import app_client
from tests.private_rabbitmq import PrivateRabbitMQ, private_rabbitmq
from tests.processes import free_port, serve, service_env

queue = test_events.queue  # a RabbitMQ queue of the test's own
settings = test_events.settings  # the app with its relay publishing to that queue
AMQP_URL = test_events.AMQP_URL
take = test_events.take
pending = test_events.pending
eventually_empty = test_events.eventually_empty


async def test_events_wait_in_the_outbox_while_the_broker_is_unreachable(
    settings: Settings, pool: asyncpg.Pool, queue: str, clean: None
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    conversation = await pool.fetchval("INSERT INTO channels DEFAULT VALUES RETURNING id")
    unreachable = settings.model_copy(update={"amqpport": free_port()})
    down = OutboxRelay(unreachable, asyncio.Event())
    down.start()
    try:
        for index in range(1, 6):
            await pool.execute(
                "INSERT INTO outbox (channel_id, user_id, message_index, participant_ids)"
                " VALUES ($1, $2, $3, $4)",
                int(conversation),
                alice,
                index,
                [alice, bob],
            )
        await asyncio.sleep(0.5)
        assert not down.connected
        assert await pending(pool) == 5
    finally:
        await down.stop()

    up = OutboxRelay(settings, asyncio.Event())
    up.start()
    try:
        messages = await take(queue, 5)
    finally:
        await up.stop()
    assert [json.loads(m.body)["index"] for m in messages] == [1, 2, 3, 4, 5]
    assert await pending(pool) == 0


async def test_a_relay_that_cannot_connect_leaves_no_connection_to_close_later(
    settings: Settings,
) -> None:
    # An unclosed aio_pika connection closes itself when garbage-collected, which outside its
    # event loop only warns: "coroutine 'Connection.close' was never awaited".
    unreachable = settings.model_copy(update={"amqpport": free_port()})
    gc.collect()
    gc.disable()  # what the failed attempts leave behind stays visible until we look
    try:
        relay = OutboxRelay(unreachable, asyncio.Event())
        relay.start()
        await asyncio.sleep(0.5)
        await relay.stop()
        left = [
            item
            for item in gc.get_objects()
            if isinstance(item, aio_pika.Connection) and not item.is_closed
        ]
    finally:
        gc.enable()
    assert relay.connected is False
    assert left == []


async def test_an_event_whose_publish_fails_is_counted_kept_and_published_later(
    client: httpx.AsyncClient, pool: asyncpg.Pool, queue: str
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    conversation = await factories.conversation(client, alice, bob)
    await factories.send(client, conversation, alice, "before")
    assert len(await take(queue, 1)) == 1

    # Deleting the queue makes the next publish come back unroutable (mandatory publish): the
    # relay must count it, keep the row, reconnect (declaring the queue again) and retry.
    connection = await aiormq.connect(AMQP_URL)
    channel = await connection.channel()
    await channel.queue_delete(queue)
    await connection.close()
    await factories.send(client, conversation, alice, "after")

    messages = await take(queue, 1)
    assert [json.loads(m.body)["index"] for m in messages] == [2]
    assert await eventually_empty(pool)


async def test_two_relays_sharing_the_outbox_publish_each_event_once_in_order(
    database: Settings, pool: asyncpg.Pool, queue: str, clean: None
) -> None:
    ids = await factories.users(pool, "A", "B", "C", "D")
    conversations = [
        await pool.fetchval("INSERT INTO channels DEFAULT VALUES RETURNING id") for _ in range(40)
    ]
    rows = [(conversations[n % 40], ids[n % 4], n // 40 + 1, [ids[0], ids[1]]) for n in range(400)]
    await pool.executemany(
        "INSERT INTO outbox (channel_id, user_id, message_index, participant_ids)"
        " VALUES ($1, $2, $3, $4)",
        rows,
    )
    settings = database.model_copy(update={"amqp_queue": queue, "relay_batch_size": 25})
    relays = [OutboxRelay(settings, asyncio.Event()) for _ in range(2)]
    for relay in relays:
        relay.start()
    try:
        messages = await take(queue, 400, within=30)
        await asyncio.sleep(0.3)  # a duplicate would arrive now
        messages += await take(queue, 1, within=0.5)
    finally:
        for relay in relays:
            await relay.stop()

    assert len(messages) == 400
    assert len({m.header.properties.message_id for m in messages}) == 400
    for conversation in conversations:
        indexes = [
            json.loads(m.body)["index"]
            for m in messages
            if json.loads(m.body)["channel_id"] == conversation
        ]
        assert indexes == list(range(1, 11))
    assert sum(relay.published for relay in relays) == 400


@pytest.fixture(scope="module")
def broker() -> Iterator[PrivateRabbitMQ]:
    """A RabbitMQ of this module's own, for the tests that stop it or set policies on it: the
    shared broker serves other test runs at the same time."""
    with private_rabbitmq() as private:
        yield private


@pytest.fixture
def on_broker(settings: Settings, broker: PrivateRabbitMQ) -> Settings:
    """The test's settings with the relay publishing to the private broker."""
    return settings.model_copy(update={"amqphost": "127.0.0.1", "amqpport": broker.port})


@pytest.fixture
def small_queue(queue: str, broker: PrivateRabbitMQ) -> Iterator[str]:
    """The test's queue on the private broker, under a policy that makes RabbitMQ refuse (nack)
    any event over 1 KB."""
    policy = f"messenger_test_{queue}"
    definition = json.dumps({"max-length-bytes": 1024, "overflow": "reject-publish"})
    broker.set_policy(policy, f"^{queue}$", definition)
    yield queue
    broker.ctl("clear_policy", policy)


async def write_events(pool: asyncpg.Pool, *events: tuple[int, int, int, list[int]]) -> list[int]:
    """Outbox rows (conversation, sender, index, participants) as a send writes them."""
    return [
        await pool.fetchval(
            "INSERT INTO outbox (channel_id, user_id, message_index, participant_ids)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            *event,
        )
        for event in events
    ]


async def test_a_refused_publish_is_counted_on_its_row_and_blocks_only_its_conversation(
    on_broker: Settings, pool: asyncpg.Pool, small_queue: str, broker: PrivateRabbitMQ, clean: None
) -> None:
    crowd = list(range(1, 301))  # about 1.2 KB of participant ids: over the queue's limit
    poison, later, other = await write_events(
        pool, (1, 1, 1, crowd), (1, 1, 2, [1, 2]), (2, 3, 1, [3, 4])
    )
    relay = OutboxRelay(on_broker.model_copy(update={"relay_max_attempts": 1000}), asyncio.Event())
    relay.start()
    try:
        # The batch went out in one pass, so the later event of the poison's conversation
        # went too; it is not published again while the poison is retried.
        messages = await take(small_queue, 2, url=broker.url)
        for _ in range(100):
            attempts = await pool.fetchval("SELECT attempts FROM outbox WHERE id = $1", poison)
            if attempts >= 3:
                break
            await asyncio.sleep(0.1)
        messages += await take(small_queue, 1, within=0.5, url=broker.url)
    finally:
        await relay.stop()

    assert [m.header.properties.message_id for m in messages] == [str(later), str(other)]
    rows = await pool.fetch("SELECT id, attempts, last_error FROM outbox ORDER BY id")
    assert [row["id"] for row in rows] == [poison, later]  # its conversation waits behind it
    assert rows[0]["attempts"] >= 3
    assert rows[0]["last_error"] == "refused by RabbitMQ (basic.nack)"
    assert relay.failed >= 3


async def test_an_event_refused_every_time_is_parked_and_its_conversation_goes_on(
    on_broker: Settings, pool: asyncpg.Pool, small_queue: str, broker: PrivateRabbitMQ, clean: None
) -> None:
    crowd = list(range(1, 301))
    poison, later = await write_events(pool, (1, 1, 1, crowd), (1, 1, 2, [1, 2]))
    relay = OutboxRelay(on_broker.model_copy(update={"relay_max_attempts": 3}), asyncio.Event())
    relay.start()
    try:
        assert await eventually_empty(pool, within=20)
        messages = await take(small_queue, 2, url=broker.url)
    finally:
        await relay.stop()

    # Published in the first pass beside the poison, and again once the poison was parked.
    assert [json.loads(m.body)["index"] for m in messages] == [2, 2]
    parked = await pool.fetch("SELECT id, message_index, attempts, last_error FROM outbox_parked")
    assert [(row["id"], row["message_index"], row["attempts"]) for row in parked] == [
        (poison, 1, 3)
    ]
    assert parked[0]["last_error"] == "refused by RabbitMQ (basic.nack)"
    assert relay.parked == 1
    assert later not in [row["id"] for row in parked]


@pytest.fixture
async def client_on_broker(
    on_broker: Settings, broker: PrivateRabbitMQ, clean: None
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its relay on the private broker, which is running again afterwards."""
    async with app_client(on_broker) as client:
        yield client
    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
        broker.start_app()


async def test_no_event_is_lost_when_the_broker_stops_and_starts_during_sends(
    client_on_broker: httpx.AsyncClient, pool: asyncpg.Pool, queue: str, broker: PrivateRabbitMQ
) -> None:
    client = client_on_broker
    alice, bob = await factories.users(pool, "Alice", "Bob")
    conversation = await factories.conversation(client, alice, bob)
    await factories.send(client, conversation, alice, "before the outage")
    assert len(await take(queue, 1, url=broker.url)) == 1

    stop = asyncio.create_task(asyncio.to_thread(broker.stop_app))
    statuses = []
    while not stop.done():
        response = await client.post(
            f"/conversations/{conversation}/messages",
            headers={"User-Id": str(bob)},
            json={"content": "during"},
        )
        statuses.append(response.status_code)
        await asyncio.sleep(0.02)
    await stop
    for _ in range(20):  # sends while the broker is down
        await factories.send(client, conversation, bob, "while down")
        statuses.append(201)
    assert await pending(pool) > 0

    await asyncio.to_thread(broker.start_app)
    sent = 1 + len(statuses)
    messages = await take(queue, sent - 1, within=60, url=broker.url)

    assert set(statuses) == {201}
    indexes = sorted({json.loads(m.body)["index"] for m in messages})
    assert indexes == list(range(2, sent + 1))
    assert await eventually_empty(pool)


async def test_an_event_committed_before_a_kill_is_published_after_restart(
    database: Settings, pool: asyncpg.Pool, queue: str, clean: None
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    env = service_env(database, AMQP_QUEUE=queue, RELAY_ENABLED="true")
    # First life: the broker is unreachable, so the send commits but cannot be published.
    with serve({**env, "AMQPPORT": str(free_port())}) as first:
        async with httpx.AsyncClient(base_url=first.url) as http:
            created = await http.post("/conversations", json={"participant_ids": [alice, bob]})
            conversation = created.json()["conversation"]["id"]
            sent = await http.post(
                f"/conversations/{conversation}/messages",
                headers={"User-Id": str(alice)},
                json={"content": "survives kill -9"},
            )
            assert sent.status_code == 201
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
    assert await pending(pool) == 1

    with serve(env):
        messages = await take(queue, 1, within=20)
    assert [json.loads(m.body) for m in messages] == [
        {
            "type": "new_message",
            "channel_id": int(conversation),
            "user_id": alice,
            "index": 1,
            "participant_ids": [alice, bob],
        }
    ]
    assert await eventually_empty(pool)
