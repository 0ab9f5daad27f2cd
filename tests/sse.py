"""A small server-sent events client for tests: real connections, events parsed as browsers do."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx


@dataclass
class Event:
    """One dispatched block: `event` is "message" when the block named none (the SSE default)."""

    id: str | None
    event: str
    data: str


@dataclass
class Stream:
    response: httpx.Response
    last_id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    _lines: AsyncIterator[str] | None = None

    async def next_block(self, timeout: float = 10.0) -> Event | None:  # noqa: ASYNC109
        """The next block that set an id or carried data; None when the stream ended."""
        if self._lines is None:
            self._lines = self.response.aiter_lines()
        event_id: str | None = None
        name = ""
        data: list[str] = []
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if line == "":
                    if event_id is not None:
                        self.last_id = event_id
                    if data or event_id is not None:
                        return Event(event_id, name or "message", "\n".join(data))
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                key, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if key == "id":
                    event_id = value
                elif key == "event":
                    name = value
                elif key == "data":
                    data.append(value)
                elif key == "retry":
                    self.retry = int(value)
        return None

    async def next_event(self, timeout: float = 10.0) -> Event:  # noqa: ASYNC109
        """The next block that carried data (skips the opening id)."""
        async with asyncio.timeout(timeout):
            while True:
                block = await self.next_block(timeout)
                assert block is not None, "the stream ended"
                if block.data:
                    return block


@contextlib.asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    user_id: int,
    *,
    last_event_id: str | None = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Stream]:
    """A stream that must open (200); its opening block has been read."""
    sent = {"User-Id": str(user_id), **(headers or {})}
    if last_event_id is not None:
        sent["Last-Event-ID"] = last_event_id
    async with client.stream("GET", "/events", headers=sent, params=params) as response:
        if response.status_code != 200:
            await response.aread()
            raise AssertionError(f"{response.status_code}: {response.text}")
        stream = Stream(response)
        opening = await stream.next_block()
        assert opening is not None
        assert opening.data == ""
        yield stream
