"""Live delivery: `GET /events`, one server-sent event stream per user, resumable anywhere.

A stream is a position in the caller's feed (see feed.py): the instance's reader (streams.py)
hands it the events after that position whenever it is woken (wakeups.py), and at least every
FEED_POLL_INTERVAL; it writes them, with a `: ping` comment after SSE_HEARTBEAT_INTERVAL of
quiet. An event's id is
`<user id>-<position>`; a client that reconnects with it as `Last-Event-ID` (or the
`last_event_id` query parameter) continues right after it, on any instance.

A stream ends when the client goes, when the client stops reading for SSE_SEND_TIMEOUT, and
when the instance shuts down: after it deregistered, between two events, so the client
reconnects to another instance and misses nothing.
"""

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from messenger import db, feed, identity, schemas
from messenger.errors import (
    EVENT_ID_FOREIGN,
    EVENT_ID_INVALID,
    EVENT_ID_UNKNOWN,
    SHARED_ERRORS,
    USER_NOT_FOUND,
    BadRequest,
    Errors,
    MessengerError,
    NotFound,
    handle_messenger_error,
)
from messenger.http_limits import CONNECTION_EXTENSION
from messenger.operations import Answer, operation
from messenger.services import Services
from messenger.streams import Listener, Streams

logger = logging.getLogger("messenger.stream")

EVENT_ID = re.compile(r"([1-9][0-9]{0,18})-(0|[1-9][0-9]{0,18})")

HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
PING = b": ping\n\n"


def _last_event_id(request: Request, user_id: int) -> tuple[int, str] | None:
    """The position to resume after, from `Last-Event-ID` or else `last_event_id`.

    The header wins: a browser reconnects to the same URL (with any `last_event_id` it was
    opened with) and sends the id of the last event it got in the header.
    """
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if not raw:
        return None
    match = EVENT_ID.fullmatch(raw)
    if match is None:
        raise BadRequest(EVENT_ID_INVALID.format(value=raw[:60]))
    if int(match[1]) != user_id:
        raise BadRequest(EVENT_ID_FOREIGN.format(value=raw))
    return int(match[2]), raw


@operation(
    "streamEvents",
    "events",
    Answer(
        200,
        "The stream, until the client or the instance ends it.",
        str,
        media=("text/event-stream",),
        headers=["Cache-Control", "X-Accel-Buffering"],
    ),
    parameters=[
        schemas.USER_ID,
        schemas.LAST_EVENT_ID,
        schemas.LAST_EVENT_ID_QUERY,
        schemas.REQUEST_ID,
    ],
    errors=[
        Errors(
            400,
            "User-Id missing or malformed, or a Last-Event-ID that is malformed, another "
            "user's, or ahead of the caller's stream.",
            [],
        ),
        Errors(404, "No such user.", [USER_NOT_FOUND]),
        SHARED_ERRORS["StreamUnavailable"],
    ],
    caller=True,
)
async def events(request: Request) -> Response:
    """The caller's live events, as server-sent events, resumable on any instance

    The stream opens with `retry: <ms>` and `id: <id>` (no data). Each event has an `id:`, an
    `event:` name and one `data:` line of compact JSON: `message`
    (`{"conversation_id":"7","message":{...}}`, the message exactly as `GET
    /conversations/7/messages` lists it), `conversation` (`{"conversation":{...}}`, exactly as
    `GET /conversations` lists it to the caller), `horizon`
    (`{"conversation_id":"7","user_id":"2","index":"5"}`), and `reset` (data `{}`: the events
    after the resumed id are no longer kept; reload through the REST routes). A `: ping`
    comment follows SSE_HEARTBEAT_INTERVAL seconds of quiet. Resuming with `Last-Event-ID`
    delivers every event after that one, none missing, none repeated.
    """
    user_id = await identity.caller(request)
    resume = _last_event_id(request, user_id)
    services = Services.of(request)
    async with db.unavailable_as_503():
        head = await db.feed_position(services.pool, user_id)
    if head is None:
        raise NotFound(USER_NOT_FOUND.format(id=user_id))
    if resume is not None and resume[0] > head:
        raise BadRequest(EVENT_ID_UNKNOWN.format(value=resume[1]))
    start = head if resume is None else resume[0]
    streams = services.streams
    assert streams is not None
    if request.method == "HEAD":
        # GET's answer up to its head, and no stream registered: the server ends it there.
        streams.admit()
        return _head()
    return EventStream(services, streams, streams.open(user_id, start))


def _head() -> Response:
    response = Response(status_code=200)
    response.raw_headers = list(HEADERS)  # no Content-Length: a stream's length is unknown
    return response


