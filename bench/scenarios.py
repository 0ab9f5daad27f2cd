"""The scenarios: the conversations they use, and how each one is run.

- The service under wrk and its SQL under pgbench, by turns (A/B/A/B/...), so a change in the
  machine's load hits both sides alike: a 100-message read, a send at 32 connections and (not
  in --quick) the list of conversations.
- Once each (not in --quick): /health and the send at 256 connections.
- The send at 4 connections into an empty conversation and into one of 1,000,000 messages, in
  short alternated rounds (not with --skip-large or --quick).
- Sends without an Idempotency-Key, with a new key each and repeating one key, alternated
  (not in --quick).
- The mixed scenario (not in --quick; alone with --mixed): MIXED_USERS users in 117
  conversations at 256 connections, each request a read (70%), a send (20%) or a list of
  conversations (10%) by a member, picked at random (bench/wrk.lua), while every member
  holds an event stream (GET /events).
"""

import argparse
import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from bench import database, live, report
from bench.figures import Paired
from bench.output import Progress, say
from bench.pgbench import pgbench, write_scripts
from bench.service import Service
from bench.wrk import MESSAGE_CONTENT, NEW_KEY_EACH, READER, Load, WrkResult, send_load, wrk

MIXED_USERS = 60  # each in up to four conversations: with its two next and two previous users
MIXED_MESSAGES = 30  # per conversation at the start: a read's first page is a full one
MIXED_SHARES = (70, 20)  # percent reads and sends; the rest lists conversations
MIXED_CONNECTIONS = 256
LARGE_ROUNDS = 4  # of the empty vs 1M-message comparison, seconds / LARGE_ROUNDS each
KEYED_ROUNDS = 3  # of the send with and without an Idempotency-Key, alternated
ROUND_WARMUP = 1.0  # seconds before each of those short rounds


@dataclass(frozen=True)
class Conversations:
    send: int
    read: int
    pgbench: int
    empty: int
    large: int
    sustained: list[int]
    keyed: int
    mixed: list[tuple[int, int, int]]  # (conversation, member, member)


def setup(service: Service, args: argparse.Namespace, scratch: Path) -> Conversations:
    """The bench database, its conversations and messages, and the pgbench scripts."""
    existed = database.create(service.database)
    write_scripts(scratch)
    how = "recreated (a database of that name existed and was dropped)" if existed else "created"
    say(
        f"database {service.database.name} {how} with the migrate and seed jobs;"
        " pgbench scripts written from messenger.db"
    )
    mixed_users = database.add_users(service.database, MIXED_USERS, "mixed user")
    service.start(relay=False, logs=False)
    try:
        # Users 1-3 are the seeded ones, 4-9 bench users; each pair shares one conversation.
        # User 1 has two conversations: the list-of-conversations scenario reads them.
        conversations = Conversations(
            send=service.create_conversation(1, 2),
            read=service.create_conversation(1, 3),
            pgbench=service.create_conversation(2, 3),
            empty=service.create_conversation(4, 5),
            large=service.create_conversation(4, 6),
            sustained=[service.create_conversation(7, high) for high in (5, 6, 8, 9)],
            keyed=service.create_conversation(8, 9),
            mixed=[
                (service.create_conversation(low, high), low, high)
                for number, low in enumerate(mixed_users)
                for high in mixed_users[number + 1 : number + 3]
            ],
        )
    finally:
        service.stop()
    database.fill(service.database, conversations.read, 1, 100)
    database.fill_each(service.database, [c for c, _, _ in conversations.mixed], MIXED_MESSAGES)
    if not args.skip_large:
        say(f"filling conversation {conversations.large} with {args.large_messages:,} messages")
        took = database.fill(service.database, conversations.large, 4, args.large_messages)
        say(
            f"conversation {conversations.large} filled with {args.large_messages:,}"
            f" messages in {took:.1f} s"
        )
    service.database.psql("VACUUM ANALYZE")
    return conversations


@dataclass(frozen=True)
class Alternated:
    """An HTTP scenario and the pgbench run of its SQL."""

    load: Load
    sql_name: str
    script: Path
    variables: dict[str, object]


