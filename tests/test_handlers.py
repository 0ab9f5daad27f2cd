"""The HTTP API, as the Node service's clients use it, and the Node defects it fixes."""

import asyncio
import re
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

from messenger import db, errors
from messenger.access_log import AccessLogMiddleware
from messenger.settings import Settings
from tests import factories
from tests.conftest import app_client
from tests.processes import free_port

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$")


def assert_recent_utc(timestamp: str) -> None:
    assert TIMESTAMP.match(timestamp), timestamp
    moment = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.000Z").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=1)


@pytest.fixture
async def alice_and_bob(pool: asyncpg.Pool, client: httpx.AsyncClient) -> tuple[int, int]:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    return alice, bob


# The Node suite's behaviours -------------------------------------------------------------


async def test_health_answers_ok_in_plain_text(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.text == "OK"
    assert response.headers["content-type"].startswith("text/plain")


async def test_create_conversation_answers_201_with_string_id(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int]
) -> None:
    response = await client.post("/conversations", json={"participant_ids": list(alice_and_bob)})

    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["conversation"]
    assert list(body["conversation"]) == ["id", "inserted_at"]
    assert isinstance(body["conversation"]["id"], str)
    assert body["conversation"]["id"].isdigit()
    assert_recent_utc(body["conversation"]["inserted_at"])


async def test_creating_an_existing_pair_again_is_refused_naming_it(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int]
) -> None:
    alice, bob = alice_and_bob
    existing = await factories.conversation(client, alice, bob)

    response = await client.post("/conversations", json={"participant_ids": [bob, alice]})

    assert response.status_code == 400
    assert response.json() == {"error": errors.CONVERSATION_EXISTS.format(id=existing)}


async def test_a_conversation_with_an_unknown_user_is_refused(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int]
) -> None:
    response = await client.post(
        "/conversations", json={"participant_ids": [alice_and_bob[0], 999_999]}
    )
    assert response.status_code == 400
    assert response.json() == {"error": errors.UNKNOWN_PARTICIPANTS}


@pytest.mark.parametrize(
    "participants",
    [[1, 1], [1, 2, 3], [1], []],
    ids=["duplicate ids", "more than two", "one", "none"],
)
async def test_a_conversation_needs_exactly_two_distinct_users(
    client: httpx.AsyncClient, participants: list[int]
) -> None:
    response = await client.post("/conversations", json={"participant_ids": participants})
    assert response.status_code == 400
    assert response.json() == {"error": errors.NEED_TWO_USERS}


async def test_list_conversations_names_each_after_the_other_user(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    alice, bob, carol = await factories.users(pool, "Alice", "Bob", "Carol")
    with_bob = await factories.conversation(client, alice, bob)
    with_carol = await factories.conversation(client, carol, alice)
    await factories.conversation(client, bob, carol)

    response = await client.get("/conversations", headers={"User-Id": str(alice)})

    assert response.status_code == 200
    conversations = response.json()["conversations"]
    assert [(c["id"], c["name"]) for c in conversations] == [
        (with_bob, "Bob"),
        (with_carol, "Carol"),
    ]
    for conversation in conversations:
        assert list(conversation) == ["id", "inserted_at", "name"]
        assert_recent_utc(conversation["inserted_at"])


async def test_list_conversations_needs_a_user_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/conversations")
    assert response.status_code == 400
    assert response.json() == {"error": errors.USER_ID_REQUIRED}


async def test_send_message_answers_201_with_the_node_types(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int]
) -> None:
    alice, bob = alice_and_bob
    conversation = await factories.conversation(client, alice, bob)

    response = await client.post(
        f"/conversations/{conversation}/messages",
        headers={"User-Id": str(alice)},
        json={"content": "This is the first message"},
    )

    assert response.status_code == 201
    message = response.json()["message"]
    assert list(message) == [
        "id",
        "content",
        "index",
        "user_id",
        "username",
        "conversation_id",
        "inserted_at",
    ]
    assert isinstance(message["id"], str)
    assert message["content"] == "This is the first message"
    assert message["index"] == 1
    assert message["user_id"] == alice
    assert message["username"] == "Alice"
    assert message["conversation_id"] == int(conversation)
    assert_recent_utc(message["inserted_at"])


