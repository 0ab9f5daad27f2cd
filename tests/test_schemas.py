"""The declared shapes: the key orders the contract fixes, and the schemas the document gets."""

import re

import pytest

from messenger import schemas
from messenger.db.columns import select_list


def test_each_answer_declares_the_contract_key_order() -> None:
    assert schemas.CREATED_CONVERSATION_KEYS == ("id", "inserted_at")
    assert schemas.LISTED_CONVERSATION_KEYS == ("id", "inserted_at", "name")
    assert schemas.SENT_MESSAGE_KEYS == (
        "id",
        "content",
        "index",
        "user_id",
        "username",
        "conversation_id",
        "inserted_at",
    )
    assert schemas.LISTED_MESSAGE_KEYS == (
        "id",
        "content",
        "user_id",
        "channel_id",
        "index",
        "inserted_at",
        "username",
    )


def test_ids_are_strings_or_numbers_as_the_contract_says() -> None:
    found: dict[str, object] = {}
    sent = schemas.json_schema(schemas.SentMessage, found)["properties"]
    listed = schemas.json_schema(schemas.ListedMessage, found)["properties"]
    assert {key: sent[key]["type"] for key in ("id", "index", "user_id", "conversation_id")} == {
        "id": "string",
        "index": "integer",
        "user_id": "integer",
        "conversation_id": "integer",
    }
    assert {listed[key]["type"] for key in ("id", "user_id", "channel_id", "index")} == {"string"}


def test_the_id_pattern_takes_canonical_bigints_only() -> None:
    pattern = re.compile(schemas.ID_PATTERN)
    assert pattern.match("1")
    assert pattern.match(str(schemas.MAX_ID))
    assert not any(pattern.match(text) for text in ("0", "01", "+1", " 1", "1 ", "1" * 20))


def test_an_answer_is_closed_and_untitled_and_null_is_a_second_type() -> None:
    found: dict[str, object] = {}
    answer = schemas.json_schema(schemas.MessageAnswer, found)
    assert answer["additionalProperties"] is False
    assert answer["properties"]["message"] == {"$ref": "#/components/schemas/SentMessage"}
    assert "title" not in repr(found)
    assert "title" not in repr(answer)
    readiness = schemas.json_schema(schemas.Readiness, found)["properties"]
    assert readiness["broker"] == {"type": ["boolean", "null"]}
    assert readiness["status"] == {"enum": ["ready", "unavailable"]}


def test_a_statement_that_disagrees_with_its_shape_is_refused() -> None:
    assert select_list(("id", "name"), {"name": "u.name", "id": "c.id::text"}) == (
        "c.id::text AS id, u.name AS name"
    )
    with pytest.raises(ValueError, match="differ"):
        select_list(("id", "name"), {"id": "c.id::text"})
