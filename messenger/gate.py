"""A first-come-first-served gate: at most `size` holders, the others wait in arrival order.

asyncpg's pool hands out connections through an `asyncio.Queue`, which is not fair: a freed
connection wakes the longest waiter, but a request arriving before that waiter runs takes the
connection, and the waiter goes back to the end of the line. At a few hundred concurrent
requests some wait many times longer than the rest. The gate hands a freed slot straight to
the waiter at the head of the line, so nobody is overtaken.
"""

import asyncio
from collections import deque


class Gate:
    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """Holders-to-be in line now (those that gave up are skipped when their turn comes)."""
        return sum(not waiter.done() for waiter in self._waiters)

    @property
    def in_use(self) -> int:
        return self.size - self._free

    async def enter(self) -> None:
        """Take a slot, waiting for it in line; bound the wait with `asyncio.timeout`."""
        # A free slot means nobody is in line: leave() hands slots to waiters before it
        # frees one, and a waiter joins the line only when no slot is free.
        if self._free > 0:
            self._free -= 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await turn
        except BaseException:
            # The slot may have been handed over just as the wait ended: pass it on.
            if turn.done() and not turn.cancelled():
                self.leave()
            raise

    def leave(self) -> None:
        """Give the slot to the first waiter still waiting, or free it."""
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1
