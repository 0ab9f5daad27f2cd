"""Per-user feeds: written by the statements that make events, read in commit order."""

import asyncio

import asyncpg
import httpx
import orjson
import pytest

from messenger import db, feed
from tests import factories

pytestmark = pytest.mark.usefixtures("clean")


async def read_all(pool: asyncpg.Pool, user_id: int, after: int = 0) -> feed.FeedRead:
    return await feed.read(pool, user_id, after, 1000)


async def test_a_send_gives_both_members_a_message_event_with_the_listed_object(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    conversation = await factories.conversation(client, alice, bob)
    await factories.send(client, conversation, alice, "hi")

    listed = (await client.get(f"/conversations/{conversation}/messages")).json()["messages"]
    for user in (alice, bob):
        found = await read_all(pool, user)
        assert found.head == 2
        assert [event.name for event in found.events] == ["conversation", "message"]
        message = found.events[1]
        assert message.position == 2
        data = orjson.loads(message.data)
        assert data == {"conversation_id": conversation, "message": listed[0]}
        # byte for byte: the object inside is rendered as the route renders it
        assert orjson.dumps(listed[0]) in message.data


async def test_a_conversation_event_is_the_object_the_list_shows_that_user(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    await factories.conversation(client, alice, bob)
    for user in (alice, bob):
        listed = (await client.get("/conversations", headers={"User-Id": str(user)})).json()
        [event] = (await read_all(pool, user)).events
        assert event.name == "conversation"
        assert event.data == orjson.dumps({"conversation": listed["conversations"][0]})


async def test_a_view_horizon_gives_both_members_a_horizon_event(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    conversation = await factories.conversation(client, alice, bob)
    response = await client.post(
        f"/conversations/{conversation}/view_horizon",
        headers={"User-Id": str(bob)},
        json={"index": 5},
    )
    assert response.status_code == 204
    for user in (alice, bob):
        event = (await read_all(pool, user, after=1)).events[0]
        assert event.name == "horizon"
        expected = {"conversation_id": conversation, "user_id": str(bob), "index": "5"}
        assert event.data == orjson.dumps(expected)


async def test_refused_writes_leave_no_events(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    alice, bob, carol = await factories.users(pool, "Alice", "Bob", "Carol")
    conversation = await factories.conversation(client, alice, bob)
    refused = await client.post(
        f"/conversations/{conversation}/messages",
        headers={"User-Id": str(carol)},
        json={"content": "not mine"},
    )
    assert refused.status_code == 400
    again = await client.post("/conversations", json={"participant_ids": [bob, alice]})
    assert again.status_code == 400
    assert [await db.feed_position(pool, user) for user in (alice, bob, carol)] == [1, 1, 0]


async def test_a_replayed_send_leaves_no_second_event(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    conversation = await factories.conversation(client, alice, bob)
    for _ in range(2):
        response = await client.post(
            f"/conversations/{conversation}/messages",
            headers={"User-Id": str(alice), "Idempotency-Key": "k-1"},
            json={"content": "once"},
        )
        assert response.status_code == 201
    assert await db.feed_position(pool, bob) == 2


async def test_a_late_commit_is_not_skipped_by_a_reader_that_resumed_in_between(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """The trap: the first send takes its message id and timestamp first and commits last.

    Its transaction stays open while a later send to the same user waits and sends in other
    conversations commit; a reader resuming in between sees only what committed, and after
    the commit gets the held message and then the later one, none missing, none repeated.
    """
    alice, bob, carol, dave = await factories.users(pool, "Alice", "Bob", "Carol", "Dave")
    first = int(await factories.conversation(client, alice, bob))
    second = int(await factories.conversation(client, alice, carol))
    elsewhere = int(await factories.conversation(client, carol, dave))
    start = await db.feed_position(pool, alice)
    assert start == 2

    async with pool.acquire() as held:
        transaction = held.transaction()
        await transaction.start()
        await db.send_message(held, first, bob, "sent first, committed last")

        later = asyncio.create_task(db.send_message(pool, second, carol, "sent second"))
        for index in range(3):
            await db.send_message(pool, elsewhere, dave, f"unrelated {index}")
        await asyncio.sleep(0.2)
        assert not later.done()  # it waits for alice's position

        between = await read_all(pool, alice, after=start)
        assert between.events == []
        assert not between.gap
        assert between.head == start

        await transaction.commit()
    await later

    after = await read_all(pool, alice, after=start)
    contents = [orjson.loads(event.data)["message"]["content"] for event in after.events]
    assert contents == ["sent first, committed last", "sent second"]
    assert [event.position for event in after.events] == [start + 1, start + 2]
    ids = [int(orjson.loads(event.data)["message"]["id"]) for event in after.events]
    assert ids == sorted(ids)


async def test_concurrent_sends_give_each_user_positions_without_gaps(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    users = await factories.users(pool, *(f"user {n}" for n in range(5)))
    conversations = [
        (int(await factories.conversation(client, a, b)), a)
        for i, a in enumerate(users)
        for b in users[i + 1 :]
    ]

    async def send_all(conversation: int, sender: int) -> None:
        for n in range(10):
            assert await db.send_message(pool, conversation, sender, f"m{n}") is not None

    await asyncio.gather(*(send_all(c, s) for c, s in conversations))
    for user in users:
        found = await read_all(pool, user)
        assert [event.position for event in found.events] == list(range(1, 45))
        per_conversation: dict[str, list[int]] = {}
        for event in found.events:
            if event.name == "message":
                data = orjson.loads(event.data)
                per_conversation.setdefault(data["conversation_id"], []).append(
                    int(data["message"]["index"])
                )
        assert all(indexes == list(range(1, 11)) for indexes in per_conversation.values())
        assert len(per_conversation) == 4


async def test_a_reader_behind_swept_events_is_told_to_start_over(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    conversation = await factories.conversation(client, alice, bob)
    for _ in range(3):
        await factories.send(client, conversation, alice)
    await pool.execute("UPDATE feed SET created_at = now() - interval '2 hours' WHERE seq <= 2")
    assert await db.sweep_feed(pool, 3600, 100) == 4

    found = await read_all(pool, alice, after=0)
    assert found.gap
    assert found.events == []
    assert found.head == 4
    found = await read_all(pool, alice, after=2)
    assert not found.gap
    assert [event.position for event in found.events] == [3, 4]
    await pool.execute("DELETE FROM feed")
    found = await read_all(pool, alice, after=2)
    assert found.gap
    assert found.head == 4
    assert not (await read_all(pool, alice, after=4)).gap


async def test_unread_counts_follow_the_counter_and_the_horizon(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    alice, bob, carol = await factories.users(pool, "Alice", "Bob", "Carol")
    first = await factories.conversation(client, alice, bob)
    await factories.conversation(client, alice, carol)
    for _ in range(3):
        await factories.send(client, first, bob)
    await client.post(
        f"/conversations/{first}/view_horizon", headers={"User-Id": str(alice)}, json={"index": 1}
    )
    plain = await client.get("/conversations", headers={"User-Id": str(alice)})
    response = await client.get("/conversations?unread=true", headers={"User-Id": str(alice)})
    assert response.status_code == 200
    conversations = response.json()["conversations"]
    assert [list(c) for c in conversations] == [
        ["id", "inserted_at", "name", "last_index", "unread"]
    ] * 2
    assert [(c["last_index"], c["unread"]) for c in conversations] == [(3, 2), (0, 0)]
    for with_counts, without in zip(conversations, plain.json()["conversations"], strict=True):
        assert {k: with_counts[k] for k in without} == without
    same = await client.get("/conversations?unread=false", headers={"User-Id": str(alice)})
    assert same.content == plain.content
    bad = await client.get("/conversations?unread=yes", headers={"User-Id": str(alice)})
    assert bad.status_code == 400
    assert bad.json() == {"error": "unread must be true or false"}
