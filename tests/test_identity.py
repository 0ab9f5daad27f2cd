"""AUTH_MODE=jwt: the caller is the user a verified bearer token names, on every route.

The app runs in process against a real key-set server on a loopback port (tests.key_server);
the header mode these tests leave alone is the one tests/test_handlers.py holds byte for byte.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from messenger import errors
from messenger.settings import Settings
from tests import factories
from tests.conftest import app_client, base_settings
from tests.key_server import AUDIENCE, ISSUER, KeySetServer, SigningKey, bearer, key_set_server

CHALLENGE = 'Bearer realm="messenger"'
INVALID_TOKEN = 'Bearer realm="messenger", error="invalid_token"'

# Every route that knows a caller, with a body it accepts; {c}: a conversation id.
ROUTES = [
    ("GET", "/conversations", None),
    ("POST", "/conversations", {"participant_ids": [1, 2]}),
    ("GET", "/conversations/{c}/messages", None),
    ("POST", "/conversations/{c}/messages", {"content": "hello"}),
    ("POST", "/conversations/{c}/view_horizon", {"index": 0}),
    ("GET", "/events", None),
]
OPEN_ROUTES = ["/health", "/health/ready", "/metrics", "/openapi.json"]


def jwt_settings(database: Settings, server: KeySetServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "pgdatabase": database.pgdatabase,
        "auth_mode": "jwt",
        "auth_jwks_url": server.url,
        "auth_issuer": ISSUER,
        "auth_audience": AUDIENCE,
        **overrides,
    }
    return base_settings(**values)


@pytest.fixture
def signing_key() -> SigningKey:
    return SigningKey("ES256")


@pytest.fixture
def server(signing_key: SigningKey) -> Iterator[KeySetServer]:
    with key_set_server(signing_key) as server:
        yield server


@pytest.fixture
async def client(
    database: Settings, server: KeySetServer, clean: None
) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(jwt_settings(database, server)) as client:
        yield client


@pytest.fixture
async def pair(pool: asyncpg.Pool, clean: None) -> tuple[int, int]:
    alice, bob = await factories.users(pool, "Alice", "Bob")
    return alice, bob


async def start_conversation(
    client: httpx.AsyncClient, key: SigningKey, first: int, second: int
) -> str:
    response = await client.post(
        "/conversations",
        json={"participant_ids": [first, second]},
        headers=bearer(key.token(first)),
    )
    assert response.status_code == 201, response.text
    conversation_id: str = response.json()["conversation"]["id"]
    return conversation_id


async def request(
    client: httpx.AsyncClient, method: str, path: str, body: object, headers: dict[str, str]
) -> httpx.Response:
    return await client.request(method, path, json=body, headers=headers)


# The caller ----------------------------------------------------------------------------------


async def test_a_valid_token_names_the_caller_on_every_route(
    client: httpx.AsyncClient, signing_key: SigningKey, pair: tuple[int, int]
) -> None:
    alice, bob = pair
    as_alice, as_bob = bearer(signing_key.token(alice)), bearer(signing_key.token(bob))
    conversation_id = await start_conversation(client, signing_key, alice, bob)

    sent = await client.post(
        f"/conversations/{conversation_id}/messages", json={"content": "hi"}, headers=as_alice
    )
    assert sent.status_code == 201, sent.text
    assert sent.json()["message"]["user_id"] == alice
    listed = await client.get("/conversations", headers=as_bob)
    assert listed.json()["conversations"][0]["name"] == "Alice"
    read = await client.get(f"/conversations/{conversation_id}/messages", headers=as_bob)
    assert read.status_code == 200
    assert [m["content"] for m in read.json()["messages"]] == ["hi"]
    seen = await client.post(
        f"/conversations/{conversation_id}/view_horizon", json={"index": 1}, headers=as_bob
    )
    assert seen.status_code == 204


async def test_the_event_stream_refuses_a_user_id_that_is_not_the_tokens(
    client: httpx.AsyncClient, signing_key: SigningKey, pair: tuple[int, int]
) -> None:
    # Refused before the stream starts (the in-process transport cannot read an open stream;
    # the jwt browser test reads one).
    alice, bob = pair
    as_alice = bearer(signing_key.token(alice))
    posing = await client.get("/events", headers={**as_alice, "User-Id": str(bob)})
    assert posing.status_code == 403
    assert posing.json() == {"error": errors.USER_ID_NOT_TOKEN_USER}


async def test_a_numeric_user_claim_is_a_user_id_too(
    client: httpx.AsyncClient, signing_key: SigningKey, pair: tuple[int, int]
) -> None:
    alice, _ = pair
    token = signing_key.token(sub=alice)  # a JSON number rather than its string
    response = await client.get("/conversations", headers=bearer(token))
    assert response.status_code == 200, response.text


async def test_the_user_claim_is_configurable(
    database: Settings, server: KeySetServer, signing_key: SigningKey, pair: tuple[int, int]
) -> None:
    alice, bob = pair
    settings = jwt_settings(database, server, auth_user_claim="user_id")
    async with app_client(settings) as client:
        token = signing_key.token(sub="auth0|someone", user_id=str(alice))
        created = await client.post(
            "/conversations", json={"participant_ids": [alice, bob]}, headers=bearer(token)
        )
        assert created.status_code == 201, created.text
        no_claim = await client.get("/conversations", headers=bearer(signing_key.token(bob)))
        assert no_claim.status_code == 401
        assert no_claim.json() == {"error": errors.TOKEN_CLAIM_MISSING.format(claim="user_id")}


@pytest.mark.parametrize("sub", ["0", "-1", "1.5", "01", "alice", "", "99999999999999999999"])
async def test_a_user_claim_that_is_not_a_user_id_is_401(
    client: httpx.AsyncClient, signing_key: SigningKey, sub: str
) -> None:
    response = await client.get("/conversations", headers=bearer(signing_key.token(sub=sub)))
    assert response.status_code == 401
    assert response.json() == {"error": errors.TOKEN_USER_INVALID.format(claim="sub")}
    assert response.headers["www-authenticate"] == INVALID_TOKEN


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_without_a_token_every_route_is_401_with_a_bearer_challenge(
    client: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    response = await request(client, method, path.format(c=1), body, {"User-Id": "1"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": errors.TOKEN_REQUIRED}
    assert response.headers["www-authenticate"] == CHALLENGE


@pytest.mark.parametrize("path", OPEN_ROUTES)
async def test_health_metrics_and_the_openapi_document_need_no_token(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("authorization", "text"),
    [
        ("Basic dXNlcjpwYXNz", errors.TOKEN_NOT_BEARER),
        ("Bearer", errors.TOKEN_REQUIRED),
        ("Bearer    ", errors.TOKEN_REQUIRED),
        ("Token abc.def.ghi", errors.TOKEN_NOT_BEARER),
    ],
)
async def test_an_authorization_header_without_a_bearer_token_is_401(
    client: httpx.AsyncClient, authorization: str, text: str
) -> None:
    response = await client.get("/conversations", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.json() == {"error": text}
    assert response.headers["www-authenticate"] == CHALLENGE


async def test_the_scheme_is_case_insensitive(
    client: httpx.AsyncClient, signing_key: SigningKey, pair: tuple[int, int]
) -> None:
    token = signing_key.token(pair[0])
    response = await client.get("/conversations", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200, response.text


async def test_two_authorization_headers_are_401(
    client: httpx.AsyncClient, signing_key: SigningKey, pair: tuple[int, int]
) -> None:
    token = signing_key.token(pair[0])
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    response = await client.get("/conversations", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": errors.TOKEN_REPEATED}
    assert response.headers["www-authenticate"] == INVALID_TOKEN


async def test_an_invalid_token_is_401_invalid_token_without_echoing_it(
    client: httpx.AsyncClient, signing_key: SigningKey
) -> None:
    token = signing_key.token(1, exp=int(time.time()) - 3600)
    response = await client.get("/conversations", headers=bearer(token))
    assert response.status_code == 401
    assert response.json() == {"error": errors.TOKEN_EXPIRED}
    assert response.headers["www-authenticate"] == INVALID_TOKEN
    for part in token.split("."):
        assert part not in response.text
        assert part not in str(response.headers)


async def test_a_user_id_header_beside_the_token_must_name_the_same_user(
    client: httpx.AsyncClient, signing_key: SigningKey, pair: tuple[int, int]
) -> None:
    alice, bob = pair
    token = bearer(signing_key.token(alice))
    same = await client.get("/conversations", headers={**token, "User-Id": str(alice)})
    assert same.status_code == 200
    for other in (str(bob), "1abc", "", f"{alice}0"):
        response = await client.get("/conversations", headers={**token, "User-Id": other})
        assert response.status_code == 403, other
        assert response.json() == {"error": errors.USER_ID_NOT_TOKEN_USER}
    twice = [*token.items(), ("User-Id", str(alice)), ("User-Id", str(bob))]
    response = await client.get("/conversations", headers=twice)
    assert response.status_code == 403


async def test_sending_as_the_token_user_whatever_user_id_the_body_claims(
    client: httpx.AsyncClient, signing_key: SigningKey, pair: tuple[int, int]
) -> None:
    alice, bob = pair
    conversation_id = await start_conversation(client, signing_key, alice, bob)
    response = await client.post(
        f"/conversations/{conversation_id}/messages",
        json={"content": "hi", "user_id": bob},
        headers=bearer(signing_key.token(alice)),
    )
    assert response.json()["message"]["user_id"] == alice


async def test_reading_messages_needs_membership(
    client: httpx.AsyncClient, pool: asyncpg.Pool, signing_key: SigningKey, pair: tuple[int, int]
) -> None:
    alice, bob = pair
    (eve,) = await factories.users(pool, "Eve")
    conversation_id = await start_conversation(client, signing_key, alice, bob)
    path = f"/conversations/{conversation_id}/messages"

    anonymous = await client.get(path)
    assert anonymous.status_code == 401
    outsider = await client.get(path, headers=bearer(signing_key.token(eve)))
    assert outsider.status_code == 400
    assert outsider.json() == {"error": errors.NOT_IN_CONVERSATION.format(id=eve)}
    member = await client.get(path, headers=bearer(signing_key.token(bob)))
    assert member.status_code == 200


async def test_a_conversation_is_only_started_by_one_of_its_participants(
    client: httpx.AsyncClient, pool: asyncpg.Pool, signing_key: SigningKey, pair: tuple[int, int]
) -> None:
    alice, bob = pair
    (eve,) = await factories.users(pool, "Eve")
    response = await client.post(
        "/conversations",
        json={"participant_ids": [alice, bob]},
        headers=bearer(signing_key.token(eve)),
    )
    assert response.status_code == 403
    assert response.json() == {"error": errors.CALLER_NOT_PARTICIPANT}
    by_bob = await client.post(
        "/conversations",
        json={"participant_ids": [alice, bob]},
        headers=bearer(signing_key.token(bob)),
    )
    assert by_bob.status_code == 201


async def test_node_texts_stay_for_a_verified_caller(
    client: httpx.AsyncClient, signing_key: SigningKey, pair: tuple[int, int]
) -> None:
    alice, _ = pair
    response = await client.post(
        "/conversations",
        json={"participant_ids": [alice]},
        headers=bearer(signing_key.token(alice)),
    )
    assert response.status_code == 400
    assert response.json() == {"error": errors.NEED_TWO_USERS}


# The key set ---------------------------------------------------------------------------------


async def test_the_key_set_is_fetched_when_first_needed_and_then_cached(
    client: httpx.AsyncClient, server: KeySetServer, signing_key: SigningKey, pair: tuple[int, int]
) -> None:
    assert server.fetches == 0  # not at start: the provider may come up after the service
    for user_id in (*pair, *pair):
        response = await client.get("/conversations", headers=bearer(signing_key.token(user_id)))
        assert response.status_code == 200
    assert server.fetches == 1


async def test_a_key_rotated_in_at_the_provider_is_accepted_without_a_restart(
    database: Settings, server: KeySetServer, signing_key: SigningKey, pair: tuple[int, int]
) -> None:
    alice, _ = pair
    async with app_client(jwt_settings(database, server, auth_jwks_min_refresh=0.3)) as client:
        old = bearer(signing_key.token(alice))
        assert (await client.get("/conversations", headers=old)).status_code == 200
        newer = SigningKey("RS256")
        server.keys = [newer, signing_key]
        await asyncio.sleep(0.35)

        response = await client.get("/conversations", headers=bearer(newer.token(alice)))
        assert response.status_code == 200, response.text
        assert (await client.get("/conversations", headers=old)).status_code == 200
        assert server.fetches == 2

        server.keys = [newer]  # the old key retired: its tokens stop working at the next fetch
        await asyncio.sleep(0.35)
        response = await client.get("/conversations", headers=bearer(SigningKey("ES256").token()))
        assert response.status_code == 401
        response = await client.get("/conversations", headers=old)
        assert response.status_code == 401
        assert response.json() == {"error": errors.TOKEN_UNKNOWN_KEY}


async def test_an_unknown_key_refetches_at_most_once_per_min_refresh(
    client: httpx.AsyncClient, server: KeySetServer, signing_key: SigningKey
) -> None:
    for _ in range(20):
        stranger = SigningKey("ES256")
        response = await client.get("/conversations", headers=bearer(stranger.token()))
        assert response.status_code == 401
        assert response.json() == {"error": errors.TOKEN_UNKNOWN_KEY}
    assert server.fetches == 1  # AUTH_JWKS_MIN_REFRESH is 60 s


async def test_concurrent_misses_share_one_fetch(
    client: httpx.AsyncClient, server: KeySetServer, signing_key: SigningKey, pair: tuple[int, int]
) -> None:
    server.delay = 0.3
    responses = await asyncio.gather(
        *(
            client.get("/conversations", headers=bearer(signing_key.token(pair[n % 2])))
            for n in range(20)
        )
    )
    assert [r.status_code for r in responses] == [200] * 20
    assert server.fetches == 1


async def test_while_the_key_set_is_down_cached_keys_work_and_others_get_503(
    database: Settings, server: KeySetServer, signing_key: SigningKey, pair: tuple[int, int]
) -> None:
    alice, _ = pair
    settings = jwt_settings(database, server, auth_jwks_min_refresh=2)
    async with app_client(settings) as client:
        assert (
            await client.get("/conversations", headers=bearer(signing_key.token(alice)))
        ).is_success
        newer = SigningKey("EdDSA")
        server.keys = [newer, signing_key]
        server.stop()
        await asyncio.sleep(2.05)

        for _ in range(3):
            cached = await client.get("/conversations", headers=bearer(signing_key.token(alice)))
            assert cached.status_code == 200
            response = await client.get("/conversations", headers=bearer(newer.token(alice)))
            assert response.status_code == 503
            assert response.json() == {"error": errors.KEYS_UNAVAILABLE}
            assert 1 <= int(response.headers["retry-after"]) <= 2

        server.start()  # back; the next fetch is due once the Retry-After has passed
        await asyncio.sleep(int(response.headers["retry-after"]) + 0.05)
        response = await client.get("/conversations", headers=bearer(newer.token(alice)))
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("trouble", ["refused", "error status", "slow"])
async def test_a_key_set_that_cannot_be_had_at_the_first_request_is_503_not_500(
    database: Settings, server: KeySetServer, signing_key: SigningKey, trouble: str
) -> None:
    if trouble == "refused":
        server.stop()
    elif trouble == "error status":
        server.status = 502
    else:
        server.delay = 1.0
    settings = jwt_settings(database, server, auth_jwks_timeout=0.3)
    async with app_client(settings) as client:
        started = time.monotonic()
        response = await client.get("/conversations", headers=bearer(signing_key.token()))
        assert time.monotonic() - started < 0.9
    assert response.status_code == 503
    assert response.json() == {"error": errors.KEYS_UNAVAILABLE}
    assert int(response.headers["retry-after"]) >= 1


async def test_keys_not_for_verifying_are_skipped(
    database: Settings, server: KeySetServer, signing_key: SigningKey, pair: tuple[int, int]
) -> None:
    encryption = SigningKey("RS256")
    unusable = [
        {**encryption.public_jwk, "use": "enc"},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
        {"kty": "RSA", "kid": "broken", "n": "AQAB", "e": "!!"},
        "not a key",
        {"kid": 5},
    ]

    class Mixed(KeySetServer):
        def document(self) -> dict[str, Any]:
            return {"keys": [*unusable, signing_key.public_jwk]}

    with contextlib.closing(_Started(Mixed())) as mixed:
        async with app_client(jwt_settings(database, mixed.server)) as client:
            ok = await client.get("/conversations", headers=bearer(signing_key.token(pair[0])))
            assert ok.status_code == 200, ok.text
            enc = await client.get("/conversations", headers=bearer(encryption.token(pair[0])))
            assert enc.status_code == 401


class _Started:
    def __init__(self, server: KeySetServer) -> None:
        self.server = server
        server.start()

    def close(self) -> None:
        self.server.stop()


async def test_a_browser_may_send_the_token_cross_origin_and_read_the_challenge(
    client: httpx.AsyncClient,
) -> None:
    origin = {"Origin": "https://app.example"}
    preflight = await client.options(
        "/conversations",
        headers={
            **origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    refused = await client.get("/conversations", headers=origin)
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "*"
    exposed = refused.headers["access-control-expose-headers"].lower()
    assert "www-authenticate" in exposed