async def test_second_send_gets_next_index(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int]
) -> None:
    alice, bob = alice_and_bob
    conversation = await factories.conversation(client, alice, bob)
    first = await factories.send(client, conversation, alice)
    second = await factories.send(client, conversation, bob)
    assert (first["index"], second["index"]) == (1, 2)


async def test_list_messages_returns_all_ordered_by_index_as_strings(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int]
) -> None:
    alice, bob = alice_and_bob
    conversation = await factories.conversation(client, alice, bob)
    sent = [
        await factories.send(client, conversation, author, f"message {n}")
        for n, author in enumerate([alice, bob, alice])
    ]

    response = await client.get(f"/conversations/{conversation}/messages")

    assert response.status_code == 200
    messages = response.json()["messages"]
    assert [m["content"] for m in messages] == ["message 0", "message 1", "message 2"]
    for message, original in zip(messages, sent, strict=True):
        assert list(message) == [
            "id",
            "content",
            "user_id",
            "channel_id",
            "index",
            "inserted_at",
            "username",
        ]
        assert message["id"] == original["id"]
        assert message["user_id"] == str(original["user_id"])
        assert message["channel_id"] == conversation
        assert message["index"] == str(original["index"])
        assert message["username"] == original["username"]
        assert message["inserted_at"] == original["inserted_at"]


async def test_view_horizon_answers_204_and_is_stored(
    client: httpx.AsyncClient, pool: asyncpg.Pool, alice_and_bob: tuple[int, int]
) -> None:
    alice, bob = alice_and_bob
    conversation = await factories.conversation(client, alice, bob)
    await factories.send(client, conversation, bob)
    await factories.send(client, conversation, bob)

    response = await client.post(
        f"/conversations/{conversation}/view_horizon",
        headers={"User-Id": str(alice)},
        json={"index": 2},
    )

    assert response.status_code == 204
    assert response.content == b""
    stored = await pool.fetchval(
        "SELECT last_viewed_index FROM users_channels WHERE channel_id = $1 AND user_id = $2",
        int(conversation),
        alice,
    )
    assert stored == 2


# Fixes of the Node service --------------------------------------------------------------


