"""JSON bodies in the charsets express.json read (the UTF family), and 415 for the others."""

import contextlib
import json

import asyncpg
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messenger import errors, json_body
from messenger.errors import BadRequest, UnsupportedMediaType
from tests import factories
from tests.test_input_properties import PROPERTIES, json_values

CHARSETS = {
    "utf-16": "utf-16",  # Python writes a BOM
    "UTF-16LE": "utf-16-le",
    "utf-16be": "utf-16-be",
    "utf-32": "utf-32",
    "utf-32le": "utf-32-le",
    "utf-32be": "utf-32-be",
    "utf-8": "utf-8",
    '"utf-16le"': "utf-16-le",  # quoted, as a parameter value may be
}


@pytest.mark.parametrize("charset", list(CHARSETS))
@given(value=json_values)
@settings(PROPERTIES, max_examples=30)
def test_a_body_in_a_utf_charset_reads_as_its_json(charset: str, value: object) -> None:
    body = json.dumps(value, ensure_ascii=False).encode(CHARSETS[charset], "surrogatepass")
    try:
        read = json_body.decode(f"application/json; charset={charset}", body)
    except BadRequest:  # lone surrogates: no UTF text holds them
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in json.dumps(value, ensure_ascii=False))
    else:
        assert read == value


def test_utf_16_without_a_bom_is_little_endian_as_iconv_read_it() -> None:
    body = '{"content": "hi"}'.encode("utf-16-le")
    assert json_body.decode("application/json; charset=utf-16", body) == {"content": "hi"}


@pytest.mark.parametrize(
    "charset", ["iso-8859-1", "latin1", "utf8", "windows-1252", "utf-9", "ascii"]
)
def test_any_other_charset_is_refused_with_415_as_express_json_did(charset: str) -> None:
    with pytest.raises(UnsupportedMediaType) as refused:
        json_body.decode(f"application/json; charset={charset}", b'{"content": "hi"}')
    assert refused.value.status_code == 415
    assert refused.value.text == errors.CHARSET_UNSUPPORTED.format(charset=charset.upper())


@pytest.mark.parametrize("charset", ["utf-16", "utf-32le"])
def test_a_body_not_in_its_declared_charset_is_a_400(charset: str) -> None:
    with pytest.raises(BadRequest) as refused:
        json_body.decode(f"application/json; charset={charset}", b"{}\x00")
    assert refused.value.text.startswith(f"Request body is not valid {charset.upper()}")


@given(st.binary(), st.sampled_from(sorted(json_body.CHARSETS)))
@settings(PROPERTIES)
def test_any_bytes_in_any_charset_are_a_value_or_a_400(body: bytes, charset: str) -> None:
    with contextlib.suppress(BadRequest):
        json_body.decode(f"application/json;charset={charset}", body)


async def test_a_utf_16_send_is_stored_and_latin_1_is_refused(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    first, second = await factories.users(pool, "Ann", "Bob")
    conversation = await factories.conversation(client, first, second)
    path = f"/conversations/{conversation}/messages"
    body = '{"content": "héllo ☃"}'

    sent = await client.post(
        path,
        headers={"User-Id": str(first), "Content-Type": "application/json; charset=utf-16"},
        content=body.encode("utf-16"),
    )
    refused = await client.post(
        path,
        headers={"User-Id": str(first), "Content-Type": "application/json; charset=iso-8859-1"},
        content=body.encode("latin-1", "replace"),
    )

    assert sent.status_code == 201, sent.text
    assert sent.json()["message"]["content"] == "héllo ☃"
    assert refused.status_code == 415
    assert refused.headers["content-type"] == "application/json"
    assert refused.json() == {"error": 'unsupported charset "ISO-8859-1"'}


def test_an_empty_body_is_no_body_whatever_its_charset() -> None:
    assert json_body.decode("application/json; charset=latin1", b"") is json_body.MISSING
