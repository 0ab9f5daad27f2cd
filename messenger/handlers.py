"""HTTP handlers: parse and validate the request, call one data function, shape the response."""

from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from messenger import db, identity, json_body, schemas
from messenger.errors import (
    BODY_MISSING,
    BODY_NOT_OBJECT,
    CALLER_NOT_PARTICIPANT,
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
    BadRequest,
    Errors,
    Forbidden,
    NotFound,
    Unprocessable,
)
from messenger.idempotency import idempotency_key
from messenger.ids import integer
from messenger.operations import Answer, operation
from messenger.page_cache import render_page
from messenger.responses import JSONResponse
from messenger.schemas import SENT_MESSAGE_KEYS
from messenger.services import Services


def _path_id(request: Request, name: str) -> int:
    raw = request.path_params[name]
    value = integer(raw, minimum=1)
    if value is None:
        raise BadRequest(INVALID_PATH_ID.format(name=name.replace("_", " "), value=raw[:40]))
    return value


def _query_parameter(request: Request, name: str) -> str | None:
    # Without a query string, nothing to parse (a read of the first page has none).
    return request.query_params.get(name) if request.scope["query_string"] else None


def _query_integer(request: Request, name: str, *, minimum: int) -> int | None:
    raw = _query_parameter(request, name)
    if raw is None:
        return None
    value = integer(raw, minimum=minimum)
    if value is None:
        raise BadRequest(QUERY_NOT_INTEGER.format(name=name))
    return value


def _query_flag(request: Request, name: str) -> bool:
    raw = _query_parameter(request, name)
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise BadRequest(QUERY_NOT_BOOLEAN.format(name=name))


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
    first, second = (integer(item, minimum=1) for item in raw)
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


@operation(
    "createConversation",
    "conversations",
    Answer(
        201,
        "Created. `id` is a string.",
        schemas.ConversationAnswer,
        links={
            "SendMessage": {
                "operationId": "sendMessage",
                "parameters": {
                    "conversation_id": "$response.body#/conversation/id",
                    "header.User-Id": "$request.body#/participant_ids/0",
                },
            },
            "ListMessages": {
                "operationId": "listMessages",
                "parameters": {"conversation_id": "$response.body#/conversation/id"},
            },
        },
    ),
    body=schemas.NewConversation,
    example={"participant_ids": [1, 2]},
    errors=[
        Errors(
            400,
            "Not two distinct known users, the pair already has a conversation, or a malformed "
            "body.",
            [
                NEED_TWO_USERS,
                UNKNOWN_PARTICIPANTS,
                PARTICIPANTS_NOT_LIST,
                PARTICIPANT_NOT_ID,
                CONVERSATION_EXISTS,
            ],
        )
    ],
    caller=True,
)
async def create_conversation(request: Request) -> Response:
    """Start a conversation between two users

    Key order of the answer: `conversation`: `id`, `inserted_at`. The body is read as JSON only
    with `Content-Type: application/json`, as the Node service's express.json did: any other
    body counts as `{}`.
    """
    creator_id = await identity.verified_caller(request)
    low_id, high_id = _participants(await _json_body(request))
    if creator_id is not None and creator_id not in (low_id, high_id):
        raise Forbidden(CALLER_NOT_PARTICIPANT)
    services = Services.of(request)
    async with db.unavailable_as_503():
        created = await db.create_conversation(services.pool, low_id, high_id)
        if created.id is None:
            if created.known_participants < 2:
                raise BadRequest(UNKNOWN_PARTICIPANTS)
            existing = await db.find_conversation_between(services.pool, low_id, high_id)
            raise BadRequest(CONVERSATION_EXISTS.format(id=existing))
    services.feeds_written(created.woken)
    conversation = {key: getattr(created, key) for key in schemas.CREATED_CONVERSATION_KEYS}
    return JSONResponse({"conversation": conversation}, status_code=201)


@operation(
    "listConversations",
    "conversations",
    Answer(200, "The user's conversations, oldest first.", schemas.ConversationList),
    parameters=[schemas.USER_ID, schemas.UNREAD, schemas.REQUEST_ID],
    errors=[
        Errors(
            400,
            "User-Id missing or not a positive integer, or `unread` neither true nor false.",
            [QUERY_NOT_BOOLEAN],
        )
    ],
    caller=True,
)
async def list_conversations(request: Request) -> Response:
    """The conversations of a user, each named after the other participant

    Key order of each item: `id`, `inserted_at`, `name`; `id` is a string. With
    `unread=true` each item also has `last_index` (the highest message index) and `unread`
    (messages above the caller's view horizon), after `name`; without it the answer is
    exactly the Node service's.
    """
    user_id = await identity.caller(request)
    unread = _query_flag(request, "unread")
    services = Services.of(request)
    async with db.unavailable_as_503():
        rows = await db.list_conversations(services.pool, user_id, unread=unread)
    return JSONResponse({"conversations": [dict(row) for row in rows]})


