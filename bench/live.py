"""Live delivery under load (issue 15): `python -m bench.live` (scripts/bench installs what it
needs; this scenario only needs PostgreSQL, RabbitMQ and the .venv).

1. Two serving processes, --users users each with one stream (half on each instance), every
   user in two conversations. Sends at --rate per second for --seconds, each through the
   instance that does NOT hold the other member's stream, so every measured event crosses
   instances. Reported: the delay from the send's 201 (as this client saw it) to the event's
   arrival on the other instance's stream (p50, p90, p99, max); the services' CPU per
   delivered event.
2. Send throughput with streams on and off: --senders closed-loop senders for --burst seconds
   against both instances, with the streams open and with none, alternated over --rounds
   (on off, off on, ...; the streams are closed and reopened between).
3. --idle idle streams on one fresh instance: its RSS before and after, and whether every
   stream's heartbeats (SSE_HEARTBEAT_INTERVAL, --heartbeat) came on time.

Targets: p99 <= 100 ms at 200 sends/s with 1,000 streams; sends with streams on >= 0.9x of
off; 10,000 idle streams within 300 MB RSS with heartbeats on time. Exit 0 when it ran.
"""

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from bench import database as databases
from bench.database import Database
from bench.output import say, section
from bench.service import Service, delete_queue, free_port
from bench.shell import BenchFailed

HOST = "127.0.0.1"


class LiveService(Service):
    """A serving process with the stream settings of this scenario."""

    def __init__(self, database: Database, port: int, queue: str, log: Path, **extra: str):
        super().__init__(database, port, queue, log)
        self.extra = extra

    def env(self, *, relay: bool, logs: bool) -> dict[str, str]:
        return {**super().env(relay=relay, logs=logs), **self.extra}


