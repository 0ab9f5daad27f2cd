"""Hostile bearer tokens against a real `serve` process in jwt mode: each one a 401, none a 5xx.

The service runs as in production (uvicorn, its bounded request heads) with its key set at a
real HTTP server on a loopback port that counts the fetches, so a flood of made-up key ids is
seen costing the provider what AUTH_JWKS_MIN_REFRESH allows and no more.
"""

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messenger import errors
from messenger.settings import Settings
from tests.key_server import AUDIENCE, ISSUER, KeySetServer, SigningKey, bearer, key_set_server
from tests.processes import Service, serve, service_env

MIN_REFRESH = 1.0
# The 401 texts, their placeholders matching anything.
TOKEN_TEXTS = re.compile(
    "|".join(
        re.sub(r"\\\{\w+\\\}", ".*", re.escape(text))
        for name, text in vars(errors).items()
        if name.startswith("TOKEN_") and isinstance(text, str)
    )
)
INVALID_TOKEN = 'Bearer realm="messenger", error="invalid_token"'


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    parts = [b64(json.dumps(header).encode()), b64(json.dumps(payload).encode())]
    return ".".join([*parts, b64(signature)])


def claims(user: int = 1, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(user),
        "iat": now,
        "exp": now + 300,
    } | changes


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {name: SigningKey(name) for name in ("ES256", "RS256", "EdDSA")}


@pytest.fixture(scope="module")
def key_server(keys: dict[str, SigningKey]) -> Iterator[KeySetServer]:
    with key_set_server(*keys.values()) as server:
        yield server


@pytest.fixture(scope="module")
def service(database: Settings, key_server: KeySetServer) -> Iterator[Service]:
    env = service_env(
        database,
        AUTH_MODE="jwt",
        AUTH_JWKS_URL=key_server.url,
        AUTH_ISSUER=ISSUER,
        AUTH_AUDIENCE=AUDIENCE,
        AUTH_JWKS_MIN_REFRESH=str(MIN_REFRESH),
    )
    with serve(env) as service:
        yield service


@pytest.fixture(scope="module")
def http(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=10) as client:
        yield client


def refused(http: httpx.Client, token: str) -> httpx.Response:
    response = http.get("/conversations", headers=bearer(token))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == INVALID_TOKEN
    assert TOKEN_TEXTS.fullmatch(response.json()["error"])
    return response


def test_a_well_made_token_is_accepted(http: httpx.Client, keys: dict[str, SigningKey]) -> None:
    for key in keys.values():
        response = http.get("/conversations", headers=bearer(key.token(1)))
        assert response.status_code == 200, (key.algorithm, response.text)


def test_alg_none_is_refused(http: httpx.Client, keys: dict[str, SigningKey]) -> None:
    kid = keys["ES256"].kid
    for name in ("none", "None", "NONE"):
        token = compact({"alg": name, "kid": kid, "typ": "JWT"}, claims())
        response = refused(http, token)
        assert response.json()["error"].startswith("Bearer token's signature algorithm")
    # PyJWT's own unsecured token, for good measure.
    token = jwt.encode(claims(), None, algorithm="none", headers={"kid": kid})
    refused(http, token)


def test_hmac_keyed_with_the_public_key_is_refused(
    http: httpx.Client, keys: dict[str, SigningKey]
) -> None:
    for key in keys.values():
        public = key.private.public_key()
        secrets = [
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            json.dumps(key.public_jwk).encode(),
        ]
        for secret in secrets:
            for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
                header = {"alg": alg, "kid": key.kid, "typ": "JWT"}
                signing_input = ".".join(compact(header, claims()).split(".")[:2])
                signature = hmac.new(secret, signing_input.encode(), digest).digest()
                response = refused(http, f"{signing_input}.{b64(signature)}")
                assert response.json()["error"].startswith("Bearer token's signature algorithm")


def test_an_algorithm_the_key_is_not_for_is_refused(
    http: httpx.Client, keys: dict[str, SigningKey]
) -> None:
    rsa = keys["RS256"]
    token = jwt.encode(claims(), rsa.private, algorithm="PS256", headers={"kid": rsa.kid})
    refused(http, token)


def test_an_expired_token_is_refused_beyond_the_leeway(
    http: httpx.Client, keys: dict[str, SigningKey]
) -> None:
    key = keys["ES256"]
    now = int(time.time())
    response = refused(http, key.token(1, exp=now - 3600, iat=now - 7200))
    assert response.json() == {"error": errors.TOKEN_EXPIRED}
    response = refused(http, key.token(1, exp=now - 40))
    assert response.json() == {"error": errors.TOKEN_EXPIRED}
    within_leeway = http.get("/conversations", headers=bearer(key.token(1, exp=now - 10)))
    assert within_leeway.status_code == 200


def test_a_token_that_is_not_valid_yet_is_refused(
    http: httpx.Client, keys: dict[str, SigningKey]
) -> None:
    key = keys["RS256"]
    now = int(time.time())
    response = refused(http, key.token(1, nbf=now + 3600))
    assert response.json() == {"error": errors.TOKEN_NOT_YET_VALID}
    response = refused(http, key.token(1, iat=now + 3600))
    assert response.json() == {"error": errors.TOKEN_NOT_YET_VALID}
    within_leeway = http.get("/conversations", headers=bearer(key.token(1, nbf=now + 10)))
    assert within_leeway.status_code == 200


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({"iss": "https://evil.example"}, errors.TOKEN_WRONG_ISSUER),
        ({"iss": ISSUER + "/"}, errors.TOKEN_WRONG_ISSUER),
        ({"aud": "https://other.example"}, errors.TOKEN_WRONG_AUDIENCE),
        ({"aud": ["https://other.example", "x"]}, errors.TOKEN_WRONG_AUDIENCE),
        ({"iss": None}, errors.TOKEN_CLAIM_MISSING.format(claim="iss")),
        ({"aud": None}, errors.TOKEN_CLAIM_MISSING.format(claim="aud")),
        ({"exp": None}, errors.TOKEN_CLAIM_MISSING.format(claim="exp")),
        ({"sub": None}, errors.TOKEN_CLAIM_MISSING.format(claim="sub")),
        ({"exp": "tomorrow"}, errors.TOKEN_MALFORMED),
        ({"sub": "0"}, errors.TOKEN_USER_INVALID.format(claim="sub")),
    ],
)
def test_wrong_or_missing_claims_are_refused(
    http: httpx.Client, keys: dict[str, SigningKey], changes: dict[str, Any], text: str
) -> None:
    response = refused(http, keys["EdDSA"].token(1, **changes))
    assert response.json() == {"error": text}


