"""Readiness (`/health/ready`) of a real app: the figures it answers with, and 503 when unready."""

import asyncpg
import httpx

from messenger.settings import Settings
from tests import factories
from tests.conftest import app_client
from tests.processes import free_port
from tests.test_metrics import scrape, value


async def test_ready_reports_every_dependency(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "ready"
    assert body["database"] is True
    assert body["pool"] == {"busy": False, "in_use": 0, "max": 10, "waiting": 0}
    assert body["broker"] is None  # RELAY_ENABLED=false: no broker to be connected to
    assert body["outbox"] == {"pending": 0, "oldest_age_seconds": 0.0}
    assert body["registered"] is None  # CONSUL_SERVICE_NAME unset


async def test_ready_counts_the_events_waiting_in_the_outbox(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    first, second = await factories.users(pool, "Ada", "Grace")
    conversation = await factories.conversation(client, first, second)
    await factories.send(client, conversation, first)
    await factories.send(client, conversation, second)
    await pool.execute("UPDATE outbox SET created_at = created_at - interval '30 seconds'")

    outbox = (await client.get("/health/ready")).json()["outbox"]
    assert outbox["pending"] == 2
    assert 30 <= outbox["oldest_age_seconds"] < 60


async def test_ready_is_503_while_the_database_is_unreachable(settings: Settings) -> None:
    unreachable = settings.model_copy(update={"pgport": free_port()})
    async with app_client(unreachable) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["database"] is False
        assert ready.json()["status"] == "unavailable"
        # Liveness does not look at dependencies: a database blip must not deregister us.
        health = await client.get("/health")
        assert (health.status_code, health.text) == (200, "OK")
        found = await scrape(client)
        assert value(found, "messenger_database_up") == 0
        assert not any(name.startswith("messenger_outbox") for name, _ in found)