async def test_a_new_pair_is_allowed_however_many_conversations_its_users_have(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    alice, bob, carol, dave = await factories.users(pool, "Alice", "Bob", "Carol", "Dave")
    await factories.conversation(client, alice, bob)
    await factories.conversation(client, alice, carol)
    await factories.conversation(client, bob, carol)
    await factories.conversation(client, dave, alice)

    response = await client.post("/conversations", json={"participant_ids": [carol, dave]})

    assert response.status_code == 201


async def test_the_refusal_names_the_conversation_of_that_pair(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    alice, bob, carol = await factories.users(pool, "Alice", "Bob", "Carol")
    await factories.conversation(client, alice, bob)
    with_carol = await factories.conversation(client, alice, carol)
    await factories.conversation(client, bob, carol)

    response = await client.post("/conversations", json={"participant_ids": [carol, alice]})

    assert response.json() == {"error": errors.CONVERSATION_EXISTS.format(id=with_carol)}


async def test_concurrent_creations_of_one_pair_make_one_conversation(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int]
) -> None:
    responses = await asyncio.gather(
        *(
            client.post("/conversations", json={"participant_ids": list(alice_and_bob)})
            for _ in range(20)
        )
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [400] * 19
    created = next(r for r in responses if r.status_code == 201).json()["conversation"]["id"]
    for response in responses:
        if response.status_code == 400:
            assert response.json() == {"error": errors.CONVERSATION_EXISTS.format(id=created)}


async def test_200_concurrent_sends_get_indexes_1_to_200(
    client: httpx.AsyncClient, pool: asyncpg.Pool, alice_and_bob: tuple[int, int]
) -> None:
    alice, bob = alice_and_bob
    conversation = await factories.conversation(client, alice, bob)

    responses = await asyncio.gather(
        *(
            client.post(
                f"/conversations/{conversation}/messages",
                headers={"User-Id": str((alice, bob)[n % 2])},
                json={"content": f"concurrent {n}"},
            )
            for n in range(200)
        )
    )

    assert [r.status_code for r in responses] == [201] * 200
    assert sorted(r.json()["message"]["index"] for r in responses) == list(range(1, 201))
    stored = await pool.fetch(
        "SELECT index FROM messages WHERE channel_id = $1 ORDER BY index", int(conversation)
    )
    assert [row["index"] for row in stored] == list(range(1, 201))
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 200


async def test_a_member_reading_messages_is_allowed_and_anyone_without_user_id(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int]
) -> None:
    alice, bob = alice_and_bob
    conversation = await factories.conversation(client, alice, bob)
    await factories.send(client, conversation, alice)

    as_member = await client.get(
        f"/conversations/{conversation}/messages", headers={"User-Id": str(bob)}
    )
    anonymous = await client.get(f"/conversations/{conversation}/messages")

    assert as_member.status_code == anonymous.status_code == 200
    assert as_member.json() == anonymous.json()
    assert len(anonymous.json()["messages"]) == 1


async def test_a_non_member_cannot_read_or_send_or_move_the_horizon(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    alice, bob, mallory = await factories.users(pool, "Alice", "Bob", "Mallory")
    conversation = await factories.conversation(client, alice, bob)
    await factories.send(client, conversation, alice)
    headers = {"User-Id": str(mallory)}
    path = f"/conversations/{conversation}"

    responses = [
        await client.get(f"{path}/messages", headers=headers),
        await client.post(f"{path}/messages", headers=headers, json={"content": "hi"}),
        await client.post(f"{path}/view_horizon", headers=headers, json={"index": 1}),
    ]

    expected = {"error": errors.NOT_IN_CONVERSATION.format(id=mallory)}
    assert [(r.status_code, r.json()) for r in responses] == [(400, expected)] * 3
    assert await pool.fetchval("SELECT count(*) FROM messages") == 1


async def test_an_unknown_conversation_is_404_for_every_route(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int]
) -> None:
    headers = {"User-Id": str(alice_and_bob[0])}
    responses = [
        await client.get("/conversations/424242/messages"),
        await client.get("/conversations/424242/messages", headers=headers),
        await client.post("/conversations/424242/messages", headers=headers, json={"content": "x"}),
        await client.post("/conversations/424242/view_horizon", headers=headers, json={"index": 1}),
    ]
    expected = {"error": errors.CONVERSATION_NOT_FOUND.format(id=424242)}
    assert [(r.status_code, r.json()) for r in responses] == [(404, expected)] * 4


async def test_an_empty_conversation_lists_no_messages(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int]
) -> None:
    conversation = await factories.conversation(client, *alice_and_bob)
    response = await client.get(f"/conversations/{conversation}/messages")
    assert (response.status_code, response.json()) == (200, {"messages": []})


USER_IDS = ["1abc", "0", "-1", "1.0", "", " 1", "99999999999999999999", "0x1"]


@pytest.mark.parametrize("user_id", USER_IDS)
async def test_a_user_id_that_is_not_a_positive_integer_is_refused(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int], user_id: str
) -> None:
    conversation = await factories.conversation(client, *alice_and_bob)
    headers = {"User-Id": user_id}
    responses = [
        await client.get("/conversations", headers=headers),
        await client.get(f"/conversations/{conversation}/messages", headers=headers),
        await client.post(
            f"/conversations/{conversation}/messages", headers=headers, json={"content": "x"}
        ),
        await client.post(
            f"/conversations/{conversation}/view_horizon", headers=headers, json={"index": 0}
        ),
    ]
    expected = {"error": errors.USER_ID_REQUIRED}
    assert [(r.status_code, r.json()) for r in responses] == [(400, expected)] * 4