def alternated(
    args: argparse.Namespace, conv: Conversations, scratch: Path
) -> dict[str, Alternated]:
    scenarios = {
        "read": Alternated(
            Load("list a 100-message conversation", f"/conversations/{conv.read}/messages", 32),
            "pgbench: 100-message read SQL",
            scratch / "read.sql",
            {"channel_id": conv.read, "after_index": 0, "page_limit": 1000},
        ),
        "send_32": Alternated(
            send_load("send, one conversation", [conv.send], 32, 1),
            "pgbench: send SQL",
            scratch / "send.sql",
            {
                "channel_id": conv.pgbench,
                "sender_ids": "{2}",
                "contents": f'{{"{MESSAGE_CONTENT}"}}',
            },
        ),
    }
    if not args.quick:
        scenarios["conversations"] = Alternated(
            Load("list conversations", "/conversations", 32, user_id=1),
            "pgbench: list conversations SQL",
            scratch / "conversations.sql",
            {"user_id": 1},
        )
    return scenarios


def alternate(
    service: Service, scenario: Alternated, args: argparse.Namespace, progress: Progress
) -> Paired:
    """A/B/A/B/...: rounds of the service under wrk, each followed by one of pgbench."""
    paired = Paired([], [])
    name, seconds = scenario.load.name, args.duration
    for number in range(1, args.rounds + 1):
        warmup = args.warmup if number == 1 else 0  # once each side: caches, plans, connections
        of = f"{name}, round {number}/{args.rounds}"
        progress.step(f"{of}: the service under wrk", seconds + warmup)
        paired.service.append(wrk(service, scenario.load, seconds, warmup))
        progress.step(f"{of}: pgbench of its SQL", seconds + warmup)
        variables = scenario.variables
        paired.sql.append(pgbench(service.database, scenario.script, variables, seconds, warmup))
    return paired


def once(service: Service, load: Load, args: argparse.Namespace, progress: Progress) -> WrkResult:
    progress.step(f"{load.name} at {load.connections}", args.duration + args.warmup)
    result = wrk(service, load, args.duration, args.warmup)
    say(f"  {report.single_line(load.name, load.connections, result)}")
    return result


def mixed_load(conv: Conversations) -> Load:
    """Many users and conversations: reads, sends and lists of conversations by members
    (each member also holds an event stream while it runs: `event_streams`)."""
    reads, sends = MIXED_SHARES
    name = f"mixed: {reads}% reads, {sends}% sends, {100 - reads - sends}% lists"
    return Load(name, "/health", MIXED_CONNECTIONS, mixed=tuple(conv.mixed), shares=MIXED_SHARES)


def mixed(
    service: Service, conv: Conversations, args: argparse.Namespace, progress: Progress
) -> list[WrkResult]:
    """The mixed scenario, --rounds rounds (one warm-up): each round printed, then medians."""
    load = mixed_load(conv)
    results: list[WrkResult] = []
    for number in range(1, args.rounds + 1):
        warmup = args.warmup if number == 1 else 0
        progress.step(f"{load.name}, round {number}/{args.rounds}", args.duration + warmup)
        members = sorted({user for _, *pair in conv.mixed for user in pair})
        with event_streams(service, members) as deliveries:
            results.append(wrk(service, load, args.duration, warmup))
        if deliveries is not None:
            say(f"    {len(members)} event streams open, {deliveries.events:,} events delivered")
    for line in report.rounds_lines(load.name, load.connections, results):
        say(f"  {line}")
    return results


@contextlib.contextmanager
def event_streams(service: Service, users: list[int]) -> Iterator[live.Deliveries | None]:
    """A GET /events stream per user, open (in a thread of its own) while the block runs.

    None with AUTH_MODE=jwt: bench/live.py's streams name their user with User-Id.
    """
    if service.tokens is not None:
        yield None
        return
    deliveries = live.Deliveries()
    opened: concurrent.futures.Future[None] = concurrent.futures.Future()
    loop = asyncio.new_event_loop()

    async def hold() -> None:
        tasks = await live.open_streams(dict.fromkeys(users, service.port), users, deliveries)
        opened.set_result(None)
        try:
            await asyncio.Event().wait()  # until cancelled at the end of the block
        finally:
            await live.cancel(tasks)

    def run() -> None:
        try:
            loop.run_until_complete(holder)
        except BaseException as error:  # the block learns it through `opened`
            if not opened.done():
                opened.set_exception(error)
        finally:
            loop.close()

    holder = loop.create_task(hold())
    thread = threading.Thread(target=run, name="event-streams", daemon=True)
    thread.start()
    try:
        opened.result(timeout=60)
        yield deliveries
    finally:
        loop.call_soon_threadsafe(holder.cancel)
        thread.join(timeout=10)