def _event_bytes(user_id: int, event: feed.Event) -> bytes:
    return b"id: %d-%d\nevent: %s\ndata: %s\n\n" % (
        user_id,
        event.position,
        event.name.encode(),
        event.data,
    )


class _Dropped(Exception):
    """The client did not take a write within SSE_SEND_TIMEOUT."""


class EventStream(Response):
    """The response of `GET /events`: writes what the listener holds until the stream ends."""

    def __init__(self, services: Services, streams: Streams, listener: Listener) -> None:
        self.services = services
        self.streams = streams
        self.listener = listener
        self.status_code = 200
        self.background = None
        self.raw_headers = list(HEADERS)
        self.position = listener.fetched  # the last event written

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connection = scope.get("extensions", {}).get(CONNECTION_EXTENSION)
        watcher = None
        if connection is not None:
            # Under uvicorn (see http_limits): told when the client leaves, without a task per
            # stream waiting in receive().
            is_closing: Callable[[], bool] = connection["is_closing"]
            connection["on_lost"](self.listener.signal.set)
        else:
            gone = asyncio.Event()

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone.set()
                self.listener.signal.set()

            watcher = asyncio.create_task(watch_disconnect(), name="stream-disconnect")
            is_closing = gone.is_set
        try:
            await self._stream(send, is_closing)
        except _Dropped:
            self.streams.dropped += 1
            logger.info(
                "stream of user %d dropped: the client took no data for %gs",
                self.listener.user_id,
                self.services.settings.sse_send_timeout,
            )
            if connection is None:
                raise  # the server closes the connection when the exception reaches it
            connection["abort"]()
            await asyncio.sleep(0)  # the transport reports the connection lost
        finally:
            self.streams.close(self.listener)
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    async def _write(self, send: Send, body: bytes, *, more: bool = True) -> None:
        try:
            async with asyncio.timeout(self.services.settings.sse_send_timeout):
                await send({"type": "http.response.body", "body": body, "more_body": more})
        except TimeoutError:
            raise _Dropped from None

    async def _stream(self, send: Send, is_closing: Callable[[], bool]) -> None:
        settings = self.services.settings
        streams = self.streams
        listener = self.listener
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        opening = b"retry: %d\nid: %d-%d\n\n" % (
            round(settings.sse_retry * 1000),
            listener.user_id,
            self.position,
        )
        await self._write(send, opening)
        quiet_since = time.monotonic()
        while not streams.closing and not is_closing():
            listener.signal.clear()
            if listener.events:
                await self._deliver(send, is_closing)
                quiet_since = time.monotonic()
                continue
            remaining = quiet_since + settings.sse_heartbeat_interval - time.monotonic()
            if remaining <= 0:
                await self._write(send, PING)
                quiet_since = time.monotonic()
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await listener.signal.wait()
        if not is_closing():
            await self._write(send, b"", more=False)

    async def _deliver(self, send: Send, is_closing: Callable[[], bool]) -> None:
        """Write the events the listener holds, one by one, stopping at shutdown."""
        listener = self.listener
        metrics = self.services.metrics
        events = listener.events
        while events and not self.streams.closing and not is_closing():
            event = events.popleft()
            if event.name:
                await self._write(send, _event_bytes(listener.user_id, event))
                if metrics is not None:
                    metrics.stream_events.labels(event.name).inc()
                    if event.name != "reset":
                        delay = event.age + time.monotonic() - event.read_at
                        metrics.stream_delay.observe(delay)
            self.position = event.position
        if listener.more and not events:
            self.streams.want(listener)


class DirectEventStreams:
    """Serves `GET /events` ahead of the routing stack; everything else goes on to `app`.

    A stream lives as long as its connection, and every layer between uvicorn and the handler
    (Starlette's error and exception middleware, the router, the route, two exception
    wrappers) keeps a suspended coroutine for all that time: about 4 kB each stream, 40 MB at
    10,000. Placed after the access log (request id, log line, metrics), this answers the
    stream with the same CORS handling as every route (the same CORSMiddleware settings) and
    the same JSON errors. Other methods on /events (HEAD, a preflight, a 405) take the usual
    way; the route stays in the app's routes for those, for metrics and for the OpenAPI
    document.
    """

    def __init__(self, app: ASGIApp, cors: dict[str, Any]) -> None:
        self.app = app
        self.cors = CORSMiddleware(self._serve, **cors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == "/events":
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await events(request)
        except MessengerError as error:
            response = await handle_messenger_error(request, error)
        await response(scope, receive, send)
