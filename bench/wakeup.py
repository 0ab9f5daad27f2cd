"""The wake-up path of live delivery, measured (issue 15): `python -m bench.wakeup`.

Needs PostgreSQL and RabbitMQ (PGHOST/PGPORT/PGUSER, AMQPHOST/AMQPPORT; 127.0.0.1 by default)
and the .venv. Two questions, in one process:

1. What a wake-up costs a send. --clients connections send messages with the service's own
   send statement, each into a conversation of its own, for --seconds per round in four ways,
   rotated over --rounds rounds: `none` (the statement alone), `inside` (the same statement
   with a `pg_notify` of the woken users in it, so every send's commit takes NOTIFY's
   database-wide lock), `after` (the statement alone, and one connection sends the woken
   users with `pg_notify` after the sends committed, one notification in flight at a time,
   the users gathering meanwhile: what the service does) and `fanout` (the same, publishing
   to a RabbitMQ fanout exchange instead). One connection LISTENs and one consumer reads
   throughout. Reported per way: sends per second (median of the rounds), the send's p50/p99.
2. How long a wake-up takes to arrive. --messages at --rate per second, half through each
   path, alternated in two rounds: `pg_notify` in its own transaction on one connection to a
   LISTEN on another, and a publish (with publisher confirms) to a fanout exchange of its own
   to a consumer on another connection. Measured from the call that commits or publishes to
   the arrival: p50/p99/max, and how many never arrived (within 2 s of the last).

The exchange is named for this process, auto-delete, and its queue exclusive; both are deleted
at the end. The bench database is made the way bench.live's is and dropped at the end.
"""

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aio_pika
import asyncpg

from bench import database as databases
from bench.database import Database
from bench.output import load_average, say, section
from bench.shell import BenchFailed
from messenger.db.conversations import create_conversation
from messenger.db.feed import WOKEN
from messenger.db.messages import SEND_MESSAGES

CHANNEL = "bench_wakeup"
GRACE = 2.0  # seconds to wait for stragglers after the last wake-up

# The send statement with NOTIFY in it: the notification is queued in the send's transaction
# and sent by its commit, which holds PostgreSQL's notify lock while it commits.
_LAST_COLUMN = f"{WOKEN}\nFROM counter"
assert _LAST_COLUMN in SEND_MESSAGES
_NOTIFY = "(SELECT pg_notify('bench_wakeup', string_agg(user_id::text, ',')) FROM fed)"
assert f"'{CHANNEL}'" in _NOTIFY
SEND_AND_NOTIFY = SEND_MESSAGES.replace(
    _LAST_COLUMN, f"{WOKEN}, {_NOTIFY} AS notified\nFROM counter"
)

WAYS = ("none", "inside", "after", "fanout")

Publish = Callable[[str], Awaitable[None]]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


@dataclass
class Round:
    way: str
    sends: int = 0
    latencies: list[float] = field(default_factory=list)


class Notifier:
    """The service's way (messenger.wakeups): woken users gather while one wake-up is in flight."""

    def __init__(self, send: Publish) -> None:
        self.send = send
        self.pending: set[int] = set()
        self.ready = asyncio.Event()
        self.sent = 0

    def publish(self, user_ids: list[int]) -> None:
        self.pending.update(user_ids)
        self.ready.set()

    async def run(self) -> None:
        while True:
            await self.ready.wait()
            self.ready.clear()
            ids, self.pending = self.pending, set()
            # A few hundred ids at most here: far below NOTIFY's 8,000-byte payload limit.
            await self.send(",".join(map(str, sorted(ids))))
            self.sent += 1