@operation(
    "sendMessage",
    "messages",
    Answer(
        201,
        "Stored; `index` is the next in the conversation. A repeat with the same "
        "Idempotency-Key and content gets the first answer again, byte for byte, and stores "
        "and publishes nothing.",
        schemas.MessageAnswer,
        links={
            "ListMessages": {
                "operationId": "listMessages",
                "parameters": {"conversation_id": "$request.path.conversation_id"},
            },
            "SetViewHorizon": {
                "operationId": "setViewHorizon",
                "parameters": {
                    "conversation_id": "$request.path.conversation_id",
                    "header.User-Id": "$request.header.User-Id",
                },
                "requestBody": {"index": "$response.body#/message/index"},
            },
        },
    ),
    parameters=[schemas.USER_ID, schemas.IDEMPOTENCY_KEY, schemas.REQUEST_ID],
    body=schemas.NewMessage,
    example={"content": "This is the first message"},
    errors=[
        Errors(
            400,
            "Malformed User-Id, path id or body, or a sender who is not a member.",
            [CONTENT_NOT_STRING, CONTENT_EMPTY, CONTENT_HAS_NUL, BODY_NOT_OBJECT, BODY_MISSING],
        ),
        Errors(
            422,
            "The Idempotency-Key was used for a message with other content.",
            [IDEMPOTENCY_KEY_REUSED],
        ),
    ],
    caller=True,
)
async def send_message(request: Request) -> Response:
    """Send a message into a conversation the user belongs to

    Key order of the answer's `message`: `id` (string), `content`, `index`, `user_id`,
    `username`, `conversation_id` (numbers), `inserted_at`. Publishes one `new_message` event
    and gives both members a `message` event on their streams (GET /events).
    """
    user_id = await identity.caller(request)
    conversation_id = _path_id(request, "conversation_id")
    key = idempotency_key(request)
    content = _content(await _json_object(request))
    services = Services.of(request)
    async with db.unavailable_as_503():
        row = await _send_once(services, conversation_id, user_id, content, key)
        if row is None:
            await _membership_error(services, conversation_id, user_id)
            raise BadRequest(NOT_IN_CONVERSATION.format(id=user_id))
    if not row["replayed"]:
        services.outbox_written()
        services.feeds_written(row["woken"])
    message = {key: row[key] for key in SENT_MESSAGE_KEYS}
    return JSONResponse({"message": message}, status_code=201)


async def _send_once(
    services: Services, conversation_id: int, user_id: int, content: str, key: str | None
) -> asyncpg.Record | None:
    """Send, once per idempotency key: the first request stores, a repeat gets the stored
    message.

    A request that raced the first one with the key waited for it inside the statement and
    stored nothing; the second statement reads what the first one stored.
    """
    ttl = services.settings.idempotency_key_ttl
    row = await db.send_message(services.pool, conversation_id, user_id, content, key, ttl)
    if row is None and key is not None:
        row = await db.stored_answer(services.pool, conversation_id, user_id, key, ttl)
    if row is not None and row["replayed"] and row["content"] != content:
        raise Unprocessable(IDEMPOTENCY_KEY_REUSED)
    return row


@operation(
    "listMessages",
    "messages",
    Answer(200, "A page of messages.", schemas.MessageList, headers=["Link"]),
    parameters=[
        schemas.READER_ID,
        schemas.REQUEST_ID,
        schemas.LIMIT,
        schemas.AFTER_INDEX,
        schemas.BEFORE_INDEX,
    ],
    errors=[
        Errors(
            400,
            "Malformed User-Id, path id or paging parameter, or a reader who is not a member.",
            [CURSORS_EXCLUSIVE],
        )
    ],
    caller=True,
)
async def list_messages(request: Request) -> Response:
    """Messages of a conversation, oldest first, a page at a time

    Key order of each message: `id`, `content`, `user_id`, `channel_id`, `index`,
    `inserted_at`, `username`; every id and `index` is a string. At most MESSAGES_PAGE_MAX
    (default 1000) messages; without parameters the first page. A full page carries a `Link`
    to the next one. Without User-Id anyone may read (the tutorial does); with one, only a
    member.
    """
    # `after_index` pages forward, `before_index` backward. A page this instance rendered
    # before is served again while the conversation's counter says it is current (see
    # page_cache); the reader and the conversation are checked on every read.
    reader_id = await identity.optional_caller(request)
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


@operation(
    "setViewHorizon",
    "messages",
    Answer(204, "Stored; no body."),
    parameters=[schemas.USER_ID, schemas.REQUEST_ID],
    body=schemas.ViewHorizon,
    example={"index": 2},
    errors=[
        Errors(
            400,
            "Malformed User-Id, path id or body, or a user who is not a member.",
            [INDEX_NOT_INTEGER, BODY_NOT_OBJECT, BODY_MISSING],
        )
    ],
    caller=True,
)
async def set_view_horizon(request: Request) -> Response:
    """Record the index of the last message the user has seen"""
    user_id = await identity.caller(request)
    conversation_id = _path_id(request, "conversation_id")
    index = integer((await _json_object(request)).get("index"), minimum=0)
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
