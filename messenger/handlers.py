"""HTTP handlers: parse and validate the request, call one data function, shape the response."""

import re
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from messenger import db, json_body
from messenger.errors import (
    BODY_MISSING,
    BODY_NOT_OBJECT,
    CONTENT_EMPTY,
    CONTENT_HAS_NUL,
    CONTENT_NOT_STRING,
    CONVERSATION_EXISTS,
    CONVERSATION_NOT_FOUND,
    CURSORS_EXCLUSIVE,
    IDEMPOTENCY_KEY_REUSED,
    INDEX_NOT_INTEGER,
    INVALID_PATH_ID,
    NEED_TWO_USERS,
    NOT_IN_CONVERSATION,
    PARTICIPANT_NOT_ID,
    PARTICIPANTS_NOT_LIST,
    QUERY_NOT_BOOLEAN,
    QUERY_NOT_INTEGER,
    UNKNOWN_PARTICIPANTS,
    USER_ID_REQUIRED,
    BadRequest,
    NotFound,
    Unprocessable,
)
from messenger.idempotency import idempotency_key
from messenger.page_cache import render_page
from messenger.readiness import probe, readiness
from messenger.responses import JSONResponse
from messenger.services import Services

MAX_ID = 2**63 - 1  # ids are PostgreSQL bigints
_CANONICAL_INTEGER = re.compile(r"(0|[1-9][0-9]{0,18})")


def _integer(value: object, *, minimum: int) -> int | None:
    """`value` as an integer in [minimum, MAX_ID]: a JSON integer or its canonical decimal text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if not _CANONICAL_INTEGER.fullmatch(value):
            return None
        value = int(value)
    if isinstance(value, int) and minimum <= value <= MAX_ID:
        return value
    return None


def _user_id(request: Request) -> int:
    user_id = _optional_user_id(request)
    if user_id is None:
        raise BadRequest(USER_ID_REQUIRED)
    return user_id


def _optional_user_id(request: Request) -> int | None:
    """The `User-Id` header if given; given but not a canonical positive integer is an error."""
    header = request.headers.get("user-id")
    if header is None:
        return None
    user_id = _integer(header, minimum=1)
    if user_id is None:
        raise BadRequest(USER_ID_REQUIRED)
    return user_id


def _path_id(request: Request, name: str) -> int:
    raw = request.path_params[name]
    value = _integer(raw, minimum=1)
    if value is None:
        raise BadRequest(INVALID_PATH_ID.format(name=name.replace("_", " "), value=raw[:40]))
    return value


def _query_integer(request: Request, name: str, *, minimum: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    value = _integer(raw, minimum=minimum)
    if value is None:
        raise BadRequest(QUERY_NOT_INTEGER.format(name=name))
    return value


async def _json_body(request: Request) -> object:
    return json_body.decode(request.headers.get("content-type"), await request.body())


async def _json_object(request: Request) -> dict[str, Any]:
    """The body of a route that needs one: a JSON object (Node answered 500 without it)."""
    body = await _json_body(request)
    if body is json_body.MISSING:
        raise BadRequest(BODY_MISSING)
    if not isinstance(body, dict):
        raise BadRequest(BODY_NOT_OBJECT)
    return body


def _participants(body: object) -> tuple[int, int]:
    """Node's texts for what Node refused with 400: no `participant_ids` (no body, a body
    that is not a JSON object, `null`) or not two distinct ids; ours for what it answered 500."""
    raw = body.get("participant_ids") if isinstance(body, dict) else None
    if raw is None:
        raise BadRequest(NEED_TWO_USERS)
    if not isinstance(raw, list):
        raise BadRequest(PARTICIPANTS_NOT_LIST)
    if len(raw) != 2:
        raise BadRequest(NEED_TWO_USERS)
    first, second = (_integer(item, minimum=1) for item in raw)
    if first is None or second is None:
        raise BadRequest(PARTICIPANT_NOT_ID)
    if first == second:
        raise BadRequest(NEED_TWO_USERS)
    return min(first, second), max(first, second)


def _content(body: dict[str, Any]) -> str:
    content = body.get("content")
    if not isinstance(content, str):
        raise BadRequest(CONTENT_NOT_STRING)
    if not content:
        raise BadRequest(CONTENT_EMPTY)
    if "\x00" in content:
        raise BadRequest(CONTENT_HAS_NUL)
    return content


async def _membership_error(services: Services, conversation_id: int, user_id: int | None) -> None:
    """Explain an empty answer: unknown conversation (404) or a reader who is no member (400)."""
    found = await db.membership(services.pool, conversation_id, user_id)
    if not found.conversation_exists:
        raise NotFound(CONVERSATION_NOT_FOUND.format(id=conversation_id))
    if user_id is not None and not found.is_member:
        raise BadRequest(NOT_IN_CONVERSATION.format(id=user_id))


async def health(request: Request) -> Response:
    """Liveness, as the Node service answered it: no dependency checks, so a database blip
    does not make Consul deregister every instance at once."""
    return PlainTextResponse("OK")


async def ready(request: Request) -> Response:
    """Readiness as JSON; 503 while PostgreSQL is unreachable or the instance is leaving."""
    services = Services.of(request)
    is_ready, body = readiness(services, await probe(services))
    return JSONResponse(body, status_code=200 if is_ready else 503)


async def metrics(request: Request) -> Response:
    """Prometheus exposition of this instance's figures."""
    services = Services.of(request)
    assert services.metrics is not None
    found = await probe(services)
    accept = request.headers.get("accept", "")
    content, content_type = services.metrics.render(services, found, accept)
    return Response(content, headers={"Content-Type": content_type})


