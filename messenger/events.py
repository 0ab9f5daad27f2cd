"""`new_message` events: the wire format the notifier reads, and the outbox relay to RabbitMQ.

A send writes its event to the `outbox` table in the same statement as the message. The relay
publishes pending rows to RabbitMQ with publisher confirms and deletes a row only once the
broker confirmed it, so a broker outage delays events but never loses one (at least once).
Several relays (one per instance) share the outbox: each takes a transaction-scoped advisory
lock per conversation, so the events of one conversation are published by one relay at a
time, in index order.
"""

import asyncio
import contextlib
import json
import logging
import random
import signal
from collections.abc import Sequence
from datetime import datetime

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from messenger import db
from messenger.settings import Settings

logger = logging.getLogger("messenger.events")

EVENT_TYPE = "new_message"


def event_body(channel_id: int, user_id: int, index: int, participant_ids: Sequence[int]) -> bytes:
    """The exact bytes the notifier expects: compact JSON, keys in this order, all numbers."""
    payload = {
        "type": EVENT_TYPE,
        "channel_id": channel_id,
        "user_id": user_id,
        "index": index,
        "participant_ids": list(participant_ids),
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def event_message(
    outbox_id: int,
    channel_id: int,
    user_id: int,
    index: int,
    participant_ids: Sequence[int],
    created_at: datetime,
) -> aio_pika.Message:
    """The AMQP message: the consumer dispatches on `type`; the other properties are extras."""
    return aio_pika.Message(
        body=event_body(channel_id, user_id, index, participant_ids),
        type=EVENT_TYPE,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(outbox_id),
        timestamp=created_at,
    )


async def declare_queue(channel: AbstractChannel, name: str) -> None:
    """Declare the queue exactly as the consumer does; any other flags fail with
    PRECONDITION_FAILED on one side or the other."""
    await channel.declare_queue(name, durable=True, exclusive=False, auto_delete=False)


class BrokerUnavailable(Exception):
    """RabbitMQ could not be reached, refused us, or did not confirm in time."""


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, initial: float, cap: float) -> None:
        self.initial = initial
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class OutboxRelay:
    """Publishes the outbox to RabbitMQ until stopped; the figures feed readiness and metrics."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, wake: asyncio.Event) -> None:
        self.settings = settings
        self.pool = pool
        self.wake = wake
        self.published = 0
        self.failed = 0
        self.reconnects = 0
        self.connected = False
        self._connection: AbstractConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(initial=0.2, cap=settings.relay_backoff_max)
        self._ever_connected = False

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self) -> None:
        """Publish what is pending (bounded by RELAY_FLUSH_TIMEOUT), then close the connection."""
        self._stopping = True
        self.wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, self.settings.relay_flush_timeout)
            except TimeoutError:
                logger.warning(
                    "relay: flush did not finish within %ss; pending events stay in the outbox",
                    self.settings.relay_flush_timeout,
                )
        await self._disconnect()

    async def run(self) -> None:
        while True:
            try:
                await self._connect()
                while await self.publish_batch():
                    pass
            except BrokerUnavailable as error:
                await self._broker_lost(error)
                if self._stopping:
                    return
                await self._sleep(self._backoff.next_delay())
                continue
            except db.DATABASE_ERRORS as error:
                logger.warning("relay: PostgreSQL unavailable (%s); retrying", error)
                if self._stopping:
                    return
                await self._sleep(self._backoff.next_delay())
                continue
            if self._stopping:
                return
            await self._wait_for_work()

    async def publish_batch(self) -> int:
        """Publish one batch of pending events in id order; returns how many were published.

        The batch is written to the broker in order without waiting for each confirm, then the
        confirms are awaited together: one round trip per batch, not per event. Rows are
        deleted in the transaction that locked them, and only the unbroken run of confirmed
        rows from the start of the batch: after a failure the rest stay, to be published again
        after the failed one, so no event of a conversation overtakes an earlier one.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await db.claim_outbox(conn, self.settings.relay_batch_size)
            # gather starts the publishes in order; each takes aiormq's channel lock (FIFO)
            # before anything that could suspend it, so frames reach the socket in id order.
            outcomes = await asyncio.gather(
                *(self._publish(row) for row in rows), return_exceptions=True
            )
            confirmed = 0
            for outcome in outcomes:
                if outcome is not None:
                    break
                confirmed += 1
            if confirmed:
                await db.delete_outbox(conn, [row["id"] for row in rows[:confirmed]])
                self.published += confirmed
            if confirmed < len(rows):
                error = outcomes[confirmed]
                assert error is not None
                if not isinstance(error, BrokerUnavailable):
                    raise error  # a bug, not an outage: let it surface
                await self._record_failure(conn, rows[confirmed]["id"], str(error))
                raise error
        return confirmed

    async def _publish(self, row: asyncpg.Record) -> None:
        assert self._exchange is not None
        message = event_message(
            row["id"],
            row["channel_id"],
            row["user_id"],
            row["message_index"],
            row["participant_ids"],
            row["created_at"],
        )
        try:
            await self._exchange.publish(
                message,
                routing_key=self.settings.amqp_queue,
                timeout=self.settings.relay_publish_timeout,
            )
        except TimeoutError as error:
            raise BrokerUnavailable(
                f"no confirmation within {self.settings.relay_publish_timeout}s"
            ) from error
        except (aio_pika.exceptions.AMQPError, ConnectionError, OSError, RuntimeError) as error:
            raise BrokerUnavailable(f"{error.__class__.__name__}: {error}") from error

    async def _record_failure(self, conn: db.Connection, outbox_id: int, reason: str) -> None:
        self.failed += 1
        attempts = await db.record_outbox_failure(conn, outbox_id, reason[:500])
        logger.warning(
            "relay: event %s not confirmed (attempt %s): %s; it stays in the outbox",
            outbox_id,
            attempts,
            reason,
        )

    async def _connect(self) -> None:
        if self._exchange is not None and self._connection and not self._connection.is_closed:
            return
        settings = self.settings
        try:
            connection = await aio_pika.connect(
                host=settings.broker_host,
                port=settings.amqpport,
                login=settings.amqpuser,
                password=settings.amqppassword.get_secret_value(),
                timeout=settings.relay_publish_timeout,
                client_properties={"connection_name": "messenger-relay"},
            )
        except (aio_pika.exceptions.AMQPError, ConnectionError, OSError, TimeoutError) as error:
            raise BrokerUnavailable(f"{error.__class__.__name__}: {error}") from error
        try:
            # An unroutable event (queue deleted) must fail the publish, not vanish.
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await declare_queue(channel, settings.amqp_queue)
        except (aio_pika.exceptions.AMQPError, ConnectionError, OSError, TimeoutError) as error:
            await connection.close()
            raise BrokerUnavailable(f"{error.__class__.__name__}: {error}") from error
        self._connection = connection
        self._exchange = channel.default_exchange
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self.connected = True
        self._backoff.reset()
        logger.info(
            "relay: connected to RabbitMQ at %s:%s, publishing to queue %r",
            settings.amqphost,
            settings.amqpport,
            settings.amqp_queue,
        )

    async def _broker_lost(self, error: BrokerUnavailable) -> None:
        first_failure = not self._ever_connected and self._backoff.attempt == 0
        if self.connected or first_failure:
            logger.warning(
                "relay: RabbitMQ unavailable at %s:%s (%s); events wait in the outbox,"
                " retrying with backoff",
                self.settings.amqphost,
                self.settings.amqpport,
                error,
            )
        await self._disconnect()

    async def _disconnect(self) -> None:
        self.connected = False
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 2)

    async def _wait_for_work(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), self.settings.relay_sweep_interval)
        self.wake.clear()

    async def _sleep(self, seconds: float) -> None:
        """Back off, but wake at once when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._until_stopping(), seconds)

    async def _until_stopping(self) -> None:
        while not self._stopping:
            await self.wake.wait()
            self.wake.clear()


async def run_relay(settings: Settings) -> None:
    """Run only the relay, for operators who keep it apart from serving; stops on SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    pool = await db.create_pool(settings)
    try:
        relay = OutboxRelay(settings, pool, asyncio.Event())
        relay.start()
        logger.info("relay: running; publishing the outbox of %s", settings.pgdatabase)
        await stop.wait()
        logger.info("relay: stopping")
        await relay.stop()
    finally:
        await pool.close()
