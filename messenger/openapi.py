"""The OpenAPI 3.1 document of the HTTP API, built from the code's own constants.

One Python source rather than a hand-written YAML file: the error texts come from
`messenger.errors` (fixed texts as enums, templates such as "... with id {id}" as patterns),
the id limits from the parsers, so the document cannot drift from what the service answers.
`GET /openapi.json` serves it, rendered once; `tests/test_openapi.py` checks that its paths
are exactly the app's routes and that it is valid OpenAPI 3.1, and `tests/test_fuzz.py`
fuzzes the app against it.
"""

import functools
import string
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from messenger import __version__, errors
from messenger.handlers import MAX_ID

Schema = dict[str, Any]

# A positive id as canonical decimal text: what `User-Id`, path ids and digit-string ids accept.
ID_TEXT = r"^[1-9][0-9]{0,18}$"
TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.000Z$"

# What a `{field}` of an error template stands for, as a regular expression.
_FIELDS = {"id": "[0-9]+", "request_id": "[A-Za-z0-9._:-]+", "position": "[0-9]+"}
_EXAMPLE_VALUES = {"id": 7, "request_id": "4f1c", "position": 3, "reason": "...", "value": "x"}
_REGEX_SPECIALS = frozenset(r".^$*+?()[]{}|\/")


def _pattern(template: str) -> str:
    """A regular expression matching every text `template.format(...)` can produce."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append("".join(f"\\{c}" if c in _REGEX_SPECIALS else c for c in literal))
        if field is not None:
            parts.append(_FIELDS.get(field, ".*"))
    return "^" + "".join(parts) + "$"


def _texts(*texts: str) -> Schema:
    """The schema of an `error` member that is one of `texts` (fixed texts or templates)."""
    fixed = [text for text in texts if "{" not in text]
    templates = [text for text in texts if "{" in text]
    choices: list[Schema] = [{"pattern": _pattern(text)} for text in templates]
    if fixed:
        choices.insert(0, {"enum": fixed})
    return {"type": "string", **(choices[0] if len(choices) == 1 else {"anyOf": choices})}


def _headers(extra: dict[str, Any] | None = None) -> Schema:
    """Response headers: X-Request-Id on every response, and `extra`."""
    return {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, **(extra or {})}


def _error(description: str, *texts: str, headers: dict[str, Any] | None = None) -> Schema:
    return {
        "description": description,
        "headers": _headers(headers),
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": _texts(*texts)},
                    "additionalProperties": False,
                },
                "example": {"error": texts[0].format(**_EXAMPLE_VALUES)},
            }
        },
    }


def _json(description: str, schema: Schema, headers: dict[str, Any] | None = None) -> Schema:
    return {
        "description": description,
        "headers": _headers(headers),
        "content": {"application/json": {"schema": schema}},
    }


def _json_body(schema: str, example: object) -> Schema:
    """A required JSON request body of a schema in components, with an example."""
    content = {"schema": _ref("schemas", schema), "example": example}
    return {"required": True, "content": {"application/json": content}}


def _object(properties: dict[str, Schema]) -> Schema:
    """A JSON object with exactly these members (the service always sends all of them)."""
    return {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
    }


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


# Every error an operation can answer beside its own 400 texts.
_BAD_USER_ID = (errors.USER_ID_REQUIRED,)
_BAD_BODY = (errors.BODY_NOT_UTF8, errors.BODY_NOT_JSON)
_COMMON = {
    "500": _ref("responses", "InternalError"),
    "503": _ref("responses", "DatabaseUnavailable"),
}
_WITH_BODY = {"413": _ref("responses", "BodyTooLarge"), **_COMMON}
_IN_CONVERSATION = {"404": _ref("responses", "ConversationNotFound")}
_CONVERSATION_400 = (
    errors.INVALID_PATH_ID.replace("{name}", "conversation id"),
    errors.NOT_IN_CONVERSATION,
)

ID_STRING = {"type": "string", "pattern": r"^[1-9][0-9]*$", "description": "a bigint id as text"}
ID_NUMBER = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
TIME = {"type": "string", "pattern": TIMESTAMP, "description": "UTC, to the second, `.000Z`"}

_CONVERSATION = {"id": ID_STRING, "inserted_at": TIME, "name": {"type": "string"}}

_EVENT_STREAM = """\
Server-sent events (`text/event-stream`) of what happens in the caller's conversations, \
until the client goes or the instance shuts down. The stream opens with `retry: <ms>` and \
`id: <id>` (no data). Each event has an `id:`, an `event:` name and one `data:` line of \
compact JSON:

