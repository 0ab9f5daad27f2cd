"""Domain errors and their one conversion to HTTP responses.

    MessengerError               an answer for the client: status + text, never internals
    ├── BadRequest (400)         malformed input or a broken rule (texts kept from Node)
    ├── NotFound (404)           an unknown conversation, or an unknown user opening a stream
    ├── Unprocessable (422)      a well-formed request that contradicts an earlier one
    └── Unavailable (503)        PostgreSQL cannot be reached, or a bounded wait for it ran out
                                 (pool, lock, statement timeout), or the instance serves
                                 SSE_MAX_STREAMS streams; sent with Retry-After

Anything else that escapes a handler is a bug: it is logged with the request id and the
client gets a 500 JSON body naming only that id.
"""

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
IDEMPOTENCY_KEY_INVALID = "Idempotency-Key header must be 1 to 255 visible ASCII characters"
IDEMPOTENCY_KEY_REPEATED = "Idempotency-Key header must be given once (got different values)"
IDEMPOTENCY_KEY_REUSED = (
    "Idempotency-Key was already used for a message with other content in this conversation;"
    " use a new key for a new message"
)
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


class MessengerError(Exception):
    status_code = 500

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class BadRequest(MessengerError):
    status_code = 400


class NotFound(MessengerError):
    status_code = 404


class Unprocessable(MessengerError):
    status_code = 422


class Unavailable(MessengerError):
    status_code = 503


def error_response(status_code: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": text}, status_code=status_code, headers=headers)


async def handle_messenger_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MessengerError)
    headers = {"Retry-After": "1"} if isinstance(exc, Unavailable) else None
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
