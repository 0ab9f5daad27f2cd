"""Process-wide logging: plain text for people, JSON lines (`LOG_FORMAT=json`) for collectors.

A serving process writes its log from a thread of its own (`LogWriter`), in batches, so the
event loop never waits for stdout. The access log, one line per request, skips logging's
record machinery there: the request's figures go to the writer as they are, and the writer
renders the line the configured formatter would (tests/test_logs.py holds them to that).

A client's bytes reach log lines (a path, a method, an exception's text quoting its input):
both formats write every message and exception text through `printable`, so a line break or a
terminal escape a client sent shows as `\\r\\n` or `\\x1b` and cannot forge a line. Only the
traceback's own frames, which are the code's, keep their line breaks.
"""

import json
import logging
import queue
import sys
import threading
import time
import traceback
from types import TracebackType
from typing import IO, NamedTuple, TypeAlias

from pythonjsonlogger.json import JsonFormatter

from messenger.settings import Settings

ACCESS_LOGGER = "messenger.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger"}

# Lines waiting for a stdout that does not keep up, at most (about 2 MB); later ones are
# dropped and counted, and the count is written once stdout takes lines again.
MAX_PENDING_LINES = 10_000
GATHER_SECONDS = 0.05  # the writer thread gathers lines this long before each write


ExcInfo: TypeAlias = (
    tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
)
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _escape(char: str) -> str:
    """One character that is not printable, as a Python string literal would spell it."""
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """`text` with every character that is not printable escaped: line breaks (`\\n`, U+2028),
    control characters (`\\x1b`), format characters such as bidi overrides (`\\u202e`).

    Printable text is returned as it is, and escaping twice changes nothing (a backslash is
    printable: `\\n` in the output may also be a client's own two characters).
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def format_exception(exc_info: ExcInfo) -> str:
    """The traceback as `logging` writes it, each exception's own text (which may quote a
    client's input) through `printable`: its frames keep their lines, its texts take one."""
    _, error, tb = exc_info
    if error is None:
        return ""
    return "".join(_traceback_lines(traceback.TracebackException(type(error), error, tb))).rstrip(
        "\n"
    )


def _traceback_lines(newest: traceback.TracebackException) -> list[str]:
    chain: list[tuple[traceback.TracebackException, str]] = []  # newest first, with its link
    seen: set[int] = set()
    current: traceback.TracebackException | None = newest
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    lines: list[str] = []
    for exception, link in reversed(chain):
        if exception.stack:
            lines += ["Traceback (most recent call last):\n", *exception.stack.format()]
        text = "".join(exception.format_exception_only()).rstrip("\n")
        lines.append(printable(text) + "\n")
        for number, member in enumerate(exception.exceptions or (), start=1):
            lines.append(f"  +---------------- {number} ----------------\n")
            lines += [
                "  | " + line + "\n" for line in "".join(_traceback_lines(member)).splitlines()
            ]
        lines.append(link)
    return lines


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, every message and exception text printable (see `printable`)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, but the exception is formatted here every time: its cached
        # `exc_text` may come from another handler's formatter, which escapes nothing.
        record.message = printable(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        if record.exc_info:
            text += "\n" + format_exception(record.exc_info)
        elif record.exc_text:
            text += "\n" + printable(record.exc_text)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


class JsonLineFormatter(JsonFormatter):
    """JSON_FORMAT, the message and exception text printable (see `printable`) as in the text
    format: JSON keeps a line break from splitting the line, not from showing as one."""

    def __init__(self) -> None:
        super().__init__(JSON_FORMAT, rename_fields=JSON_RENAMES)

    def formatException(self, ei: ExcInfo) -> str:
        return format_exception(ei)

    def process_log_record(self, log_data: dict[str, object]) -> dict[str, object]:
        message = log_data.get("message")
        if isinstance(message, str):
            log_data["message"] = printable(message)
        return log_data


class Access(NamedTuple):
    """One answered request, as the access log reports it."""

    created: float  # time.time() when the response ended
    request_id: str
    method: str
    path: str
    status: int
    duration_ms: float

    @property
    def message(self) -> str:
        return f"{self.method} {self.path} {self.status} {self.duration_ms:.1f}ms"

    @property
    def fields(self) -> dict[str, object]:
        """The record's extra fields, in the order the JSON line lists them."""
        return {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 2),
        }


