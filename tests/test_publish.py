"""A batch of events in one write, against a real RabbitMQ: confirms, returns, order."""

import asyncio
from collections.abc import AsyncIterator

import aiormq
import pytest
from pamqp import commands as spec

from messenger.publish import (
    BrokerUnavailable,
    EventRefused,
    Message,
    confirmation_outcome,
    publish_batch,
)
from tests import test_events

queue = test_events.queue  # a RabbitMQ queue of the test's own
AMQP_URL = test_events.AMQP_URL


@pytest.fixture
async def channel() -> AsyncIterator[aiormq.Channel]:
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        assert isinstance(channel, aiormq.Channel)
        yield channel
    finally:
        await connection.close()


def messages(count: int) -> list[Message]:
    return [
        (f"event {number}".encode(), spec.Basic.Properties(message_id=f"id-{number}"))
        for number in range(1, count + 1)
    ]


async def test_every_event_of_a_batch_is_confirmed_and_queued_in_order(
    channel: aiormq.Channel, queue: str
) -> None:
    await channel.queue_declare(queue, durable=True)
    confirmations = await publish_batch(channel, queue, messages(50))
    await asyncio.wait(confirmations, timeout=10)
    assert [confirmation_outcome(c, queue, 10) for c in confirmations] == [None] * 50
    delivered = await test_events.take(queue, 50)
    assert [m.body for m in delivered] == [f"event {n}".encode() for n in range(1, 51)]
    assert channel.message_id_delivery_tag == {}  # nothing kept once confirmed


async def test_a_batch_to_a_missing_queue_comes_back_unroutable_event_by_event(
    channel: aiormq.Channel, queue: str
) -> None:
    confirmations = await publish_batch(channel, queue, messages(3))
    await asyncio.wait(confirmations, timeout=10)
    outcomes = [confirmation_outcome(c, queue, 10) for c in confirmations]
    assert all(isinstance(o, EventRefused) and o.unroutable for o in outcomes), outcomes


async def test_an_unconfirmed_event_is_a_broker_outage(channel: aiormq.Channel, queue: str) -> None:
    pending: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    outcome = confirmation_outcome(pending, queue, 5)
    assert isinstance(outcome, BrokerUnavailable)
    assert str(outcome) == "no confirmation within 5s"
    assert pending.cancelled()


async def test_a_batch_cancelled_before_it_is_written_gives_its_delivery_tags_back(
    channel: aiormq.Channel, queue: str
) -> None:
    await channel.queue_declare(queue, durable=True)
    async with channel.lock:  # hold the channel: the batch waits for it
        waiting = asyncio.ensure_future(publish_batch(channel, queue, messages(3)))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert channel.delivery_tag == 0
    confirmations = await publish_batch(channel, queue, messages(2))
    await asyncio.wait(confirmations, timeout=10)
    assert [confirmation_outcome(c, queue, 10) for c in confirmations] == [None, None]