def large_rounds(
    service: Service, conv: Conversations, args: argparse.Namespace, progress: Progress
) -> tuple[list[WrkResult], list[WrkResult]]:
    """The send at 4 connections into the empty and the 1M-message conversation, by turns."""
    empty = send_load("send, empty conversation", [conv.empty], 4, 4)
    large = send_load("send, 1M-message conversation", [conv.large], 4, 4)
    seconds = args.duration / LARGE_ROUNDS
    sides: tuple[list[WrkResult], list[WrkResult]] = ([], [])
    for number in range(1, LARGE_ROUNDS + 1):
        for load, side in ((empty, sides[0]), (large, sides[1])):
            progress.step(f"{load.name}, round {number}/{LARGE_ROUNDS}", seconds + ROUND_WARMUP)
            side.append(wrk(service, load, seconds, ROUND_WARMUP))
    for load, side in ((empty, sides[0]), (large, sides[1])):
        for line in report.rounds_lines(load.name, load.connections, side):
            say(f"  {line}")
    return sides


def idempotency_rounds(
    service: Service, conversation: int, sender: int, args: argparse.Namespace, progress: Progress
) -> dict[str, list[WrkResult]]:
    """A send without a key, with a new key each, and repeating one key, in alternated rounds
    so that the machine's other load hits all three alike."""
    plain = send_load("send, no key", [conversation], 32, sender)
    loads = [
        plain,
        replace(plain, name="send, new key each", idempotency_key=NEW_KEY_EACH),
        replace(plain, name="send, repeated key", idempotency_key="bench-1"),
    ]
    rounds: dict[str, list[WrkResult]] = {load.name: [] for load in loads}
    for number in range(1, KEYED_ROUNDS + 1):
        for load in loads:
            progress.step(f"{load.name}, round {number}/{KEYED_ROUNDS}", args.duration + 1)
            rounds[load.name].append(wrk(service, load, args.duration, ROUND_WARMUP))
    for load in loads:
        for line in report.rounds_lines(load.name, load.connections, rounds[load.name]):
            say(f"  {line}")
    return rounds


def auth_loads(conv: Conversations) -> list[Load]:
    """What --auth-compare measures: the read and the send of the alternated scenarios. The
    read names its reader in both modes: jwt mode always checks membership, so header mode's
    anonymous read would compare unlike work."""
    return [
        Load(
            "list a 100-message conversation as a member",
            f"/conversations/{conv.read}/messages",
            32,
            user_id=READER,
        ),
        send_load("send, one conversation", [conv.send], 32, 1),
    ]


def auth_rounds(
    services: list[Service], conv: Conversations, args: argparse.Namespace, progress: Progress
) -> dict[str, dict[str, list[WrkResult]]]:
    """Each load against each AUTH_MODE's service by turns (read header, read jwt, send header,
    send jwt, ...), so the machine's other load hits both modes alike. Results by load name,
    then by mode."""
    loads = auth_loads(conv)
    results: dict[str, dict[str, list[WrkResult]]] = {
        load.name: {service.mode: [] for service in services} for load in loads
    }
    for number in range(1, args.rounds + 1):
        warmup = args.warmup if number == 1 else 0
        for load in loads:
            for service in services:
                of = f"{load.name}, AUTH_MODE={service.mode}, round {number}/{args.rounds}"
                progress.step(of, args.duration + warmup)
                result = wrk(service, load, args.duration, warmup)
                results[load.name][service.mode].append(result)
    return results


def planned_seconds(args: argparse.Namespace) -> float:
    """Seconds of load the whole bench applies (warm-ups included), for its progress lines."""
    seconds, warmup = args.duration, args.warmup
    if args.auth_compare:
        return float(2 * 2 * (args.rounds * seconds + warmup))
    if args.compare is not None:
        return float(2 * 5 * (args.rounds * seconds + warmup))  # compare.loads, on A and B
    mixed = args.rounds * seconds + warmup
    if args.mixed:
        return float(mixed)
    alternated_count = 2 if args.quick else 3
    total = alternated_count * (args.rounds * 2 * seconds + 2 * warmup)
    if not args.quick:
        total += 2 * (seconds + warmup)  # /health and the send at 256
        total += KEYED_ROUNDS * 3 * (seconds + ROUND_WARMUP)
        total += mixed
    if not args.skip_large:
        total += LARGE_ROUNDS * 2 * (seconds / LARGE_ROUNDS + ROUND_WARMUP)
    if args.sustained > 0:
        total += 2 * (warmup + args.sustained)  # the relay in-process, then its own process
    return float(total)
