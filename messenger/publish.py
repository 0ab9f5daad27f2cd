"""A batch of events to RabbitMQ in one write, each with a publisher confirm of its own.

aiormq's `basic_publish` takes the channel lock, a timeout, a frame and a turn of the
connection's writer (a socket write) for every message, and the relay ran a task per event to
have a batch in flight together: that was most of the relay's CPU per event
(docs/performance.md). Here the frames of a whole batch (Basic.Publish, content header and
body of each event) are marshalled into one block that the writer sends in one write, under
the channel's lock, and each event's confirmation is registered as `basic_publish` registers
it, so aiormq's reader settles it: an ack, a nack (DeliveryError), the return of an
unroutable event (PublishError: every event is mandatory), or the error a closing channel or
connection fails it with.
"""

import asyncio
import functools
from collections.abc import Sequence

import aiormq
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

# What a lost or refusing broker raises while a batch is written or confirmed.
BROKER_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, OSError, RuntimeError)


class BrokerUnavailable(Exception):
    """RabbitMQ could not be reached, refused us, or did not confirm in time."""


class EventRefused(Exception):
    """RabbitMQ answered for this one event and did not take it (basic.nack, or unroutable)."""

    def __init__(self, reason: str, *, unroutable: bool = False) -> None:
        super().__init__(reason)
        self.unroutable = unroutable


PUBLISH_FAILURES = (BrokerUnavailable, EventRefused)


# An event's body and properties; its `message_id` is how a returned event is told apart.
Message = tuple[bytes, spec.Basic.Properties]


async def publish_batch(
    channel: aiormq.Channel, routing_key: str, messages: Sequence[Message]
) -> list[asyncio.Future[object]]:
    """Write `messages`, in order, to the default exchange with `routing_key`, in one write.

    Returns each message's confirmation, in the same order. Bound the wait with
    `asyncio.timeout`: cancelled before the batch is handed to the writer, nothing is sent.
    """
    frames: list[spec.Basic.Publish | ContentHeader | ContentBody] = []
    confirmations: list[asyncio.Future[object]] = []
    async with channel.lock:
        first_tag = channel.delivery_tag
        try:
            for body, properties in messages:
                channel.delivery_tag += 1
                tag = channel.delivery_tag
                message_id = properties.message_id
                if not message_id:
                    raise ValueError("every event needs a message_id")
                confirmation = channel.create_future()
                channel.confirmations[tag] = confirmation
                channel.message_id_delivery_tag[message_id] = tag
                confirmation.add_done_callback(
                    functools.partial(_forget_message_id, channel, message_id, tag)
                )
                confirmations.append(confirmation)
                frames.append(
                    spec.Basic.Publish(exchange="", routing_key=routing_key, mandatory=True)
                )
                frames.append(ContentHeader(properties=properties, body_size=len(body)))
                frames += channel._split_body(body)
            block = ChannelFrame.marshall(channel_number=channel.number, frames=frames)
            await channel.write_queue.put(block)
        except BaseException:
            # The broker has seen none of them: give their sequence numbers back, as
            # basic_publish does, so later confirms match their deliveries.
            for tag in range(first_tag + 1, channel.delivery_tag + 1):
                channel.confirmations.pop(tag, None)
            channel.delivery_tag = first_tag
            for confirmation in confirmations:
                confirmation.cancel()
            raise
    return confirmations


def _forget_message_id(
    channel: aiormq.Channel, message_id: str, tag: int, _: asyncio.Future[object]
) -> None:
    if channel.message_id_delivery_tag.get(message_id) == tag:
        del channel.message_id_delivery_tag[message_id]


def confirmation_outcome(
    confirmation: asyncio.Future[object], queue: str, timeout: float
) -> BaseException | None:
    """None for a confirmed event, else why it was not: a publish failure, or a bug to raise."""
    if not confirmation.done() or confirmation.cancelled():
        confirmation.cancel()
        return BrokerUnavailable(f"no confirmation within {timeout}s")
    error = confirmation.exception()
    if error is None:
        return None
    if isinstance(error, aiormq.exceptions.PublishError):
        return EventRefused(f"unroutable: no queue {queue!r}", unroutable=True)
    if isinstance(error, aiormq.exceptions.DeliveryError):
        return EventRefused(f"refused by RabbitMQ (basic.{type(error.frame).__name__.lower()})")
    if isinstance(error, BROKER_ERRORS):
        return BrokerUnavailable(f"{error.__class__.__name__}: {error}")
    return error
