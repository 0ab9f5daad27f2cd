"""Request body size limit: sizes like npm `bytes` ("100kb"), enforced before any handler runs."""

import re

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from messenger.errors import BODY_TOO_LARGE, error_response

_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}
_SIZE = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>[a-z]+)?\s*$", re.IGNORECASE)


def parse_size(text: object) -> int:
    """Return the number of bytes `text` names: `100kb`, `1.5mb`, `512` (bytes).

    As in the npm `bytes` package: 1024-based, units case-insensitive, fractions floored.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    if not isinstance(text, str):
        raise ValueError("expected a size such as 100kb, 1.5mb or a number of bytes")
    match = _SIZE.match(text)
    if match is None:
        raise ValueError("expected a size such as 100kb, 1.5mb or a number of bytes")
    unit = (match["unit"] or "b").lower()
    if unit not in _UNITS:
        raise ValueError(f"unknown size unit {unit!r}; expected b, kb, mb, gb, tb or pb")
    return int(float(match["number"]) * _UNITS[unit])


class BodyLimitMiddleware:
    """Refuse bodies over `max_body_size` bytes with 413 before the application sees them.

    A declared `Content-Length` over the limit is refused without reading the body. Otherwise
    the body is read here, counted chunk by chunk (so chunked uploads are caught as they
    stream), and handed on to the application only once it is known to fit.
    """

    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_size:
            await error_response(413, BODY_TOO_LARGE)(scope, receive, send)
            return

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_size:
                await error_response(413, BODY_TOO_LARGE)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break

        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
