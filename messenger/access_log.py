"""One log line and metrics per request, an `X-Request-Id` on each response, the last-resort 500."""

import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from messenger.errors import INTERNAL_ERROR, error_response
from messenger.logs import Access, access_logger, log_access, printable
from messenger.metrics import Metrics

# A request id from a client or proxy is kept only if it is short and harmless to log.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# nginx's status for a request whose client went away before the answer: the client's doing,
# counted with the 4xx, never as a server error.
CLIENT_CLOSED_REQUEST = 499


class AccessLogMiddleware:
    """Outermost application middleware.

    Unexpected exceptions stop here: the traceback is logged once with the request id and the
    client gets a JSON 500 that names only that id. A client that disconnected before any
    answer (say, in the middle of its body) is logged and counted as 499. With `metrics`, each
    request is also counted and timed by route template and status.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        # As the client sent them (the app may canonicalize the path), and never a control
        # character of theirs in a log line.
        method, path = printable(scope["method"]), printable(scope["path"])
        started = time.perf_counter()
        status = 500
        response_started = False
        client_gone = False

        async def receive_watching() -> Message:
            nonlocal client_gone
            message = await receive()
            if message["type"] == "http.disconnect":
                client_gone = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-Id", request_id)
            await send(message)

        try:
            await self.app(scope, receive_watching, send_with_id)
            if client_gone and not response_started:
                status = CLIENT_CLOSED_REQUEST
        except Exception:
            access_logger.exception("unhandled error", extra={"request_id": request_id})
            if response_started:
                raise
            response = error_response(500, INTERNAL_ERROR.format(request_id=request_id))
            await response(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.observe_request(scope, status, duration)
            log_access(Access(time.time(), request_id, method, path, status, duration * 1000))