@pytest.mark.parametrize("conversation_id", ["abc", "0", "-3", "1.5", "9223372036854775808"])
async def test_a_path_id_that_is_not_a_positive_bigint_is_refused(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int], conversation_id: str
) -> None:
    headers = {"User-Id": str(alice_and_bob[0])}
    path = f"/conversations/{conversation_id}"
    responses = [
        await client.get(f"{path}/messages"),
        await client.post(f"{path}/messages", headers=headers, json={"content": "x"}),
        await client.post(f"{path}/view_horizon", headers=headers, json={"index": 0}),
    ]
    for response in responses:
        assert response.status_code == 400
        assert response.json() == {
            "error": errors.INVALID_PATH_ID.format(name="conversation id", value=conversation_id)
        }


JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}  # what `curl -d` sends


def not_json(reason_start: str) -> re.Pattern[str]:
    """The BODY_NOT_JSON text whose reason (orjson's, with a position) starts so."""
    prefix = errors.BODY_NOT_JSON.partition("{")[0]
    return re.compile(re.escape(prefix + reason_start) + ".*")


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"{}", JSON),
        (b'{ "text": "hello" }', JSON),
        (b'{"participant_ids": null}', JSON),
        (b'{"participant_ids": []}', JSON),
        (b'{"participant_ids": [1]}', JSON),
        (b'{"participant_ids": [1, 1]}', JSON),
        (b'{"participant_ids": [1, "1"]}', JSON),
        (b'{"participant_ids": [1, 2, 3]}', JSON),
        (b'{"participant_ids": [1, 2, "x"]}', JSON),
        (b"[1, 2]", JSON),
        (b'"text"', JSON),
        (b"", JSON),
        (b"", {}),
        (b'{"participant_ids": [1, 2]}', FORM),
        (b'{"participant_ids": [1, 2]}', {"Content-Type": "text/plain"}),
        (b"not json at all", FORM),
    ],
)
async def test_bodies_node_refused_with_its_text_get_it_byte_for_byte(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str]
) -> None:
    response = await client.post("/conversations", content=body, headers=headers)
    assert (response.status_code, response.json()) == (400, {"error": errors.NEED_TWO_USERS})


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", not_json("invalid literal")),
        (b"   ", not_json("input data is empty")),
        (b'{"participant_ids": [1, 2]', not_json("unexpected end of data")),
        (b'{"participant_ids": NaN}', not_json("unexpected character")),
        (b'{"participant_ids": ["\\ud800", 1]}', not_json("no low surrogate")),
        (b'{"participant_ids": ' + b"[" * 5000 + b"]" * 5000 + b"}", not_json("depth limit")),
        (b'{"participant_ids": [1, 2]}\xff', errors.BODY_NOT_UTF8.format(position=27)),
        (b'{"participant_ids": 5}', errors.PARTICIPANTS_NOT_LIST),
        (b'{"participant_ids": "1,2"}', errors.PARTICIPANTS_NOT_LIST),
        (b'{"participant_ids": {}}', errors.PARTICIPANTS_NOT_LIST),
        (b'{"participant_ids": ["a", "b"]}', errors.PARTICIPANT_NOT_ID),
        (b'{"participant_ids": [1.5, 2]}', errors.PARTICIPANT_NOT_ID),
        (b'{"participant_ids": [1, "two"]}', errors.PARTICIPANT_NOT_ID),
        (b'{"participant_ids": [1, true]}', errors.PARTICIPANT_NOT_ID),
        (b'{"participant_ids": [1, null]}', errors.PARTICIPANT_NOT_ID),
        (b'{"participant_ids": [1, -2]}', errors.PARTICIPANT_NOT_ID),
        (b'{"participant_ids": [1, 1' + b"0" * 30 + b"]}", errors.PARTICIPANT_NOT_ID),
        (b'{"participant_ids": [1, 1' + b"0" * 400 + b"]}", not_json("number is infinity")),
    ],
)
async def test_a_body_node_answered_with_500_gets_a_400_naming_the_problem(
    client: httpx.AsyncClient, body: bytes, error: str | re.Pattern[str]
) -> None:
    response = await client.post("/conversations", content=body, headers=JSON)
    assert response.status_code == 400
    if isinstance(error, str):
        assert response.json() == {"error": error}
    else:
        assert error.fullmatch(response.json()["error"]), response.json()


