"""Request body size limit: JSON_BODY_LIMIT enforced before any handler runs."""

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from messenger.errors import BODY_TOO_LARGE, error_response


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