async def create_conversation(request: Request) -> Response:
    low_id, high_id = _participants(await _json_body(request))
    services = Services.of(request)
    async with db.unavailable_as_503():
        created = await db.create_conversation(services.pool, low_id, high_id)
        if created.id is None:
            if created.known_participants < 2:
                raise BadRequest(UNKNOWN_PARTICIPANTS)
            existing = await db.find_conversation_between(services.pool, low_id, high_id)
            raise BadRequest(CONVERSATION_EXISTS.format(id=existing))
    services.feeds_written(created.woken)
    conversation = {"id": created.id, "inserted_at": created.inserted_at}
    return JSONResponse({"conversation": conversation}, status_code=201)


def _query_flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise BadRequest(QUERY_NOT_BOOLEAN.format(name=name))


async def list_conversations(request: Request) -> Response:
    """The caller's conversations; `unread=true` adds `last_index` and `unread` to each."""
    user_id = _user_id(request)
    unread = _query_flag(request, "unread")
    services = Services.of(request)
    async with db.unavailable_as_503():
        rows = await db.list_conversations(services.pool, user_id, unread=unread)
    return JSONResponse({"conversations": [dict(row) for row in rows]})


async def send_message(request: Request) -> Response:
    user_id = _user_id(request)
    conversation_id = _path_id(request, "conversation_id")
    key = idempotency_key(request)
    content = _content(await _json_object(request))
    services = Services.of(request)
    async with db.unavailable_as_503():
        if key is None:
            row = await db.send_message(services.pool, conversation_id, user_id, content)
        else:
            row = await _send_once(services, conversation_id, user_id, content, key)
        if row is None:
            await _membership_error(services, conversation_id, user_id)
            raise BadRequest(NOT_IN_CONVERSATION.format(id=user_id))
    if key is None or not row["replayed"]:
        services.outbox_written()
        services.feeds_written(row["woken"])
    message = {
        "id": row["id"],
        "content": row["content"],
        "index": row["index"],
        "user_id": row["user_id"],
        "username": row["username"],
        "conversation_id": row["channel_id"],
        "inserted_at": row["inserted_at"],
    }
    return JSONResponse({"message": message}, status_code=201)


async def _send_once(
    services: Services, conversation_id: int, user_id: int, content: str, key: str
) -> asyncpg.Record | None:
    """Send under an idempotency key: the first request stores, a repeat gets the stored message.

    A request that raced the first one with the key waited for it inside the statement and
    stored nothing; the second statement reads what the first one stored.
    """
    ttl = services.settings.idempotency_key_ttl
    row = await db.send_message_with_key(services.pool, conversation_id, user_id, content, key, ttl)
    if row is None:
        row = await db.stored_answer(services.pool, conversation_id, user_id, key, ttl)
    if row is not None and row["replayed"] and row["content"] != content:
        raise Unprocessable(IDEMPOTENCY_KEY_REUSED)
    return row


async def list_messages(request: Request) -> Response:
    """Messages oldest first, `limit` at a time (at most MESSAGES_PAGE_MAX).

    Without a cursor the first page is returned; `after_index` pages forward and
    `before_index` backward. A full page carries a `Link` header to the next one. A page this
    instance rendered before is served again while the conversation's counter says it is
    current (see page_cache); the reader and the conversation are checked on every read.
    """
    reader_id = _optional_user_id(request)
    conversation_id = _path_id(request, "conversation_id")
    services = Services.of(request)
    page_max = services.settings.messages_page_max
    limit = _query_integer(request, "limit", minimum=1) or page_max
    limit = min(limit, page_max)
    after_index = _query_integer(request, "after_index", minimum=0)
    before_index = _query_integer(request, "before_index", minimum=1)
    if after_index is not None and before_index is not None:
        raise BadRequest(CURSORS_EXCLUSIVE)

    backward = before_index is not None
    cursor = before_index if before_index is not None else after_index or 0
    key = (conversation_id, backward, cursor, limit)
    page = services.pages.get(key)
    read = db.list_messages_before if backward else db.list_messages_after
    async with db.unavailable_as_503():
        valid_through = None if page is None else page.valid_through
        found = await read(services.pool, conversation_id, cursor, limit, reader_id, valid_through)
    if found.last_index is None:
        raise NotFound(CONVERSATION_NOT_FOUND.format(id=conversation_id))
    if not found.reader_allowed:
        raise BadRequest(NOT_IN_CONVERSATION.format(id=reader_id))
    if page is None or found.last_index > page.valid_through:
        page = render_page(found, cursor, limit, backward=backward)
        services.pages.put(key, page)
    headers = {} if page.link is None else {"Link": f"<{request.url.path}{page.link}"}
    return Response(page.body, headers=headers, media_type=JSONResponse.media_type)


async def set_view_horizon(request: Request) -> Response:
    user_id = _user_id(request)
    conversation_id = _path_id(request, "conversation_id")
    index = _integer((await _json_object(request)).get("index"), minimum=0)
    if index is None:
        raise BadRequest(INDEX_NOT_INTEGER)
    services = Services.of(request)
    async with db.unavailable_as_503():
        woken = await db.set_view_horizon(services.pool, conversation_id, user_id, index)
        if woken is None:
            await _membership_error(services, conversation_id, user_id)
            raise BadRequest(NOT_IN_CONVERSATION.format(id=user_id))
    services.feeds_written(woken)
    return Response(status_code=204)
