"""The request body limit: 413 before any handler or database work."""

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest

from messenger import errors
from messenger.errors import BODY_TOO_LARGE, NEED_TWO_USERS
from messenger.settings import Settings
from messenger.sizes import parse_size
from tests import factories, processes
from tests.conftest import app_client
from tests.factories import message_body

KB = 1024
LIMIT = 100 * KB  # JSON_BODY_LIMIT's default, `100kb`


@pytest.fixture
async def conversation(client: httpx.AsyncClient, pool: asyncpg.Pool) -> str:
    first, second = await factories.users(pool, "Ann", "Bob")
    return await factories.conversation(client, first, second)


async def post_message(
    client: httpx.AsyncClient, conversation_id: str, body: bytes, user_id: str = "1"
) -> httpx.Response:
    return await client.post(
        f"/conversations/{conversation_id}/messages",
        headers={"User-Id": user_id, "Content-Type": "application/json"},
        content=body,
    )


async def test_a_body_of_99_kb_is_accepted_at_100kb(
    client: httpx.AsyncClient, conversation: str
) -> None:
    response = await post_message(client, conversation, message_body(99 * KB))
    assert response.status_code == 201, response.text


async def test_a_body_of_exactly_the_limit_is_accepted(
    client: httpx.AsyncClient, conversation: str
) -> None:
    response = await post_message(client, conversation, message_body(LIMIT))
    assert response.status_code == 201, response.text


async def test_a_body_of_101_kb_is_refused_with_413_json(
    client: httpx.AsyncClient, conversation: str
) -> None:
    response = await post_message(client, conversation, message_body(101 * KB))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": BODY_TOO_LARGE}


async def test_one_byte_over_the_limit_is_refused(
    client: httpx.AsyncClient, conversation: str
) -> None:
    response = await post_message(client, conversation, message_body(LIMIT + 1))
    assert response.status_code == 413


async def test_a_refused_send_leaves_no_message_and_no_event(
    client: httpx.AsyncClient, conversation: str, pool: asyncpg.Pool
) -> None:
    response = await post_message(client, conversation, message_body(101 * KB))
    assert response.status_code == 413
    assert await pool.fetchval("SELECT count(*) FROM messages") == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert await pool.fetchval("SELECT last_index FROM channels") == 0


async def test_the_limit_is_checked_before_the_handler_looks_at_anything(
    client: httpx.AsyncClient,
) -> None:
    # The handler would answer 400 (no User-Id) or 404 (no such conversation).
    unknown = await client.post("/conversations/999/messages", content=message_body(101 * KB))
    assert unknown.status_code == 413
    assert unknown.json() == {"error": BODY_TOO_LARGE}


async def test_a_smaller_configured_limit_applies(settings: Settings, pool: asyncpg.Pool) -> None:
    limited = settings.model_copy(update={"json_body_limit": parse_size("1kb")})
    async with app_client(limited) as client:
        small = await client.post("/conversations", json={"participant_ids": [1, 1]})
        large = await client.post("/conversations", content=b" " * (KB + 1))
    assert small.status_code == 400
    assert large.status_code == 413


# Over a real socket, against `python -m messenger serve`: what the in-process client cannot
# do is send headers without a body, or a body without Content-Length.


@pytest.fixture(scope="module")
def server(database: Settings) -> Iterator[int]:
    """The service as production runs it, on a free port of 127.0.0.1; yields the port."""
    env = processes.service_env(database, JSON_BODY_LIMIT="100kb")
    with processes.serve(env):
        yield int(env["PORT"])


class Connection:
    """A raw HTTP/1.1 connection, so a test decides exactly which bytes go out and when."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "Connection":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_headers(self, target: str, headers: dict[str, str]) -> None:
        lines = [
            f"POST {target} HTTP/1.1",
            "Host: 127.0.0.1",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def send_chunks(
        self, body: bytes, chunk_size: int = 8 * KB, *, last: bool = True
    ) -> None:
        """Send `body` with chunked transfer coding; without `last`, leave the body unfinished."""
        for start in range(0, len(body), chunk_size):
            chunk = body[start : start + chunk_size]
            try:
                await self.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except ConnectionError:
                return  # the server answered and closed: the test reads the answer
        if last:
            await self.send(b"0\r\n\r\n")

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        """Read one response (callers bound the wait: no answer is a failure, not a hang)."""
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
async def connection(server: int) -> AsyncIterator[Connection]:
    conn = await Connection.open(server)
    try:
        yield conn
    finally:
        await conn.close()


CHUNKED = {"Transfer-Encoding": "chunked", "Content-Type": "application/json", "User-Id": "1"}


async def test_a_chunked_body_over_the_limit_is_refused_as_it_arrives(
    connection: Connection, conversation: str, pool: asyncpg.Pool
) -> None:
    await connection.send_headers(f"/conversations/{conversation}/messages", CHUNKED)
    # The body is never finished: a server waiting for its end would never answer.
    await connection.send_chunks(message_body(120 * KB), last=False)
    async with asyncio.timeout(10):
        status, headers, body = await connection.response()
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": BODY_TOO_LARGE}
    assert await pool.fetchval("SELECT count(*) FROM messages") == 0


async def test_a_chunked_body_under_the_limit_is_served(
    connection: Connection, conversation: str, pool: asyncpg.Pool
) -> None:
    await connection.send_headers(f"/conversations/{conversation}/messages", CHUNKED)
    await connection.send_chunks(message_body(90 * KB))
    async with asyncio.timeout(10):
        status, _, body = await connection.response()
    assert status == 201, body
    assert json.loads(body)["message"]["index"] == 1
    assert await pool.fetchval("SELECT length(content) FROM messages") > 89 * KB


async def test_a_large_content_length_is_refused_without_waiting_for_the_body(
    connection: Connection, conversation: str
) -> None:
    headers = {"Content-Length": str(10 << 20), "Content-Type": "application/json", "User-Id": "1"}
    await connection.send_headers(f"/conversations/{conversation}/messages", headers)
    async with asyncio.timeout(5):  # the 10 MB body never comes
        status, _, body = await connection.response()
    assert status == 413
    assert json.loads(body) == {"error": BODY_TOO_LARGE}


async def test_a_body_under_the_limit_with_content_length_is_served_over_a_socket(
    server: int, conversation: str
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server}") as client:
        accepted = await post_message(client, conversation, message_body(99 * KB))
        refused = await post_message(client, conversation, message_body(101 * KB))
    assert accepted.status_code == 201, accepted.text
    assert refused.status_code == 413
    assert refused.json() == {"error": BODY_TOO_LARGE}


# The tutorial's challenge 1: the limit lowered until its two curl commands hit it.

HELLO = '{ "text": "hello" }'  # 19 bytes
HELLO_WORLD = '{ "text": "hello, world" }'  # 26 bytes


@pytest.fixture(scope="module", params=["20b", "27b"])
def tutorial_service(request: pytest.FixtureRequest, database: Settings) -> Iterator[str]:
    """`python -m messenger serve` with the challenge's JSON_BODY_LIMIT; yields the limit."""
    env = processes.service_env(database, JSON_BODY_LIMIT=request.param)
    with processes.serve(env) as service:
        yield f"{request.param} {service.url}"


