"""Cached message pages: the same bytes as rendering each read, right after sends from anywhere."""

import asyncpg
import httpx
import pytest

from messenger import errors
from messenger.page_cache import ENTRY_OVERHEAD, FOREVER, Page, PageCache
from messenger.settings import Settings
from tests import factories
from tests.conftest import app_client, base_settings

# Paging queries of a 12-message conversation: every cursor kind, full and partial pages.
QUERIES = [
    "",
    "?limit=5",
    "?after_index=5&limit=5",
    "?after_index=10&limit=5",
    "?after_index=12",
    "?after_index=40",
    "?before_index=13&limit=5",
    "?before_index=6&limit=5",
    "?before_index=3",
    "?before_index=30&limit=4",
    "?limit=1000",
]


def seen(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers (the request id aside) and body bytes, as a client gets them."""
    headers = [(k, v) for k, v in response.headers.items() if k != "x-request-id"]
    return response.status_code, headers, response.content


@pytest.fixture
async def alice_and_bob(pool: asyncpg.Pool, clean: None) -> tuple[int, int]:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    return alice, bob


async def test_cached_pages_are_the_bytes_of_rendered_ones_after_every_send(
    settings: Settings, alice_and_bob: tuple[int, int]
) -> None:
    alice, bob = alice_and_bob
    uncached_settings = settings.model_copy(update={"messages_cache_size": 0})
    async with app_client(settings) as cached, app_client(uncached_settings) as uncached:
        conversation = await factories.conversation(uncached, alice, bob)
        path = f"/conversations/{conversation}/messages"
        for round_number in range(12):
            # Sends alternate between the instances: the cached one learns of the other's
            # only from the database.
            sender = cached if round_number % 2 else uncached
            await factories.send(sender, conversation, alice if round_number % 3 else bob)
            for query in QUERIES:
                for reader in ({}, {"User-Id": str(bob)}):
                    expected = seen(await uncached.get(path + query, headers=reader))
                    first = seen(await cached.get(path + query, headers=reader))
                    again = seen(await cached.get(path + query, headers=reader))
                    assert first == again == expected, (round_number, query)


async def test_a_send_through_another_instance_shows_on_the_next_read(
    settings: Settings, alice_and_bob: tuple[int, int]
) -> None:
    alice, bob = alice_and_bob
    async with app_client(settings) as first, app_client(settings) as second:
        conversation = await factories.conversation(first, alice, bob)
        path = f"/conversations/{conversation}/messages"
        await factories.send(first, conversation, alice, "one")
        assert len((await first.get(path)).json()["messages"]) == 1

        await factories.send(second, conversation, bob, "two")

        contents = [m["content"] for m in (await first.get(path)).json()["messages"]]
        assert contents == ["one", "two"]


async def test_a_cached_page_is_refused_to_a_non_member_and_unknown_conversations_are_404(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    alice, bob, mallory = await factories.users(pool, "Alice", "Bob", "Mallory")
    conversation = await factories.conversation(client, alice, bob)
    await factories.send(client, conversation, alice)
    path = f"/conversations/{conversation}/messages"
    assert (await client.get(path, headers={"User-Id": str(bob)})).status_code == 200

    refused = await client.get(path, headers={"User-Id": str(mallory)})
    unknown = await client.get("/conversations/424242/messages")

    assert (refused.status_code, refused.json()) == (
        400,
        {"error": errors.NOT_IN_CONVERSATION.format(id=mallory)},
    )
    assert unknown.status_code == 404


async def test_a_page_is_served_from_memory_while_the_counter_stands_still(
    client: httpx.AsyncClient, pool: asyncpg.Pool, alice_and_bob: tuple[int, int]
) -> None:
    alice, bob = alice_and_bob
    conversation = await factories.conversation(client, alice, bob)
    await factories.send(client, conversation, alice, "original")
    path = f"/conversations/{conversation}/messages"
    before = (await client.get(path)).content

    # Behind the service's back (no send moves the counter): only a cached page still says it.
    await pool.execute("UPDATE messages SET content = 'changed'")
    cached = (await client.get(path)).content
    await factories.send(client, conversation, bob, "next")
    reread = (await client.get(path)).json()["messages"]

    assert cached == before
    assert [m["content"] for m in reread] == ["changed", "next"]


def page(size: int, valid_through: int = FOREVER) -> Page:
    return Page(body=b"x" * size, valid_through=valid_through, link=None)


def test_the_cache_keeps_the_most_recently_used_pages_within_its_bytes() -> None:
    cache = PageCache(max_bytes=3 * (1000 + ENTRY_OVERHEAD))
    for conversation in (1, 2, 3):
        cache.put((conversation, False, 0, 100), page(1000))
    assert cache.get((1, False, 0, 100)) is not None  # 1 is now the most recent

    cache.put((4, False, 0, 100), page(1000))

    assert cache.get((2, False, 0, 100)) is None
    assert all(cache.get((c, False, 0, 100)) is not None for c in (1, 3, 4))
    assert cache.size == 3 * (1000 + ENTRY_OVERHEAD) == cache.max_bytes


def test_a_replaced_page_is_counted_once_and_one_larger_than_the_cache_is_not_kept() -> None:
    cache = PageCache(max_bytes=5000)
    cache.put((1, False, 0, 100), page(1000, valid_through=3))
    cache.put((1, False, 0, 100), page(2000))
    cache.put((2, False, 0, 100), page(5000))

    assert len(cache) == 1
    assert cache.size == 2000 + ENTRY_OVERHEAD
    assert PageCache(max_bytes=0).get((1, False, 0, 100)) is None


def test_the_cache_size_is_a_byte_size_setting() -> None:
    assert base_settings(messages_cache_size="1.5mb").messages_cache_size == 1536 * 1024
    assert Settings.model_fields["messages_cache_size"].default == 4 * 1024 * 1024
