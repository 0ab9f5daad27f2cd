"""The log: access lines the configured formatter would write, written off the event loop."""

import asyncio
import io
import json
import logging
import re
import subprocess
import threading
import time
from unittest import mock

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.types import Message, Receive, Scope, Send

from messenger import access_log, logs
from messenger.access_log import AccessLogMiddleware
from messenger.logs import ACCESS_LOGGER, Access, LogWriter, log_access, make_formatter
from messenger.settings import Settings
from tests.conftest import app_client
from tests.key_server import AUDIENCE, ISSUER, SigningKey, bearer, key_set_server
from tests.processes import serve, service_env

ACCESSES = [
    Access(1_764_000_000.0, "a" * 32, "GET", "/health", 200, 0.04),
    Access(1_764_000_000.9999, "req-42", "POST", "/conversations/1/messages", 201, 12.345),
    Access(1_764_012_345.5, "x", "GET", '/é/"quoted"/back\\slash/%41/\u2028', 404, 1234.5678),
    Access(1_764_099_999.001, "id:1.2_3", "OPTIONS", "/conversations", 500, 0.005),
]


def formatted_by_logging(log_format: str, access: Access) -> str:
    """The line logging's own formatter writes for the record the access log used to make."""
    record = logging.getLogger(ACCESS_LOGGER).makeRecord(
        ACCESS_LOGGER,
        logging.INFO,
        __file__,
        1,
        "%s %s %d %.1fms",
        (access.method, access.path, access.status, access.duration_ms),
        None,
        extra=access.fields,
    )
    record.created = access.created
    record.msecs = int((access.created - int(access.created)) * 1000) + 0.0
    return make_formatter(log_format).format(record)


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("access", ACCESSES, ids=[a.method + str(a.status) for a in ACCESSES])
def test_an_access_line_is_what_the_configured_formatter_writes(
    log_format: str, access: Access
) -> None:
    writer = LogWriter(io.StringIO(), log_format)
    try:
        assert writer.access_line(access) == formatted_by_logging(log_format, access)
    finally:
        writer.close()


def test_the_writer_keeps_the_order_of_records_and_access_lines_and_flushes_on_close() -> None:
    stream = io.StringIO()
    writer = LogWriter(stream, "text")
    logger = logging.getLogger("tests.writer")
    logger.propagate = False
    logger.addHandler(writer)
    try:
        for n in range(300):
            logger.warning("record %d", n)
            writer.put_access(ACCESSES[0]._replace(status=n))
    finally:
        logger.removeHandler(writer)
        writer.close()

    lines = stream.getvalue().splitlines()
    assert len(lines) == 600
    assert [line.split(": ", 1)[1] for line in lines[:4]] == [
        "record 0",
        "GET /health 0 0.0ms",
        "record 1",
        "GET /health 1 0.0ms",
    ]
    assert lines[-1].endswith("GET /health 299 0.0ms")


def test_lines_beyond_the_pending_limit_are_dropped_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs, "MAX_PENDING_LINES", 5)
    stdout_free = threading.Event()

    class SlowStdout(io.StringIO):
        def write(self, text: str) -> int:
            stdout_free.wait(timeout=10)
            return super().write(text)

    stream = SlowStdout()
    writer = LogWriter(stream, "text")
    try:
        writer.put_access(ACCESSES[0])
        time.sleep(0.2)  # the writer took the first line and waits for stdout
        for status in range(100, 120):
            writer.put_access(ACCESSES[0]._replace(status=status))
        stdout_free.set()
    finally:
        writer.close()

    lines = stream.getvalue().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "GET /health 200 0.0ms",
        *(f"GET /health {status} 0.0ms" for status in range(100, 105)),
        "15 log lines dropped: stdout did not keep up",
    ]
    assert " WARNING messenger.logs: " in lines[-1]


