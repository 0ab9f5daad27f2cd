"""The API fuzzed against its own OpenAPI document: generated requests, valid and invalid.

schemathesis reads `GET /openapi.json` from the real app (lifespan on, a real PostgreSQL
database with seeded users and a conversation, so valid requests reach real rows) and sends
positive and negative data to every operation, then walks the document's links statefully
(create a conversation, send into it, read it, move the view horizon). Every answer must be
documented: no 5xx, a documented status, content type, headers and body schema (the error
texts included), and invalid data refused with a 4xx.

Bounded and derandomized for scripts/test; scripts/fuzz runs the same tests with
FUZZ_EXAMPLES in the thousands and a random seed per run (FUZZ_DERANDOMIZE=0).
"""

import asyncio
import collections
import os
from collections.abc import Iterator

import asyncpg
import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette

from messenger import db, openapi
from messenger.app import create_app
from messenger.db import connect_kwargs
from messenger.settings import Settings
from tests import test_input_properties
from tests.conftest import TABLES

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))  # per operation, positive and negative
STATEFUL_EXAMPLES = int(os.environ.get("FUZZ_STATEFUL_EXAMPLES", str(max(EXAMPLES // 2, 10))))
DERANDOMIZE = os.environ.get("FUZZ_DERANDOMIZE", "1") != "0"
USERS = 12  # seeded users 1..12: small ids, which generation favours, are real users

CHECKS = (
    [not_a_server_error]
    if os.environ.get("ONLY5XX")
    else [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        negative_data_rejection,
    ]
)

SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    derandomize=DERANDOMIZE,
    database=None,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    stateful_step_count=6,
)

# status -> count, over the module: scripts/fuzz prints it.
answered: collections.Counter[int] = collections.Counter()


async def seed(settings: Settings) -> None:
    conn = await asyncpg.connect(**connect_kwargs(settings))
    try:
        await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        await conn.execute(
            "INSERT INTO users (name) SELECT 'user ' || n FROM generate_series(1, $1) AS n", USERS
        )
        # Conversation 1 of users 1 and 2, with a message: reads and sends find real rows.
        await db.create_conversation(conn, 1, 2)
        await db.send_message(conn, 1, 1, "hello")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def app(database: Settings) -> Iterator[Starlette]:
    asyncio.run(seed(database))
    application = create_app(database)
    yield application
    # schemathesis started the app's lifespan: end it, closing the pool before the database goes.
    asgi.shutdown_lifespans()
    print(f"\nfuzz: {sum(answered.values())} requests, by status: {dict(sorted(answered.items()))}")


# Loaded from the module, not from a fixture: schemathesis' lazy fixture loader does not work
# with pytest 9.2 (it reads the removed `Item._nodeid`). `test_openapi.py` checks that the app
# serves exactly this document; the fuzzed app is passed to each call.
# GET /events answers with a stream that does not end, which this in-process client would
# wait for; tests/test_stream.py covers it with real connections.
schema = schemathesis.openapi.from_dict(openapi.document()).exclude(operation_id="streamEvents")
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@schema.parametrize()
@SETTINGS
def test_every_generated_request_gets_a_documented_answer(
    case: schemathesis.Case, app: Starlette
) -> None:
    response = case.call(app=app)
    answered[response.status_code] += 1
    case.validate_response(response, checks=CHECKS)


def test_linked_operations_in_sequence_get_documented_answers(
    app: Starlette, database: Settings
) -> None:
    class Checked(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            # Every scenario starts from the same rows: hypothesis replays a scenario to shrink
            # it and needs the same answers (a pair created twice is refused the second time).
            asyncio.run(seed(database))

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
            return {"app": app}

        def validate_response(
            self, response: schemathesis.Response, case: schemathesis.Case, **kwargs: object
        ) -> None:
            answered[response.status_code] += 1
            case.validate_response(response, checks=CHECKS)

    Checked.run(settings=hypothesis.settings(SETTINGS, max_examples=STATEFUL_EXAMPLES))


@hypothesis.given(
    hypothesis.strategies.sampled_from(
        ["/conversations", "/conversations/1/messages", "/conversations/1/view_horizon"]
    ),
    hypothesis.strategies.sampled_from(["application/json", "text/plain", ""]),
    test_input_properties.bodies,
)
@hypothesis.settings(SETTINGS, max_examples=EXAMPLES * 5)
def test_any_bytes_posted_to_any_route_get_a_client_error_at_worst(
    app: Starlette, path: str, content_type: str, body: bytes
) -> None:
    with asgi.get_client(app) as client:
        response = client.post(
            path, data=body, headers={"User-Id": "1", "Content-Type": content_type}
        )
    answered[response.status_code] += 1
    assert response.status_code in (201, 204, 400, 404, 413), response.text
    assert response.status_code == 204 or response.headers.get("content-type") == "application/json"
