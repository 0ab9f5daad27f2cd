"""Small builders for test data, through the API where the API can make it."""

import json
from typing import Any

import asyncpg
import httpx


async def users(pool: asyncpg.Pool, *names: str) -> list[int]:
    rows = await pool.fetch(
        "INSERT INTO users (name) SELECT unnest($1::text[]) RETURNING id", list(names)
    )
    return [row["id"] for row in rows]


async def conversation(client: httpx.AsyncClient, first: int, second: int) -> str:
    response = await client.post("/conversations", json={"participant_ids": [first, second]})
    assert response.status_code == 201, response.text
    conversation_id: str = response.json()["conversation"]["id"]
    return conversation_id


async def send(
    client: httpx.AsyncClient, conversation_id: str | int, user_id: int, content: str = "hello"
) -> dict[str, Any]:
    response = await client.post(
        f"/conversations/{conversation_id}/messages",
        headers={"User-Id": str(user_id)},
        json={"content": content},
    )
    assert response.status_code == 201, response.text
    message: dict[str, Any] = response.json()["message"]
    return message


def message_body(size: int) -> bytes:
    """A send-message JSON body of exactly `size` bytes, for tests of the body limit."""
    overhead = len(json.dumps({"content": ""}).encode())
    body = json.dumps({"content": "x" * (size - overhead)}).encode()
    assert len(body) == size
    return body
