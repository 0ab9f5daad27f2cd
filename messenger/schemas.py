"""Every shape the HTTP API reads or writes, declared once.

The handlers build answers in the key order declared here, the SQL that renders a row picks
its columns from these keys, and `openapi.py` derives the document's JSON Schemas from these
types (`pydantic.TypeAdapter(...).json_schema()`). The key order and the JSON types are part of
the wire contract: the Node service's JavaScript clients compare with `===`, so ids are strings
in some answers and numbers in others, exactly as declared below.

Shapes are TypedDicts (from typing_extensions: pydantic needs it before Python 3.12). Answers
are closed (`extra="forbid"`: the service never sends another member); request bodies are open,
as express.json read them. A TypedDict's docstring would become its schema's description, so
these carry comments instead.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, with_config
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema
from typing_extensions import TypedDict

from messenger import errors

MAX_ID = 2**63 - 1  # ids are PostgreSQL bigints

# A positive id in canonical decimal (no sign, no leading zero, no spaces), as `User-Id`, the
# path and digit-string ids in bodies accept it; the parsers also check it is at most MAX_ID.
ID_DIGITS = "[1-9][0-9]{0,18}"
ID_PATTERN = f"^{ID_DIGITS}$"
INDEX_PATTERN = f"^(0|{ID_DIGITS})$"  # an index may be 0: nothing seen yet

# Timestamps: UTC to the second with `.000Z`. `inserted_at` columns hold UTC wall-clock time with
# whole seconds (timestamp(0)), so PostgreSQL renders them; SQL_TIMESTAMP.format(column=...).
TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.000Z$"
SQL_TIMESTAMP = """to_char({column}, 'YYYY-MM-DD"T"HH24:MI:SS".000Z"')"""


def _one_of(schema: dict[str, Any]) -> None:
    """An id given as a number or as text matches exactly one branch: say so (`oneOf`)."""
    schema["oneOf"] = schema.pop("anyOf")


IdText = Annotated[str, Field(pattern=ID_PATTERN, description="a bigint id as text")]
IdNumber = Annotated[int, Field(ge=1, le=MAX_ID)]
Timestamp = Annotated[
    str, Field(pattern=TIMESTAMP_PATTERN, description="UTC, to the second, `.000Z`")
]
IdParameter = Annotated[str, Field(pattern=ID_PATTERN)]
UserIdValue = Annotated[
    IdNumber | IdParameter,
    Field(
        description="A user id: a JSON integer, or the same as canonical decimal text.",
        json_schema_extra=_one_of,
    ),
]
IndexValue = Annotated[
    Annotated[int, Field(ge=0, le=MAX_ID)] | Annotated[str, Field(pattern=INDEX_PATTERN)],
    Field(
        description="A non-negative integer, or the same as decimal text.",
        json_schema_extra=_one_of,
    ),
]
_CLOSED = ConfigDict(extra="forbid")


# Request bodies.
class NewConversation(TypedDict):
    participant_ids: Annotated[
        list[UserIdValue],
        Field(min_length=2, max_length=2, description="Two distinct known users."),
    ]


class NewMessage(TypedDict):
    content: Annotated[
        str,
        Field(
            min_length=1,
            pattern="^[^\\u0000]*$",
            description="Any non-empty text without NUL (PostgreSQL cannot store it).",
        ),
    ]


class ViewHorizon(TypedDict):
    index: IndexValue


# The conversation as `POST /conversations` created it.
@with_config(_CLOSED)
class CreatedConversation(TypedDict):
    id: IdText
    inserted_at: Timestamp


# The conversation as `GET /conversations` lists it, named after the other participant.
@with_config(_CLOSED)
class ListedConversation(TypedDict):
    id: IdText
    inserted_at: Timestamp
    name: str


# `GET /conversations?unread=true`: also the highest index and the messages above the horizon.
@with_config(_CLOSED)
class UnreadConversation(TypedDict):
    id: IdText
    inserted_at: Timestamp
    name: str
    last_index: Annotated[int, Field(ge=0, le=MAX_ID)]
    unread: Annotated[int, Field(ge=0, le=MAX_ID)]


# The message as `POST .../messages` answers it: `index` and the ids but `id` are numbers.
@with_config(_CLOSED)
class SentMessage(TypedDict):
    id: IdText
    content: str
    index: IdNumber
    user_id: IdNumber
    username: str
    conversation_id: IdNumber
    inserted_at: Timestamp


# The message as `GET .../messages` lists it: every id and `index` a string, and `channel_id`.
@with_config(_CLOSED)
class ListedMessage(TypedDict):
    id: IdText
    content: str
    user_id: IdText
    channel_id: IdText
    index: IdText
    inserted_at: Timestamp
    username: str


CREATED_CONVERSATION_KEYS = tuple(CreatedConversation.__annotations__)
SENT_MESSAGE_KEYS = tuple(SentMessage.__annotations__)
LISTED_MESSAGE_KEYS = tuple(ListedMessage.__annotations__)
LISTED_CONVERSATION_KEYS = tuple(ListedConversation.__annotations__)


# Answers.
@with_config(_CLOSED)
class ConversationAnswer(TypedDict):
    conversation: CreatedConversation


@with_config(_CLOSED)
class ConversationList(TypedDict):
    conversations: list[ListedConversation] | list[UnreadConversation]


@with_config(_CLOSED)
class MessageAnswer(TypedDict):
    message: SentMessage


@with_config(_CLOSED)
class MessageList(TypedDict):
    messages: list[ListedMessage]


# `GET /health/ready`: `broker` is null when the relay is disabled, `registered` when
# CONSUL_SERVICE_NAME is unset.
class Readiness(TypedDict):
    status: Literal["ready", "unavailable"]
    database: bool
    pool: NotRequired[dict[str, Any]]
    broker: NotRequired[bool | None]
    outbox: NotRequired[dict[str, Any]]
    registered: NotRequired[bool | None]
    version: str


# Every error: `{"error": "<text>"}`, the texts in `errors.py`.
@with_config(_CLOSED)
class ErrorBody(TypedDict):
    error: str


@dataclass(frozen=True, slots=True)
class Parameter:
    """A request header, path or query parameter: its name, where it goes, its shape, and the
    400 texts a request gets for it."""

    name: str
    location: Literal["path", "header", "query"]
    shape: object
    description: str
    required: bool = False
    example: str | None = None
    errors: tuple[str, ...] = ()
    component: str | None = None  # a name to declare it under once, in the document's components


_HEADER_USER_ID = (
    "The calling user: a positive integer up to 2^63-1 in canonical decimal (no sign, no "
    "leading zero, no spaces). Authentication is the gateway's job."
)
CONVERSATION_ID = Parameter(
    "conversation_id",
    "path",
    IdParameter,
    "A conversation id: a positive integer up to 2^63-1.",
    required=True,
    example="1",
    component="ConversationId",
    # A conversation's answers all check the caller is in it.
    errors=(
        errors.INVALID_PATH_ID.replace("{name}", "conversation id"),
        errors.NOT_IN_CONVERSATION,
    ),
)
PATH_PARAMETERS = {"conversation_id": CONVERSATION_ID}  # by the name routes give them
_USER_ID_ERRORS = (errors.USER_ID_REQUIRED, errors.USER_ID_REPEATED)
USER_ID = Parameter(
    "User-Id", "header", IdParameter, _HEADER_USER_ID, True, "1", _USER_ID_ERRORS, "UserId"
)
READER_ID = Parameter(
    "User-Id",
    "header",
    IdParameter,
    "Optional reader: when given, must be a member.",
    example="1",
    errors=_USER_ID_ERRORS,
    component="ReaderId",
)
IDEMPOTENCY_KEY = Parameter(
    "Idempotency-Key",
    "header",
    Annotated[str, Field(pattern="^[!-~]{1,255}$")],
    "Optional, one per message, chosen by the client (a UUID is typical): 1-255 visible ASCII "
    "characters. Scoped to the sender and the conversation and kept for IDEMPOTENCY_KEY_TTL "
    "(24 h): a repeat with the same content gets the first answer again; requests with one "
    "key at the same time wait for the first and get its answer (no 409).",
    example="5f0c6e1e-7d4b-4d0e-9a51-2f8d9c1b7a10",
    errors=(errors.IDEMPOTENCY_KEY_INVALID, errors.IDEMPOTENCY_KEY_REPEATED),
    component="IdempotencyKey",
)
REQUEST_ID = Parameter(
    "X-Request-Id",
    "header",
    str,
    "Kept on the response when it is 1-128 of `A-Za-z0-9._:-`; otherwise the service makes one up.",
    component="X-Request-Id",
)
LIMIT = Parameter(
    "limit",
    "query",
    IdNumber,
    "Messages per page; above MESSAGES_PAGE_MAX counts as it.",
    errors=(errors.QUERY_NOT_INTEGER,),
)
AFTER_INDEX = Parameter(
    "after_index",
    "query",
    Annotated[int, Field(ge=0, le=MAX_ID)],
    "Page forward: messages with a larger index.",
    errors=(errors.QUERY_NOT_INTEGER,),
)
BEFORE_INDEX = Parameter(
    "before_index",
    "query",
    IdNumber,
    "Page backward: the messages just below this index, oldest first. Not together with "
    "after_index.",
    errors=(errors.QUERY_NOT_INTEGER,),
)

UNREAD = Parameter(
    "unread",
    "query",
    Literal["true", "false"],
    "`true`: each conversation also has `last_index` (its highest message index) and `unread` "
    "(messages above the caller's view horizon), after `name`.",
    errors=(errors.QUERY_NOT_BOOLEAN,),
)
_EVENT_ID = Annotated[str, Field(max_length=200)]
LAST_EVENT_ID = Parameter(
    "Last-Event-ID",
    "header",
    _EVENT_ID,
    "The id of the last event the client got (browsers send it when they reconnect): the "
    "stream goes on right after it, on any instance. Wins over `last_event_id`.",
    example="1-42",
    errors=(errors.EVENT_ID_INVALID, errors.EVENT_ID_FOREIGN, errors.EVENT_ID_UNKNOWN),
)
LAST_EVENT_ID_QUERY = Parameter(
    "last_event_id",
    "query",
    _EVENT_ID,
    "As `Last-Event-ID`, for clients that cannot set headers.",
    errors=(errors.EVENT_ID_INVALID, errors.EVENT_ID_FOREIGN, errors.EVENT_ID_UNKNOWN),
)

# Response headers.
HEADERS: dict[str, dict[str, Any]] = {
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
    "Cache-Control": {"required": True, "schema": {"type": "string", "const": "no-cache"}},
    "X-Accel-Buffering": {
        "description": "Tells nginx not to buffer the stream.",
        "required": True,
        "schema": {"type": "string", "const": "no"},
    },
    "WWW-Authenticate": {
        "description": 'RFC 6750: `Bearer realm="messenger"`, plus `error="invalid_token"` when '
        "a token was sent.",
        "required": True,
        "schema": {
            "type": "string",
            "pattern": '^Bearer realm="messenger"(, error="invalid_token")?$',
        },
    },
}


class _Generator(GenerateJsonSchema):
    """JSON Schema as the document writes it: no titles, `null` as a second type, no redundant
    keywords (a literal's type, an open object's `additionalProperties: true`)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def typed_dict_schema(self, schema: core_schema.TypedDictSchema) -> JsonSchemaValue:
        found = super().typed_dict_schema(schema)
        found.pop("title", None)
        return found

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        inner = self.generate_inner(schema["schema"])
        if inner.keys() == {"type"}:
            return {"type": [inner["type"], "null"]}
        return super().nullable_schema(schema)

    def literal_schema(self, schema: core_schema.LiteralSchema) -> JsonSchemaValue:
        found = super().literal_schema(schema)
        found.pop("type", None)
        return found

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        found = super().dict_schema(schema)
        if found.get("additionalProperties") is True:
            del found["additionalProperties"]
        return found


def json_schema(shape: Any, definitions: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a shape; the shapes it nests go to `definitions` by name,
    referred to as OpenAPI components."""
    found = TypeAdapter(shape).json_schema(
        ref_template="#/components/schemas/{model}", schema_generator=_Generator
    )
    definitions.update(found.pop("$defs", {}))
    return found
