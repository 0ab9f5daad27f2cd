"""new_message events: the byte-exact wire format and the queue, as the notifier reads them.

The fixtures and helpers here (a queue of the test's own, reading it as the notifier does)
serve the relay's tests too.
"""

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator

import aiormq
import asyncpg
import httpx
import pytest
from aiormq.abc import DeliveredMessage

from messenger.events import event_body
from messenger.settings import Settings
from tests import factories

AMQP_URL = (
    f"amqp://guest:guest@{os.environ.get('AMQPHOST', '127.0.0.1')}:"
    f"{os.environ.get('AMQPPORT', '5672')}/"
)
NOTIFIER_BODY = (
    b'{"type":"new_message","channel_id":1,"user_id":1,"index":8,"participant_ids":[1,2]}'
)


@pytest.fixture
async def queue() -> AsyncIterator[str]:
    """A queue of this test's own, so tests never read each other's events."""
    name = f"test_chat_queue_{uuid.uuid4().hex[:10]}"
    yield name
    connection = await aiormq.connect(AMQP_URL)
    channel = await connection.channel()
    await channel.queue_delete(name)
    await connection.close()


@pytest.fixture
def settings(database: Settings, queue: str) -> Settings:
    return database.model_copy(
        update={
            "relay_enabled": True,
            "amqp_queue": queue,
            "relay_sweep_interval": 0.1,
            "relay_backoff_max": 0.5,
        }
    )


async def take(
    queue: str, count: int, within: float = 15.0, url: str = AMQP_URL
) -> list[DeliveredMessage]:
    """Read `count` messages from `queue` with a plain AMQP client, declared like the notifier."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(queue, durable=True)
        messages: list[DeliveredMessage] = []
        deadline = time.monotonic() + within
        while len(messages) < count and time.monotonic() < deadline:
            try:
                message = await channel.basic_get(queue, no_ack=True)
            except aiormq.exceptions.AMQPError:
                await asyncio.sleep(0.1)
                continue
            if message.body is not None and message.delivery_tag is not None:
                messages.append(message)
            else:
                await asyncio.sleep(0.05)
        return messages
    finally:
        await connection.close()


async def pending(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM outbox"))


def test_event_body_matches_the_notifiers_bytes() -> None:
    assert event_body(1, 1, 8, [1, 2]) == NOTIFIER_BODY


async def test_a_send_publishes_one_event_the_notifier_understands(
    client: httpx.AsyncClient, pool: asyncpg.Pool, queue: str
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    conversation = await factories.conversation(client, alice, bob)
    await factories.send(client, conversation, alice, "first")
    await factories.send(client, conversation, bob, "second")

    messages = await take(queue, 2)

    assert [m.body for m in messages] == [
        event_body(int(conversation), alice, 1, [alice, bob]),
        event_body(int(conversation), bob, 2, [alice, bob]),
    ]
    first = messages[0]
    assert first.delivery.routing_key == queue
    assert first.delivery.exchange == ""
    properties = first.header.properties
    assert properties.message_type == "new_message"
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2
    assert properties.timestamp is not None
    assert properties.message_id != messages[1].header.properties.message_id
    body = json.loads(first.body)
    assert list(body) == ["type", "channel_id", "user_id", "index", "participant_ids"]
    assert type(body["user_id"]) is type(body["participant_ids"][0]) is int
    assert await eventually_empty(pool)  # deleted once confirmed, in the relay's transaction


async def test_a_queue_declared_like_the_notifiers_is_accepted(
    client: httpx.AsyncClient, pool: asyncpg.Pool, queue: str
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    conversation = await factories.conversation(client, alice, bob)
    await factories.send(client, conversation, alice)
    assert len(await take(queue, 1)) == 1

    # The notifier declares with durable=True and library defaults otherwise; a mismatch would
    # close the channel with PRECONDITION_FAILED.
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(queue, durable=True)
        assert declared.queue == queue
        assert not channel.is_closed
    finally:
        await connection.close()


async def eventually_empty(pool: asyncpg.Pool, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while await pending(pool) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return await pending(pool) == 0