- `message`: `{"conversation_id":"7","message":{...}}`, the message exactly as \
`GET /conversations/7/messages` lists it;
- `conversation`: `{"conversation":{"id":"7","inserted_at":"...","name":"..."}}`, exactly as \
`GET /conversations` lists it to the caller;
- `horizon`: `{"conversation_id":"7","user_id":"2","index":"5"}`;
- `reset` (data `{}`): events after the resumed id are no longer kept (FEED_RETENTION): \
reload through the REST routes; live events follow.

A `: ping` comment follows SSE_HEARTBEAT_INTERVAL seconds (15) of quiet. Resume on any \
instance with `Last-Event-ID: <id>` (or `last_event_id=<id>`; the header wins): every event \
after that one follows, none missing, none repeated; per conversation, messages come in index \
order.
"""

_PATHS: dict[str, dict[str, Any]] = {
    "/health": {
        "get": {
            "operationId": "health",
            "summary": "Liveness: answers OK, checks no dependency",
            "description": "As the Node service answered it; the Consul check calls it, so a "
            "database blip does not make every instance deregister at once.",
            "tags": ["operations"],
            "responses": {
                "200": {
                    "description": "The process serves HTTP.",
                    "headers": _headers(),
                    "content": {"text/plain": {"schema": {"const": "OK"}}},
                }
            },
        }
    },
    "/health/ready": {
        "get": {
            "operationId": "ready",
            "summary": "Readiness: whether this instance should get traffic",
            "description": "503 while PostgreSQL does not answer within 2 s or the instance "
            "is shutting down. A broker outage does not make it unready: events wait in the "
            "outbox. `broker` is null when the relay is disabled, `registered` is null when "
            "CONSUL_SERVICE_NAME is unset.",
            "tags": ["operations"],
            "responses": {
                "200": _json("Ready.", _ref("schemas", "Readiness")),
                "503": _json("Not ready; the body says why.", _ref("schemas", "Readiness")),
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics of this instance",
            "description": "The text exposition format, or OpenMetrics when the Accept header "
            "asks for application/openmetrics-text.",
            "tags": ["operations"],
            "responses": {
                "200": {
                    "description": "The exposition.",
                    "headers": _headers(),
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "application/openmetrics-text": {"schema": {"type": "string"}},
                    },
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["operations"],
            "responses": {"200": _json("The OpenAPI 3.1 document.", {"type": "object"})},
        }
    },
    "/conversations": {
        "post": {
            "operationId": "createConversation",
            "summary": "Start a conversation between two users",
            "description": "Key order of the answer: `conversation`: `id`, `inserted_at`. "
            "The body is read as JSON only with `Content-Type: application/json`, as the "
            "Node service's express.json did: any other body counts as `{}`.",
            "tags": ["conversations"],
            "requestBody": _json_body("NewConversation", {"participant_ids": [1, 2]}),
            "responses": {
                "201": {
                    **_json(
                        "Created. `id` is a string.",
                        _object({"conversation": _object({"id": ID_STRING, "inserted_at": TIME})}),
                    ),
                    "links": {
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
                },
                "400": _error(
                    "Not two distinct known users, the pair already has a conversation, "
                    "or a malformed body.",
                    errors.NEED_TWO_USERS,
                    errors.UNKNOWN_PARTICIPANTS,
                    errors.PARTICIPANTS_NOT_LIST,
                    errors.PARTICIPANT_NOT_ID,
                    errors.CONVERSATION_EXISTS,
                    *_BAD_BODY,
                ),
                **_WITH_BODY,
            },
        },
        "get": {
            "operationId": "listConversations",
            "summary": "The conversations of a user, each named after the other participant",
            "description": "Key order of each item: `id`, `inserted_at`, `name`; `id` is a "
            "string. With `unread=true` each item also has `last_index` and `unread`, after "
            "`name`; without it the answer is exactly the Node service's.",
            "tags": ["conversations"],
            "parameters": [
                _ref("parameters", "UserId"),
                {
                    "name": "unread",
                    "in": "query",
                    "required": False,
                    "description": "`true`: add `last_index` (the highest message index) and "
                    "`unread` (messages above the caller's view horizon) to each item.",
                    "schema": {"type": "string", "enum": ["true", "false"]},
                },
                _ref("parameters", "X-Request-Id"),
            ],
            "responses": {
                "200": _json(
                    "The user's conversations, oldest first.",
                    _object(
                        {
                            "conversations": {
                                "type": "array",
                                "items": {
                                    "oneOf": [
                                        _object(_CONVERSATION),
                                        _object(
                                            {
                                                **_CONVERSATION,
                                                "last_index": {"type": "integer", "minimum": 0},
                                                "unread": {"type": "integer", "minimum": 0},
                                            }
                                        ),
                                    ]
                                },
                            }
                        }
                    ),
                ),
                "400": _error(
                    "User-Id missing or not a positive integer, or `unread` neither true nor "
                    "false.",
                    *_BAD_USER_ID,
                    errors.QUERY_NOT_BOOLEAN,
                ),
                **_COMMON,
            },
        },
    },
    "/conversations/{conversation_id}/messages": {
        "parameters": [_ref("parameters", "ConversationId")],
        "post": {
            "operationId": "sendMessage",
            "summary": "Send a message into a conversation the user belongs to",
            "description": "Key order of the answer's `message`: `id` (string), `content`, "
            "`index`, `user_id`, `username`, `conversation_id` (numbers), `inserted_at`. "
            "Publishes one `new_message` event.",
            "tags": ["messages"],
            "parameters": [
                _ref("parameters", "UserId"),
                _ref("parameters", "IdempotencyKey"),
                _ref("parameters", "X-Request-Id"),
            ],
            "requestBody": _json_body("NewMessage", {"content": "This is the first message"}),
            "responses": {
                "201": {
                    **_json(
                        "Stored; `index` is the next in the conversation. A repeat with the "
                        "same Idempotency-Key and content gets the first answer again, byte "
                        "for byte, and stores and publishes nothing.",
                        _object(
                            {
                                "message": _object(
                                    {
                                        "id": ID_STRING,
                                        "content": {"type": "string"},
                                        "index": ID_NUMBER,
                                        "user_id": ID_NUMBER,
                                        "username": {"type": "string"},
                                        "conversation_id": ID_NUMBER,
                                        "inserted_at": TIME,
                                    }
                                )
                            }
                        ),
                    ),
                    "links": {
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
                },
                "400": _error(
                    "Malformed User-Id, path id or body, or a sender who is not a member.",
                    *_BAD_USER_ID,
                    *_CONVERSATION_400,
                    errors.CONTENT_NOT_STRING,
                    errors.CONTENT_EMPTY,
                    errors.CONTENT_HAS_NUL,
                    errors.BODY_NOT_OBJECT,
                    errors.BODY_MISSING,
                    *_BAD_BODY,
                    errors.IDEMPOTENCY_KEY_INVALID,
                    errors.IDEMPOTENCY_KEY_REPEATED,
                ),
                **_IN_CONVERSATION,
                "422": _error(
                    "The Idempotency-Key was used for a message with other content.",
                    errors.IDEMPOTENCY_KEY_REUSED,
                ),
                **_WITH_BODY,
            },
        },
        "get": {
            "operationId": "listMessages",
            "summary": "Messages of a conversation, oldest first, a page at a time",
            "description": "Key order of each message: `id`, `content`, `user_id`, "
            "`channel_id`, `index`, `inserted_at`, `username`; every id and `index` is a "
            "string. At most MESSAGES_PAGE_MAX (default 1000) messages; without parameters "
            "the first page. A full page carries a `Link` to the next one. Without User-Id "
            "anyone may read (the tutorial does); with one, only a member.",
            "tags": ["messages"],
            "parameters": [
                _ref("parameters", "ReaderId"),
                _ref("parameters", "X-Request-Id"),
                {
                    "name": "limit",
                    "in": "query",
                    "description": "Messages per page; above MESSAGES_PAGE_MAX counts as it.",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                },
                {
                    "name": "after_index",
                    "in": "query",
                    "description": "Page forward: messages with a larger index.",
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                },
                {
                    "name": "before_index",
                    "in": "query",
                    "description": "Page backward: the messages just below this index, "
                    "oldest first. Not together with after_index.",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                },
            ],
            "responses": {
                "200": _json(
                    "A page of messages.",
                    _object(
                        {
                            "messages": {
                                "type": "array",
                                "items": _object(
                                    {
                                        "id": ID_STRING,
                                        "content": {"type": "string"},
                                        "user_id": ID_STRING,
                                        "channel_id": ID_STRING,
                                        "index": ID_STRING,
                                        "inserted_at": TIME,
                                        "username": {"type": "string"},
                                    }
                                ),
                            }
                        }
                    ),
                    headers={"Link": _ref("headers", "Link")},
                ),
                "400": _error(
                    "Malformed User-Id, path id or paging parameter, or a reader who is not "
                    "a member.",
                    *_BAD_USER_ID,
                    *_CONVERSATION_400,
                    errors.QUERY_NOT_INTEGER,
                    errors.CURSORS_EXCLUSIVE,
                ),
                **_IN_CONVERSATION,
                **_COMMON,
            },
        },
    },
    "/conversations/{conversation_id}/view_horizon": {
        "parameters": [_ref("parameters", "ConversationId")],
        "post": {
            "operationId": "setViewHorizon",
            "summary": "Record the index of the last message the user has seen",
            "tags": ["messages"],
            "parameters": [_ref("parameters", "UserId"), _ref("parameters", "X-Request-Id")],
            "requestBody": _json_body("ViewHorizon", {"index": 2}),
            "responses": {
                "204": {
                    "description": "Stored; no body.",
                    "headers": _headers(),
                },
                "400": _error(
                    "Malformed User-Id, path id or body, or a user who is not a member.",
                    *_BAD_USER_ID,
                    *_CONVERSATION_400,
                    errors.INDEX_NOT_INTEGER,
                    errors.BODY_NOT_OBJECT,
                    errors.BODY_MISSING,
                    *_BAD_BODY,
                ),
                **_IN_CONVERSATION,
                **_WITH_BODY,
            },
        },
    },
    "/events": {
        "get": {
            "operationId": "streamEvents",
            "summary": "The caller's live event stream (server-sent events), resumable anywhere",
            "description": _EVENT_STREAM,
            "tags": ["events"],
            "parameters": [
                _ref("parameters", "UserId"),
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "description": "The id of the last event the client got (browsers send "
                    "it when they reconnect): the stream continues after it.",
                    "schema": {"type": "string", "maxLength": 200},
                    "example": "1-42",
                },
                {
                    "name": "last_event_id",
                    "in": "query",
                    "required": False,
                    "description": "As `Last-Event-ID`, for clients that cannot set headers.",
                    "schema": {"type": "string", "maxLength": 200},
                },
                _ref("parameters", "X-Request-Id"),
            ],
            "responses": {
                "200": {
                    "description": "The stream: it ends only when the client or the instance does.",
                    "headers": _headers(
                        {
                            "Cache-Control": {"schema": {"type": "string", "const": "no-cache"}},
                            "X-Accel-Buffering": {"schema": {"type": "string", "const": "no"}},
                        }
                    ),
                    "content": {
                        "text/event-stream": {
                            "schema": {"type": "string"},
                            "example": "retry: 2000\nid: 1-41\n\nid: 1-42\nevent: horizon\n"
                            'data: {"conversation_id":"7","user_id":"2","index":"5"}\n\n',
                        }
                    },
                },
                "400": _error(
                    "User-Id missing or malformed, or a Last-Event-ID that is malformed, "
                    "another user's, or ahead of the caller's stream.",
                    *_BAD_USER_ID,
                    errors.EVENT_ID_INVALID,
                    errors.EVENT_ID_FOREIGN,
                    errors.EVENT_ID_UNKNOWN,
                ),
                "404": _error("No such user.", errors.USER_NOT_FOUND),
                "500": _ref("responses", "InternalError"),
                "503": _ref("responses", "StreamUnavailable"),
            },
        },
    },
}

_ID_VALUE = {
    "description": "A user id: a JSON integer, or the same as canonical decimal text.",
    "oneOf": [ID_NUMBER, {"type": "string", "pattern": ID_TEXT}],
}

_COMPONENTS: dict[str, Any] = {
    "schemas": {
        "NewConversation": {
            "type": "object",
            "required": ["participant_ids"],
            "properties": {
                "participant_ids": {
                    "type": "array",
                    "description": "Two distinct known users.",
                    "minItems": 2,
                    "maxItems": 2,
                    "items": _ID_VALUE,
                }
            },
        },
        "NewMessage": {
            "type": "object",
            "required": ["content"],
            "properties": {
                "content": {
                    "type": "string",
                    "minLength": 1,
                    "pattern": "^[^\\u0000]*$",
                    "description": "Any non-empty text without NUL (PostgreSQL cannot store it).",
                }
            },
        },
        "ViewHorizon": {
            "type": "object",
            "required": ["index"],
            "properties": {
                "index": {
                    "description": "A non-negative integer, or the same as decimal text.",
                    "oneOf": [
                        {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                        {"type": "string", "pattern": r"^(0|[1-9][0-9]{0,18})$"},
                    ],
                }
            },
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "database", "version"],
            "properties": {
                "status": {"enum": ["ready", "unavailable"]},
                "database": {"type": "boolean"},
                "broker": {"type": ["boolean", "null"]},
                "outbox": {"type": "object"},
                "registered": {"type": ["boolean", "null"]},
                "version": {"type": "string"},
            },
        },
    },
    "parameters": {
        "ConversationId": {
            "name": "conversation_id",
            "in": "path",
            "required": True,
            "description": "A conversation id: a positive integer up to 2^63-1.",
            "schema": {"type": "string", "pattern": ID_TEXT},
            "example": "1",
        },
        "UserId": {
            "name": "User-Id",
            "in": "header",
            "required": True,
            "description": "The calling user: a positive integer up to 2^63-1 in canonical "
            "decimal (no sign, no leading zero, no spaces). Authentication is the gateway's job.",
            "schema": {"type": "string", "pattern": ID_TEXT},
            "example": "1",
        },
        "ReaderId": {
            "name": "User-Id",
            "in": "header",
            "required": False,
            "description": "Optional reader: when given, must be a member.",
            "schema": {"type": "string", "pattern": ID_TEXT},
            "example": "1",
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Optional, one per message, chosen by the client (a UUID is "
            "typical): 1-255 visible ASCII characters. Scoped to the sender and the "
            "conversation and kept for IDEMPOTENCY_KEY_TTL (24 h): a repeat with the same "
            "content gets the first answer again; requests with one key at the same time wait "
            "for the first and get its answer (no 409).",
            "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
            "example": "5f0c6e1e-7d4b-4d0e-9a51-2f8d9c1b7a10",
        },
        "X-Request-Id": {
            "name": "X-Request-Id",
            "in": "header",
            "required": False,
            "description": "Kept on the response when it is 1-128 of `A-Za-z0-9._:-`; "
            "otherwise the service makes one up.",
            "schema": {"type": "string"},
        },
    },
    "headers": {
        "X-Request-Id": {
            "description": "The request's id, in the access log too.",
            "required": True,
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
        },
        "Link": {
            "description": 'On a full page: `<path?after_index=I&limit=N>; rel="next"` '
            '(or `before_index`, `rel="prev"`).',
            "schema": {"type": "string", "pattern": '^<[^>]+>; rel="(next|prev)"$'},
        },
        "Retry-After": {"description": "Seconds.", "schema": {"type": "string"}},
    },
    "responses": {
        "ConversationNotFound": _error("No such conversation.", errors.CONVERSATION_NOT_FOUND),
        "BodyTooLarge": _error(
            "Body over JSON_BODY_LIMIT (default 100kb), refused before any handler runs.",
            errors.BODY_TOO_LARGE,
        ),
        "DatabaseUnavailable": _error(
            "PostgreSQL cannot be reached right now, or a bounded wait for it (a pool "
            "connection, a lock, a statement) ran out.",
            errors.DATABASE_UNAVAILABLE,
            errors.DATABASE_BUSY,
            headers={"Retry-After": _ref("headers", "Retry-After")},
        ),
        "StreamUnavailable": _error(
            "This instance serves SSE_MAX_STREAMS streams, or PostgreSQL is unavailable or "
            "busy: try again (through the load balancer, another instance).",
            errors.STREAMS_FULL,
            errors.DATABASE_UNAVAILABLE,
            errors.DATABASE_BUSY,
            headers={"Retry-After": _ref("headers", "Retry-After")},
        ),
        "InternalError": _error(
            "A bug: logged with the request id, which is all the body names.",
            errors.INTERNAL_ERROR,
        ),
    },
}

DESCRIPTION = """\
A chat service: conversations between two users and their messages. Wire-compatible with the \
Node.js service it replaces: routes, statuses, JSON shapes, types and key order, error texts.

