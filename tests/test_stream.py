"""GET /events against real service processes over real sockets: events, resume, limits, ends."""

import asyncio
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import orjson
import pytest

from messenger.errors import (
    EVENT_ID_FOREIGN,
    EVENT_ID_INVALID,
    EVENT_ID_UNKNOWN,
    STREAMS_FULL,
    USER_ID_REQUIRED,
    USER_NOT_FOUND,
)
from messenger.settings import Settings
from tests import factories
from tests.processes import Service, serve, service_env
from tests.sse import open_stream

# Wake-ups travel by NOTIFY; the periodic re-read is far off, so a test that gets an event
# within a second got it by wake-up.
POLL = "30"
# Headers that differ between two answers.
VOLATILE = {"date", "x-request-id", "transfer-encoding"}


@pytest.fixture(scope="module")
def instances(database: Settings) -> Iterator[list[Service]]:
    """Two instances of one database."""
    settings = {
        "SSE_HEARTBEAT_INTERVAL": "1",
        "SSE_SEND_TIMEOUT": "1",
        "FEED_POLL_INTERVAL": POLL,
    }
    with (
        serve(service_env(database, **settings)) as first,
        serve(service_env(database, **settings)) as second,
    ):
        yield [first, second]


@pytest.fixture
async def clients(instances: list[Service], clean: None) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=instances[0].url, timeout=10) as first,
        httpx.AsyncClient(base_url=instances[1].url, timeout=10) as second,
    ):
        yield [first, second]


