"""The routes of the HTTP API, each to the handler that serves it (`GET /openapi.json` aside:
openapi.py, which reads these, adds its own, and app.py serves both)."""

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messenger import handlers, probes

Handler = Callable[[Request], Awaitable[Response]]


def by_method(**handlers: Handler) -> Handler:
    """One endpoint for a path served by several methods, so a 405 lists all of them in Allow."""

    async def endpoint(request: Request) -> Response:
        return await handlers[request.method.lower()](request)

    endpoint.by_method = handlers  # type: ignore[attr-defined]  # openapi reads each declaration
    return endpoint


ROUTES = [
    Route("/health", probes.health, methods=["GET"], name="health"),
    Route("/health/ready", probes.ready, methods=["GET"], name="ready"),
    Route("/metrics", probes.metrics, methods=["GET"], name="metrics"),
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