@contextlib.asynccontextmanager
async def fanout(arrive: Callable[[bytes], None]) -> AsyncIterator[Publish]:
    """A fanout exchange of this process's own (auto-delete) with an exclusive queue consumed
    on a second connection, as another instance would; both are deleted on the way out."""
    host, port = os.environ.get("AMQPHOST", "127.0.0.1"), int(os.environ.get("AMQPPORT", "5672"))
    name = f"bench.wakeup.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        publishing = await aio_pika.connect(host=host, port=port, timeout=10)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as error:
        raise BenchFailed(f"cannot reach RabbitMQ at {host}:{port}: {error!r}") from error
    try:
        consuming = await aio_pika.connect(host=host, port=port, timeout=10)
        try:
            out = await publishing.channel()  # publisher confirms: publish returns once routed
            exchange = await out.declare_exchange(
                name, aio_pika.ExchangeType.FANOUT, durable=False, auto_delete=True
            )
            into = await consuming.channel()
            queue = await into.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(name)

            async def consume(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                arrive(message.body)

            consumer = await queue.consume(consume, no_ack=True)

            async def publish(body: str) -> None:
                message = aio_pika.Message(
                    body.encode(), delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT
                )
                await exchange.publish(message, routing_key="")

            try:
                yield publish
            finally:
                await queue.cancel(consumer)
                await queue.unbind(name)
                await queue.delete(if_unused=False, if_empty=False)
                await out.exchange_delete(name)
        finally:
            await consuming.close()
    finally:
        await publishing.close()


async def sender(
    conn: asyncpg.Connection,
    conversation: int,
    user: int,
    into: Round,
    deadline: float,
    notifier: Notifier | None,
) -> None:
    """Send in a closed loop until the deadline, the way `into.way` says."""
    statement = SEND_AND_NOTIFY if into.way == "inside" else SEND_MESSAGES
    while (started := time.monotonic()) < deadline:
        row = await conn.fetchrow(statement, conversation, [user], ["wake up"])
        into.latencies.append(time.monotonic() - started)
        into.sends += 1
        if notifier is not None and row is not None:
            notifier.publish(list(row["woken"]))


async def send_rounds(
    database: Database, args: argparse.Namespace, users: list[int]
) -> dict[str, list[Round]]:
    conversations = []
    setup = await database.connect()
    try:
        for n in range(args.clients):
            low, high = users[2 * n], users[2 * n + 1]
            created = await create_conversation(setup, low, high)
            assert created.id is not None
            conversations.append((int(created.id), low))
    finally:
        await setup.close()
    conns = [await database.connect() for _ in range(args.clients)]
    listener, notifier_conn = await database.connect(), await database.connect()
    received = {"postgres": 0, "rabbitmq": 0}

    def count(*_: object) -> None:
        received["postgres"] += 1

    def consumed(_: bytes) -> None:
        received["rabbitmq"] += 1

    async def notify(payload: str) -> None:
        await notifier_conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)

    results: dict[str, list[Round]] = {way: [] for way in WAYS}
    notifiers: list[Notifier] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await listener.add_listener(CHANNEL, count)
        async with fanout(consumed) as publish:
            notifiers += [Notifier(notify), Notifier(publish)]
            tasks += [asyncio.create_task(notifier.run()) for notifier in notifiers]
            by_way = {"after": notifiers[0], "fanout": notifiers[1]}
            for number in range(args.rounds):
                turn = number % len(WAYS)
                for way in WAYS[turn:] + WAYS[:turn]:
                    result = Round(way)
                    deadline = time.monotonic() + args.seconds
                    notifier = by_way.get(way)
                    await asyncio.gather(
                        *(
                            sender(conn, conversation, user, result, deadline, notifier)
                            for conn, (conversation, user) in zip(conns, conversations, strict=True)
                        )
                    )
                    results[way].append(result)
                    say(
                        f"  round {number + 1} {way:>6}: {result.sends / args.seconds:7.1f}"
                        f" sends/s, p99 {ms(percentile(result.latencies, 0.99))} ms"
                        f"  (load {load_average()})"
                    )
            await asyncio.sleep(0.5)  # the last wake-ups arrive
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for conn in [*conns, listener, notifier_conn]:
            await conn.close()
    say(
        f"  wake-ups: {notifiers[0].sent} NOTIFYs sent after commits, {notifiers[1].sent}"
        f" publishes; {received['postgres']} notifications (the `inside` ones too) and"
        f" {received['rabbitmq']} messages received"
    )
    return results


@dataclass
class Path:
    name: str
    sent: dict[int, float] = field(default_factory=dict)
    arrived: dict[int, float] = field(default_factory=dict)
    calls: list[float] = field(default_factory=list)

    def arrive(self, body: str | bytes) -> None:
        self.arrived[int(body)] = time.monotonic()

    def delays(self) -> list[float]:
        return [self.arrived[n] - self.sent[n] for n in self.sent if n in self.arrived]


