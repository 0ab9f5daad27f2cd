"""What each handler declares it reads and answers, for the OpenAPI document.

`@operation(...)` on a handler records its answers and their shapes (from `schemas`), its
parameters and body, and the error texts only it has (from `errors`); the handler's docstring
gives the summary (first line) and the description. `openapi.py` reads these declarations.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from messenger.errors import Errors
from messenger.schemas import Parameter

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Answer:
    """A success answer: status, what it means, and its shape per media type (none: no body)."""

    status: int
    description: str
    shape: object = None
    media: Sequence[str] = ("application/json",)
    headers: Sequence[str] = ()  # names in schemas.HEADERS, beside X-Request-Id
    links: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Operation:
    """What a handler reads and answers. Used as a decorator, it records that on the handler."""

    id: str
    tag: str
    answers: Sequence[Answer]
    errors: Sequence[Errors] = ()  # beside its parameters' and body's (openapi._bad_request)
    parameters: Sequence[Parameter] = ()
    body: object = None  # the request body's shape
    example: object = None  # of the body
    database: bool = True  # may answer 500 and 503 (its data is in PostgreSQL)
    caller: bool = False  # knows its caller (identity.py): with AUTH_MODE=jwt, 401/403/503

    def __call__(self, handler: F) -> F:
        _DECLARED[handler] = self
        return handler


_DECLARED: dict[Callable[..., Any], Operation] = {}


def operation(
    op_id: str,
    tag: str,
    *answers: Answer,
    errors: Sequence[Errors] = (),
    parameters: Sequence[Parameter] = (),
    body: object = None,
    example: object = None,
    database: bool = True,
    caller: bool = False,
) -> Operation:
    """Declare a handler's operation: `@operation("sendMessage", "messages", Answer(...), ...)`."""
    return Operation(op_id, tag, answers, errors, parameters, body, example, database, caller)


def declared(handler: Callable[..., Any]) -> Operation:
    """The operation a handler declared."""
    return _DECLARED[handler]
