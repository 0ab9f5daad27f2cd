"""The log: access lines the configured formatter would write, written off the event loop."""

import io
import json
import logging
import re
import subprocess
import threading
import time

import httpx
import pytest

from messenger import logs
from messenger.logs import ACCESS_LOGGER, Access, LogWriter, log_access, make_formatter
from messenger.settings import Settings
from tests.conftest import app_client
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
