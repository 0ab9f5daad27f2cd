"""Domain errors and their one conversion to HTTP responses.

    MessengerError               an answer for the client: status + text, never internals
    ├── BadRequest (400)         malformed input or a broken rule (texts kept from Node)
    ├── Unauthorized (401)       AUTH_MODE=jwt: no bearer token, or one that does not verify;
    │                            sent with WWW-Authenticate (RFC 6750)
    ├── Forbidden (403)          AUTH_MODE=jwt: a verified caller asking for what is not theirs
    ├── NotFound (404)           an unknown conversation, or an unknown user opening a stream
    ├── UnsupportedMediaType (415)  a body in a coding or charset the service cannot read
    ├── Unprocessable (422)      a well-formed request that contradicts an earlier one
    └── Unavailable (503)        PostgreSQL cannot be reached, or a bounded wait for it ran out
                                 (pool, lock, statement timeout), the token signing keys
                                 cannot be fetched, or the instance serves SSE_MAX_STREAMS
                                 streams; sent with Retry-After

Anything else that escapes a handler is a bug: it is logged with the request id and the
client gets a 500 JSON body naming only that id.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from messenger.responses import JSONResponse

# Texts the Node service's clients know; tests assert on these constants.
USER_ID_REQUIRED = "Please specify a user id by adding the User-Id header."
NEED_TWO_USERS = "Conversation must have 2 unique users"
UNKNOWN_PARTICIPANTS = "participant_ids provided did not match to two known participants"
CONVERSATION_EXISTS = "A conversation between these two users already exists with id {id}"
NOT_IN_CONVERSATION = "User with id {id} is not in conversation"
BODY_TOO_LARGE = "request entity too large"

# Texts for what the Node service answered with a stack trace.
CONVERSATION_NOT_FOUND = "Conversation with id {id} does not exist"
INVALID_PATH_ID = "{name} in the path must be a positive integer, got {value!r}"
BODY_NOT_UTF8 = "Request body is not valid UTF-8 (invalid byte at position {position})"
BODY_NOT_JSON = "Request body is not valid JSON: {reason}"
BODY_NOT_OBJECT = "Request body must be a JSON object"
BODY_NOT_IN_CHARSET = "Request body is not valid {charset} (invalid byte at position {position})"
BODY_NOT_DECODABLE = "Request body is not valid {encoding} data"
BODY_TIMEOUT = "request body not received in time"
# body-parser's texts for what express.json could not read.
CONTENT_ENCODING_UNSUPPORTED = 'unsupported content encoding "{encoding}"'
CHARSET_UNSUPPORTED = 'unsupported charset "{charset}"'
BODY_MISSING = "Request body must be JSON sent with Content-Type: application/json"
PARTICIPANTS_NOT_LIST = "participant_ids must be an array of two user ids"
PARTICIPANT_NOT_ID = "participant_ids must contain positive integer user ids"
CONTENT_NOT_STRING = "content must be a string"
CONTENT_EMPTY = "content must not be empty"
CONTENT_HAS_NUL = (
    "content must not contain the NUL character (\\u0000): PostgreSQL text cannot store it"
)
INDEX_NOT_INTEGER = "index must be a non-negative integer"
QUERY_NOT_INTEGER = "{name} must be a positive integer"
QUERY_NOT_BOOLEAN = "{name} must be true or false"
CURSORS_EXCLUSIVE = "after_index and before_index cannot be used together"
NOT_FOUND = "Not found"
METHOD_NOT_ALLOWED = "Method not allowed"
USER_ID_REPEATED = "User-Id header must be given once (got different values)"
IDEMPOTENCY_KEY_INVALID = "Idempotency-Key header must be 1 to 255 visible ASCII characters"
IDEMPOTENCY_KEY_REPEATED = "Idempotency-Key header must be given once (got different values)"
IDEMPOTENCY_KEY_REUSED = (
    "Idempotency-Key was already used for a message with other content in this conversation;"
    " use a new key for a new message"
)
# AUTH_MODE=jwt (401, 403, 503): they name the problem, never the token's content.
TOKEN_REQUIRED = "Authorization: Bearer <token> header is required"
TOKEN_NOT_BEARER = "Authorization header must use the Bearer scheme: Authorization: Bearer <token>"
TOKEN_REPEATED = "Authorization header must be given once"
TOKEN_TOO_LARGE = "Bearer token is too large (at most {limit} bytes)"
TOKEN_MALFORMED = "Bearer token is not a well-formed signed JWT"
TOKEN_ALGORITHM = "Bearer token's signature algorithm is not accepted (accepted: {accepted})"
TOKEN_NO_KEY_ID = "Bearer token's header has no key id (kid)"
TOKEN_UNKNOWN_KEY = "Bearer token is signed by a key the key set does not publish"
TOKEN_BAD_SIGNATURE = "Bearer token's signature does not verify"
TOKEN_EXPIRED = "Bearer token has expired"
TOKEN_NOT_YET_VALID = "Bearer token is not valid yet (nbf or iat is in the future)"
TOKEN_WRONG_ISSUER = "Bearer token was issued by another issuer (iss)"
TOKEN_WRONG_AUDIENCE = "Bearer token is not meant for this service (aud)"
TOKEN_CLAIM_MISSING = "Bearer token lacks the {claim} claim"
TOKEN_CLAIM_INVALID = "Bearer token's {claim} claim is malformed"
TOKEN_USER_INVALID = "Bearer token's {claim} claim must be a positive integer user id"
USER_ID_NOT_TOKEN_USER = "User-Id header must name the same user as the bearer token"
CALLER_NOT_PARTICIPANT = "The caller must be one of the participants of a new conversation"
KEYS_UNAVAILABLE = "The token signing keys cannot be fetched right now, try again shortly"
USER_NOT_FOUND = "User with id {id} does not exist"
EVENT_ID_INVALID = (
    "Last-Event-ID must be the id of an event of this stream (<user id>-<position>), got {value!r}"
)
EVENT_ID_FOREIGN = "Last-Event-ID {value!r} belongs to another user's stream"
EVENT_ID_UNKNOWN = "Last-Event-ID {value!r} names a position this user's stream has not reached"
STREAMS_FULL = (
    "This instance serves as many event streams as SSE_MAX_STREAMS allows, try again shortly"
)
DATABASE_UNAVAILABLE = "The database is unavailable, try again shortly"
DATABASE_BUSY = "The database is busy, try again shortly"
INTERNAL_ERROR = "Internal server error (request id {request_id})"


@dataclass(frozen=True, slots=True)
class Errors:
    """An error status an operation answers, what it means, and the texts it can carry
    (the OpenAPI document's example is the first)."""

    status: int
    description: str
    texts: Sequence[str]


# Error answers many operations share: the OpenAPI document names them once, in components.
SHARED_ERRORS = {
    "ConversationNotFound": Errors(404, "No such conversation.", [CONVERSATION_NOT_FOUND]),
    "BodyTooLarge": Errors(
        413,
        "Body over JSON_BODY_LIMIT (default 100kb; the inflated size of a gzip or deflate"
        " body), refused before any handler runs.",
        [BODY_TOO_LARGE],
    ),
    "UnsupportedBody": Errors(
        415,
        "A Content-Encoding other than gzip, deflate or identity, or a charset outside the UTF"
        " family, as express.json answered.",
        [CONTENT_ENCODING_UNSUPPORTED, CHARSET_UNSUPPORTED],
    ),
    "BodyTimeout": Errors(
        408,
        "The body did not arrive within HTTP_BODY_TIMEOUT; the connection is closed.",
        [BODY_TIMEOUT],
    ),
    "DatabaseUnavailable": Errors(
        503,
        "PostgreSQL cannot be reached right now, or a bounded wait for it (a pool connection, "
        "a lock, a statement) ran out; with AUTH_MODE=jwt also: the token signing keys cannot "
        "be fetched and the token needs a key not cached.",
        [DATABASE_UNAVAILABLE, DATABASE_BUSY, KEYS_UNAVAILABLE],
    ),
    "StreamUnavailable": Errors(
        503,
        "GET /events: this instance serves SSE_MAX_STREAMS streams (through the load balancer, "
        "the retry reaches another one), or PostgreSQL is unavailable or busy, or (AUTH_MODE=jwt) "
        "the token signing keys cannot be fetched.",
        [STREAMS_FULL, DATABASE_UNAVAILABLE, DATABASE_BUSY, KEYS_UNAVAILABLE],
    ),
    "Unauthorized": Errors(
        401,
        "AUTH_MODE=jwt only: no bearer token, or one that does not verify; the text names the "
        "problem, never the token.",
        [
            TOKEN_REQUIRED,
            TOKEN_NOT_BEARER,
            TOKEN_REPEATED,
            TOKEN_TOO_LARGE,
            TOKEN_MALFORMED,
            TOKEN_ALGORITHM,
            TOKEN_NO_KEY_ID,
            TOKEN_UNKNOWN_KEY,
            TOKEN_BAD_SIGNATURE,
            TOKEN_EXPIRED,
            TOKEN_NOT_YET_VALID,
            TOKEN_WRONG_ISSUER,
            TOKEN_WRONG_AUDIENCE,
            TOKEN_CLAIM_MISSING,
            TOKEN_CLAIM_INVALID,
            TOKEN_USER_INVALID,
        ],
    ),
    "Forbidden": Errors(
        403,
        "AUTH_MODE=jwt only: a User-Id header naming another user than the token, or (POST "
        "/conversations) a caller who is not one of the participants.",
        [USER_ID_NOT_TOKEN_USER, CALLER_NOT_PARTICIPANT],
    ),
    "InternalError": Errors(
        500,
        "A bug: logged with the request id, which is all the body names.",
        [INTERNAL_ERROR],
    ),
}


class MessengerError(Exception):
    status_code = 500

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class BadRequest(MessengerError):
    status_code = 400


class Unauthorized(MessengerError):
    """`token_given`: a token came and did not verify (RFC 6750's `invalid_token`), rather
    than none at all."""

    status_code = 401

    def __init__(self, text: str, *, token_given: bool = True) -> None:
        super().__init__(text)
        self.token_given = token_given

    @property
    def challenge(self) -> str:
        if self.token_given:
            return 'Bearer realm="messenger", error="invalid_token"'
        return 'Bearer realm="messenger"'


class Forbidden(MessengerError):
    status_code = 403


class NotFound(MessengerError):
    status_code = 404


class UnsupportedMediaType(MessengerError):
    status_code = 415


class Unprocessable(MessengerError):
    status_code = 422


class Unavailable(MessengerError):
    status_code = 503

    def __init__(self, text: str, *, retry_after: int = 1) -> None:
        super().__init__(text)
        self.retry_after = retry_after


def error_response(status_code: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": text}, status_code=status_code, headers=headers)


async def handle_messenger_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MessengerError)
    headers = None
    if isinstance(exc, Unavailable):
        headers = {"Retry-After": str(exc.retry_after)}
    elif isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": exc.challenge}
    return error_response(exc.status_code, exc.text, headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown route, wrong method) as JSON."""
    assert isinstance(exc, HTTPException)
    texts = {404: NOT_FOUND, 405: METHOD_NOT_ALLOWED}
    text = texts.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, text, dict(exc.headers or {}))


EXCEPTION_HANDLERS = {
    MessengerError: handle_messenger_error,
    HTTPException: handle_http_exception,
}