async def test_participant_ids_given_as_digit_strings_work_as_with_node(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int]
) -> None:
    alice, bob = alice_and_bob
    response = await client.post("/conversations", json={"participant_ids": [str(alice), str(bob)]})
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("body", "headers", "error"),
    [
        (b'{"content": {}}', JSON, errors.CONTENT_NOT_STRING),
        (b'{"content": 5}', JSON, errors.CONTENT_NOT_STRING),
        (b'{"content": null}', JSON, errors.CONTENT_NOT_STRING),
        (b"{}", JSON, errors.CONTENT_NOT_STRING),
        (b'{"content": ""}', JSON, errors.CONTENT_EMPTY),
        (b'{"content": "a\\u0000b"}', JSON, errors.CONTENT_HAS_NUL),
        (b'{"content": "\\ud800"}', JSON, not_json("no low surrogate")),
        (b'{"content": "\\udc00"}', JSON, not_json("invalid high surrogate")),
        (b'{"content": "\xed\xa0\x80"}', JSON, errors.BODY_NOT_UTF8.format(position=13)),
        (b'{"content": ' + b"[" * 2000 + b"]" * 2000 + b"}", JSON, not_json("depth limit")),
        (b"nope", JSON, not_json("invalid literal")),
        (b'["content"]', JSON, errors.BODY_NOT_OBJECT),
        (b"", JSON, errors.BODY_MISSING),
        (b'{"content": "hi"}', FORM, errors.BODY_MISSING),
        (b'{"content": "hi"}', {}, errors.BODY_MISSING),
    ],
)
async def test_a_malformed_message_body_is_a_400_and_stores_nothing(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    alice_and_bob: tuple[int, int],
    body: bytes,
    headers: dict[str, str],
    error: str | re.Pattern[str],
) -> None:
    conversation = await factories.conversation(client, *alice_and_bob)
    response = await client.post(
        f"/conversations/{conversation}/messages",
        content=body,
        headers={"User-Id": str(alice_and_bob[0]), **headers},
    )
    assert response.status_code == 400
    if isinstance(error, str):
        assert response.json() == {"error": error}
    else:
        assert error.fullmatch(response.json()["error"]), response.json()
    assert await pool.fetchval("SELECT count(*) FROM messages") == 0


@pytest.mark.parametrize(
    "body", [b"{}", b'{"index": "two"}', b'{"index": -1}', b'{"index": 1.5}', b'{"index": null}']
)
async def test_a_malformed_view_horizon_is_a_400(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int], body: bytes
) -> None:
    conversation = await factories.conversation(client, *alice_and_bob)
    response = await client.post(
        f"/conversations/{conversation}/view_horizon",
        content=body,
        headers={"User-Id": str(alice_and_bob[0]), **JSON},
    )
    assert (response.status_code, response.json()) == (400, {"error": errors.INDEX_NOT_INTEGER})


async def test_unknown_routes_and_wrong_methods_answer_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nowhere")
    wrong_method = await client.delete("/conversations")

    assert (missing.status_code, missing.json()) == (404, {"error": errors.NOT_FOUND})
    assert (wrong_method.status_code, wrong_method.json()) == (
        405,
        {"error": errors.METHOD_NOT_ALLOWED},
    )
    assert "GET" in wrong_method.headers["allow"]


async def test_any_origin_may_call_and_preflight_is_answered(client: httpx.AsyncClient) -> None:
    simple = await client.get("/health", headers={"Origin": "https://chat.example"})
    preflight = await client.options(
        "/conversations",
        headers={
            "Origin": "https://chat.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "user-id, content-type",
        },
    )

    assert simple.headers["access-control-allow-origin"] == "*"
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "user-id" in preflight.headers["access-control-allow-headers"].lower()


