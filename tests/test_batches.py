"""Sends into one conversation share statements (db.batches), and each keeps its own answer."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from messenger import db
from messenger.db import batches
from messenger.settings import Settings
from tests import factories
from tests.test_db import locked, wait_for_lock_waiters

pytestmark = pytest.mark.usefixtures("clean")


@contextlib.asynccontextmanager
async def service_pool(settings: Settings, **changes: object) -> AsyncIterator[db.Pool]:
    pool = await db.create_pool(settings.model_copy(update=changes))
    try:
        yield pool
    finally:
        await pool.close()


async def new_conversation(pool: asyncpg.Pool, first: int, second: int) -> int:
    created = await db.create_conversation(pool, min(first, second), max(first, second))
    assert created.id is not None
    return int(created.id)


@pytest.fixture
async def pair(pool: asyncpg.Pool) -> tuple[int, int, int]:
    """Alice, Bob, and their conversation."""
    alice, bob = await factories.users(pool, "Alice", "Bob")
    return alice, bob, await new_conversation(pool, alice, bob)


async def check_stored(
    pool: asyncpg.Pool, conversation: int, members: list[int], answers: list[object]
) -> None:
    """What a run of sends must leave: indexes 1..n without gaps, one outbox event per message
    in index order, and each member's feed positions without gaps, one event per message."""
    sent = [a for a in answers if a is not None and not a["replayed"]]  # type: ignore[index]
    assert sorted(row["index"] for row in sent) == list(range(1, len(sent) + 1))  # type: ignore[index]
    stored = await pool.fetch(
        "SELECT index, content, user_id FROM messages WHERE channel_id = $1 ORDER BY index",
        conversation,
    )
    by_index = {row["index"]: row for row in sent}  # type: ignore[index]
    assert [(r["index"], r["content"], r["user_id"]) for r in stored] == [
        (i, by_index[i]["content"], by_index[i]["user_id"]) for i in sorted(by_index)
    ]
    events = await pool.fetch(
        "SELECT message_index FROM outbox WHERE channel_id = $1 ORDER BY id", conversation
    )
    assert [row["message_index"] for row in events] == list(range(1, len(sent) + 1))
    for member in members:
        positions = await pool.fetch(
            "SELECT seq, message_index FROM feed WHERE user_id = $1 AND channel_id = $2"
            " AND kind = 'message' ORDER BY seq",
            member,
            conversation,
        )
        seqs = [row["seq"] for row in positions]
        assert seqs == list(range(seqs[0], seqs[0] + len(sent))) if sent else not seqs
        assert [row["message_index"] for row in positions] == list(range(1, len(sent) + 1))
        head = await pool.fetchval("SELECT feed_seq FROM users WHERE id = $1", member)
        assert not seqs or head == seqs[-1]


async def test_concurrent_sends_share_statements_and_each_gets_its_own_message(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    alice, bob, eve = await factories.users(pool, "Alice", "Bob", "Eve")
    conversation = await new_conversation(pool, alice, bob)
    senders = [(alice, bob, eve)[i % 3] for i in range(150)]

    async with service_pool(settings, pg_pool_max=4) as service:
        answers = await asyncio.gather(
            *(
                db.send_message(service, conversation, user, f"m{i}")
                for i, user in enumerate(senders)
            )
        )
        assert not service.send_lines  # every line is forgotten once empty

    for i, (user, answer) in enumerate(zip(senders, answers, strict=True)):
        if user == eve:
            assert answer is None  # no member: no message, whoever shared her statement
        else:
            assert answer is not None
            assert (answer["content"], answer["user_id"]) == (f"m{i}", user)
            assert answer["conversation_id"] == conversation
            assert list(answer["woken"]) == [alice, bob]
    await check_stored(pool, conversation, [alice, bob], answers)
    # Messages of one transaction share its xmin: 100 messages came in far fewer statements.
    transactions = await pool.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM messages WHERE channel_id = $1", conversation
    )
    assert transactions < 100 / 4, transactions


