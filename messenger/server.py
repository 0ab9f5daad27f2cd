"""The uvicorn server with the shutdown order a load-balanced instance needs.

On SIGTERM or SIGINT:

1. deregister from Consul, so consul-template drops the instance from nginx's upstreams;
2. keep serving for SHUTDOWN_GRACE seconds while the load balancer reloads;
3. stop accepting connections, end the event streams (their clients reconnect to another
   instance and resume) and let in-flight requests finish, for at most
   SHUTDOWN_DRAIN_TIMEOUT seconds (uvicorn's graceful shutdown);
4. run the lifespan teardown: flush the relay, close RabbitMQ and the PostgreSQL pool.

A second signal skips what is left of the grace; a SIGINT during the drain forces the exit,
as in uvicorn. A signal that was handled this way ends the process with status 0: unlike
plain uvicorn, it is not raised again once the server has stopped.
"""

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn

from messenger.discovery import Registration

logger = logging.getLogger("messenger.server")

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Server(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        *,
        registration: Registration | None,
        grace: float,
        on_drain: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(config)
        self.registration = registration
        self.grace = grace
        self.on_drain = on_drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._leaving: asyncio.Task[None] | None = None
        self._skip_grace = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._loop = asyncio.get_running_loop()
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the event loop's thread: hand over to the loop.
        if self._loop is None:
            self.should_exit = True
            return
        self._loop.call_soon_threadsafe(self._on_signal, signal.Signals(sig))

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._leaving is None and not self.should_exit:
            self._leaving = asyncio.create_task(self._leave(sig), name="leave")
        elif not self.should_exit:
            logger.info("%s again: skipping the rest of the grace period", sig.name)
            self._skip_grace.set()
        elif sig is signal.SIGINT:
            logger.warning("SIGINT again: not waiting for in-flight requests")
            self.force_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn stops accepting and marks every busy connection to close after its
        # response before it yields; the streams, told here, end after that, so their
        # connections close instead of waiting for the drain timeout.
        shutting_down = asyncio.create_task(super().shutdown(sockets))
        await asyncio.sleep(0)
        self.on_drain()
        await shutting_down

    async def _leave(self, sig: signal.Signals) -> None:
        """Steps 1 and 2; uvicorn's main loop notices `should_exit` and does the rest."""
        try:
            if self.registration is None:
                logger.info("%s: stopping", sig.name)
                return
            logger.info("%s: deregistering before the listener closes", sig.name)
            await self.registration.deregister()
            if self.grace > 0:
                logger.info("serving %.1fs more while the load balancer drops us", self.grace)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._skip_grace.wait(), self.grace)
        finally:
            self.should_exit = True