class ChunkedSSE:
    """Reads a chunked `text/event-stream` response from a raw connection, block by block."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buffer = b""

    async def _chunk(self) -> bytes:
        size_line = await self.reader.readuntil(b"\r\n")
        size = int(size_line.strip(), 16)
        if size == 0:
            raise EOFError
        data = await self.reader.readexactly(size + 2)
        return data[:-2]

    async def block(self) -> bytes:
        while b"\n\n" not in self.buffer:
            self.buffer += await self._chunk()
        block, _, self.buffer = self.buffer.partition(b"\n\n")
        return block


@contextlib.asynccontextmanager
async def raw_stream(port: int, user_id: int) -> AsyncIterator[ChunkedSSE]:
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
    try:
        writer.write(f"GET /events HTTP/1.1\r\nHost: bench\r\nUser-Id: {user_id}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status:
            raise BenchFailed(f"GET /events for user {user_id}: {status.decode()}")
        stream = ChunkedSSE(reader)
        await stream.block()  # retry: and the opening id
        yield stream
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@dataclass
class Deliveries:
    arrived: dict[str, float] = field(default_factory=dict)  # message id -> monotonic arrival
    events: int = 0
    pings: int = 0


async def listen(port: int, user_id: int, into: Deliveries, ready: asyncio.Event) -> None:
    async with raw_stream(port, user_id) as stream:
        ready.set()
        while True:
            block = await stream.block()
            now = time.monotonic()
            if block.startswith(b": ping"):
                into.pings += 1
                continue
            into.events += 1
            if b"\nevent: message\n" in block:
                data = block.rpartition(b"data: ")[2]
                message_id = orjson.loads(data)["message"]["id"]
                into.arrived.setdefault(f"{user_id}:{message_id}", now)


async def delivery_buckets(clients: list[httpx.AsyncClient]) -> dict[float, float]:
    """messenger_stream_delivery_delay_seconds buckets (upper bound -> count), summed over the
    instances: from the transaction that made an event to its write on a stream."""
    buckets: dict[float, float] = {}
    for client in clients:
        text = (await client.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith("messenger_stream_delivery_delay_seconds_bucket{"):
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                upper = float("inf") if bound == "+Inf" else float(bound)
                buckets[upper] = buckets.get(upper, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def bucket_quantile(before: dict[float, float], after: dict[float, float], share: float) -> str:
    """The bucket holding the `share` quantile of the events between two scrapes: "<= 25 ms"."""
    counts = sorted((upper, after[upper] - before.get(upper, 0.0)) for upper in after)
    total = counts[-1][1] if counts else 0.0
    for upper, cumulative in counts:
        if total and cumulative >= share * total:
            return "> 30 s" if upper == float("inf") else f"<= {upper * 1000:g} ms"
    return "n/a"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class Conversation:
    id: int
    members: tuple[int, int]


async def create_users(database: Database, count: int) -> list[int]:
    conn = await database.connect()
    try:
        rows = await conn.fetch(
            "INSERT INTO users (name) SELECT 'live user ' || i FROM generate_series(1, $1) i"
            " RETURNING id",
            count,
        )
    finally:
        await conn.close()
    return [row["id"] for row in rows]


async def create_conversations(url: str, users: list[int]) -> list[Conversation]:
    """A ring: user i talks with user i+1, so everyone is in two conversations."""
    pairs = [(users[i], users[(i + 1) % len(users)]) for i in range(len(users))]
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        semaphore = asyncio.Semaphore(16)

        async def create(low: int, high: int) -> Conversation:
            async with semaphore:
                body = {"participant_ids": [low, high]}
                response = await client.post("/conversations", json=body)
                if response.status_code != 201:
                    raise BenchFailed(f"POST /conversations: {response.text}")
                return Conversation(int(response.json()["conversation"]["id"]), (low, high))

        return list(await asyncio.gather(*(create(a, b) for a, b in pairs)))


async def open_streams(
    ports: dict[int, int], users: list[int], into: Deliveries
) -> list[asyncio.Task[None]]:
    """One stream per user on the instance ports[user]; returns once all are open."""
    tasks = []
    for start in range(0, len(users), 200):
        batch = []
        for user in users[start : start + 200]:
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(listen(ports[user], user, into, ready)))
            batch.append(ready.wait())
        await asyncio.wait_for(asyncio.gather(*batch), 60)
    return tasks


async def cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def steady_sends(
    clients: dict[int, httpx.AsyncClient],
    conversations: list[Conversation],
    stream_port: dict[int, int],
    rate: float,
    seconds: float,
) -> tuple[dict[str, float], int]:
    """Open-loop sends at `rate`/s; returns (recipient:message id -> 201 time, failures)."""
    answered: dict[str, float] = {}
    failures = 0
    other_port = {
        port: other for port, other in zip(clients, reversed(list(clients)), strict=False)
    }

    async def send(conversation: Conversation) -> None:
        nonlocal failures
        sender, recipient = random.sample(conversation.members, 2)
        # Through the instance that does not hold the recipient's stream.
        client = clients[other_port[stream_port[recipient]]]
        try:
            response = await client.post(
                f"/conversations/{conversation.id}/messages",
                headers={"User-Id": str(sender)},
                json={"content": "live bench"},
            )
        except httpx.HTTPError:
            failures += 1
            return
        if response.status_code != 201:
            failures += 1
            return
        answered[f"{recipient}:{response.json()['message']['id']}"] = time.monotonic()

    tasks = []
    started = time.monotonic()
    for n in range(int(rate * seconds)):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(random.choice(conversations))))
    await asyncio.gather(*tasks)
    return answered, failures


async def closed_loop(
    clients: list[httpx.AsyncClient], conversations: list[Conversation], senders: int, secs: float
) -> float:
    """Sends/s of `senders` senders each sending as fast as answers come."""
    done = 0
    deadline = time.monotonic() + secs

    async def sender(n: int) -> None:
        nonlocal done
        client = clients[n % len(clients)]
        while time.monotonic() < deadline:
            conversation = random.choice(conversations)
            response = await client.post(
                f"/conversations/{conversation.id}/messages",
                headers={"User-Id": str(conversation.members[0])},
                json={"content": "throughput"},
            )
            if response.status_code == 201:
                done += 1

    started = time.monotonic()
    await asyncio.gather(*(sender(n) for n in range(senders)))
    return done / (time.monotonic() - started)


async def part_one(args: argparse.Namespace, database: Database, workdir: Path) -> list[str]:
    queue = os.environ.get("BENCH_QUEUE", f"bench_queue_{os.getpid()}")
    settings = {"SSE_HEARTBEAT_INTERVAL": "15", "PG_POOL_MAX": str(args.pool)}
    services = [
        LiveService(database, free_port(), queue, workdir / f"instance-{n}.log", **settings)
        for n in range(2)
    ]
    lines: list[str] = []
    try:
        for service in services:
            service.start(relay=True, logs=not args.logs_off)
        users = await create_users(database, args.users)
        conversations = await create_conversations(services[0].url, users)
        ports = {user: services[n % 2].port for n, user in enumerate(users)}
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        clients = {
            s.port: httpx.AsyncClient(base_url=s.url, timeout=30, limits=limits) for s in services
        }
        try:
            section(f"live: {args.users} streams on 2 instances, {args.rate:g} sends/s")
            deliveries = Deliveries()
            listeners = await open_streams(ports, users, deliveries)
            say(f"  .. {len(listeners)} streams open; warming up 3 s")
            await steady_sends(clients, conversations, ports, args.rate, 3)
            cpu_before = [s.cpu_seconds() for s in services]
            histogram_before = await delivery_buckets(list(clients.values()))
            events_before = deliveries.events
            say(f"  .. {args.seconds:g} s of sends at {args.rate:g}/s across the instances")
            answered, failures = await steady_sends(
                clients, conversations, ports, args.rate, args.seconds
            )
            await asyncio.sleep(2)  # the last events arrive
            cpu = sum(s.cpu_seconds() for s in services) - sum(cpu_before)
            histogram_after = await delivery_buckets(list(clients.values()))
            server_p50 = bucket_quantile(histogram_before, histogram_after, 0.5)
            server_p99 = bucket_quantile(histogram_before, histogram_after, 0.99)
            events = deliveries.events - events_before
            delays = [
                (deliveries.arrived[key] - at) * 1000
                for key, at in answered.items()
                if key in deliveries.arrived
            ]
            missing = len(answered) - len(delays)
            rss = [s.memory_mb()[0] for s in services]
            lines += [
                f"sends answered 201: {len(answered)} ({failures} failed), events measured:"
                f" {len(delays)}, missing: {missing}",
                "delay from the 201 to the event on the other instance (ms):"
                f" p50 {percentile(delays, 0.5):.1f}, p90 {percentile(delays, 0.9):.1f},"
                f" p99 {percentile(delays, 0.99):.1f}, max {max(delays):.1f}"
                f" (negative: the event came before the 201 did)",
                "the services' own delay histogram (event's transaction to its write on the"
                f" stream, both members): p50 {server_p50}, p99 {server_p99}",
                f"events delivered (both members): {events}; services' CPU {cpu:.1f} s:"
                f" {cpu / max(events, 1) * 1e3:.2f} ms per delivered event, sends included"
                f" ({cpu / max(len(answered), 1) * 1e3:.2f} ms per send with its 2 events)",
                f"RSS with {args.users // 2} streams each: {rss[0]:.0f} MB, {rss[1]:.0f} MB",
            ]
            p99 = percentile(delays, 0.99)
            lines.append(
                f"target p99 <= 100 ms at {args.rate:g}/s with {args.users} streams:"
                f" {'PASS' if p99 <= 100 and missing == 0 else 'MISS'} ({p99:.1f} ms)"
            )

            section(f"live: send throughput, {args.senders} senders, streams on vs off")
            # Alternated (on off, off on, on off, ...): load that moves on a shared machine
            # falls on both sides alike instead of on whichever ran last.
            http = list(clients.values())
            pairs: list[float] = []
            offs: list[float] = []
            streaming = True
            for n in range(args.rounds):
                for on in (True, False) if n % 2 == 0 else (False, True):
                    if on != streaming:
                        if on:
                            listeners = await open_streams(ports, users, Deliveries())
                        else:
                            await cancel(listeners)
                        await asyncio.sleep(1)
                        streaming = on
                    rate = await closed_loop(http, conversations, args.senders, args.burst)
                    say(f"  .. round {n + 1}: streams {'on' if on else 'off'} {rate:.0f} sends/s")
                    (pairs if on else offs).append(rate)
            if streaming:
                await cancel(listeners)
            on_median, off_median = statistics.median(pairs), statistics.median(offs)
            ratio = on_median / off_median
            rounds_on = ", ".join(f"{value:.0f}" for value in pairs)
            rounds_off = ", ".join(f"{value:.0f}" for value in offs)
            lines += [
                f"send throughput: streams on {on_median:.0f}/s (rounds {rounds_on}),"
                f" off {off_median:.0f}/s (rounds {rounds_off}): {ratio:.2f}x",
                f"target sends with streams on >= 0.9x of off: {'PASS' if ratio >= 0.9 else 'MISS'}"
                f" ({ratio:.2f}x)",
            ]
        finally:
            for client in clients.values():
                await client.aclose()
    finally:
        for service in services:
            service.stop()
        with contextlib.suppress(BenchFailed):
            await delete_queue(queue)
    return lines


async def part_two(args: argparse.Namespace, database: Database, workdir: Path) -> list[str]:
    queue = os.environ.get("BENCH_QUEUE", f"bench_queue_{os.getpid()}")
    service = LiveService(
        database,
        free_port(),
        queue,
        workdir / "idle.log",
        SSE_HEARTBEAT_INTERVAL=str(args.heartbeat),
        SSE_MAX_STREAMS=str(args.idle + 100),
    )
    lines: list[str] = []
    section(f"live: {args.idle} idle streams on one instance, heartbeat {args.heartbeat:g} s")
    service.start(relay=False, logs=not args.logs_off)
    try:
        users = await create_users(database, args.idle)
        await asyncio.sleep(1)
        before = service.memory_mb()[0]
        deliveries = Deliveries()
        pings: dict[int, list[float]] = {}

        async def idle(user: int, ready: asyncio.Event) -> None:
            times = pings.setdefault(user, [])
            async with raw_stream(service.port, user) as stream:
                times.append(time.monotonic())
                ready.set()
                while True:
                    block = await stream.block()
                    if block.startswith(b": ping"):
                        times.append(time.monotonic())
                        deliveries.pings += 1

        tasks = []
        opened = time.monotonic()
        for start in range(0, len(users), 500):
            batch = []
            for user in users[start : start + 500]:
                ready = asyncio.Event()
                tasks.append(asyncio.create_task(idle(user, ready)))
                batch.append(ready.wait())
            await asyncio.wait_for(asyncio.gather(*batch), 120)
        say(f"  .. {len(tasks)} streams open in {time.monotonic() - opened:.1f} s")
        watch = args.heartbeat * 2.5
        say(f"  .. watching heartbeats for {watch:g} s")
        await asyncio.sleep(watch)
        after, peak = service.memory_mb()
        cpu = service.cpu_seconds()
        gaps = [b - a for times in pings.values() for a, b in itertools.pairwise(times)]
        counts = [len(times) - 1 for times in pings.values()]
        late = sum(1 for gap in gaps if gap > args.heartbeat + 1.0)
        await cancel(tasks)
        lines += [
            f"{len(tasks)} idle streams: RSS {before:.0f} MB before, {after:.0f} MB with them"
            f" (peak {peak:.0f} MB): {(after - before) * 1024 / len(tasks):.1f} kB per stream",
            f"heartbeats in {watch:g} s: {min(counts)}..{max(counts)} per stream, gaps"
            f" p50 {percentile(gaps, 0.5):.2f} s, max {max(gaps):.2f} s, {late} later than"
            f" {args.heartbeat + 1:g} s; service CPU so far {cpu:.1f} s",
            f"target {args.idle} idle streams within 300 MB RSS, heartbeats on time:"
            f" {'PASS' if after <= 300 and late == 0 and min(counts) >= 2 else 'MISS'}"
            f" ({after:.0f} MB, {late} late)",
        ]
    finally:
        service.stop()
    return lines


def options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.live",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=1000, help="streams in part 1 (1000)")
    parser.add_argument("--rate", type=float, default=200.0, help="sends per second (200)")
    parser.add_argument("--seconds", type=float, default=20.0, help="steady sends (20)")
    parser.add_argument("--senders", type=int, default=32, help="closed-loop senders (32)")
    parser.add_argument("--burst", type=float, default=8.0, help="seconds per round (8)")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (3)")
    parser.add_argument("--pool", type=int, default=10, help="PG_POOL_MAX per instance (10)")
    parser.add_argument("--idle", type=int, default=10_000, help="idle streams, part 3 (10000)")
    parser.add_argument("--heartbeat", type=float, default=15.0, help="seconds (15)")
    parser.add_argument("--skip-idle", action="store_true", help="leave out part 3")
    parser.add_argument("--idle-only", action="store_true", help="run part 3 alone")
    parser.add_argument("--logs-off", action="store_true", help="LOG_LEVEL=warning")
    return parser.parse_args(argv)


async def main(argv: list[str]) -> int:
    args = options(argv)
    random.seed(15)
    name = os.environ.get("BENCH_DATABASE", f"messenger_bench_live_{os.getpid()}")
    database = Database.from_environment(name)
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        try:
            databases.create(database)
            if not args.idle_only:
                lines += await part_one(args, database, Path(tmp))
                for line in lines:
                    say(f"  {line}")
            if not args.skip_idle:
                lines += await part_two(args, database, Path(tmp))
        except BenchFailed as error:
            say(f"bench.live: could not run: {error}")
            return 1
        finally:
            database.drop()
    section("live: figures")
    for line in lines:
        say(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