@given(
    plan=st.lists(
        st.tuples(
            st.sampled_from(["alice", "bob", "eve"]),
            st.integers(0, 3),
            st.sampled_from([None, None, "k1", "k2"]),
        ),
        min_size=1,
        max_size=40,
    )
)
@hypothesis.settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_any_mix_of_senders_keys_and_arrivals_stores_each_send_once_without_gaps(
    settings: Settings, pool: asyncpg.Pool, plan: list[tuple[str, int, str | None]]
) -> None:
    """Sends arrive in waves (the number is the loop turns before each), members and not,
    some under an Idempotency-Key that others repeat."""
    names = ("alice", "bob", "eve")
    ids = dict(zip(names, await factories.users(pool, *names), strict=True))
    conversation = await new_conversation(pool, ids["alice"], ids["bob"])

    async def arrive(name: str, turns: int, key: str | None, i: int) -> asyncpg.Record | None:
        for _ in range(turns):
            await asyncio.sleep(0)
        sent = await db.send_message(service, conversation, ids[name], f"{name} {i}", key, 60.0)
        if sent is None and key is not None and name != "eve":  # raced its key's first send
            sent = await db.stored_answer(service, conversation, ids[name], key, 60.0)
        return sent

    async with service_pool(settings, pg_pool_max=3) as service:
        answers = await asyncio.gather(*(arrive(*step, i) for i, step in enumerate(plan)))
    first: dict[tuple[str, str], str] = {}  # the message id each sender's key stored
    for (name, _, key), answer in zip(plan, answers, strict=True):
        assert (answer is None) == (name == "eve")
        if answer is not None and key is not None:
            assert first.setdefault((name, key), answer["id"]) == answer["id"]
    await check_stored(pool, conversation, [ids["alice"], ids["bob"]], list(answers))
    await pool.execute(
        "TRUNCATE users, channels, messages, outbox, feed, idempotency_keys"
        " RESTART IDENTITY CASCADE"
    )


async def test_sends_in_line_give_up_after_the_acquire_timeout_and_store_nothing(
    settings: Settings, pool: asyncpg.Pool, pair: tuple[int, int, int]
) -> None:
    alice, _bob, conversation = pair

    async with service_pool(settings, pg_acquire_timeout=0.5, pg_lock_timeout=1.0) as service:
        async with locked(pool, str(conversation)):
            carriers = [
                asyncio.ensure_future(db.send_message(service, conversation, alice, "x"))
                for _ in range(2)
            ]
            await wait_for_lock_waiters(pool, settings.pgdatabase, batches.IN_FLIGHT)
            loop = asyncio.get_running_loop()
            started = loop.time()
            in_line = [
                asyncio.ensure_future(db.send_message(service, conversation, alice, "y"))
                for _ in range(4)
            ]
            outcomes = await asyncio.gather(*in_line, return_exceptions=True)
            waited = loop.time() - started
            carried = await asyncio.gather(*carriers, return_exceptions=True)
        # The four in line ran out of time first; the two statements into the lock timeout.
        assert [type(outcome) for outcome in outcomes] == [db.PoolBusy] * 4, outcomes
        assert 0.5 <= waited < 0.9, waited
        assert [type(outcome) for outcome in carried] == [asyncpg.LockNotAvailableError] * 2
        assert service.busy_count == 4
        assert await db.send_message(service, conversation, alice, "after") is not None
    assert await pool.fetchval("SELECT max(index) FROM messages") == 1


