"""jwt mode against a real OpenID Provider nobody here wrote: the npm package `oidc-provider`.

tests/oidc/provider.mjs runs it on a loopback port (installed by scripts/test from
tests/oidc/package-lock.json). Each test user is a client of the provider whose id is the
user's id, so a client_credentials token for the resource AUTH_AUDIENCE (RFC 8707) is a JWT
access token (RFC 9068) whose `sub` is the user. A real `serve` process takes the provider's
issuer, audience and `jwks_uri` from its discovery document, as an operator would.
"""

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from messenger.db import connect_kwargs
from messenger.settings import Settings
from tests.conftest import TABLES
from tests.key_server import SigningKey, bearer
from tests.processes import ROOT, Service, free_port, serve, service_env

OIDC = ROOT / "tests" / "oidc"
AUDIENCE = "https://messenger.test"
USERS = 3  # the conversation tests use users 1 and 2


@pytest.fixture(scope="module", autouse=True)
def _provider_installed() -> None:
    if shutil.which("node") is None or not (OIDC / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("oidc-provider is not installed: scripts/test runs `npm ci` in tests/oidc")


def private_jwk(key: SigningKey) -> dict[str, Any]:
    codec = {"RS": RSAAlgorithm, "PS": RSAAlgorithm, "ES": ECAlgorithm}.get(
        key.algorithm[:2], OKPAlgorithm
    )
    jwk: dict[str, Any] = codec.to_jwk(key.private, as_dict=True)
    return {**jwk, "kid": key.kid, "alg": key.algorithm, "use": "sig"}


class Provider:
    """The provider process; `restart(keys)` is how its operator rotates keys (the first signs)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self._keys_file = workdir / "jwks.json"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, keys: list[SigningKey]) -> None:
        self._keys_file.write_text(json.dumps({"keys": [private_jwk(key) for key in keys]}))
        users = ",".join(str(n) for n in range(1, USERS + 1))
        self._process = subprocess.Popen(
            ["node", "provider.mjs", str(self.port), str(self._keys_file), AUDIENCE, users],
            cwd=OIDC,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()  # "ready", or "" if it died
        assert line == b"ready\n", f"oidc-provider did not start (exit {self._process.poll()})"

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None

    def restart(self, keys: list[SigningKey]) -> None:
        self.stop()
        self.start(keys)

    def discovery(self) -> dict[str, Any]:
        url = f"{self.issuer}/.well-known/openid-configuration"
        document: dict[str, Any] = httpx.get(url, timeout=5).raise_for_status().json()
        return document

    def access_token(self, user_id: int) -> str:
        """A client_credentials access token for AUDIENCE, as the provider issues it."""
        response = httpx.post(
            self.discovery()["token_endpoint"],
            data={"grant_type": "client_credentials", "resource": AUDIENCE},
            auth=(str(user_id), f"secret-{user_id}"),
            timeout=5,
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


@pytest.fixture(scope="module")
def first_key() -> SigningKey:
    return SigningKey("RS256")


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory, first_key: SigningKey) -> Iterator[Provider]:
    provider = Provider(tmp_path_factory.mktemp("oidc"))
    provider.start([first_key])
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture(scope="module")
def service(database: Settings, provider: Provider) -> Iterator[Service]:
    discovered = provider.discovery()
    env = service_env(
        database,
        AUTH_MODE="jwt",
        AUTH_JWKS_URL=discovered["jwks_uri"],
        AUTH_ISSUER=discovered["issuer"],
        AUTH_AUDIENCE=AUDIENCE,
        AUTH_JWKS_MIN_REFRESH="1",
    )
    with serve(env) as service:
        yield service


@pytest.fixture(scope="module")
def http(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=10) as client:
        yield client


async def _users_only(settings: Settings) -> None:
    conn = await asyncpg.connect(**connect_kwargs(settings))
    try:
        await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        await conn.execute(
            "INSERT INTO users (name) SELECT 'user ' || n FROM generate_series(1, $1) AS n", USERS
        )
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def conversation(database: Settings, provider: Provider, http: httpx.Client) -> str:
    """Users 1..USERS in a clean database, and a conversation of users 1 and 2."""
    asyncio.run(_users_only(database))
    response = http.post(
        "/conversations",
        json={"participant_ids": [1, 2]},
        headers=bearer(provider.access_token(1)),
    )
    assert response.status_code == 201, response.text
    conversation_id: str = response.json()["conversation"]["id"]
    return conversation_id


def test_the_providers_access_tokens_are_jwts_for_this_service(provider: Provider) -> None:
    token = provider.access_token(2)
    header, payload = (json.loads(_unpadded(part)) for part in token.split(".")[:2])
    assert header["typ"] == "at+jwt"
    assert payload["sub"] == "2"
    assert payload["aud"] == AUDIENCE
    assert payload["iss"] == provider.issuer


def test_the_service_accepts_the_providers_tokens_on_every_route(
    http: httpx.Client, provider: Provider, conversation: str
) -> None:
    as_one, as_two = bearer(provider.access_token(1)), bearer(provider.access_token(2))
    path = f"/conversations/{conversation}"
    sent = http.post(f"{path}/messages", json={"content": "hello"}, headers=as_one)
    assert sent.status_code == 201, sent.text
    assert sent.json()["message"]["user_id"] == 1
    read = http.get(f"{path}/messages", headers=as_two)
    assert read.status_code == 200
    assert read.json()["messages"][-1]["user_id"] == "1"
    assert http.post(f"{path}/view_horizon", json={"index": 1}, headers=as_two).status_code == 204
    listed = http.get("/conversations", headers=as_two)
    assert listed.json()["conversations"][0]["name"] == "user 1"
    outsider = http.get(f"{path}/messages", headers=bearer(provider.access_token(3)))
    assert outsider.status_code == 400


def test_a_key_rotation_at_the_provider_is_followed_without_a_restart(
    http: httpx.Client, provider: Provider, first_key: SigningKey, conversation: str
) -> None:
    before = provider.access_token(1)
    assert http.get("/conversations", headers=bearer(before)).status_code == 200

    second_key = SigningKey("ES256")
    provider.restart([second_key, first_key])  # the new key signs; the old one stays published
    time.sleep(1.05)  # AUTH_JWKS_MIN_REFRESH=1: the next unknown kid may refetch
    after = provider.access_token(1)
    assert _kid(after) == second_key.kid != _kid(before)

    response = http.get("/conversations", headers=bearer(after))
    assert response.status_code == 200, response.text
    assert http.get("/conversations", headers=bearer(before)).status_code == 200


def test_while_the_provider_is_down_its_tokens_keep_working(
    http: httpx.Client, provider: Provider, first_key: SigningKey, conversation: str
) -> None:
    token = provider.access_token(2)
    assert http.get("/conversations", headers=bearer(token)).status_code == 200
    provider.stop()
    try:
        time.sleep(1.05)
        assert http.get("/conversations", headers=bearer(token)).status_code == 200
        stranger = SigningKey("ES256").token(2)  # a key the service never saw: needs a fetch
        response = http.get("/conversations", headers=bearer(stranger))
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
    finally:
        with contextlib.suppress(AssertionError):
            provider.start([first_key])


def _unpadded(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _kid(token: str) -> str:
    kid: str = json.loads(_unpadded(token.split(".")[0]))["kid"]
    return kid