def test_the_writer_is_used_only_when_it_is_the_lines_sole_destination() -> None:
    writer = LogWriter(io.StringIO(), "text")
    parent = logging.getLogger("tests.sole")
    child = logging.getLogger("tests.sole.child")
    parent.propagate = False
    try:
        parent.addHandler(writer)
        assert LogWriter.sole_handler(child) is writer
        other = logging.NullHandler()
        child.addHandler(other)
        assert LogWriter.sole_handler(child) is None
        child.removeHandler(other)
        parent.addFilter(lambda record: True)
        assert LogWriter.sole_handler(child) is None
    finally:
        parent.handlers.clear()
        parent.filters.clear()
        writer.close()


async def test_without_the_writer_the_access_line_is_an_ordinary_record(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    async with app_client(settings) as client:
        await client.get("/health", headers={"X-Request-Id": "req-7"})

    record = next(r for r in caplog.records if r.name == ACCESS_LOGGER)
    assert re.fullmatch(r"GET /health 200 \d+\.\dms", record.getMessage())
    assert record.request_id == "req-7"  # type: ignore[attr-defined]
    assert (record.method, record.path, record.status) == ("GET", "/health", 200)  # type: ignore[attr-defined]


def test_log_access_is_silent_below_info() -> None:
    logger = logging.getLogger(ACCESS_LOGGER)
    writer = LogWriter(io.StringIO(), "text")
    level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(writer)
    try:
        log_access(ACCESSES[0])
    finally:
        logger.removeHandler(writer)
        logger.setLevel(level)
        writer.close()
    assert writer.stream.getvalue() == ""  # type: ignore[attr-defined]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_serving_process_writes_one_access_line_per_request(
    database: Settings, log_format: str
) -> None:
    env = service_env(database, LOG_LEVEL="info", LOG_FORMAT=log_format)
    with serve(env, stdout=subprocess.PIPE) as service:
        for n in range(3):
            path = "/conversations/424242/messages"
            httpx.get(f"{service.url}{path}", headers={"X-Request-Id": f"r{n}"})
    assert service.process.stdout is not None
    with service.process.stdout as stdout:
        output = stdout.read().decode()
    lines = [line for line in output.splitlines() if "424242" in line]

    assert len(lines) == 3
    if log_format == "json":
        entry = json.loads(lines[2])
        assert list(entry) == [
            "time",
            "level",
            "logger",
            "message",
            "request_id",
            "method",
            "path",
            "status",
            "duration_ms",
        ]
        assert (entry["request_id"], entry["status"], entry["logger"]) == (
            "r2",
            404,
            "messenger.access",
        )
    else:
        pattern = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO messenger\.access: GET "
        assert re.fullmatch(pattern + r"/conversations/424242/messages 404 \d+\.\dms", lines[2])


# No client byte forges a line (issue 16) --------------------------------------------------

FORGED = "\r\n2026-01-01 00:00:00,000 ERROR messenger.access: forged"


@given(st.text())
@settings(max_examples=300, derandomize=True, database=None, deadline=None)
def test_printable_text_has_no_line_break_or_control_character(text: str) -> None:
    shown = logs.printable(text)
    assert shown.isprintable(), repr(shown)
    assert logs.printable(shown) == shown
    if text.isprintable():
        assert shown == text


def exception_with(text: str) -> BaseException:
    try:
        try:
            raise KeyError(text)
        except KeyError as inner:
            raise ValueError(text) from inner
    except ValueError as error:
        return error


