"""Wake-ups between instances: NOTIFY payloads, and streams that get their events without one."""

import time
from collections.abc import Iterator

import asyncpg
import httpx
import orjson
import pytest

from messenger.settings import Settings
from messenger.wakeups import PAYLOAD_LIMIT, parse_payload, payloads
from tests import factories
from tests.processes import Service, serve, service_env
from tests.sse import open_stream


def test_payloads_stay_under_postgresqls_limit_and_carry_every_user() -> None:
    users = list(range(10**12, 10**12 + 3000))  # 13 digits each: about 42 kB in all
    found = payloads(users)
    assert len(found) > 1
    assert all(len(payload.encode()) <= PAYLOAD_LIMIT for payload in found)
    assert [user for payload in found for user in parse_payload(payload)] == users


def test_a_payload_is_read_for_user_ids_only() -> None:
    assert parse_payload("1,22,x,,-3,4 ,٣,5") == [1, 22, 5]


@pytest.fixture(scope="module")
def instances(database: Settings) -> Iterator[list[Service]]:
    env = {"FEED_POLL_INTERVAL": "0.5", "SSE_HEARTBEAT_INTERVAL": "1"}
    with (
        serve(service_env(database, **env)) as first,
        serve(service_env(database, **env)) as second,
    ):
        yield [first, second]


async def test_an_event_whose_wake_up_was_lost_still_comes_from_postgresql(
    instances: list[Service], pool: asyncpg.Pool, clean: None
) -> None:
    """The LISTEN connections are cut just before the send, so its notification reaches no one;
    the stream still gets the message promptly: the periodic re-read (FEED_POLL_INTERVAL, 0.5 s
    here) or the re-read after the connection is back, whichever comes first."""
    alice, bob = await factories.users(pool, "Alice", "Bob")
    async with (
        httpx.AsyncClient(base_url=instances[0].url, timeout=10) as sender,
        httpx.AsyncClient(base_url=instances[1].url, timeout=10) as reader,
    ):
        conversation = await factories.conversation(sender, alice, bob)
        async with open_stream(reader, bob) as stream:
            cut = await pool.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'messenger-wakeups' AND datname = current_database()"
            )
            assert cut >= 2
            started = time.monotonic()
            await factories.send(sender, conversation, alice, "heard by polling")
            event = await stream.next_event(timeout=5)
            waited = time.monotonic() - started
    assert orjson.loads(event.data)["message"]["content"] == "heard by polling"
    assert waited < 2.5