async def test_a_send_cancelled_in_line_leaves_and_the_others_are_sent(
    settings: Settings, pool: asyncpg.Pool, pair: tuple[int, int, int]
) -> None:
    alice, bob, conversation = pair

    async with service_pool(settings) as service:
        async with locked(pool, str(conversation)):
            sends = [
                asyncio.ensure_future(db.send_message(service, conversation, bob, f"m{i}"))
                for i in range(2)
            ]
            await wait_for_lock_waiters(pool, settings.pgdatabase, batches.IN_FLIGHT)
            sends += [
                asyncio.ensure_future(db.send_message(service, conversation, bob, f"m{i}"))
                for i in range(2, 5)
            ]
            await asyncio.sleep(0.05)
            assert len(service.send_lines[conversation].waiting) == 3
            sends[3].cancel()  # waiting in line, not yet in a statement
            await asyncio.wait([sends[3]])
            assert len(service.send_lines[conversation].waiting) == 2
        outcomes = await asyncio.gather(*sends, return_exceptions=True)

    assert isinstance(outcomes[3], asyncio.CancelledError)
    contents = sorted(row["content"] for row in outcomes if isinstance(row, asyncpg.Record))
    assert contents == ["m0", "m1", "m2", "m4"]
    await check_stored(
        pool, conversation, [alice, bob], [o for o in outcomes if o is not outcomes[3]]
    )


async def test_a_cancelled_statement_fails_the_sends_it_carried_as_unavailable(
    settings: Settings, pool: asyncpg.Pool, pair: tuple[int, int, int]
) -> None:
    _alice, bob, conversation = pair

    async with service_pool(settings) as service:
        async with locked(pool, str(conversation)):
            first, second = (
                asyncio.ensure_future(db.send_message(service, conversation, bob, "alone"))
                for _ in range(2)
            )
            await wait_for_lock_waiters(pool, settings.pgdatabase, batches.IN_FLIGHT)
            riders = [
                asyncio.ensure_future(db.send_message(service, conversation, bob, f"r{i}"))
                for i in range(3)
            ]
            line = service.send_lines[conversation]
            async with asyncio.timeout(10):
                while len(line.waiting) < 3:
                    await asyncio.sleep(0.01)
                first.cancel()  # its slot passes to the first rider, which carries the others
                await asyncio.wait([first])
                while line.waiting:
                    await asyncio.sleep(0.01)
            await wait_for_lock_waiters(pool, settings.pgdatabase, batches.IN_FLIGHT)
            riders[0].cancel()
            outcomes = await asyncio.gather(*riders, return_exceptions=True)
        assert (await second)["content"] == "alone"

    assert first.cancelled()
    assert isinstance(outcomes[0], asyncio.CancelledError)
    # The statement may or may not have reached its commit: the riders get a 503's error.
    assert [type(outcome) for outcome in outcomes[1:]] == [batches.BatchAbandoned] * 2
    assert isinstance(outcomes[1], db.UNAVAILABLE_ERRORS)
    assert await pool.fetchval("SELECT array_agg(content) FROM messages") == ["alone"]


async def test_a_burst_of_large_messages_goes_in_several_statements(
    settings: Settings, pool: asyncpg.Pool, pair: tuple[int, int, int]
) -> None:
    """A statement that fails takes its sends with it: it carries BATCH_CHARS at most."""
    alice, bob, conversation = pair
    large = "x" * (batches.BATCH_CHARS // 2 + 1)

    async with service_pool(settings) as service:
        async with locked(pool, str(conversation)):
            first = [
                asyncio.ensure_future(db.send_message(service, conversation, bob, "small"))
                for _ in range(batches.IN_FLIGHT)
            ]
            await wait_for_lock_waiters(pool, settings.pgdatabase, batches.IN_FLIGHT)
            burst = [
                asyncio.ensure_future(db.send_message(service, conversation, alice, large))
                for _ in range(4)
            ]
            await asyncio.sleep(0.05)
        answers = await asyncio.gather(*first, *burst)

    await check_stored(pool, conversation, [alice, bob], list(answers))
    statements = await pool.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM messages WHERE channel_id = $1 AND user_id = $2",
        conversation,
        alice,
    )
    assert statements == 4
