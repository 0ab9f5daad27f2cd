"""Compressed request bodies: gzip and deflate inflated as express.json did, bounded as they
inflate; any other coding refused with 415."""

import gzip
import json
import zlib

import asyncpg
import httpx
import pytest

from messenger import errors
from messenger.settings import Settings
from tests import factories
from tests.conftest import app_client

KB = 1024


@pytest.fixture
async def conversation(client: httpx.AsyncClient, pool: asyncpg.Pool) -> str:
    first, second = await factories.users(pool, "Ann", "Bob")
    return await factories.conversation(client, first, second)


async def send(
    client: httpx.AsyncClient, conversation: str, body: bytes, encoding: str
) -> httpx.Response:
    return await client.post(
        f"/conversations/{conversation}/messages",
        headers={
            "User-Id": "1",
            "Content-Type": "application/json",
            "Content-Encoding": encoding,
        },
        content=body,
    )


def content(text: str) -> bytes:
    return json.dumps({"content": text}).encode()


CODERS = {
    "gzip": gzip.compress,
    "GZip": gzip.compress,
    "deflate": zlib.compress,
    "identity": lambda body: body,
}


@pytest.mark.parametrize("encoding", list(CODERS))
async def test_a_compressed_body_is_inflated(
    client: httpx.AsyncClient, conversation: str, pool: asyncpg.Pool, encoding: str
) -> None:
    response = await send(client, conversation, CODERS[encoding](content("hé, zipped")), encoding)

    assert response.status_code == 201, response.text
    assert await pool.fetchval("SELECT content FROM messages") == "hé, zipped"


async def test_gzip_members_one_after_another_are_one_body(
    client: httpx.AsyncClient, conversation: str, pool: asyncpg.Pool
) -> None:
    body = content("two members")
    response = await send(
        client, conversation, gzip.compress(body[:7]) + gzip.compress(body[7:]), "gzip"
    )

    assert response.status_code == 201, response.text
    assert await pool.fetchval("SELECT content FROM messages") == "two members"


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, identity", "x" * 100])
async def test_any_other_coding_is_refused_with_415(
    client: httpx.AsyncClient, conversation: str, pool: asyncpg.Pool, encoding: str
) -> None:
    response = await send(client, conversation, content("plain after all"), encoding)

    assert response.status_code == 415
    assert response.json() == {
        "error": errors.CONTENT_ENCODING_UNSUPPORTED.format(encoding=encoding.lower()[:40])
    }
    assert await pool.fetchval("SELECT count(*) FROM messages") == 0


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", b"not gzip at all"),
        ("deflate", b"not deflate"),
        ("gzip", gzip.compress(content("cut short"))[:-6]),
        ("deflate", zlib.compress(content("then garbage")) + b"garbage"),
    ],
    ids=["gzip garbage", "deflate garbage", "truncated gzip", "trailing bytes"],
)
async def test_a_body_that_does_not_inflate_is_a_400(
    client: httpx.AsyncClient, conversation: str, encoding: str, body: bytes
) -> None:
    response = await send(client, conversation, body, encoding)

    assert response.status_code == 400
    assert response.json() == {"error": errors.BODY_NOT_DECODABLE.format(encoding=encoding)}


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_the_limit_applies_to_the_inflated_body(
    client: httpx.AsyncClient, conversation: str, encoding: str
) -> None:
    fits = CODERS[encoding](factories.message_body(100 * KB))
    over = CODERS[encoding](factories.message_body(100 * KB + 1))

    assert (await send(client, conversation, fits, encoding)).status_code == 201
    refused = await send(client, conversation, over, encoding)
    assert refused.status_code == 413
    assert refused.json() == {"error": errors.BODY_TOO_LARGE}


async def test_a_zip_bomb_is_refused_without_inflating_it(settings: Settings, clean: None) -> None:
    bomb = gzip.compress(b"[" + b" " * (10 << 20) + b"]", compresslevel=9)  # 10 MB in ~10 kB
    assert len(bomb) < 20 * KB

    async with app_client(settings) as client:
        response = await send(client, "1", bomb, "gzip")

    assert response.status_code == 413
    assert response.json() == {"error": errors.BODY_TOO_LARGE}


async def test_a_request_without_a_body_is_not_refused_for_its_coding(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """express.json skipped a request without a body, whatever its headers said."""
    (user,) = await factories.users(pool, "Ann")
    headers = {"User-Id": str(user), "Content-Type": "application/json", "Content-Encoding": "br"}

    response = await client.get("/conversations", headers=headers)

    assert response.status_code == 200, response.text
