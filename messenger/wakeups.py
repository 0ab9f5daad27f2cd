"""Wake-ups across instances: PostgreSQL LISTEN/NOTIFY on a connection of the instance's own.

After a statement wrote feed events, the instance wakes its own streams of those users at
once and tells the other instances with one `pg_notify` naming the users. Notifications go
out from a separate transaction, never from the send's, so sends do not queue for the
notification lock PostgreSQL takes at commit; while one is in flight the next users gather
and leave together (payloads stay under PostgreSQL's 8,000-byte limit).

A wake-up only says "read again": the events come from the feed table. A lost notification
(the connection broke, the database restarted) delays an event until the streams' periodic
re-read (FEED_POLL_INTERVAL), and after a reconnection every local stream re-reads once.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

import asyncpg

from messenger import db
from messenger.settings import Settings

logger = logging.getLogger("messenger.wakeups")

CHANNEL = "messenger_feed"
PAYLOAD_LIMIT = 7_900  # bytes; PostgreSQL refuses a payload of 8,000 or more
CONNECT_TIMEOUT = 5.0
BACKOFF_INITIAL = 0.5
BACKOFF_CAP = 10.0

Wake = Callable[[Iterable[int] | None], None]  # user ids to wake; None: every stream


def payloads(user_ids: Iterable[int]) -> list[str]:
    """The users as comma-separated decimal ids, split into payloads under the limit."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for user_id in user_ids:
        text = str(user_id)
        if current and size + len(text) + 1 > PAYLOAD_LIMIT:
            out.append(",".join(current))
            current, size = [], 0
        current.append(text)
        size += len(text) + 1
    if current:
        out.append(",".join(current))
    return out


def parse_payload(payload: str) -> list[int]:
    """The user ids of a payload; anything else in it is ignored."""
    return [int(part) for part in payload.split(",") if part.isascii() and part.isdigit()]


class WakeUps:
    """Sends and receives "these users have new events" between instances."""

    def __init__(self, settings: Settings, wake: Wake) -> None:
        self.settings = settings
        self.wake = wake
        self.connected = False
        self.sent = 0  # notifications sent
        self.received = 0  # notifications from other instances
        self._pending: set[int] = set()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._attempt: asyncio.Future[asyncpg.Connection] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="wakeups")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            self._conn.terminate()
        # A connection still being made when the task was cancelled is closed, not leaked.
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            with contextlib.suppress(*db.DATABASE_ERRORS, asyncio.CancelledError):
                conn = await asyncio.wait_for(attempt, CONNECT_TIMEOUT)
                conn.terminate()

    def publish(self, user_ids: Iterable[int]) -> None:
        """Wake these users' streams here now, and on the other instances shortly."""
        ids = list(user_ids)
        if not ids:
            return
        self.wake(ids)
        self._pending.update(ids)
        self._ready.set()

    def _received(self, conn: object, pid: int, channel: str, payload: object) -> None:
        if self._conn is not None and pid == self._conn.get_server_pid():
            return  # our own: those streams were woken when it was sent
        self.received += 1
        self.wake(parse_payload(str(payload)))

    async def _connect(self) -> asyncpg.Connection:
        kwargs = db.connect_kwargs(self.settings, application_name="messenger-wakeups")
        self._attempt = asyncio.ensure_future(asyncpg.connect(**kwargs, timeout=CONNECT_TIMEOUT))
        conn: asyncpg.Connection = await asyncio.shield(self._attempt)
        self._conn, self._attempt = conn, None  # from here on, closed by _run or stop
        await conn.add_listener(CHANNEL, self._received)
        return conn

    async def _run(self) -> None:
        delay = BACKOFF_INITIAL
        while True:
            try:
                conn = await self._connect()
                self.connected = True
                delay = BACKOFF_INITIAL
                self.wake(None)  # whatever was notified while we were away
                await self._send_forever(conn)
            except db.DATABASE_ERRORS as error:
                if self.connected:
                    logger.warning("wake-ups: connection lost (%r); reconnecting", error)
            finally:
                self.connected = False
                if self._conn is not None:
                    self._conn.terminate()
                    self._conn = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP)

    async def _send_forever(self, conn: asyncpg.Connection) -> None:
        while True:
            if not self._pending:
                self._ready.clear()
                # Wait for users to announce, checking the connection now and then: a broken
                # one must be replaced while nothing is sent, or incoming wake-ups stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.feed_poll_interval * 5):
                        await self._ready.wait()
                if not self._pending:
                    await conn.execute("SELECT 1", timeout=CONNECT_TIMEOUT)
                    continue
            users, self._pending = self._pending, set()
            for payload in payloads(sorted(users)):
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                self.sent += 1
