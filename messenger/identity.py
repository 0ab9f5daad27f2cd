"""Who is calling: the one place a handler learns the caller's user id, in either AUTH_MODE.

In `header` mode (the default, the tutorial's way) the `User-Id` header is trusted as sent.
In `jwt` mode the caller is the user a verified bearer token names (messenger.tokens); a
`User-Id` header beside it must name the same user.
"""

from starlette.requests import Request

from messenger.errors import (
    TOKEN_NOT_BEARER,
    TOKEN_REPEATED,
    TOKEN_REQUIRED,
    TOKEN_TOO_LARGE,
    USER_ID_NOT_TOKEN_USER,
    USER_ID_REPEATED,
    USER_ID_REQUIRED,
    BadRequest,
    Forbidden,
    Unauthorized,
)
from messenger.ids import integer
from messenger.services import Services
from messenger.tokens import TokenVerifier

# Access tokens are a few hundred bytes to a few kB; a longer one is refused before any work.
MAX_TOKEN_BYTES = 8 * 1024


async def caller(request: Request) -> int:
    """The caller, who must be known: 400 without a User-Id header, 401 without a token."""
    tokens = Services.of(request).tokens
    if tokens is None:
        return header_caller(request)
    return await _token_caller(request, tokens)


async def optional_caller(request: Request) -> int | None:
    """The caller if the request names one; in `jwt` mode every request must (no anonymous)."""
    tokens = Services.of(request).tokens
    if tokens is None:
        return optional_header_caller(request)
    return await _token_caller(request, tokens)


async def verified_caller(request: Request) -> int | None:
    """The caller a token proves (`jwt` mode), else None: a route that never read `User-Id`
    in `header` mode keeps not reading it."""
    tokens = Services.of(request).tokens
    if tokens is None:
        return None
    return await _token_caller(request, tokens)


def header_caller(request: Request) -> int:
    user_id = optional_header_caller(request)
    if user_id is None:
        raise BadRequest(USER_ID_REQUIRED)
    return user_id


def optional_header_caller(request: Request) -> int | None:
    """The `User-Id` header if given; given but not a canonical positive integer is an error.

    Given twice with different values, it names no one: a 400 (the same value twice names
    one user, as a proxy repeating a header would, and is accepted, as for Idempotency-Key).
    """
    values = request.headers.getlist("user-id")
    if not values:
        return None
    if len(set(values)) > 1:
        raise BadRequest(USER_ID_REPEATED)
    user_id = integer(values[0], minimum=1)
    if user_id is None:
        raise BadRequest(USER_ID_REQUIRED)
    return user_id


async def _token_caller(request: Request, tokens: TokenVerifier) -> int:
    user_id = await tokens.user_id(bearer_token(request))
    for value in request.headers.getlist("user-id"):
        if integer(value, minimum=1) != user_id:
            raise Forbidden(USER_ID_NOT_TOKEN_USER)
    return user_id


def bearer_token(request: Request) -> str:
    """The token of `Authorization: Bearer <token>` (RFC 6750 2.1), or Unauthorized."""
    values = request.headers.getlist("authorization")
    if not values:
        raise Unauthorized(TOKEN_REQUIRED, token_given=False)
    if len(values) > 1:
        raise Unauthorized(TOKEN_REPEATED)
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized(TOKEN_NOT_BEARER, token_given=False)
    token = token.strip()
    if not token:
        raise Unauthorized(TOKEN_REQUIRED, token_given=False)
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized(TOKEN_TOO_LARGE.format(limit=MAX_TOKEN_BYTES))
    return token
