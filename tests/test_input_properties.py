"""Properties of every input parser: any input gives a value or the 400 domain error, nothing else.

Each parser takes what a client controls (body bytes and content type, header bytes, path
text, query bytes, decoded JSON) and must be total: a typed value, or BadRequest naming the
problem. Generated with hypothesis, derandomized, so the suite stays deterministic.
"""

import json
import math
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from messenger import errors, handlers, identity, ids, json_body
from messenger.errors import BadRequest

PROPERTIES = settings(
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "150")),
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

T = TypeVar("T")

MAX_ID = 2**63 - 1
CANONICAL = re.compile(r"0|[1-9][0-9]*")

# JSON values as a client can send them: every scalar, nested a little. (Integers beyond 64
# bits, which orjson reads as floats, are among the bodies below.)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.integers(min_value=0, max_value=MAX_ID + 10).map(str)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner),
    max_leaves=12,
)

# Bytes that are JSON, nearly JSON, or what JSON can carry and UTF-8 or PostgreSQL cannot.
surrogate_escapes = st.integers(0xD800, 0xDFFF).map(lambda c: f'"\\u{c:04x}"'.encode())
deep = st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n)
numbers = st.sampled_from([b"1e999", b"-1e999", b"NaN", b"Infinity", b"1" + b"0" * 5000, b"-0"])
fragments = st.one_of(
    json_values.map(lambda value: json.dumps(value).encode()),
    surrogate_escapes,
    deep,
    numbers,
    st.sampled_from([b'"\\u0000"', b"\xff", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"{", b"]"]),
    st.binary(max_size=30),
)
bodies = st.one_of(
    st.binary(),
    fragments,
    st.tuples(st.sampled_from(["content", "participant_ids", "index"]), fragments).map(
        lambda pair: b'{"%s": %s}' % (pair[0].encode(), pair[1])
    ),
    st.lists(fragments, max_size=4).map(lambda parts: b"[" + b",".join(parts) + b"]"),
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(["application/json", "Application/JSON; charset=utf-8", "text/plain"]),
    st.text(max_size=40),
)


def outcome(parse: Callable[[], T]) -> T | BadRequest:
    """What a parser gives: its value, or the BadRequest it raised (anything else escapes)."""
    try:
        return parse()
    except BadRequest as error:
        return error


def leaves(value: object) -> list[object]:
    """Every key and scalar in a JSON value, without recursion (it may nest 1024 deep)."""
    found, pending = [], [value]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        else:
            found.append(item)
    return found


def storable(value: object) -> bool:
    """Text UTF-8 (so PostgreSQL) can hold, and only finite numbers."""
    for leaf in leaves(value):
        if isinstance(leaf, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in leaf):
            return False
        if isinstance(leaf, float) and not math.isfinite(leaf):
            return False
    return True


@PROPERTIES
@given(content_types, bodies)
def test_the_body_reader_gives_json_it_can_store_or_a_400(
    content_type: str | None, body: bytes
) -> None:
    value = outcome(lambda: json_body.decode(content_type, body))
    if isinstance(value, BadRequest):
        assert value.status_code == 400
        prefixes = (errors.BODY_NOT_JSON, errors.BODY_NOT_UTF8)
        assert value.text.startswith(tuple(p.partition("{")[0] for p in prefixes))
    elif value is json_body.MISSING:
        assert not body or not json_body.is_json(content_type)
    else:
        assert storable(value)


@PROPERTIES
@given(json_values)
def test_the_body_reader_reads_every_json_document_as_json_loads_does(value: Any) -> None:
    encoded = json.dumps(value).encode()
    assert json_body.decode("application/json", encoded) == json.loads(encoded)


@PROPERTIES
@given(json_values | st.text(), st.sampled_from([0, 1]))
def test_an_integer_is_a_bigint_in_range_or_nothing(value: object, minimum: int) -> None:
    result = ids.integer(value, minimum=minimum)
    if result is None:
        return
    assert minimum <= result <= MAX_ID
    assert not isinstance(value, bool)
    if isinstance(value, str):
        assert CANONICAL.fullmatch(value)
        assert int(value) == result


def request(headers: list[tuple[bytes, bytes]] = (), query: bytes = b"") -> Request:  # type: ignore[assignment]
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": list(headers),
        "query_string": query,
        "path_params": {},
    }
    return Request(scope)


@PROPERTIES
@given(st.binary(max_size=40) | st.integers(0, 2**70).map(lambda n: str(n).encode()))
def test_a_user_id_header_is_a_user_id_or_the_node_text(raw: bytes) -> None:
    user_id = outcome(lambda: identity.header_caller(request([(b"user-id", raw)])))
    if isinstance(user_id, BadRequest):
        assert user_id.text == errors.USER_ID_REQUIRED
    else:
        assert raw == str(user_id).encode()
        assert 1 <= user_id <= MAX_ID


@PROPERTIES
@given(st.text() | st.integers(-5, 2**70).map(str))
def test_a_path_id_is_an_id_or_a_400_naming_it(raw: str) -> None:
    scoped = request()
    scoped.scope["path_params"] = {"conversation_id": raw}
    value = outcome(lambda: handlers._path_id(scoped, "conversation_id"))
    if isinstance(value, BadRequest):
        assert value.text == errors.INVALID_PATH_ID.format(name="conversation id", value=raw[:40])
    else:
        assert raw == str(value)
        assert 1 <= value <= MAX_ID


@PROPERTIES
@given(st.binary(max_size=60), st.sampled_from([0, 1]))
def test_a_query_integer_is_absent_an_integer_or_a_400(query: bytes, minimum: int) -> None:
    value = outcome(lambda: handlers._query_integer(request(query=query), "limit", minimum=minimum))
    if isinstance(value, BadRequest):
        assert value.text == errors.QUERY_NOT_INTEGER.format(name="limit")
    else:
        assert value is None or minimum <= value <= MAX_ID


PARTICIPANT_TEXTS = {
    errors.NEED_TWO_USERS,
    errors.PARTICIPANTS_NOT_LIST,
    errors.PARTICIPANT_NOT_ID,
}


@PROPERTIES
@given(
    json_values
    | st.fixed_dictionaries({"participant_ids": json_values})
    | st.fixed_dictionaries({"participant_ids": st.lists(scalars, max_size=3)})
    | st.just(json_body.MISSING)
)
def test_participants_are_two_distinct_ids_in_order_or_a_400(body: object) -> None:
    pair = outcome(lambda: handlers._participants(body))
    if isinstance(pair, BadRequest):
        assert pair.text in PARTICIPANT_TEXTS
    else:
        low, high = pair
        assert 1 <= low < high <= MAX_ID


@PROPERTIES
@given(st.dictionaries(st.sampled_from(["content", "x"]), json_values | st.text(min_size=1)))
def test_content_is_storable_text_or_a_400(body: dict[str, Any]) -> None:
    content = outcome(lambda: handlers._content(body))
    if isinstance(content, BadRequest):
        texts = {errors.CONTENT_NOT_STRING, errors.CONTENT_EMPTY, errors.CONTENT_HAS_NUL}
        assert content.text in texts
    else:
        assert content
        assert "\x00" not in content