async def test_a_stream_opens_with_its_headers_a_retry_and_an_id(
    clients: list[httpx.AsyncClient], pool: asyncpg.Pool
) -> None:
    [alice] = await factories.users(pool, "Alice")
    headers = {"User-Id": str(alice), "Origin": "https://app.example"}
    async with clients[0].stream("GET", "/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["access-control-allow-origin"] == "*"
        lines = response.aiter_lines()
        assert [await anext(lines) for _ in range(3)] == ["retry: 2000", f"id: {alice}-0", ""]


async def test_a_message_sent_through_one_instance_reaches_a_stream_on_the_other(
    clients: list[httpx.AsyncClient], pool: asyncpg.Pool
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    conversation = await factories.conversation(clients[0], alice, bob)
    async with open_stream(clients[1], bob) as stream:
        sent_at = time.monotonic()
        await factories.send(clients[0], conversation, alice, "hello Bob")
        event = await stream.next_event(timeout=1.5)
        delay = time.monotonic() - sent_at
    listed = await clients[0].get(f"/conversations/{conversation}/messages")
    message = listed.json()["messages"][0]
    assert event.event == "message"
    assert event.data.encode() == orjson.dumps(
        {"conversation_id": conversation, "message": message}
    )
    assert event.id == f"{bob}-2"
    assert delay < 1.0  # woken, not polled (FEED_POLL_INTERVAL is 30 s)


async def test_conversation_and_horizon_events_reach_both_members(
    clients: list[httpx.AsyncClient], pool: asyncpg.Pool
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    async with open_stream(clients[0], alice) as mine, open_stream(clients[1], bob) as theirs:
        conversation = await factories.conversation(clients[1], alice, bob)
        response = await clients[0].post(
            f"/conversations/{conversation}/view_horizon",
            headers={"User-Id": str(bob)},
            json={"index": 3},
        )
        assert response.status_code == 204
        for user, stream in ((alice, mine), (bob, theirs)):
            listed = await clients[0].get("/conversations", headers={"User-Id": str(user)})
            created = await stream.next_event()
            assert created.event == "conversation"
            expected = {"conversation": listed.json()["conversations"][0]}
            assert created.data.encode() == orjson.dumps(expected)
            horizon = await stream.next_event()
            assert horizon.event == "horizon"
            assert orjson.loads(horizon.data) == {
                "conversation_id": conversation,
                "user_id": str(bob),
                "index": "3",
            }


@pytest.mark.parametrize("how", ["header", "query"])
async def test_a_client_resumes_on_another_instance_without_loss_or_repeat(
    clients: list[httpx.AsyncClient], pool: asyncpg.Pool, how: str
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    conversation = await factories.conversation(clients[0], alice, bob)
    async with open_stream(clients[0], bob) as stream:
        await factories.send(clients[0], conversation, alice, "one")
        first = await stream.next_event()
    assert first.id is not None
    for content in ("two", "three"):
        await factories.send(clients[1], conversation, alice, content)

    kwargs: dict[str, object] = (
        {"last_event_id": first.id} if how == "header" else {"params": {"last_event_id": first.id}}
    )
    async with open_stream(clients[1], bob, **kwargs) as resumed:  # type: ignore[arg-type]
        assert resumed.last_id == first.id
        missed = [await resumed.next_event() for _ in range(2)]
        await factories.send(clients[0], conversation, alice, "four")
        live = await resumed.next_event()
    contents = [orjson.loads(event.data)["message"]["content"] for event in [*missed, live]]
    assert contents == ["two", "three", "four"]


async def test_the_header_wins_over_the_query_parameter(
    clients: list[httpx.AsyncClient], pool: asyncpg.Pool
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    conversation = await factories.conversation(clients[0], alice, bob)
    for content in ("one", "two"):
        await factories.send(clients[0], conversation, alice, content)
    async with open_stream(
        clients[0], bob, last_event_id=f"{bob}-2", params={"last_event_id": f"{bob}-1"}
    ) as stream:
        event = await stream.next_event()
    assert orjson.loads(event.data)["message"]["content"] == "two"


async def test_refused_streams_get_json_errors(
    clients: list[httpx.AsyncClient], pool: asyncpg.Pool
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    client = clients[0]

    async def refused(
        headers: dict[str, str], params: dict[str, str] | None = None
    ) -> tuple[int, str]:
        response = await client.get("/events", headers=headers, params=params)
        assert response.headers["content-type"] == "application/json"
        return response.status_code, response.json()["error"]

    me = {"User-Id": str(alice)}
    assert await refused({}) == (400, USER_ID_REQUIRED)
    assert await refused({"User-Id": "1abc"}) == (400, USER_ID_REQUIRED)
    assert await refused({"User-Id": "999"}) == (404, USER_NOT_FOUND.format(id=999))
    for bad in ("abc", f"{alice}-", f"{alice}-01", f"-{alice}-1", f"{alice}-1-2", "x" * 300):
        status, text = await refused({**me, "Last-Event-ID": bad})
        assert (status, text) == (400, EVENT_ID_INVALID.format(value=bad[:60])), bad
    assert await refused(me, {"last_event_id": "nope"}) == (
        400,
        EVENT_ID_INVALID.format(value="nope"),
    )
    foreign = f"{bob}-0"
    assert await refused({**me, "Last-Event-ID": foreign}) == (
        400,
        EVENT_ID_FOREIGN.format(value=foreign),
    )
    ahead = f"{alice}-5"
    assert await refused({**me, "Last-Event-ID": ahead}) == (
        400,
        EVENT_ID_UNKNOWN.format(value=ahead),
    )


def _head_of_events(url: str, headers: dict[str, str]) -> bytes:
    """Everything the server sends for `HEAD /events` until it closes (Connection: close)."""
    host, port = url.removeprefix("http://").split(":")
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        request = f"HEAD /events HTTP/1.1\r\nHost: x\r\n{lines}Connection: close\r\n\r\n"
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):  # a stream left open ends in TimeoutError here
            answer += chunk
    return answer


async def test_head_of_events_answers_the_streams_head_and_ends(
    instances: list[Service], clients: list[httpx.AsyncClient], pool: asyncpg.Pool
) -> None:
    [alice] = await factories.users(pool, "Alice")
    headers = {"User-Id": str(alice), "Origin": "https://app.example"}

    answer = await asyncio.to_thread(_head_of_events, instances[0].url, headers)

    head, _, rest = answer.partition(b"\r\n\r\n")
    assert rest == b""  # the head, and nothing after it
    status, *fields = head.decode().split("\r\n")
    assert status == "HTTP/1.1 200 OK"
    got = {name.lower(): value for name, value in (field.split(": ", 1) for field in fields)}
    assert got["content-type"] == "text/event-stream"
    assert got["cache-control"] == "no-cache"
    assert got["x-accel-buffering"] == "no"
    assert got["access-control-allow-origin"] == "*"
    assert "content-length" not in got
    async with clients[0].stream("GET", "/events", headers=headers) as stream:
        expected = {name: value for name, value in stream.headers.items() if name not in VOLATILE}
    # Connection: close was asked for, so that the end of the answer shows.
    assert {k: v for k, v in got.items() if k not in VOLATILE | {"connection"}} == expected


async def test_head_of_events_refuses_as_get_does(
    clients: list[httpx.AsyncClient], pool: asyncpg.Pool
) -> None:
    [alice] = await factories.users(pool, "Alice")
    me = {"User-Id": str(alice)}
    for headers in (
        {},
        {"User-Id": "999"},
        {**me, "Last-Event-ID": "abc"},
        {**me, "Last-Event-ID": f"{alice}-5"},
    ):
        got = await clients[0].get("/events", headers=headers)
        head = await clients[0].head("/events", headers=headers)
        assert head.status_code == got.status_code, headers
        assert got.status_code in {400, 404}
        assert head.content == b""
        for name in ("content-type", "content-length"):
            assert head.headers[name] == got.headers[name], (headers, name)


async def test_a_quiet_stream_sends_a_ping_every_heartbeat_interval(
    clients: list[httpx.AsyncClient], pool: asyncpg.Pool
) -> None:
    [alice] = await factories.users(pool, "Alice")
    async with open_stream(clients[0], alice) as stream:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await stream.next_block(timeout=2.6)
        assert stream.comments in (["ping", "ping"], ["ping", "ping", "ping"])
        assert time.monotonic() - started >= 2.5


async def test_a_stream_resumed_from_before_the_retained_events_opens_with_a_reset(
    clients: list[httpx.AsyncClient], pool: asyncpg.Pool
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    conversation = await factories.conversation(clients[0], alice, bob)
    for content in ("old", "older"):
        await factories.send(clients[0], conversation, alice, content)
    await pool.execute("DELETE FROM feed WHERE user_id = $1 AND seq <= 2", bob)
    async with open_stream(clients[0], bob, last_event_id=f"{bob}-1") as stream:
        reset = await stream.next_event()
        assert (reset.event, reset.data, reset.id) == ("reset", "{}", f"{bob}-3")
        await factories.send(clients[0], conversation, alice, "new")
        live = await stream.next_event()
    assert orjson.loads(live.data)["message"]["content"] == "new"


async def test_a_client_that_stops_reading_is_dropped(
    instances: list[Service], clients: list[httpx.AsyncClient], pool: asyncpg.Pool
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    conversation = await factories.conversation(clients[0], alice, bob)
    host, port = instances[0].url.removeprefix("http://").split(":")
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect((host, int(port)))
    try:
        reader.sendall(f"GET /events HTTP/1.1\r\nHost: x\r\nUser-Id: {bob}\r\n\r\n".encode())
        await asyncio.sleep(0.3)
        big = "x" * 90_000
        dropped_at = None
        started = time.monotonic()
        # Up to 13.5 MB: far beyond the socket buffers (the kernel's send buffer grows to 4 MB)
        for _ in range(150):
            await factories.send(clients[0], conversation, alice, big)
            metrics = (await clients[0].get("/metrics")).text
            if "messenger_streams_dropped_total 1.0" in metrics:
                dropped_at = time.monotonic()
                break
            await asyncio.sleep(0.05)
        assert dropped_at is not None
        assert dropped_at - started < 15
        # The connection is closed: once the client reads again it gets the end of it.
        reader.settimeout(5)
        received = 0
        while chunk := reader.recv(1 << 16):
            received += len(chunk)
        assert received < 90_000 * 150
    finally:
        reader.close()


async def test_streams_beyond_the_limit_get_503_with_retry_after(
    database: Settings, pool: asyncpg.Pool, clean: None
) -> None:
    [alice] = await factories.users(pool, "Alice")
    with serve(service_env(database, SSE_MAX_STREAMS="2")) as service:
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
            async with open_stream(client, alice), open_stream(client, alice):
                response = await client.get("/events", headers={"User-Id": str(alice)})
                assert response.status_code == 503
                assert response.headers["retry-after"] == "1"
                assert response.json() == {"error": STREAMS_FULL}
                head = await client.head("/events", headers={"User-Id": str(alice)})
                assert head.status_code == 503
                assert head.headers["retry-after"] == "1"
            # closed streams free their places; a HEAD takes none
            for _ in range(3):
                head = await client.head("/events", headers={"User-Id": str(alice)})
                assert head.status_code == 200
            async with open_stream(client, alice), open_stream(client, alice):
                pass


async def test_shutdown_ends_streams_without_waiting_for_the_drain_timeout(
    database: Settings, pool: asyncpg.Pool, clean: None
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    env = service_env(database, SHUTDOWN_DRAIN_TIMEOUT="20")
    with serve(env) as service:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            conversation = await factories.conversation(client, alice, bob)
            async with open_stream(client, bob) as stream:
                await factories.send(client, conversation, alice, "before")
                before = await stream.next_event()
                signalled = time.monotonic()
                service.process.send_signal(signal.SIGTERM)
                ended = await stream.next_block(timeout=5)
                assert ended is None  # the stream ended cleanly, between events
            exit_code = await asyncio.to_thread(service.process.wait, 15)
        assert exit_code == 0
        assert time.monotonic() - signalled < 3
    assert orjson.loads(before.data)["message"]["content"] == "before"
