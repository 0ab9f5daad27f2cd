"""Prometheus metrics: request figures, and dependency figures read at scrape time."""

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from messenger import __version__
from messenger.discovery import State
from messenger.readiness import Dependencies, Probe, pool_state

UNMATCHED = "unmatched"  # the route label of paths no route knows, so junk URLs add no series

# Request latencies of a chat API: milliseconds when healthy, seconds when PostgreSQL struggles.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# From an event's transaction to its write on a stream: milliseconds when woken, up to
# FEED_POLL_INTERVAL when a wake-up was missed.
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The path template of the route a request matched (`/conversations/{conversation_id}`).

    The router records the route it chose; requests answered before routing (a preflight, a
    body over the limit) are matched here against the same routes.
    """
    route = scope.get("route")
    if route is None:
        for candidate in routes:
            match, _ = candidate.matches(scope)
            if match is not Match.NONE:
                route = candidate
                break
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class Metrics:
    """One application's metrics, in a registry of its own (never the process-wide one)."""

    def __init__(self, routes: Sequence[BaseRoute] = ()) -> None:
        self.routes = routes
        self.registry = CollectorRegistry()
        labels = ["method", "route", "status"]
        self.requests = Counter(
            "messenger_http_requests",
            "HTTP requests answered, by method, route template and status.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "messenger_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stream_events = Counter(
            "messenger_stream_events",
            "Events written to live streams (GET /events), by event name.",
            ["event"],
            registry=self.registry,
        )
        self.stream_delay = Histogram(
            "messenger_stream_delivery_delay_seconds",
            "Time from the transaction that made an event to its write on a stream.",
            buckets=DELIVERY_BUCKETS,
            registry=self.registry,
        )
        # The request series by (method, route, status), looked up once each.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._figures = _ScrapeTimeFigures()
        self.registry.register(self._figures)

    def observe_request(self, scope: Scope, status: int, seconds: float) -> None:
        labels = (scope["method"], route_template(scope, self.routes), status)
        series = self._series.get(labels)
        if series is None:  # a method the HTTP parser knows, a route template, a status: few
            named = (labels[0], labels[1], str(status))
            series = self._series[labels] = (
                self.requests.labels(*named),
                self.latency.labels(*named),
            )
        series[0].inc()
        series[1].observe(seconds)

    def render(self, dependencies: Dependencies, found: Probe, accept: str) -> tuple[bytes, str]:
        """The exposition (format chosen by the Accept header) and its content type."""
        encode, content_type = choose_encoder(accept)
        self._figures.current = (dependencies, found)
        try:
            return encode(self.registry), content_type
        finally:
            self._figures.current = None


class _ScrapeTimeFigures:
    """Figures other objects keep (pool, relay, registration), read while a scrape renders."""

    def __init__(self) -> None:
        self.current: tuple[Dependencies, Probe] | None = None

    def collect(self) -> Iterable[Metric]:
        if self.current is None:
            return
        dependencies, found = self.current
        yield _gauge("messenger_info", "The running version.", 1, version=__version__)
        yield _gauge("messenger_database_up", "1 if PostgreSQL answered.", found.database)
        if found.outbox_pending is not None:
            yield _gauge(
                "messenger_outbox_pending_events",
                "Events written by sends and not yet confirmed by RabbitMQ.",
                found.outbox_pending,
            )
        if found.outbox_oldest_age is not None:
            yield _gauge(
                "messenger_outbox_oldest_pending_age_seconds",
                "How long the oldest pending event has waited (0 when none waits).",
                found.outbox_oldest_age,
            )
        if found.outbox_parked is not None:
            yield _gauge(
                "messenger_outbox_parked_events",
                "Events RabbitMQ refused RELAY_MAX_ATTEMPTS times, waiting in outbox_parked.",
                found.outbox_parked,
            )
        yield from _pool_figures(dependencies)
        yield from _relay_figures(dependencies)
        yield from _registration_figures(dependencies)
        yield from _stream_figures(dependencies)


def _pool_figures(dependencies: Dependencies) -> Iterable[Metric]:
    pool = dependencies.pool
    size, idle = pool.get_size(), pool.get_idle_size()
    connections = GaugeMetricFamily(
        "messenger_db_pool_connections",
        "Connections of the PostgreSQL pool, in use by a request or idle.",
        labels=["state"],
    )
    connections.add_metric(["in_use"], size - idle)
    connections.add_metric(["idle"], idle)
    yield connections
    yield _gauge("messenger_db_pool_max_connections", "The pool's size limit.", pool.get_max_size())
    yield _gauge(
        "messenger_db_pool_waiting_requests",
        "Requests waiting in line for a pool connection.",
        pool_state(pool)["waiting"],
    )
    yield CounterMetricFamily(
        "messenger_db_pool_timeouts",
        "Requests answered 503 because no pool connection came free within PG_ACQUIRE_TIMEOUT.",
        value=pool.busy_count,
    )


def _relay_figures(dependencies: Dependencies) -> Iterable[Metric]:
    relay = dependencies.relay
    if relay is None:  # RELAY_ENABLED=false: this instance publishes nothing
        return
    yield CounterMetricFamily(
        "messenger_events_published",
        "Events RabbitMQ confirmed.",
        value=relay.published,
    )
    yield CounterMetricFamily(
        "messenger_events_publish_failures",
        "Publishes that failed (the event stays in the outbox, or is parked, see below).",
        value=relay.failed,
    )
    yield CounterMetricFamily(
        "messenger_events_parked",
        "Events moved to outbox_parked after RELAY_MAX_ATTEMPTS refusals by RabbitMQ.",
        value=relay.parked,
    )
    yield CounterMetricFamily(
        "messenger_relay_reconnects",
        "Connections to RabbitMQ made again after one was lost.",
        value=relay.reconnects,
    )
    yield _gauge("messenger_relay_connected", "1 while connected to RabbitMQ.", relay.connected)


def _registration_figures(dependencies: Dependencies) -> Iterable[Metric]:
    registration = dependencies.discovery
    if registration is None:  # CONSUL_SERVICE_NAME unset: this instance does not register
        return
    states = GaugeMetricFamily(
        "messenger_consul_registration",
        "1 for the instance's current Consul registration state.",
        labels=["state"],
    )
    for state in State:
        states.add_metric([state.value], int(registration.state is state))
    yield states


def _stream_figures(dependencies: Dependencies) -> Iterable[Metric]:
    streams = dependencies.streams
    if streams is None:
        return
    yield _gauge("messenger_streams_open", "Live event streams open now.", streams.count)
    yield _gauge(
        "messenger_streams_max", "SSE_MAX_STREAMS: the most streams served at once.", streams.limit
    )
    yield CounterMetricFamily(
        "messenger_stream_feed_reads",
        "Statements that read the feeds of woken streams (one for all streams woken at once).",
        value=streams.reads,
    )
    yield CounterMetricFamily(
        "messenger_streams_dropped",
        "Streams closed because the client took no data for SSE_SEND_TIMEOUT.",
        value=streams.dropped,
    )
    wakeups = dependencies.wakeups
    if wakeups is not None:
        yield _gauge(
            "messenger_wakeups_connected",
            "1 while the LISTEN connection that wakes streams for other instances' events is up.",
            wakeups.connected,
        )


def _gauge(name: str, documentation: str, value: float, **labels: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), float(value))
    return family
