"""Prometheus metrics (`/metrics`) of a real app, and readiness where the two meet."""

import asyncio
import os
import uuid

import aiormq
import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from messenger.settings import Settings
from tests import factories
from tests.conftest import app_client
from tests.consul_double import ConsulDouble

AMQP_URL = (
    f"amqp://guest:guest@{os.environ.get('AMQPHOST', '127.0.0.1')}:"
    f"{os.environ.get('AMQPPORT', '5672')}/"
)
MESSAGES_ROUTE = "/conversations/{conversation_id}/messages"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(exposition: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(response.text)


async def test_requests_are_counted_by_route_template_and_status(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    first, second = await factories.users(pool, "Ada", "Grace")
    conversation = await factories.conversation(client, first, second)
    await factories.send(client, conversation, first)
    await client.get(f"/conversations/{conversation}/messages")
    await client.get(f"/conversations/{conversation}/messages")
    await client.get("/conversations/999999/messages")
    await client.get("/no/such/route/12345")
    await client.post("/conversations", content=b"x" * 200_000)

    found = await scrape(client)
    count = "messenger_http_requests_total"
    assert value(found, count, method="GET", route=MESSAGES_ROUTE, status="200") == 2
    assert value(found, count, method="GET", route=MESSAGES_ROUTE, status="404") == 1
    assert value(found, count, method="POST", route=MESSAGES_ROUTE, status="201") == 1
    assert value(found, count, method="POST", route="/conversations", status="201") == 1
    assert value(found, count, method="POST", route="/conversations", status="413") == 1
    assert value(found, count, method="GET", route="unmatched", status="404") == 1
    latency = "messenger_http_request_duration_seconds_count"
    assert value(found, latency, method="GET", route=MESSAGES_ROUTE, status="200") == 2
    # Paths never become labels: unknown URLs cannot grow the number of series.
    assert not any("12345" in label for _, labels in found for _, label in labels)


async def test_metrics_show_the_pool_and_the_outbox(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    first, second = await factories.users(pool, "Ada", "Grace")
    conversation = await factories.conversation(client, first, second)
    await factories.send(client, conversation, first)

    found = await scrape(client)
    assert value(found, "messenger_database_up") == 1
    assert value(found, "messenger_outbox_pending_events") == 1
    assert value(found, "messenger_outbox_oldest_pending_age_seconds") >= 0
    assert value(found, "messenger_db_pool_max_connections") == 10
    in_use = value(found, "messenger_db_pool_connections", state="in_use")
    idle = value(found, "messenger_db_pool_connections", state="idle")
    assert in_use == 0  # the scrape's own backlog query gave its connection back
    assert idle >= 1
    assert ("messenger_relay_connected", frozenset()) not in found  # no relay, no relay figures


async def test_metrics_count_the_parked_events(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    await pool.execute(
        "INSERT INTO outbox_parked (id, channel_id, user_id, message_index, participant_ids,"
        " created_at, attempts, last_error)"
        " VALUES (7, 1, 1, 1, '{1,2}', now(), 10, 'refused by RabbitMQ (basic.nack)')"
    )

    found = await scrape(client)

    assert value(found, "messenger_outbox_parked_events") == 1


async def test_metrics_show_the_relay_figures(
    settings: Settings, pool: asyncpg.Pool, clean: None
) -> None:
    queue = f"test_metrics_queue_{uuid.uuid4().hex[:10]}"
    with_relay = settings.model_copy(
        update={"relay_enabled": True, "amqp_queue": queue, "relay_sweep_interval": 0.1}
    )
    try:
        async with app_client(with_relay) as client:
            first, second = await factories.users(pool, "Ada", "Grace")
            conversation = await factories.conversation(client, first, second)
            await factories.send(client, conversation, first)
            await factories.send(client, conversation, second)
            for _ in range(100):
                found = await scrape(client)
                # The backlog is read before the counters: a batch committed between the two
                # shows as published and still pending in one scrape.
                published = found.get(("messenger_events_published_total", frozenset()))
                if published == 2 and value(found, "messenger_outbox_pending_events") == 0:
                    break
                await asyncio.sleep(0.1)

            assert value(found, "messenger_events_published_total") == 2
            assert value(found, "messenger_events_publish_failures_total") == 0
            assert value(found, "messenger_events_parked_total") == 0
            assert value(found, "messenger_relay_reconnects_total") == 0
            assert value(found, "messenger_relay_connected") == 1
            assert value(found, "messenger_outbox_pending_events") == 0
            assert (await client.get("/health/ready")).json()["broker"] is True
    finally:
        connection = await aiormq.connect(AMQP_URL)
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await connection.close()


async def test_metrics_and_ready_show_the_consul_registration(
    settings: Settings, clean: None
) -> None:
    with ConsulDouble() as consul:
        registering = settings.model_copy(
            update={
                "consul_service_name": "messenger",
                "consul_host": "127.0.0.1",
                "consul_port": consul.port,
                "service_address": "10.1.2.3",
            }
        )
        async with app_client(registering) as client:
            await asyncio.to_thread(consul.wait_for, lambda: bool(consul.services))
            found = await scrape(client)
            registration = "messenger_consul_registration"
            assert value(found, registration, state="registered") == 1
            assert value(found, registration, state="pending") == 0
            assert value(found, registration, state="deregistered") == 0
            assert (await client.get("/health/ready")).json()["registered"] is True


async def test_each_app_counts_only_its_own_requests(settings: Settings, clean: None) -> None:
    labels = {"method": "GET", "route": "/health", "status": "200"}
    async with app_client(settings) as first, app_client(settings) as second:
        await first.get("/health")
        await first.get("/health")
        assert value(await scrape(first), "messenger_http_requests_total", **labels) == 2
        other = await scrape(second)
        assert ("messenger_http_requests_total", frozenset(labels.items())) not in other
