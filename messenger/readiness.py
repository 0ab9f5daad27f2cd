"""Readiness: what PostgreSQL says right now (the probe), and whether to take traffic."""

from dataclasses import dataclass
from typing import Any, Protocol

from messenger import __version__, db
from messenger.discovery import Registration, State
from messenger.relay import OutboxRelay
from messenger.wakeups import WakeUps

PROBE_TIMEOUT = 2.0  # seconds a readiness check or scrape waits for PostgreSQL, connecting included


class StreamFigures(Protocol):
    """What metrics read of the instance's event streams (`streams.Streams`)."""

    count: int  # open now
    limit: int  # SSE_MAX_STREAMS
    dropped: int  # clients that stopped reading
    reads: int  # statements that read feeds


class Dependencies(Protocol):
    """What an instance depends on, as readiness and metrics read it (`Services` is one)."""

    pool: db.Pool
    checks: db.CheckConnection  # a connection outside the pool
    relay: OutboxRelay | None
    discovery: Registration | None

    @property
    def streams(self) -> StreamFigures | None: ...

    @property
    def wakeups(self) -> WakeUps | None: ...


@dataclass(frozen=True, slots=True)
class Probe:
    """What a readiness check or a scrape found out from PostgreSQL just now."""

    database: bool
    outbox_pending: int | None = None
    outbox_oldest_age: float | None = None
    outbox_parked: int | None = None


async def _outbox_figures(conn: db.Connection) -> tuple[int, float, int]:
    pending, oldest_age = await db.outbox_backlog(conn)
    return pending, oldest_age, await db.outbox_parked(conn)


async def probe(dependencies: Dependencies) -> Probe:
    """Ask PostgreSQL for the outbox backlog; an answer also proves the database reachable.

    The question goes over a connection of its own, never through the request pool, so a
    busy pool is not mistaken for a database that is down.
    """
    try:
        pending, oldest_age, parked = await dependencies.checks.run(_outbox_figures)
    except db.DATABASE_ERRORS:
        return Probe(database=False)
    return Probe(True, outbox_pending=pending, outbox_oldest_age=oldest_age, outbox_parked=parked)


def pool_state(pool: db.Pool) -> dict[str, int | bool]:
    """The request pool right now; `busy` while requests wait in line for a connection."""
    waiting = pool.gate.waiting
    return {
        "busy": waiting > 0,
        "in_use": pool.get_size() - pool.get_idle_size(),
        "max": pool.get_max_size(),
        "waiting": waiting,
    }


def readiness(dependencies: Dependencies, found: Probe) -> tuple[bool, dict[str, Any]]:
    """Whether the instance should get traffic, and the figures that say why.

    Only an unreachable database (or a shutdown under way) makes it unready: the outbox
    keeps events while the broker is away, and Consul is the load balancer's concern. A busy
    pool does not either: taking a loaded instance out would only load the others more, and
    its requests get a 503 after PG_ACQUIRE_TIMEOUT rather than hang.
    """
    relay = dependencies.relay
    registration = dependencies.discovery
    leaving = registration is not None and registration.state is State.DEREGISTERED
    ready = found.database and not leaving
    body = {
        "status": "ready" if ready else "unavailable",
        "database": found.database,
        "pool": pool_state(dependencies.pool),
        "broker": None if relay is None else bool(relay.connected),
        "outbox": {
            "pending": found.outbox_pending,
            "oldest_age_seconds": found.outbox_oldest_age,
        },
        "registered": None if registration is None else registration.state is State.REGISTERED,
        "version": __version__,
    }
    return ready, body