async def steady(path: Path, send: Publish, first: int, count: int, rate: float) -> None:
    """`count` wake-ups at `rate` per second, numbered from `first`; behind schedule, no pause."""
    started = time.monotonic()
    for n in range(count):
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        number = first + n
        path.sent[number] = sent = time.monotonic()
        await send(str(number))
        path.calls.append(time.monotonic() - sent)


async def delay_rounds(database: Database, args: argparse.Namespace) -> list[Path]:
    postgres, rabbitmq = Path("LISTEN/NOTIFY"), Path("RabbitMQ fanout")
    notifying, listening = await database.connect(), await database.connect()

    async def notify(body: str) -> None:
        await notifying.execute("SELECT pg_notify($1, $2)", CHANNEL, body)

    try:
        await listening.add_listener(CHANNEL, lambda *a: postgres.arrive(str(a[3])))
        async with fanout(rabbitmq.arrive) as publish:
            half = args.messages // 4
            for number in range(2):
                for path, send in ((postgres, notify), (rabbitmq, publish)):
                    say(
                        f"  round {number + 1}: {half} wake-ups through {path.name}"
                        f" at {args.rate:g}/s"
                    )
                    await steady(path, send, number * half, half, args.rate)
            await asyncio.sleep(GRACE)
    finally:
        await notifying.close()
        await listening.close()
    return [postgres, rabbitmq]


def figures(
    sends: dict[str, list[Round]], paths: list[Path], args: argparse.Namespace
) -> list[str]:
    lines = [
        f"Wake-ups on the send path: {args.clients} clients, {args.rounds} rounds of"
        f" {args.seconds:g} s per way (sends/s: median of rounds; latency over all sends)"
    ]
    base = statistics.median(r.sends / args.seconds for r in sends["none"])
    for way in WAYS:
        rounds = sends[way]
        rate = statistics.median(r.sends / args.seconds for r in rounds)
        latencies = [value for r in rounds for value in r.latencies]
        lines.append(
            f"  {way:>6}: {rate:7.1f} sends/s ({rate / base:.2f}x of none),"
            f" p50 {ms(percentile(latencies, 0.5))} ms, p99 {ms(percentile(latencies, 0.99))} ms"
            f"  [rounds: {', '.join(f'{r.sends / args.seconds:.0f}' for r in rounds)}]"
        )
    lines.append(f"Wake-up delay, call to arrival on another connection, {args.rate:g}/s steady:")
    for path in paths:
        delays = path.delays()
        lost = len(path.sent) - len(delays)
        if not delays:
            lines.append(f"  {path.name}: none of {len(path.sent)} arrived")
            continue
        lines.append(
            f"  {path.name}: p50 {ms(percentile(delays, 0.5))} ms,"
            f" p99 {ms(percentile(delays, 0.99))} ms, max {ms(max(delays))} ms;"
            f" the call itself p50 {ms(percentile(path.calls, 0.5))} ms;"
            f" {lost} of {len(path.sent)} lost"
        )
    return lines


def options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.wakeup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clients", type=int, default=32, help="sending connections (32)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per round and way (5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three ways (3)")
    parser.add_argument("--messages", type=int, default=4000, help="wake-ups in part 2 (4000)")
    parser.add_argument("--rate", type=float, default=200.0, help="wake-ups per second (200)")
    return parser.parse_args(argv)


async def main(argv: list[str]) -> int:
    args = options(argv)
    name = os.environ.get("BENCH_DATABASE", f"messenger_bench_wakeup_{os.getpid()}")
    database = Database.from_environment(name)
    section(f"wakeup: on {os.cpu_count()} cores, load {load_average()}")
    try:
        databases.create(database)
        conn = await database.connect()
        try:
            rows = await conn.fetch(
                "INSERT INTO users (name) SELECT 'wakeup user ' || i"
                " FROM generate_series(1, $1) i RETURNING id",
                2 * args.clients,
            )
        finally:
            await conn.close()
        sends = await send_rounds(database, args, [row["id"] for row in rows])
        paths = await delay_rounds(database, args)
    except BenchFailed as error:
        say(f"bench.wakeup: could not run: {error}")
        return 1
    finally:
        database.drop()
    section(f"wakeup: figures (load {load_average()})")
    for line in figures(sends, paths, args):
        say(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
