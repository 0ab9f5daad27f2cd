"""Live delivery: `GET /events`, one server-sent event stream per user, resumable anywhere.

A stream is a position in the caller's feed (see feed.py): it writes every event after it,
then waits to be woken (wakeups.py), re-reading at least every FEED_POLL_INTERVAL, with a
`: ping` comment after SSE_HEARTBEAT_INTERVAL of quiet. An event's id is
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

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from messenger import db, feed
from messenger.errors import (
    EVENT_ID_FOREIGN,
    EVENT_ID_INVALID,
    EVENT_ID_UNKNOWN,
    USER_NOT_FOUND,
    BadRequest,
    NotFound,
)
from messenger.handlers import _user_id
from messenger.http_limits import ABORT_EXTENSION
from messenger.services import Services
from messenger.streams import Listener, Streams

logger = logging.getLogger("messenger.stream")

READ_BATCH = 200  # events per feed read
EVENT_ID = re.compile(r"([1-9][0-9]{0,18})-(0|[1-9][0-9]{0,18})")

HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
PING = b": ping\n\n"
RESET = b"event: reset\ndata: {}\n\n"


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


async def events(request: Request) -> Response:
    """`GET /events`: the caller's event stream (contract section 8)."""
    user_id = _user_id(request)
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
    return EventStream(services, streams, streams.open(user_id, start))


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
    """The response of `GET /events`: writes the listener's feed until the stream ends."""

    def __init__(self, services: Services, streams: Streams, listener: Listener) -> None:
        self.services = services
        self.streams = streams
        self.listener = listener
        self.status_code = 200
        self.background = None
        self.raw_headers = list(HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streams = self.streams
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            self.listener.signal.set()

        watcher = asyncio.create_task(watch_disconnect(), name="stream-disconnect")
        try:
            await self._stream(scope, send, gone)
        except _Dropped:
            streams.dropped += 1
            logger.info(
                "stream of user %d dropped: the client took no data for %gs",
                self.listener.user_id,
                self.services.settings.sse_send_timeout,
            )
            # Under uvicorn (see http_limits) the connection is closed; elsewhere the server
            # closes it when the exception reaches it.
            extension = scope.get("extensions", {}).get(ABORT_EXTENSION)
            if extension is None:
                raise
            extension["abort"]()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await gone.wait()
        finally:
            streams.close(self.listener)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _write(self, send: Send, body: bytes, *, more: bool = True) -> None:
        try:
            async with asyncio.timeout(self.services.settings.sse_send_timeout):
                await send({"type": "http.response.body", "body": body, "more_body": more})
        except TimeoutError:
            raise _Dropped from None

    async def _stream(self, scope: Scope, send: Send, gone: asyncio.Event) -> None:
        settings = self.services.settings
        streams = self.streams
        listener = self.listener
        user_id = listener.user_id
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        opening = b"retry: %d\nid: %d-%d\n\n" % (
            round(settings.sse_retry * 1000),
            user_id,
            listener.position,
        )
        await self._write(send, opening)
        quiet_since = time.monotonic()
        while not gone.is_set():
            listener.signal.clear()
            wrote = await self._deliver(send)
            if wrote:
                quiet_since = time.monotonic()
            if streams.closing or gone.is_set():
                break
            remaining = quiet_since + settings.sse_heartbeat_interval - time.monotonic()
            if remaining <= 0:
                await self._write(send, PING)
                quiet_since = time.monotonic()
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await listener.signal.wait()
        if not gone.is_set():
            await self._write(send, b"", more=False)

    async def _deliver(self, send: Send) -> bool:
        """Write the events after the listener's position; True if anything was written."""
        services = self.services
        listener = self.listener
        metrics = services.metrics
        wrote = False
        while not self.streams.closing:
            try:
                found = await feed.read(
                    services.pool, listener.user_id, listener.position, READ_BATCH
                )
            except db.DATABASE_ERRORS as error:
                # The periodic re-read tries again; heartbeats go on meanwhile.
                logger.warning(
                    "stream of user %d: reading its feed failed (%r)", listener.user_id, error
                )
                return wrote
            read_at = time.monotonic()
            for event in found.events:
                if event.name:
                    await self._write(send, _event_bytes(listener.user_id, event))
                    wrote = True
                    if metrics is not None:
                        metrics.stream_events.labels(event.name).inc()
                        metrics.stream_delay.observe(event.age + time.monotonic() - read_at)
                listener.position = event.position
            if found.gap and found.head is not None:
                # Events after the position were swept (FEED_RETENTION): the client reloads
                # through the REST routes and goes on from the latest position.
                listener.position = found.head
                await self._write(send, b"id: %d-%d\n%s" % (listener.user_id, found.head, RESET))
                wrote = True
                if metrics is not None:
                    metrics.stream_events.labels("reset").inc()
                continue
            if len(found.events) < READ_BATCH:
                return wrote
        return wrote
