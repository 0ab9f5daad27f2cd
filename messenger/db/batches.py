"""Sends into one conversation, gathered into one statement while the ones before it commit.

Every send takes its conversation's counter row and holds it through its commit, so one
statement per send lets a busy conversation take one send per commit, however much CPU and
however many connections are free. Here at most IN_FLIGHT statements of a conversation are
under way at once (one committing, the next waiting for the row); a send arriving meanwhile
waits in the conversation's line, and the next statement takes every send in line, in
arrival order (`db.send_messages`). A conversation thus takes as many sends per commit as
arrived during the last one, and a quiet one still sends each message at once, alone.

Each send gets its own answer: its message, None when its sender is no member (or a send
racing it with its Idempotency-Key stored first), or the error of the statement that carried
it. A statement never carries one sender's key twice: the later send waits for the next one,
which finds the key stored and replays its answer. The waits stay bounded: a send waits in
line and for a connection PG_ACQUIRE_TIMEOUT in all (then PoolBusy, as any request would),
and once taken, its statement's timeouts bound it.
"""

import asyncio
from collections import deque
from dataclasses import dataclass

import asyncpg

from messenger.db.messages import send_messages
from messenger.db.pool import Connection, Pool

IN_FLIGHT = 2  # statements of one conversation under way: one committing, one at the row
BATCH_MAX = 500  # sends in one statement at most
# Characters of content in one statement at most (the first send aside): a statement that
# fails takes all its sends with it, so a burst of large messages goes in several.
BATCH_CHARS = 1_000_000

_LEAD = object()  # a send's answer that hands it a statement slot: it carries the line next


class BatchAbandoned(ConnectionError):
    """The statement carrying a send was cancelled: it may or may not have been stored."""


@dataclass(slots=True)
class _Send:
    sender: int
    content: str
    key: str | None
    key_ttl: float
    deadline: float
    in_line: bool = False
    answer: "asyncio.Future[object] | None" = None


class _Line:
    """A conversation's sends waiting for a statement, and its statements under way."""

    __slots__ = ("statements", "waiting")

    def __init__(self) -> None:
        self.waiting: deque[_Send] = deque()
        self.statements = 0


async def send_message(
    conn: Connection | Pool,
    channel_id: int,
    user_id: int,
    content: str,
    key: str | None = None,
    key_ttl: float = 0.0,
) -> asyncpg.Record | None:
    """Append a message, its outbox event and each member's feed event, and commit, once per
    `key` younger than `key_ttl` seconds (`replayed`: that key's message); None if the user
    is no member, or if a send racing this one stored its key first (see SEND_MESSAGES).
    `woken` lists the members whose streams to wake.

    Through the pool, the send may share its statement with other sends into the
    conversation (see above); on a connection of its own, it is a statement of one.
    """
    send = _Send(user_id, content, key, key_ttl, asyncio.get_running_loop().time())
    if isinstance(conn, Pool):
        send.deadline += conn.acquire_timeout
        return await _send_through(conn, channel_id, send)
    return (await send_messages(conn, channel_id, [(user_id, content, key)], key_ttl))[0]


async def _send_through(pool: Pool, channel_id: int, send: _Send) -> asyncpg.Record | None:
    lines: dict[int, _Line] = pool.send_lines
    line = lines.get(channel_id)
    if line is None:
        line = lines[channel_id] = _Line()
    try:
        if line.statements < IN_FLIGHT:
            line.statements += 1
        else:
            answer = await _wait(pool, line, send)
            if answer is not _LEAD:
                assert answer is None or isinstance(answer, asyncpg.Record)
                return answer
        return await _carry(pool, channel_id, line, send)
    finally:
        if not line.statements and not line.waiting and lines.get(channel_id) is line:
            del lines[channel_id]


async def _wait(pool: Pool, line: _Line, send: _Send) -> object:
    """Wait in line: for the answer of the statement that takes this send, or for _LEAD."""
    loop = asyncio.get_running_loop()
    send.answer = answer = loop.create_future()
    send.in_line = True
    line.waiting.append(send)
    expiry = loop.call_at(send.deadline, _expire, pool, line, send)
    try:
        return await answer
    except asyncio.CancelledError:
        if send.in_line:
            send.in_line = False
            line.waiting.remove(send)
        elif not answer.cancelled() and answer.exception() is None and answer.result() is _LEAD:
            _pass_on(line)  # handed a slot just as this request was cancelled
        raise
    finally:
        expiry.cancel()


def _expire(pool: Pool, line: _Line, send: _Send) -> None:
    if send.in_line and send.answer is not None and not send.answer.done():
        send.in_line = False
        line.waiting.remove(send)
        send.answer.set_exception(pool.ran_out())


async def _carry(pool: Pool, channel_id: int, line: _Line, send: _Send) -> asyncpg.Record | None:
    """Holding a statement slot: send this send and everyone in line then; pass the slot on."""
    try:
        timeout = max(0.0, send.deadline - asyncio.get_running_loop().time())
        async with pool.acquire(timeout=timeout) as conn:
            batch = _take(line, send)
            try:
                answers = await send_messages(
                    conn,
                    channel_id,
                    [(each.sender, each.content, each.key) for each in batch],
                    send.key_ttl,
                )
            except BaseException as error:
                if isinstance(error, asyncio.CancelledError):
                    error = BatchAbandoned("the statement carrying this send was cancelled")
                for other in batch[1:]:
                    if other.answer is not None and not other.answer.done():
                        other.answer.set_exception(error)
                raise
            for other, answer in zip(batch[1:], answers[1:], strict=True):
                if other.answer is not None and not other.answer.done():
                    other.answer.set_result(answer)
            return answers[0]
    finally:
        _pass_on(line)


def _take(line: _Line, send: _Send) -> list[_Send]:
    """`send` and the sends in line, in order, up to BATCH_MAX sends and BATCH_CHARS of
    content; a sender's key already taken stays in line."""
    batch = [send]
    keys = {(send.sender, send.key)}
    staying: list[_Send] = []
    chars = len(send.content)
    while line.waiting and len(batch) < BATCH_MAX:
        other = line.waiting[0]
        if chars + len(other.content) > BATCH_CHARS:
            break
        line.waiting.popleft()
        if other.key is not None and (other.sender, other.key) in keys:
            staying.append(other)
            continue
        keys.add((other.sender, other.key))
        other.in_line = False
        chars += len(other.content)
        batch.append(other)
    line.waiting.extendleft(reversed(staying))
    return batch


def _pass_on(line: _Line) -> None:
    """Give a statement slot to the first send in line, or free it."""
    while line.waiting:
        send = line.waiting.popleft()
        send.in_line = False
        if send.answer is not None and not send.answer.done():
            send.answer.set_result(_LEAD)
            return
    line.statements -= 1