# Pagination ------------------------------------------------------------------------------


@pytest.fixture
async def ten_messages(client: httpx.AsyncClient, alice_and_bob: tuple[int, int]) -> str:
    conversation = await factories.conversation(client, *alice_and_bob)
    for n in range(10):
        await factories.send(client, conversation, alice_and_bob[n % 2], f"m{n + 1}")
    return conversation


def indexes(response: httpx.Response) -> list[int]:
    return [int(m["index"]) for m in response.json()["messages"]]


async def test_limit_and_after_index_page_forward_with_a_next_link(
    client: httpx.AsyncClient, ten_messages: str
) -> None:
    path = f"/conversations/{ten_messages}/messages"
    first = await client.get(path, params={"limit": 4})
    second = await client.get(path, params={"limit": 4, "after_index": 4})
    last = await client.get(path, params={"limit": 4, "after_index": 8})

    assert indexes(first) == [1, 2, 3, 4]
    assert first.headers["link"] == f'<{path}?after_index=4&limit=4>; rel="next"'
    assert indexes(second) == [5, 6, 7, 8]
    assert indexes(last) == [9, 10]
    assert "link" not in last.headers


async def test_before_index_pages_backward_oldest_first(
    client: httpx.AsyncClient, ten_messages: str
) -> None:
    path = f"/conversations/{ten_messages}/messages"
    latest = await client.get(path, params={"limit": 3, "before_index": 11})

    assert indexes(latest) == [8, 9, 10]
    assert latest.headers["link"] == f'<{path}?before_index=8&limit=3>; rel="prev"'


async def test_a_page_never_exceeds_the_configured_maximum(
    database: Settings, pool: asyncpg.Pool, clean: None
) -> None:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    async with app_client(database.model_copy(update={"messages_page_max": 5})) as client:
        conversation = await factories.conversation(client, alice, bob)
        for _ in range(7):
            await factories.send(client, conversation, alice)
        default = await client.get(f"/conversations/{conversation}/messages")
        asked_more = await client.get(
            f"/conversations/{conversation}/messages", params={"limit": 100}
        )
    assert indexes(default) == indexes(asked_more) == [1, 2, 3, 4, 5]
    assert "after_index=5" in default.headers["link"]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"limit": "0"}, errors.QUERY_NOT_INTEGER.format(name="limit")),
        ({"limit": "x"}, errors.QUERY_NOT_INTEGER.format(name="limit")),
        ({"after_index": "-1"}, errors.QUERY_NOT_INTEGER.format(name="after_index")),
        ({"before_index": "0"}, errors.QUERY_NOT_INTEGER.format(name="before_index")),
        ({"after_index": "1", "before_index": "5"}, errors.CURSORS_EXCLUSIVE),
    ],
)
async def test_bad_paging_parameters_are_a_400(
    client: httpx.AsyncClient, ten_messages: str, query: dict[str, str], error: str
) -> None:
    response = await client.get(f"/conversations/{ten_messages}/messages", params=query)
    assert (response.status_code, response.json()) == (400, {"error": error})


# Request ids, failures, database outages ------------------------------------------------