access_logger = logging.getLogger(ACCESS_LOGGER)


def log_access(access: Access) -> None:
    """Write the access line: straight to the writer when it is the line's only destination."""
    if not access_logger.isEnabledFor(logging.INFO):
        return
    writer = LogWriter.sole_handler(access_logger)
    if writer is not None:
        writer.put_access(access)
        return
    access_logger.info(access.message, extra=access.fields)


class _Timestamps:
    """`asctime` as logging.Formatter renders it, local time, the date part made once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._text = time.strftime(
                logging.Formatter.default_time_format, time.localtime(second)
            )
        msecs = int((created - second) * 1000)
        return f"{self._text},{msecs:03d}"


class LogWriter(logging.Handler):
    """The root handler of a serving process: a thread writes the lines, many per write.

    Records are formatted when logged (their arguments may change later); access lines are
    rendered by the thread. `close()` writes what is queued before returning.
    """

    def __init__(self, stream: IO[str], log_format: str) -> None:
        super().__init__()
        self.stream = stream
        self.log_format = log_format
        self.dropped = 0  # lines not written because MAX_PENDING_LINES were waiting
        self._reported = 0
        self.setFormatter(make_formatter(log_format))
        self._timestamps = _Timestamps()
        self._queue: queue.SimpleQueue[str | Access | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="log-writer", daemon=True)
        self._thread.start()

    @staticmethod
    def sole_handler(logger: logging.Logger) -> "LogWriter | None":
        """The writer, if every record of `logger` would reach it and nothing else."""
        found: LogWriter | None = None
        node: logging.Logger | None = logger
        while node is not None:
            if node.filters:
                return None
            for handler in node.handlers:
                if found is not None or not isinstance(handler, LogWriter) or handler.filters:
                    return None
                found = handler
            node = node.parent if node.propagate else None
        return found

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._put(self.format(record))
        except Exception:
            self.handleError(record)

    def put_access(self, access: Access) -> None:
        self._put(access)

    def _put(self, item: str | Access) -> None:
        if self._queue.qsize() >= MAX_PENDING_LINES:
            self.dropped += 1
        else:
            self._queue.put(item)

    def access_line(self, access: Access) -> str:
        asctime = self._timestamps(access.created)
        message = printable(access.message)  # as the formatters write a message
        if self.log_format == "json":
            data = {"time": asctime, "level": "INFO", "logger": ACCESS_LOGGER}
            return json.dumps({**data, "message": message, **access.fields})
        return f"{asctime} INFO {ACCESS_LOGGER}: {message}"

    def _dropped_line(self, count: int) -> str:
        message = f"{count} log lines dropped: stdout did not keep up"
        record = logging.LogRecord(__name__, logging.WARNING, __file__, 0, message, (), None)
        return self.format(record)

    def _write(self) -> None:
        while True:
            batch = [self._queue.get()]
            if batch[0] is not None:
                # Gather lines for a moment: a wake-up per line would take the GIL from the
                # event loop for every request (a forced switch), costing far more than the line.
                time.sleep(GATHER_SECONDS)
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            lines = [
                item if isinstance(item, str) else self.access_line(item)
                for item in batch
                if item is not None
            ]
            if self.dropped != self._reported:
                dropped, self._reported = self.dropped - self._reported, self.dropped
                lines.append(self._dropped_line(dropped))
            if lines:
                try:
                    self.stream.write("\n".join(lines) + "\n")
                    self.stream.flush()
                except (OSError, ValueError):  # stdout closed: nothing else can be told
                    pass
            if None in batch:
                return

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=5)
        super().close()


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonLineFormatter()
    return TextFormatter()


def configure_logging(settings: Settings, *, background: bool = False) -> None:
    """Log to stdout; `background`: from a writer thread (serving), else as each record comes
    (jobs, whose log lines interleave with what they print)."""
    handler: logging.Handler
    if background:
        handler = LogWriter(sys.stdout, settings.log_format)
    else:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(make_formatter(settings.log_format))
    root = logging.getLogger()
    for previous in root.handlers:
        if isinstance(previous, LogWriter):
            previous.close()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Our access log replaces uvicorn's; its error log stays.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every Consul agent call at INFO; the discovery log reports what changed.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # aiormq logs every failed connection attempt as an error; the relay logs the outage once.
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
