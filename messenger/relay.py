"""The outbox relay: publishes `new_message` events from the outbox to RabbitMQ.

A send writes its event to the `outbox` table in the same statement as the message. The relay
publishes pending rows to RabbitMQ with publisher confirms and deletes a row only once the
broker confirmed it, so a broker outage delays events but never loses one (at least once).
Several relays (one per instance) share the outbox: each takes a transaction-scoped advisory
lock per conversation, so the events of one conversation are published by one relay at a
time, in index order. An event RabbitMQ refuses RELAY_MAX_ATTEMPTS times is moved to the
`outbox_parked` table, so that it cannot hold back its conversation for ever.
"""

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence

import aio_pika
import aiormq
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.connection import make_url

from messenger import db
from messenger.backoff import Backoff
from messenger.events import declare_queue, event_body, event_properties
from messenger.settings import Settings

# The name operators filter the relay's lines by; it predates this module's name.
logger = logging.getLogger("messenger.events")

# aiormq queues at most this many frames for its socket writer; a publish that finds the
# queue full waits a turn of the event loop, so a batch is written in chunks of this size.
WRITE_CHUNK = aiormq.Connection.FRAME_BUFFER_SIZE


class BrokerUnavailable(Exception):
    """RabbitMQ could not be reached, refused us, or did not confirm in time."""


class EventRefused(Exception):
    """RabbitMQ answered for this one event and did not take it (basic.nack, or unroutable)."""

    def __init__(self, reason: str, *, unroutable: bool = False) -> None:
        super().__init__(reason)
        self.unroutable = unroutable


PUBLISH_FAILURES = (BrokerUnavailable, EventRefused)


HELD = "held"  # the outcome of a row not published: an earlier one of its conversation failed


def settle(
    rows: Sequence[asyncpg.Record], outcomes: Sequence[object]
) -> tuple[list[int], dict[int, BaseException]]:
    """Which rows of a published batch may leave the outbox, and which publishes failed.

    A row leaves when it was confirmed and no earlier row of its conversation failed or was
    held: the later ones stay to be published again after the failed one, so a conversation's
    events never skip one. Other conversations' confirmed rows leave whatever failed around them.
    """
    done: list[int] = []
    failed: dict[int, BaseException] = {}
    blocked: set[int] = set()
    for row, outcome in zip(rows, outcomes, strict=True):
        if outcome is None and row["channel_id"] not in blocked:
            done.append(row["id"])
            continue
        if isinstance(outcome, BaseException):
            failed[row["id"]] = outcome
        if outcome is not None:
            blocked.add(row["channel_id"])
    return done, failed


