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
from messenger.tokens import TokenVerifier


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

    @staticmethod
    def of(request: Request) -> "Services":
        services: Services = request.state.services
        return services

    def outbox_written(self) -> None:
        """Wake the event relay: a committed send left a row in the outbox."""
        self.outbox_pending.set()