async def test_a_request_id_is_echoed_or_made_up(client: httpx.AsyncClient) -> None:
    given = await client.get("/health", headers={"X-Request-Id": "abc-123"})
    made_up = await client.get("/health")
    unsafe = await client.get("/health", headers={"X-Request-Id": "bad id\twith spaces"})

    assert given.headers["x-request-id"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{32}", made_up.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["x-request-id"])


async def test_while_the_database_is_down_requests_get_503_json_and_health_stays_ok(
    database: Settings,
) -> None:
    unreachable = database.model_copy(update={"pgport": free_port()})
    async with app_client(unreachable) as client:
        health = await client.get("/health")
        listing = await client.get("/conversations", headers={"User-Id": "1"})

    assert health.status_code == 200
    assert listing.status_code == 503
    assert listing.json() == {"error": errors.DATABASE_UNAVAILABLE}
    assert listing.headers["retry-after"] == "1"


async def test_an_unexpected_error_is_a_500_naming_only_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("secret internals: SELECT * FROM users")

    transport = httpx.ASGITransport(app=AccessLogMiddleware(broken), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
        response = await client.get("/boom", headers={"X-Request-Id": "req-42"})

    assert response.status_code == 500
    assert response.json() == {"error": errors.INTERNAL_ERROR.format(request_id="req-42")}
    assert "secret" not in response.text
    failure = next(r for r in caplog.records if r.getMessage() == "unhandled error")
    assert failure.request_id == "req-42"  # type: ignore[attr-defined]
    assert failure.exc_info is not None


# Every statement can be served by an index ----------------------------------------------


STATEMENTS = {
    "send": (db.SEND_MESSAGES, [1, [1, 2, 1], ["x", "y", "z"]]),
    "send with a key": (
        db.SEND_MESSAGES_WITH_KEYS,
        [1, [1, 2], ["x", "y"], ["key", None], 86400.0],
    ),
    "stored answer of a key": (db.STORED_ANSWER, [1, 1, "key", 86400.0]),
    "list messages after": (db.LIST_MESSAGES_AFTER, [1, 0, 100, 1, None]),
    "list messages before": (db.LIST_MESSAGES_BEFORE, [1, 50, 100, 1, None]),
    "list messages, cached copy": (db.LIST_MESSAGES_AFTER, [1, 0, 100, None, 7]),
    "list conversations": (db.LIST_CONVERSATIONS, [1]),
    "create conversation": (db.CREATE_CONVERSATION, [1, 2]),
    "find conversation": (db.FIND_CONVERSATION_BETWEEN, [1, 2]),
    "membership": (db.MEMBERSHIP, [1, 1]),
    "view horizon": (db.SET_VIEW_HORIZON, [1, 1, 1]),
}


@pytest.mark.parametrize("name", list(STATEMENTS))
async def test_statement_needs_no_sequential_scan(pool: asyncpg.Pool, name: str) -> None:
    statement, arguments = STATEMENTS[name]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {statement}", *arguments))
        assert "Seq Scan on messages" not in plan, plan
        assert "Seq Scan on users_channels" not in plan, plan
        assert "Seq Scan on channels" not in plan, plan
        assert "Seq Scan on users " not in plan, plan


# What an outside probe found (issue 16): HEAD, trailing slashes, conflicting identities -------

# Every route, as a client may address it; {c} is a conversation of the caller's.
ROUTE_PATHS = [
    "/health",
    "/health/ready",
    "/metrics",
    "/openapi.json",
    "/conversations",
    "/conversations/{c}/messages",
    "/conversations/{c}/view_horizon",
]
ALLOWED = {
    "/conversations/{c}/view_horizon": "POST",
    "/conversations": "GET, HEAD, POST",
    "/conversations/{c}/messages": "GET, HEAD, POST",
}
# Headers that differ between any two answers, whatever the method.
VOLATILE = {"x-request-id", "date"}


@pytest.mark.parametrize(
    "path", [path for path in ROUTE_PATHS if path not in ALLOWED or "GET" in ALLOWED[path]]
)
async def test_head_answers_like_get_without_a_body(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int], path: str
) -> None:
    alice, bob = alice_and_bob
    conversation = await factories.conversation(client, alice, bob)
    await factories.send(client, conversation, alice)
    target = path.format(c=conversation)
    headers = {"User-Id": str(alice)}

    got = await client.get(target, headers=headers)
    head = await client.head(target, headers=headers)

    assert head.status_code == got.status_code == 200, head.text
    # The figures in these bodies move between two requests, and their length with them.
    volatile = VOLATILE | ({"content-length"} if path in {"/metrics", "/health/ready"} else set())
    assert {k: v for k, v in head.headers.items() if k not in volatile} == {
        k: v for k, v in got.headers.items() if k not in volatile
    }


async def test_head_of_an_unknown_conversation_is_its_404(client: httpx.AsyncClient) -> None:
    got = await client.get("/conversations/424242/messages")
    head = await client.head("/conversations/424242/messages")
    assert head.status_code == got.status_code == 404
    assert head.headers["content-length"] == got.headers["content-length"]


STANDARD_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"]


async def assert_no_server_error(
    client: httpx.AsyncClient, method: str, path: str, conversation: str, slash: bool
) -> None:
    target = path.format(c=conversation) + ("/" if slash else "")
    response = await client.request(method, target, headers={"User-Id": "1"})

    assert response.status_code < 500, (method, target, response.text)
    assert not 300 <= response.status_code < 400, (method, target, response.headers)
    if response.status_code == 405:
        if method != "HEAD":  # a head has no body
            assert response.json() == {"error": errors.METHOD_NOT_ALLOWED}
        allowed = set(response.headers["allow"].split(", "))
        assert allowed == set(ALLOWED.get(path, "GET, HEAD").split(", "))
        assert method not in allowed


async def test_every_standard_method_on_every_route_gets_no_server_error(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int]
) -> None:
    alice, bob = alice_and_bob
    conversation = await factories.conversation(client, alice, bob)
    for method in STANDARD_METHODS:
        for path in ROUTE_PATHS:
            for target in (conversation, "424242", "0", "x"):
                for slash in (False, True):
                    await assert_no_server_error(client, method, path, target, slash)


