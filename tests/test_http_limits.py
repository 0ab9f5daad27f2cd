"""HTTP-level abuse over raw sockets against a real service process.

Whatever arrives on the socket, the answer is a 4xx (or a 2xx for what is valid after all) or
a closed connection: never a 5xx, never a hang (every read has a deadline), never a dead
process; and the service answers /health normally afterwards.
"""

import contextlib
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messenger.http_limits import HOST_REQUIRED
from messenger.settings import Settings
from tests import processes

HEADER_TIMEOUT = 1.0  # the service's HTTP_HEADER_TIMEOUT here: short, so slow cases stay short
HEADER_LIMIT = 16 * 1024  # the default HTTP_HEADER_LIMIT, which these tests do not set
READ_TIMEOUT = HEADER_TIMEOUT + 9  # the longest any answer may take: a hang fails the test


@pytest.fixture(scope="module")
def service(database: Settings) -> Iterator[processes.Service]:
    # LOG_LEVEL=error: uvicorn logs a warning per unparsable request, and nobody reads the pipe.
    env = processes.service_env(
        database, HTTP_HEADER_TIMEOUT=str(HEADER_TIMEOUT), LOG_LEVEL="error"
    )
    with processes.serve(env) as service:
        yield service


@pytest.fixture
def port(service: processes.Service) -> Iterator[int]:
    yield int(service.url.rsplit(":", 1)[1])
    assert_still_serving(service)


def assert_still_serving(service: processes.Service) -> None:
    assert service.process.poll() is None, "the service died"
    response = httpx.get(f"{service.url}/health", timeout=5)
    assert (response.status_code, response.text) == (200, "OK")


@contextlib.contextmanager
def connect(port: int) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as sock:
        yield sock


def read_status(sock: socket.socket) -> int | None:
    """The status of the next final response's head, or None if the server closed (or reset)
    the connection without one. Interim 1xx responses are skipped."""
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                pytest.fail(f"no answer within {READ_TIMEOUT}s: the server hangs")
            except ConnectionResetError:
                return None
            if not chunk:
                assert buffer == b"", f"connection closed inside a response head: {buffer!r}"
                return None
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        version, status, *_ = head.split(b"\r\n", 1)[0].split(b" ", 2)
        assert version == b"HTTP/1.1", head
        if not 100 <= int(status) < 200:
            return int(status)


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """`count` whole responses with a Content-Length each, for keep-alive exchanges."""
    buffer, responses = b"", []
    while len(responses) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, "connection closed before a response"
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
        length = int(headers[b"content-length"])
        while len(buffer) < length:
            buffer += sock.recv(65536)
        responses.append((int(lines[0].split(b" ")[1]), buffer[:length]))
        buffer = buffer[length:]
    return responses


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    return read_responses(sock, 1)[0]


def exchange(port: int, data: bytes) -> int | None:
    """Send `data` on a new connection: the answer's status, or None for a closed connection."""
    with connect(port) as sock:
        # Refused while still sending: what it answered, if anything, is still readable.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        return read_status(sock)


def head_of_size(size: int) -> bytes:
    """A GET /health whose request line and headers, blank line included, are `size` bytes."""
    start = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: "
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


POST = b"POST /conversations HTTP/1.1\r\nHost: x\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"