@pytest.mark.parametrize("content_type", [None, "application/json"], ids=["curl -d", "json"])
def test_the_tutorials_challenge_1_prints_the_tutorials_texts(
    tutorial_service: str, content_type: str | None
) -> None:
    limit, url = tutorial_service.split()
    command = ["curl", "-s", "-i", "--max-time", "10", "-X", "POST", f"{url}/conversations"]
    if content_type is not None:
        command += ["-H", f"Content-Type: {content_type}"]

    answers = []
    for body in (HELLO, HELLO_WORLD):
        # curl -d without -H sends application/x-www-form-urlencoded, as the tutorial's did.
        output = subprocess.run(
            [*command, "-d", body], capture_output=True, check=True, text=True
        ).stdout
        head, _, payload = output.partition("\n\n")  # text mode turned CRLF into LF
        status = int(head.split()[1])
        assert "content-type: application/json" in head.lower()
        answers.append((status, json.loads(payload)))

    need_two = (400, {"error": NEED_TWO_USERS})
    too_large = (413, {"error": BODY_TOO_LARGE})
    assert answers == ([need_two, too_large] if limit == "20b" else [need_two, need_two])


# A body that does not arrive in time (issue 16): 408, the client's fault -------------------

BODY_TIMEOUT = 1.0


@pytest.fixture
def impatient_service(database: Settings) -> Iterator[processes.Service]:
    """The service with HTTP_BODY_TIMEOUT=1 and its log readable after the test's block."""
    env = processes.service_env(
        database, HTTP_BODY_TIMEOUT=str(BODY_TIMEOUT), LOG_LEVEL="info", LOG_FORMAT="json"
    )
    with processes.serve(env, stdout=subprocess.PIPE) as service:
        yield service


def access_entries(service: processes.Service, path: str) -> list[dict[str, object]]:
    entries = [json.loads(line) for line in service.output_lines() if line.startswith("{")]
    return [entry for entry in entries if entry.get("path") == path]


def requests_counted(service: processes.Service, status: int) -> float:
    exposition = httpx.get(f"{service.url}/metrics").text
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith("messenger_http_requests_total{") and f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_stalled_body_gets_408_within_the_deadline(
    impatient_service: processes.Service,
) -> None:
    port = int(impatient_service.url.rsplit(":", 1)[1])
    conn = await Connection.open(port)
    try:
        headers = {"Content-Length": "100", "Content-Type": "application/json", "User-Id": "1"}
        await conn.send_headers("/conversations/1/messages", headers)
        await conn.send(b'{ "text": "hello" }')  # 19 of the 100 bytes, and then nothing
        async with asyncio.timeout(BODY_TIMEOUT + 5):
            status, headers_back, body = await conn.response()
            closed = await conn.reader.read()
    finally:
        await conn.close()

    assert status == 408
    assert headers_back["content-type"] == "application/json"
    assert headers_back["connection"] == "close"
    assert json.loads(body) == {"error": errors.BODY_TIMEOUT}
    assert closed == b""
    assert requests_counted(impatient_service, 408) == 1
    assert requests_counted(impatient_service, 500) == 0
    impatient_service.process.terminate()
    impatient_service.process.wait(timeout=15)
    [entry] = access_entries(impatient_service, "/conversations/1/messages")
    assert entry["status"] == 408


async def test_a_client_that_gives_up_on_its_body_is_not_a_server_error(
    impatient_service: processes.Service,
) -> None:
    port = int(impatient_service.url.rsplit(":", 1)[1])
    conn = await Connection.open(port)
    headers = {"Content-Length": "100", "Content-Type": "application/json", "User-Id": "1"}
    await conn.send_headers("/conversations/2/messages", headers)
    await conn.send(b'{ "text": "hello" }')
    await conn.close()  # before the deadline
    await asyncio.sleep(0.3)

    assert requests_counted(impatient_service, 500) == 0
    assert requests_counted(impatient_service, 499) == 1
    impatient_service.process.terminate()
    impatient_service.process.wait(timeout=15)
    [entry] = access_entries(impatient_service, "/conversations/2/messages")
    assert entry["status"] == 499