@given(
    method=st.from_regex(r"[A-Za-z][A-Za-z-]{0,11}", fullmatch=True),
    path=st.sampled_from(ROUTE_PATHS),
    slash=st.booleans(),
    conversation=st.sampled_from(["1", "424242", "0", "x"]),
)
@hypothesis.settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_any_method_on_any_route_gets_no_server_error(
    client: httpx.AsyncClient, method: str, path: str, slash: bool, conversation: str
) -> None:
    await assert_no_server_error(client, method, path, conversation, slash)


@pytest.mark.parametrize("path", ROUTE_PATHS)
async def test_a_trailing_slash_is_served_as_the_route_and_never_redirected(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int], path: str
) -> None:
    """As express (non-strict routing) served it; a redirect would be built from `Host`."""
    alice, bob = alice_and_bob
    conversation = await factories.conversation(client, alice, bob)
    target = path.format(c=conversation)
    headers = {"User-Id": str(alice), "Host": "evil.example"}

    slashed = await client.get(target + "/", headers=headers)
    plain = await client.get(target, headers=headers)

    assert "location" not in slashed.headers
    assert slashed.status_code == plain.status_code
    if path not in ("/metrics", "/health/ready"):  # figures that change from one call to the next
        assert slashed.content == plain.content


async def test_two_different_user_ids_are_refused(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int], pool: asyncpg.Pool
) -> None:
    alice, bob = alice_and_bob
    conversation = await factories.conversation(client, alice, bob)

    sent = await client.post(
        f"/conversations/{conversation}/messages",
        headers=[("User-Id", str(alice)), ("User-Id", str(bob))],
        json={"content": "whose?"},
    )
    listed = await client.get(
        "/conversations", headers=[("User-Id", str(bob)), ("User-Id", str(alice))]
    )

    assert sent.status_code == listed.status_code == 400
    assert sent.json() == listed.json() == {"error": errors.USER_ID_REPEATED}
    assert await pool.fetchval("SELECT count(*) FROM messages") == 0


async def test_the_same_user_id_twice_is_one_identity(
    client: httpx.AsyncClient, alice_and_bob: tuple[int, int]
) -> None:
    alice, bob = alice_and_bob
    conversation = await factories.conversation(client, alice, bob)

    sent = await client.post(
        f"/conversations/{conversation}/messages",
        headers=[("User-Id", str(alice)), ("User-Id", str(alice))],
        json={"content": "mine"},
    )

    assert sent.status_code == 201, sent.text
    assert sent.json()["message"]["user_id"] == alice
