"""The HTTP API, as the Node service's clients use it."""

import httpx


async def test_health_answers_ok_in_plain_text(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.text == "OK"
    assert response.headers["content-type"].startswith("text/plain")