@pytest.mark.parametrize("log_format", ["text", "json"])
@given(text=st.text(min_size=1) | st.just(FORGED))
@settings(max_examples=100, derandomize=True, database=None, deadline=None)
def test_a_record_carrying_client_text_is_one_entry_of_printable_lines(
    log_format: str, text: str
) -> None:
    error = exception_with(text)
    record = logging.getLogger("tests.forge").makeRecord(
        "tests.forge", logging.ERROR, __file__, 1, "bad input %s", (text,), None
    )
    record.exc_info = (type(error), error, error.__traceback__)
    written = make_formatter(log_format).format(record)

    if log_format == "json":
        entry = json.loads(written)
        assert "\n" not in written
        assert entry["message"].isprintable()
        lines = entry["exc_info"].split("\n")
    else:
        lines = written.split("\n")
        assert lines[0].startswith(time.strftime("%Y-"))
    # The traceback keeps its lines; no line of it carries a client's control character, and
    # none but the first starts like an entry of its own.
    assert all(line.isprintable() for line in lines), lines
    assert not any(re.match(r"\d{4}-\d\d-\d\d ", line) for line in lines[1:]), lines
    assert "ValueError: " in lines[-1]
    assert "KeyError: " in "\n".join(lines)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_path_with_line_breaks_writes_one_access_line(
    database: Settings, log_format: str
) -> None:
    env = service_env(database, LOG_LEVEL="info", LOG_FORMAT=log_format)
    forged = "/x%0d%0a2026-01-01%2000:00:00,000%20ERROR%20messenger.access:%20forged%1b[2J%e2%80%a8"
    with serve(env, stdout=subprocess.PIPE) as service:
        httpx.get(f"{service.url}{forged}")
        httpx.get(f"{service.url}/health")
    lines = service.output_lines()

    assert not [line for line in lines if line.startswith("2026-01-01")]
    forging = [line for line in lines if "forged" in line]
    assert len(forging) == 1
    assert forging[0].isprintable()
    if log_format == "json":
        entry = json.loads(forging[0])
        assert entry["path"].isprintable()
        assert entry["message"].isprintable()
        assert entry["path"].startswith("/x\\r\\n2026-01-01 00:00:00,000 ERROR"), entry["path"]
    else:
        assert "GET /x\\r\\n2026-01-01 00:00:00,000 ERROR" in forging[0]


@given(
    method=st.text(min_size=1, max_size=12),
    path=st.text(max_size=60).map(lambda text: "/" + text),
    log_format=st.sampled_from(["text", "json"]),
)
@settings(max_examples=200, derandomize=True, database=None, deadline=None)
def test_any_method_and_path_make_one_printable_access_line(
    method: str, path: str, log_format: str
) -> None:
    written: list[Access] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
    with mock.patch.object(access_log, "log_access", written.append):
        asyncio.run(AccessLogMiddleware(app)(scope, receive, send))
    writer = LogWriter(io.StringIO(), log_format)
    try:
        line = writer.access_line(written[0])
    finally:
        writer.close()

    assert line.isprintable(), line
    if log_format == "json":
        entry = json.loads(line)
        assert entry["path"].isprintable()
        assert entry["method"].isprintable()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_token_or_authorization_header_reaches_the_log(
    database: Settings, log_format: str
) -> None:
    key = SigningKey("ES256")
    stranger = SigningKey("ES256")
    with key_set_server(key) as key_server:
        env = service_env(
            database,
            LOG_LEVEL="debug",
            LOG_FORMAT=log_format,
            AUTH_MODE="jwt",
            AUTH_JWKS_URL=key_server.url,
            AUTH_ISSUER=ISSUER,
            AUTH_AUDIENCE=AUDIENCE,
        )
        tokens = [key.token(1), key.token(1, exp=1), stranger.token(1), "not-a-jwt-" + "x" * 40]
        with serve(env, stdout=subprocess.PIPE) as service:
            for token in tokens:
                for path in ("/conversations", "/conversations/1/messages", "/nowhere"):
                    httpx.get(f"{service.url}{path}", headers=bearer(token))
            key_server.stop()  # a key-set outage is logged: still without the token
            httpx.get(f"{service.url}/conversations", headers=bearer(SigningKey("RS256").token()))
        assert service.process.stdout is not None
        with service.process.stdout as stdout:
            output = stdout.read().decode()
    assert "GET /conversations " in output  # the access log was written
    assert "token key set" in output  # and the key-set log
    for token in tokens:
        for part in token.split("."):
            if len(part) > 8:
                assert part not in output
    assert "Bearer" not in output
    assert "authorization" not in output.lower()