NAMED_CASES = {
    # malformed request lines
    "extra token after the version": (b"GET /health HTTP/1.1 x\r\nHost: x\r\n\r\n", {400}),
    "unknown version": (b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", {400}),
    "not HTTP": (b"GET /health FOO/1.1\r\nHost: x\r\n\r\n", {400}),
    "no method": (b" /health HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "NUL in the target": (b"GET /hea\x00lth HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "bare LF line ends": (b"GET /health HTTP/1.1\nHost: x\n\n", {400}),
    "latin-1 byte in the target": (b"GET /conversations/\xe9 HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "bad percent escape in the path": (b"GET /conversations/%ff HTTP/1.1\r\n\r\n", {400, 404}),
    # absurd methods
    "unknown method": (b"FOOBAR /health HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "control byte in the method": (b"G\x01T /health HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "5,000-byte method": (b"A" * 5000 + b" /health HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    # other protocols
    "HTTP/0.9 request": (b"GET /health\r\n", {408, None}),
    "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {400}),
    # malformed headers
    "header without colon": (b"GET /health HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", {400}),
    "space before the colon": (b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n", {400}),
    "obsolete line folding": (b"GET /health HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n", {400}),
    "NUL in a header name": (b"GET /health HTTP/1.1\r\nHost: x\r\nX-\x00: b\r\n\r\n", {400}),
    "NUL in a header value": (b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: b\x00\r\n\r\n", {400}),
    "control bytes in a value": (b"GET /health HTTP/1.1\r\nX-A: \x01\x7f\r\n\r\n", {400}),
    "NUL in User-Id": (b"GET /conversations HTTP/1.1\r\nUser-Id: 1\x00\r\n\r\n", {400}),
    "latin-1 byte in User-Id": (b"GET /conversations HTTP/1.1\r\nUser-Id: \xe9\r\n\r\n", {400}),
    # body framing
    "Content-Length and Transfer-Encoding": (
        POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        {400},
    ),
    "two Content-Lengths": (POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", {400}),
    "negative Content-Length": (POST + b"Content-Length: -1\r\n\r\n{}", {400}),
    "Content-Length over 64 bits": (POST + b"Content-Length: " + b"9" * 30 + b"\r\n\r\n", {400}),
    "huge Content-Length": (POST + b"Content-Length: 99999999999\r\n\r\n{}", {413}),
    "unknown Transfer-Encoding": (POST + b"Transfer-Encoding: gzip\r\n\r\n", {400}),
    "chunked not last": (POST + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", {400}),
    "chunk size not hex": (CHUNKED + b"zz\r\n{}\r\n0\r\n\r\n", {400}),
    "negative chunk size": (CHUNKED + b"-1\r\n{}\r\n0\r\n\r\n", {400}),
    "chunk size over 64 bits": (
        CHUNKED + b"f" * 30 + b"\r\n{}\r\n0\r\n\r\n",
        {400},
    ),
    "chunk shorter than its size": (
        CHUNKED + b"5\r\n{}\r\n0\r\n\r\n",
        {400},
    ),
    # Host (RFC 9112, section 3.2): required in HTTP/1.1, once
    "HTTP/1.1 without Host": (b"GET /health HTTP/1.1\r\n\r\n", {400}),
    "HTTP/1.1 with two Hosts": (b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", {400}),
    "HTTP/1.1 with an empty Host": (b"GET /health HTTP/1.1\r\nHost:\r\n\r\n", {200}),
    "HTTP/1.0 without Host": (b"GET /health HTTP/1.0\r\n\r\n", {200}),
    # sizes
    "head of exactly the limit": (head_of_size(HEADER_LIMIT), {200}),
    "head one byte over the limit": (head_of_size(HEADER_LIMIT + 1), {431}),
    "1 MB header": (head_of_size(1 << 20), {431, None}),
    "1,000 small headers": (
        b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 1000 + b"\r\n",
        {200},
    ),
    "10,000 small headers": (b"GET /health HTTP/1.1\r\n" + b"A: b\r\n" * 10_000 + b"\r\n", {431}),
}


@pytest.mark.parametrize(("data", "expected"), NAMED_CASES.values(), ids=NAMED_CASES.keys())
def test_abusive_request_gets_a_client_error_or_a_closed_connection(
    port: int, data: bytes, expected: set[int | None]
) -> None:
    assert exchange(port, data) in expected


def test_oversized_head_is_refused_with_a_json_431(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(head_of_size(HEADER_LIMIT + 1))
        assert read_response(sock) == (431, b'{"error":"request header fields too large"}')


TIMER_GRANULARITY = 0.01


def test_head_dribbled_past_the_timeout_gets_408(port: int) -> None:
    started = time.monotonic()  # a first request's deadline runs from the connection's start
    with connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        # A header line every 0.1 s: the head keeps growing but never ends.
        while not select.select([sock], [], [], 0.1)[0]:
            assert time.monotonic() - started < READ_TIMEOUT, "the slow head was never cut off"
            sock.sendall(b"X-Slow: a\r\n")
        assert read_response(sock) == (408, b'{"error":"request headers not received in time"}')
        # uvloop's timers count whole milliseconds from the loop's cached time, so the deadline
        # may fire up to a few of them before a clock read outside the loop says it is due.
        assert time.monotonic() - started >= HEADER_TIMEOUT - TIMER_GRANULARITY


def test_connection_that_sends_nothing_is_closed(port: int) -> None:
    with connect(port) as sock:
        assert sock.recv(1) == b""


def test_idle_keep_alive_is_not_cut_by_the_header_timeout(port: int) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(port) as sock:
        sock.sendall(request)
        assert read_response(sock) == (200, b"OK")
        time.sleep(HEADER_TIMEOUT * 2)  # idle: KEEP_ALIVE_TIMEOUT (75 s) governs
        sock.sendall(request)
        assert read_response(sock) == (200, b"OK")


def test_each_request_on_a_keep_alive_connection_has_the_header_deadline(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock) == (200, b"OK")
        sock.sendall(b"GET /health HTTP/1.1\r\n")  # and never the rest
        assert read_response(sock)[0] == 408


def test_requests_pipelined_in_one_packet_are_all_answered(port: int) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(port) as sock:
        sock.sendall(request * 3 + head_of_size(HEADER_LIMIT))
        assert read_responses(sock, 4) == [(200, b"OK")] * 4


# Generated request heads: each one complete (ending in a blank line), so the only waits are
# for what the parser itself considers unfinished, which the header timeout then ends.
FRAMING = {b"content-length", b"transfer-encoding"}  # bodies are the named cases' business
methods = st.one_of(
    st.sampled_from([b"GET", b"POST", b"HEAD", b"OPTIONS", b"DELETE", b"CONNECT", b"PRI"]),
    st.binary(max_size=12),
)
targets = st.one_of(
    st.sampled_from(
        [b"/health", b"/conversations", b"/conversations/1/messages", b"*", b"http://x/health"]
    ),
    st.binary(max_size=40),
)
versions = st.one_of(
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b""]),
    st.binary(max_size=10),
)
names = st.one_of(
    st.sampled_from([b"Host", b"User-Id", b"Connection", b"Upgrade", b"Expect", b"X-Request-Id"]),
    st.binary(min_size=1, max_size=20),
).filter(lambda name: name.strip().lower() not in FRAMING)
values = st.one_of(
    st.sampled_from([b"1", b"close", b"keep-alive", b"websocket", b"100-continue", b""]),
    st.binary(max_size=40),
)
headers = st.lists(
    st.tuples(names, st.sampled_from([b": ", b":", b" : ", b""]), values), max_size=6
)


@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    method=methods,
    space=st.sampled_from([b" ", b"  ", b"\t"]),
    target=targets,
    version=versions,
    headers=headers,
    eol=st.sampled_from([b"\r\n", b"\n"]),
)
def test_generated_request_heads_never_get_a_server_error(
    service: processes.Service,
    port: int,
    method: bytes,
    space: bytes,
    target: bytes,
    version: bytes,
    headers: list[tuple[bytes, bytes, bytes]],
    eol: bytes,
) -> None:
    lines = [method + space + target + space + version]
    lines += [name + colon + value for name, colon, value in headers]
    status = exchange(port, eol.join(lines) + eol + eol)
    assert status is None or status < 500
    assert service.process.poll() is None, "the service died"


def test_http_1_1_without_host_is_refused_with_a_json_400(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nUser-Id: 1\r\n\r\n")
        assert read_response(sock) == (400, b'{"error":"%s"}' % HOST_REQUIRED.encode())
        assert sock.recv(1) == b""  # and closed


def test_http_1_0_without_host_is_served(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        assert read_response(sock) == (200, b"OK")


@pytest.mark.parametrize("path", ["/conversations", "/conversations/424242/messages", "/health"])
def test_head_answers_the_get_head_without_a_body(port: int, path: str) -> None:
    def ask(method: bytes) -> bytes:
        with connect(port) as sock:
            request = b"%s %s HTTP/1.1\r\nHost: x\r\nUser-Id: 1\r\nConnection: close\r\n\r\n"
            sock.sendall(request % (method, path.encode()))
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            return answer

    def without_date(head: bytes) -> list[bytes]:
        lines = head.split(b"\r\n")
        return [line for line in lines if not line.lower().startswith((b"date:", b"x-request-id:"))]

    got, head = ask(b"GET"), ask(b"HEAD")
    got_head, body = got.split(b"\r\n\r\n", 1)
    assert body
    assert head.endswith(b"\r\n\r\n")  # the head, and nothing after it
    assert without_date(head[:-4]) == without_date(got_head)