class OutboxRelay:
    """Publishes the outbox to RabbitMQ until stopped; the figures feed readiness and metrics.

    The relay has a PostgreSQL connection of its own: taking one from the request pool, it
    waited behind every request in line for it and fell behind the sends under load.
    """

    def __init__(self, settings: Settings, wake: asyncio.Event) -> None:
        self.settings = settings
        self.wake = wake
        self.published = 0
        self.failed = 0
        self.parked = 0
        self.reconnects = 0
        self.connected = False
        self._database: asyncpg.Connection | None = None
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(initial=0.2, cap=settings.relay_backoff_max)
        self._ever_connected = False
        # conversation -> its event that failed last time: until that one is out of the way,
        # the conversation's later events are not published again (once was enough).
        self._held: dict[int, int] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self) -> None:
        """Publish what is pending (bounded by RELAY_FLUSH_TIMEOUT), then close the connections."""
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
        await self._close_database()

    async def run(self) -> None:
        while True:
            try:
                await self._connect()
                conn = await self._database_connection()
                while await self.publish_batch(conn):
                    pass
            except BrokerUnavailable as error:
                await self._broker_lost(error)
                if self._stopping:
                    return
                await self._sleep(self._backoff.next_delay())
                continue
            except EventRefused:
                if self._stopping:
                    return
                await self._sleep(self._backoff.next_delay())  # no hot loop on a refused event
                continue
            except db.DATABASE_ERRORS as error:
                logger.warning("relay: PostgreSQL unavailable (%s); retrying", error)
                await self._close_database()
                if self._stopping:
                    return
                await self._sleep(self._backoff.next_delay())
                continue
            if self._stopping:
                return
            await self._wait_for_work()

    async def publish_batch(self, conn: asyncpg.Connection) -> int:
        """Publish one batch of pending events in id order; returns how many were published.

        One statement claims and deletes the batch inside a transaction that stays open while
        the batch is written to the broker in order and the confirms are awaited together:
        the commit removes the rows only once all are confirmed. After any failure the
        transaction is rolled back, and a short one of its own removes what `settle` allows
        and records the failures on the rows that stay.
        """
        transaction = conn.transaction()
        await transaction.start()
        try:
            rows = await db.claim_outbox(conn, self.settings.relay_batch_size)
            sendable = self._sendable(rows)
            published = iter(await self._publish_all([r for r in rows if r["id"] in sendable]))
            outcomes = [next(published) if row["id"] in sendable else HELD for row in rows]
            done, failed = settle(rows, outcomes)
            if len(done) == len(rows):
                await transaction.commit()
                self.published += len(done)
                self._backoff.reset()
                return len(done)
        except BaseException:
            await transaction.rollback()
            raise
        await transaction.rollback()
        for error in failed.values():
            if not isinstance(error, PUBLISH_FAILURES):
                raise error  # a bug, not an outage: let it surface
        parked = await self._record_failures(conn, done, failed)
        self.published += len(done)
        for row in rows:
            if row["id"] in failed and row["id"] not in parked:
                self._held.setdefault(row["channel_id"], row["id"])
        if not failed:
            return len(done)  # only held rows stayed: their conversations go on next batch
        outage = next((e for e in failed.values() if isinstance(e, BrokerUnavailable)), None)
        if outage is not None:
            raise outage
        if any(isinstance(e, EventRefused) and e.unroutable for e in failed.values()):
            await self._declare_queue()  # deleted under us: declare it again before retrying
        if done:
            return len(done)  # others went through: retry the refused one with the next batch
        raise next(iter(failed.values()))  # the broker took nothing: back off

    def _sendable(self, rows: Sequence[asyncpg.Record]) -> set[int]:
        """The claimed rows to publish: all but those behind a held event of their conversation.

        A hold ends once its event is no longer the conversation's first pending one
        (published, parked, or taken by another relay).
        """
        first: dict[int, int] = {}
        for row in rows:
            first.setdefault(row["channel_id"], row["id"])
        self._held = {c: i for c, i in self._held.items() if first.get(c) == i}
        return {
            row["id"] for row in rows if self._held.get(row["channel_id"], row["id"]) == row["id"]
        }

    async def _record_failures(
        self, conn: asyncpg.Connection, done: list[int], failed: dict[int, BaseException]
    ) -> list[int]:
        """Remove the published rows, count the failed ones, park those refused too often."""
        if not failed:
            await db.delete_outbox(conn, done)
            return []
        self.failed += len(failed)
        reasons = {outbox_id: str(error)[:500] for outbox_id, error in failed.items()}
        refused = [i for i, error in failed.items() if isinstance(error, EventRefused)]
        async with conn.transaction():
            await db.delete_outbox(conn, done)
            attempts = await db.record_outbox_failures(conn, reasons)
            poison = [i for i in refused if attempts.get(i, 0) >= self.settings.relay_max_attempts]
            parked = await db.park_outbox(conn, poison) if poison else []
        self.parked += len(parked)
        for outbox_id in parked:
            logger.error(
                "relay: event %s refused by RabbitMQ %s times (%s); moved to outbox_parked,"
                " the events after it go on",
                outbox_id,
                attempts[outbox_id],
                reasons[outbox_id],
            )
        first = min(failed)
        logger.warning(
            "relay: %s event(s) not published, first %s (attempt %s): %s; they stay in the outbox",
            len(failed) - len(parked),
            first,
            attempts.get(first),
            reasons[first],
        )
        return parked

    async def _publish_all(self, rows: Sequence[asyncpg.Record]) -> list[BaseException | None]:
        """Write the rows to the broker in order, then await their confirms together.

        Publishing without waiting for each frame to be flushed lets a chunk go out in one turn
        of the event loop; waiting per frame took several turns per event, and on a loop busy
        with requests a batch then outlasted RELAY_PUBLISH_TIMEOUT.
        """
        assert self._channel is not None
        try:
            channel = await self._channel.get_underlay_channel()
        except aio_pika.exceptions.AMQPError as error:
            raise BrokerUnavailable(f"{error.__class__.__name__}: {error}") from error
        assert isinstance(channel, aiormq.Channel)  # its basic_publish has `wait`
        confirms: list[asyncio.Future[None]] = []
        for start in range(0, len(rows), WRITE_CHUNK):
            # Tasks run in creation order and take aiormq's channel lock (FIFO) before
            # anything that could suspend them, so frames reach the socket in id order.
            chunk = rows[start : start + WRITE_CHUNK]
            confirms += [asyncio.ensure_future(self._publish(channel, row)) for row in chunk]
            await asyncio.sleep(0)  # the writer empties its queue before the next chunk
        return await asyncio.gather(*confirms, return_exceptions=True)

    async def _publish(self, channel: aiormq.Channel, row: asyncpg.Record) -> None:
        body = event_body(
            row["channel_id"], row["user_id"], row["message_index"], row["participant_ids"]
        )
        try:
            await channel.basic_publish(
                body,
                routing_key=self.settings.amqp_queue,
                properties=event_properties(row["id"], row["created_at"]),
                mandatory=True,  # an unroutable event (queue deleted) comes back, never vanishes
                timeout=self.settings.relay_publish_timeout,
                wait=False,
            )
        except TimeoutError as error:
            raise BrokerUnavailable(
                f"no confirmation within {self.settings.relay_publish_timeout}s"
            ) from error
        except aiormq.exceptions.PublishError as error:
            raise EventRefused(
                f"unroutable: no queue {self.settings.amqp_queue!r}", unroutable=True
            ) from error
        except aiormq.exceptions.DeliveryError as error:
            answer = f"basic.{type(error.frame).__name__.lower()}"
            raise EventRefused(f"refused by RabbitMQ ({answer})") from error
        except (aiormq.exceptions.AMQPError, ConnectionError, OSError, RuntimeError) as error:
            raise BrokerUnavailable(f"{error.__class__.__name__}: {error}") from error

    async def _database_connection(self) -> asyncpg.Connection:
        if self._database is None or self._database.is_closed():
            self._database = await asyncpg.connect(
                **db.connect_kwargs(self.settings, application_name="messenger-relay"),
                timeout=self.settings.pg_command_timeout,
                command_timeout=self.settings.pg_command_timeout,
            )
        return self._database

    async def _close_database(self) -> None:
        conn, self._database = self._database, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    async def _connect(self) -> None:
        if self._channel is not None and self._connection and not self._connection.is_closed:
            return
        settings = self.settings
        # Not aio_pika.connect: it leaves a failed connection unclosed, to warn when collected.
        connection = aio_pika.Connection(
            make_url(
                host=settings.broker_host,
                port=settings.amqpport,
                login=settings.amqpuser,
                password=settings.amqppassword.get_secret_value(),
            ),
            client_properties={"connection_name": "messenger-relay"},
        )
        try:
            await connection.connect(timeout=settings.relay_publish_timeout)
            # An unroutable event (queue deleted) must fail the publish, not vanish.
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await declare_queue(channel, settings.amqp_queue)
        except (aio_pika.exceptions.AMQPError, ConnectionError, OSError, TimeoutError) as error:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 2)
            raise BrokerUnavailable(f"{error.__class__.__name__}: {error}") from error
        self._connection = connection
        self._channel = channel
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

    async def _declare_queue(self) -> None:
        assert self._channel is not None
        try:
            await declare_queue(self._channel, self.settings.amqp_queue)
        except (aio_pika.exceptions.AMQPError, ConnectionError, OSError, TimeoutError) as error:
            raise BrokerUnavailable(f"{error.__class__.__name__}: {error}") from error

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
        connection, self._connection = self._connection, None
        self._channel = None
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
    relay = OutboxRelay(settings, asyncio.Event())
    relay.start()
    logger.info("relay: running; publishing the outbox of %s", settings.pgdatabase)
    await stop.wait()
    logger.info("relay: stopping")
    await relay.stop()
