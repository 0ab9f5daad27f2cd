"""Request bodies read before any handler runs: JSON_BODY_LIMIT, a deadline, and the
inflation of compressed JSON."""

import asyncio

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from messenger import content_coding, json_body
from messenger.errors import BODY_TIMEOUT, BODY_TOO_LARGE, MessengerError, error_response


class BodyLimitMiddleware:
    """Read the body whole before the application sees it: within `timeout` seconds, at most
    `max_body_size` bytes, inflated when it is JSON sent compressed (see content_coding).

    A declared `Content-Length` over the limit is refused with 413 without reading the body.
    Otherwise the body is counted chunk by chunk (so chunked uploads are caught as they
    stream), both as sent and as inflated, and handed on only once it is known to fit. A body
    not complete `timeout` seconds after the request's head is answered 408 and its connection
    closed; a client that leaves first gets no answer (the access log counts it as 499).
    """

    def __init__(self, app: ASGIApp, max_body_size: int, timeout: float = 30.0) -> None:
        self.app = app
        self.max_body_size = max_body_size
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is None and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (RFC 9112 6.3): nothing to wait for
            return
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_size:
            await error_response(413, BODY_TOO_LARGE)(scope, receive, send)
            return

        # express.json inflated only what it read: JSON bodies.
        coded = json_body.is_json(headers.get("content-type"))
        encoding = headers.get("content-encoding") if coded else None
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._read(receive, encoding)
        except TimeoutError:
            await error_response(408, BODY_TIMEOUT, {"Connection": "close"})(scope, receive, send)
            return
        except MessengerError as error:
            await error_response(error.status_code, error.text)(scope, receive, send)
            return
        except content_coding.TooLarge:
            await error_response(413, BODY_TOO_LARGE)(scope, receive, send)
            return
        if body is None:  # the client left
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive, encoding: str | None) -> bytes | None:
        """The whole body (inflated), or None if the client disconnected first.

        The coding is looked at once a byte of body arrives: a request without a body (a GET
        with a stray Content-Encoding) was never refused by express.json, which skipped it.
        """
        chunks: list[bytes] = []
        size = 0
        inflater: content_coding.Inflater | None = None
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_size:  # as sent: also bounds what inflates to nothing
                raise content_coding.TooLarge
            if chunk and encoding is not None and inflater is None:
                inflater = content_coding.inflater(encoding, self.max_body_size)
                encoding = None  # looked at: identity leaves no inflater
            chunks.append(chunk if inflater is None else inflater.feed(chunk))
            if not message.get("more_body", False):
                break
        if inflater is not None:
            inflater.finish()
        return b"".join(chunks)