- Every response is JSON except `GET /health` and `GET /metrics`; every error is \
`{"error": "<text>"}`. Unknown routes answer 404 `{"error": "Not found"}`, a wrong method 405 \
`{"error": "Method not allowed"}` with `Allow`.
- Timestamps are UTC, `2026-11-24T10:32:39.000Z`.
- CORS: any origin; preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered for \
every path; `X-Request-Id` and `Link` are exposed.
- Request bodies are read as JSON only with `Content-Type: application/json`; any body is \
refused with 413 above JSON_BODY_LIMIT.
"""


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document as a dict (a new one each call: callers may change it)."""
    return orjson.loads(render())  # type: ignore[no-any-return]


@functools.cache
def render() -> bytes:
    """The document as JSON bytes, built once per process."""
    return orjson.dumps(
        {
            "openapi": "3.1.0",
            "info": {"title": "messenger", "version": __version__, "description": DESCRIPTION},
            "tags": [
                {"name": "conversations"},
                {"name": "messages"},
                {"name": "events", "description": "Live delivery (server-sent events)."},
                {"name": "operations", "description": "Probes, metrics, this document."},
            ],
            "paths": _PATHS,
            "components": _COMPONENTS,
        }
    )


async def serve(request: Request) -> Response:
    """`GET /openapi.json`."""
    return Response(render(), media_type="application/json")
