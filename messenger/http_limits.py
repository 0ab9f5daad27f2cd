"""Bounded request heads: uvicorn's httptools protocol with a size limit and a read deadline.

httptools (llhttp) keeps every header byte a client sends until the head ends and has no
setting for a limit, and uvicorn gives a client unlimited time to finish its head. This
protocol counts the bytes of each request's head (request line, headers, the blank line) as
they arrive and answers 431 once they pass `max_head`, having handed the parser at most that
many; and it answers 408 when a head is not complete `head_timeout` seconds after the
connection opened (for its first request) or after the request's first bytes arrived (for the
next ones), and closes a new connection that sent nothing by then. Idle keep-alive connections
stay governed by uvicorn's `timeout_keep_alive`.

An HTTP/1.1 request without exactly one Host header is refused with 400 (RFC 9112 3.2);
HTTP/1.0 needs none.

The refusals close the connection, as the parser's state is lost; their bodies are JSON like
every other error of the service.
"""

import asyncio
from collections.abc import Callable

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

HEAD_TOO_LARGE = "request header fields too large"
HOST_REQUIRED = "an HTTP/1.1 request must have exactly one Host header"
HEAD_TIMEOUT = "request headers not received in time"
INVALID_REQUEST = "invalid HTTP request"
# scope["extensions"][CONNECTION_EXTENSION]: "abort"() drops the connection, "is_closing"()
# says whether it is going or gone, "on_lost"(callback) calls back when it is gone.
CONNECTION_EXTENSION = "messenger.connection"
_NO_CALLBACKS: list[Callable[[], None]] = []  # shared and never appended to


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Set the bounds with `bounded_protocol`, which makes a subclass carrying them."""

    max_head: int = 16 * 1024
    head_timeout: float = 10.0

    # Per-connection state.
    _in_head = True  # the next bytes belong to a request head: they count against max_head
    _head_bytes = 0  # of the current head, so far
    _heads_done = 0
    _head_open = False  # a head has begun and not ended
    _head_timer: asyncio.TimerHandle | None = None
    _lost_callbacks: list[Callable[[], None]] = _NO_CALLBACKS
    _bad_request = INVALID_REQUEST  # the text of a 400

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a byte holds a socket as surely as a slow one: the
        # first request's deadline runs from here.
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)
        callbacks, self._lost_callbacks = self._lost_callbacks, []
        for callback in callbacks:
            callback()

    def _on_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the connection is lost (the client left, or it was aborted)."""
        if self._lost_callbacks is _NO_CALLBACKS:
            self._lost_callbacks = []
        self._lost_callbacks.append(callback)

    def data_received(self, data: bytes) -> None:
        if not self._in_head:  # a body: bounded by the body limit middleware
            super().data_received(data)
        elif len(data) <= self.max_head - self._head_bytes:
            self._head_bytes += len(data)
            super().data_received(data)
        else:
            self._receive_long_head(data)
        # Nearly every head arrives whole in one chunk: a timer only for one still open after it.
        if self._head_open and self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _receive_long_head(self, data: bytes) -> None:
        """Give the parser only what the limit allows, and the rest once the head turned out
        to end in that part."""
        room = self.max_head - self._head_bytes
        heads_done = self._heads_done
        self._head_bytes = self.max_head
        super().data_received(data[:room])
        if self.transport.is_closing():
            return
        if self._heads_done == heads_done:
            self._refuse(431, HEAD_TOO_LARGE)
            return
        self.data_received(data[room:])

    def on_message_begin(self) -> None:
        self._head_open = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = self._head_open = False
        self._heads_done += 1
        self._disarm_head_timer()
        if self.parser.get_http_version() == "1.1":
            hosts = sum(1 for name, _ in self.headers if name == b"host")
            if hosts != 1:
                # RFC 9112, section 3.2: 400 to an HTTP/1.1 request with no Host or several,
                # as Node's server answers. Raising stops the parser; uvicorn then calls
                # send_400_response, which sends this text.
                self._bad_request = HOST_REQUIRED
                raise ValueError(HOST_REQUIRED)
        # A response that waits for a client which stopped reading (an event stream) can only
        # stop waiting by closing the connection, and a long response should notice a client
        # that left without keeping a task in receive(): give the application the means.
        extensions = self.scope.setdefault("extensions", {})
        transport = self.transport
        extensions[CONNECTION_EXTENSION] = {
            "abort": transport.abort,
            "is_closing": transport.is_closing,
            "on_lost": self._on_lost,
        }
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's own text/plain answer to what llhttp cannot parse, in the service's shape.
        self._refuse(400, self._bad_request)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        busy = self.cycle is not None and not self.cycle.response_complete
        if not self._head_open or busy:
            # Nothing started (say a client's spare connection), or a response is being
            # written on this connection: an error response now would be garbled or unwanted.
            self.transport.close()
            return
        self._refuse(408, HEAD_TIMEOUT)

    def _refuse(self, status: int, text: str) -> None:
        body = orjson.dumps({"error": text})
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self._disarm_head_timer()
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def bounded_protocol(*, max_head: int, head_timeout: float) -> type[BoundedHttpToolsProtocol]:
    """The protocol class to pass as `uvicorn.Config(http=...)`, carrying these bounds."""

    class Bounded(BoundedHttpToolsProtocol):
        pass

    Bounded.max_head = max_head
    Bounded.head_timeout = head_timeout
    return Bounded
