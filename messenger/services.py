"""The connections and workers a serving instance owns, as typed state shared with handlers."""

import asyncio
from dataclasses import dataclass, field

from starlette.requests import Request

from messenger.db import CheckConnection, Pool
from messenger.discovery import Registration
from messenger.metrics import Metrics
from messenger.page_cache import PageCache
from messenger.relay import OutboxRelay
from messenger.settings import Settings
from messenger.streams import Streams
from messenger.tokens import TokenVerifier
from messenger.wakeups import WakeUps


@dataclass(slots=True)
class Services:
    settings: Settings
    pool: Pool
    checks: CheckConnection  # readiness and metrics: a connection outside the pool
    pages: PageCache
    outbox_pending: asyncio.Event = field(default_factory=asyncio.Event)
    relay: OutboxRelay | None = None
    discovery: Registration | None = None  # None: CONSUL_SERVICE_NAME unset, never registers
    metrics: Metrics | None = None
    tokens: TokenVerifier | None = None  # AUTH_MODE=jwt: verifies bearer tokens; None: header
    streams: Streams | None = None
    wakeups: WakeUps | None = None

    @staticmethod
    def of(request: Request) -> "Services":
        services: Services = request.scope["state"]["services"]  # the lifespan's state
        return services

    def outbox_written(self) -> None:
        """Wake the event relay: a committed send left a row in the outbox."""
        self.outbox_pending.set()

    def feeds_written(self, user_ids: list[int]) -> None:
        """Wake the streams of these users, here and on the other instances: a committed
        statement gave them feed events."""
        if self.wakeups is not None:
            self.wakeups.publish(user_ids)
