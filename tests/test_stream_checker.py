"""The live-delivery checker: many streams on several real instances under concurrent sends.

Users stream from three instances while senders write into many conversations; one user is in
most of them. Clients drop their connections at random and resume with Last-Event-ID on
another instance; one instance is killed with SIGKILL and another stopped with SIGTERM
midway. At the end every client has every message of its conversations (the database is the
truth: a send cut off by the kill may or may not have committed), in index order, none
repeated. Bounded: about 15 s of sending, 30 s at most to catch up.
"""

import asyncio
import contextlib
import random
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field

import asyncpg
import httpx
import orjson

from messenger.settings import Settings
from tests import factories
from tests.processes import Service, serve, service_env
from tests.sse import open_stream

USERS = 12
HUB = 0  # the user in a conversation with every other user
SENDERS = 4
SENDING_SECONDS = 15.0
CATCH_UP_SECONDS = 30.0
CONNECTION_ERRORS = (httpx.TransportError, AssertionError)


@dataclass
class Client:
    """One user's view: the messages its streams delivered, by conversation."""

    user_id: int
    last_id: str | None = None
    indexes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    message_ids: list[str] = field(default_factory=list)
    connections: int = 0
    instances_used: set[str] = field(default_factory=set)

    def count(self) -> int:
        return len(self.message_ids)


@dataclass
class Cluster:
    services: list[Service]
    alive: list[str]
    clients: dict[str, httpx.AsyncClient]

    def pick(self) -> httpx.AsyncClient:
        return self.clients[random.choice(self.alive)]


async def run_client(cluster: Cluster, client: Client, stop: asyncio.Event) -> None:
    while not stop.is_set():
        http = cluster.pick()
        client.connections += 1
        hold = random.uniform(0.2, 2.0)  # then drop the connection, as a flaky network does
        try:
            async with (
                asyncio.timeout(hold),
                open_stream(http, client.user_id, last_event_id=client.last_id) as stream,
            ):
                client.instances_used.add(str(http.base_url))
                client.last_id = stream.last_id  # the opening id: resume from here at least
                while not stop.is_set():
                    block = await stream.next_block(timeout=30)
                    if block is None:
                        break  # the instance ended it (SIGTERM): resume elsewhere
                    if block.event == "message":
                        data = orjson.loads(block.data)
                        message = data["message"]
                        client.indexes[data["conversation_id"]].append(int(message["index"]))
                        client.message_ids.append(message["id"])
                    client.last_id = stream.last_id
        except TimeoutError:
            pass
        except CONNECTION_ERRORS:
            await asyncio.sleep(0.05)  # the instance is gone: the next one is another


async def run_sender(
    cluster: Cluster, conversations: list[tuple[str, tuple[int, int]]], stop: asyncio.Event
) -> int:
    sent = 0
    while not stop.is_set():
        conversation, members = random.choice(conversations)
        sender = random.choice(members)
        with contextlib.suppress(httpx.TransportError):
            response = await cluster.pick().post(
                f"/conversations/{conversation}/messages",
                headers={"User-Id": str(sender)},
                json={"content": f"from {sender}"},
            )
            if response.status_code == 201:
                sent += 1
    return sent


async def test_every_client_gets_every_message_once_in_order_across_kills_and_resumes(
    database: Settings, pool: asyncpg.Pool, clean: None
) -> None:
    random.seed(15)
    user_ids = await factories.users(pool, *(f"user {n}" for n in range(USERS)))
    env = {"FEED_POLL_INTERVAL": "1", "SHUTDOWN_DRAIN_TIMEOUT": "2", "SSE_HEARTBEAT_INTERVAL": "2"}
    with (
        serve(service_env(database, **env)) as first,
        serve(service_env(database, **env)) as second,
        serve(service_env(database, **env)) as third,
    ):
        services = [first, second, third]
        https = {
            service.url: httpx.AsyncClient(base_url=service.url, timeout=10) for service in services
        }
        cluster = Cluster(services, [service.url for service in services], https)
        try:
            pairs = [(user_ids[HUB], other) for other in user_ids[1:]]
            pairs += [(user_ids[n], user_ids[n + 1]) for n in range(1, USERS - 1, 2)]
            conversations = []
            for low, high in pairs:
                conversation = await factories.conversation(cluster.pick(), low, high)
                conversations.append((conversation, (low, high)))

            clients = [Client(user_id) for user_id in user_ids]
            stop_clients, stop_senders = asyncio.Event(), asyncio.Event()
            readers = [asyncio.create_task(run_client(cluster, c, stop_clients)) for c in clients]
            await asyncio.sleep(1.0)
            senders = [
                asyncio.create_task(run_sender(cluster, conversations, stop_senders))
                for _ in range(SENDERS)
            ]

            await asyncio.sleep(SENDING_SECONDS / 3)
            cluster.alive.remove(second.url)
            second.process.send_signal(signal.SIGKILL)
            await asyncio.sleep(SENDING_SECONDS / 3)
            cluster.alive.remove(third.url)
            third.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(SENDING_SECONDS / 3)
            stop_senders.set()
            sent = sum(await asyncio.gather(*senders))

            # The database is the truth: a send the kill cut off may have committed.
            rows = await pool.fetch(
                "SELECT channel_id::text AS conversation, count(*) AS n FROM messages"
                " GROUP BY channel_id"
            )
            stored = {row["conversation"]: int(row["n"]) for row in rows}
            expected = {
                user: {c: stored.get(c, 0) for c, members in conversations if user in members}
                for user in user_ids
            }
            totals = {user: sum(counts.values()) for user, counts in expected.items()}
            deadline = time.monotonic() + CATCH_UP_SECONDS
            while time.monotonic() < deadline:
                if all(client.count() >= totals[client.user_id] for client in clients):
                    break
                await asyncio.sleep(0.2)
            stop_clients.set()
            await asyncio.gather(*readers)
        finally:
            for http in https.values():
                await http.aclose()

    assert sent > 200
    assert sum(stored.values()) >= sent
    for client in clients:
        assert len(set(client.message_ids)) == len(client.message_ids), client.user_id
        for conversation, count in expected[client.user_id].items():
            got = client.indexes.get(conversation, [])
            assert got == list(range(1, count + 1)), (client.user_id, conversation)
        assert client.connections > 3
    hub = clients[HUB]
    print(
        f"checker: {sent} sends answered 201, {sum(stored.values())} stored;"
        f" the hub user got {hub.count()} messages of {len(expected[hub.user_id])} conversations"
        f" over {hub.connections} connections; connections in all:"
        f" {sum(client.connections for client in clients)}"
    )