def test_an_audience_list_containing_ours_is_accepted(
    http: httpx.Client, keys: dict[str, SigningKey]
) -> None:
    token = keys["ES256"].token(1, aud=["https://other.example", AUDIENCE])
    assert http.get("/conversations", headers=bearer(token)).status_code == 200


def test_a_key_nobody_published_under_a_known_kid_is_refused(
    http: httpx.Client, keys: dict[str, SigningKey]
) -> None:
    for name, key in keys.items():
        impostor = SigningKey(name, kid=key.kid)
        response = refused(http, impostor.token(1))
        assert response.json() == {"error": errors.TOKEN_BAD_SIGNATURE}


def test_a_payload_changed_after_signing_is_refused(
    http: httpx.Client, keys: dict[str, SigningKey]
) -> None:
    for key in keys.values():
        header, _, signature = key.token(1).split(".")
        forged = b64(json.dumps(claims(2)).encode())
        response = refused(http, f"{header}.{forged}.{signature}")
        assert response.json() == {"error": errors.TOKEN_BAD_SIGNATURE}
        header_changed = b64(json.dumps({"alg": key.algorithm, "kid": key.kid, "x": 1}).encode())
        _, payload, _ = key.token(1).split(".")
        refused(http, f"{header_changed}.{payload}.{signature}")


def test_a_token_of_12_kb_is_a_clear_401_and_a_head_over_the_limit_a_431(
    http: httpx.Client, keys: dict[str, SigningKey]
) -> None:
    big = keys["ES256"].token(1, padding="x" * 9 * 1024)  # base64: 4 bytes for every 3
    assert 12 * 1024 < len(big) < 13 * 1024
    response = refused(http, big)
    assert response.json() == {"error": errors.TOKEN_TOO_LARGE.format(limit=8192)}
    huge = keys["ES256"].token(1, padding="x" * 20 * 1024)
    response = http.get("/conversations", headers=bearer(huge))
    assert response.status_code == 431
    assert response.json() == {"error": "request header fields too large"}


def test_a_token_without_a_key_id_is_refused(
    http: httpx.Client, keys: dict[str, SigningKey]
) -> None:
    key = keys["ES256"]
    token = jwt.encode(claims(), key.private, algorithm="ES256")
    response = refused(http, token)
    assert response.json() == {"error": errors.TOKEN_NO_KEY_ID}


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        "...",
        "a.b",
        "a.b.c.d.e",
        "eyJhbGciOiJFUzI1NiJ9..",
        b64(b"[]") + ".e30.",
        b64(b'{"alg": "ES256", "kid": 5}') + ".e30.",
        b64(b'{"alg": ["ES256"], "kid": "x"}') + ".e30.",
        b64(b"\xff\xfe") + ".e30.",
        "\u00e9t\u00e9.e30.",
    ],
)
def test_garbage_is_refused(http: httpx.Client, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}".encode()}
    response = http.get("/conversations", headers=headers)
    assert response.status_code == 401, response.text
    assert TOKEN_TEXTS.fullmatch(response.json()["error"])


segments = st.one_of(
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/", max_size=80
    ),
    st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "jku", "x5u", "sub", "exp", "iss", "aud"]),
        st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.just("ES256"),
        max_size=5,
    ).map(lambda value: b64(json.dumps(value).encode())),
    st.binary(max_size=60).map(b64),
)
garbage_tokens = st.one_of(
    st.lists(segments, min_size=1, max_size=5).map(".".join),
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200
    ),
).filter(bool)  # an empty one is no token at all (test_identity.py has that case)


@settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(token=garbage_tokens)
def test_generated_garbage_is_always_a_401(http: httpx.Client, token: str) -> None:
    response = http.get("/conversations", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, (token, response.text)
    assert TOKEN_TEXTS.fullmatch(response.json()["error"])


def test_a_flood_of_unknown_key_ids_costs_a_bounded_number_of_fetches(
    http: httpx.Client, key_server: KeySetServer, keys: dict[str, SigningKey]
) -> None:
    key = keys["ES256"]
    before = key_server.fetches
    started = time.monotonic()
    count = 0
    while time.monotonic() - started < 2.5 and count < 2000:
        token = jwt.encode(claims(), key.private, "ES256", headers={"kid": uuid.uuid4().hex})
        response = http.get("/conversations", headers=bearer(token))
        assert response.status_code == 401
        assert response.json() == {"error": errors.TOKEN_UNKNOWN_KEY}
        count += 1
    elapsed = time.monotonic() - started
    fetches = key_server.fetches - before
    assert count > 100
    assert 1 <= fetches <= elapsed / MIN_REFRESH + 1, (fetches, count, elapsed)
    # The known keys keep working meanwhile.
    assert http.get("/conversations", headers=bearer(key.token(1))).status_code == 200
