"""The routes of the HTTP API, each to the handler that serves it (`GET /openapi.json` aside:
openapi.py, which reads these, adds its own, and app.py serves both)."""

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from messenger import handlers, probes, stream

Handler = Callable[[Request], Awaitable[Response]]


def by_method(**handlers: Handler) -> Handler:
    """One endpoint for a path served by several methods, so a 405 lists all of them in Allow.

    HEAD is answered by the GET handler (Starlette routes HEAD wherever GET is allowed); the
    server sends its head without the body.
    """

    async def endpoint(request: Request) -> Response:
        method = "get" if request.method == "HEAD" else request.method.lower()
        return await handlers[method](request)

    endpoint.by_method = handlers  # type: ignore[attr-defined]  # openapi reads each declaration
    return endpoint


class TrailingSlash:
    """Serve `/conversations/` as `/conversations`, as express's non-strict routing did.

    Starlette's own answer (`redirect_slashes`) is a redirect whose Location is built from the
    client's Host header: an open redirect. The path is changed in place, so the access log
    (which read it first) shows it as sent, and the router's choice is the metrics' route.
    """

    def __init__(self, app: ASGIApp, keep: tuple[str, ...] = ()) -> None:
        self.app = app
        self.keep = keep  # path prefixes whose slash means a folder (the chat page's `/app/`)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] == "http"
            and len(path) > 1
            and path.endswith("/")
            and not path.startswith(self.keep)
        ):
            scope["path"] = path[:-1]
            raw_path = scope.get("raw_path")
            if isinstance(raw_path, bytes) and raw_path.endswith(b"/"):
                scope["raw_path"] = raw_path[:-1]
        await self.app(scope, receive, send)


ROUTES = [
    Route("/health", probes.health, methods=["GET"], name="health"),
    Route("/health/ready", probes.ready, methods=["GET"], name="ready"),
    Route("/metrics", probes.metrics, methods=["GET"], name="metrics"),
    Route("/events", stream.events, methods=["GET"], name="events"),
    Route(
        "/conversations",
        by_method(get=handlers.list_conversations, post=handlers.create_conversation),
        methods=["GET", "POST"],
    ),
    Route(
        "/conversations/{conversation_id}/messages",
        by_method(get=handlers.list_messages, post=handlers.send_message),
        methods=["GET", "POST"],
    ),
    Route(
        "/conversations/{conversation_id}/view_horizon",
        handlers.set_view_horizon,
        methods=["POST"],
    ),
]
