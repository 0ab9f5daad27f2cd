"""The ASGI application: routes, middleware, error handlers, and the lifespan owning connections."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messenger import db, discovery, handlers, limits, openapi, stream
from messenger.access_log import AccessLogMiddleware
from messenger.body_limit import BodyLimitMiddleware
from messenger.discovery import Registration
from messenger.errors import EXCEPTION_HANDLERS
from messenger.feed import FeedSweeper
from messenger.idempotency import KeySweeper
from messenger.metrics import Metrics
from messenger.page_cache import PageCache
from messenger.readiness import PROBE_TIMEOUT
from messenger.relay import OutboxRelay
from messenger.services import Services
from messenger.settings import Settings
from messenger.streams import Streams
from messenger.wakeups import WakeUps

Handler = Callable[[Request], Awaitable[Response]]


CORS: dict[str, Any] = {
    "allow_origins": ["*"],
    "allow_methods": ["GET", "POST", "OPTIONS"],
    "allow_headers": ["*"],
    "expose_headers": ["X-Request-Id", "Link"],
}


def by_method(**handlers: Handler) -> Handler:
    """One endpoint for a path served by several methods, so a 405 lists all of them in Allow."""

    async def endpoint(request: Request) -> Response:
        method = request.method.lower()
        # Starlette serves HEAD wherever GET is served, with the GET handler's headers.
        return await handlers["get" if method == "head" else method](request)

    return endpoint


ROUTES = [
    Route("/health", handlers.health, methods=["GET"], name="health"),
    Route("/health/ready", handlers.ready, methods=["GET"], name="ready"),
    Route("/metrics", handlers.metrics, methods=["GET"], name="metrics"),
    Route("/openapi.json", openapi.serve, methods=["GET"], name="openapi"),
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


async def _cancel(task: "asyncio.Task[None]") -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(
    settings: Settings,
    *,
    registration: Registration | None = None,
    streams: Streams | None = None,
) -> Starlette:
    """The app; `registration` and `streams` are shared with the entrypoint, which deregisters
    on a signal and then ends the streams as the listener closes.

    Without a registration, one is made when CONSUL_SERVICE_NAME is set.
    """
    registration = registration or Registration.for_settings(settings)
    metrics = Metrics(ROUTES)
    streams = streams or Streams(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Services]]:
        async with contextlib.AsyncExitStack() as stack:
            pool = await db.create_pool(settings)
            stack.push_async_callback(pool.close)
            await db.check_reachable(pool, settings)
            checks = db.CheckConnection(settings, timeout=PROBE_TIMEOUT)
            stack.callback(checks.close)
            services = Services(
                settings=settings,
                pool=pool,
                checks=checks,
                pages=PageCache(settings.messages_cache_size),
                discovery=registration,
                metrics=metrics,
                streams=streams,
            )
            services.wakeups = WakeUps(settings, streams.wake)
            services.wakeups.start()
            stack.push_async_callback(services.wakeups.stop)
            for work, name in ((streams.read, "stream-reads"), (streams.poll, "stream-poll")):
                stack.push_async_callback(_cancel, asyncio.create_task(work(pool), name=name))
            feed_sweeper = FeedSweeper(settings, pool)
            feed_sweeper.start()
            stack.push_async_callback(feed_sweeper.stop)
            if settings.relay_enabled:
                services.relay = OutboxRelay(settings, services.outbox_pending)
                services.relay.start()
                stack.push_async_callback(services.relay.stop)
            sweeper = KeySweeper(settings, pool)
            sweeper.start()
            stack.push_async_callback(sweeper.stop)
            await stack.enter_async_context(limits.watch_open_files())
            await stack.enter_async_context(discovery.registered(registration))
            yield {"services": services}

    middleware = [
        Middleware(AccessLogMiddleware, metrics=metrics),
        Middleware(stream.DirectEventStreams, cors=CORS),
        Middleware(CORSMiddleware, **CORS),
        Middleware(BodyLimitMiddleware, max_body_size=settings.json_body_limit),
    ]
    return Starlette(
        routes=ROUTES,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
