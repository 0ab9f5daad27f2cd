"""The ASGI application: routes, middleware, error handlers, and the lifespan owning connections."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from messenger import db, discovery, open_files, openapi, routes, stream, web_app
from messenger.access_log import AccessLogMiddleware
from messenger.body_limit import BodyLimitMiddleware
from messenger.discovery import Registration
from messenger.errors import EXCEPTION_HANDLERS
from messenger.feed import feed_sweeper
from messenger.idempotency import key_sweeper
from messenger.keys import KeySet
from messenger.metrics import Metrics
from messenger.page_cache import PageCache
from messenger.readiness import PROBE_TIMEOUT
from messenger.relay import OutboxRelay
from messenger.routes import TrailingSlash
from messenger.services import Services
from messenger.settings import Settings
from messenger.streams import Streams
from messenger.tokens import TokenVerifier
from messenger.wakeups import WakeUps

ROUTES = [*routes.ROUTES, openapi.ROUTE]


@contextlib.asynccontextmanager
async def token_verifier(settings: Settings) -> AsyncIterator[TokenVerifier]:
    """AUTH_MODE=jwt: the verifier, with the HTTP client that fetches the key set."""
    timeout = httpx.Timeout(settings.auth_jwks_timeout)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        keys = KeySet(client, settings)
        try:
            yield TokenVerifier(settings, keys)
        finally:
            await keys.close()


def cors(settings: Settings) -> dict[str, Any]:
    """The CORS settings of every route (and of the event stream, see stream.py)."""
    return {
        "allow_origins": ["*"],
        "allow_methods": ["GET", "POST", "OPTIONS"],
        "allow_headers": ["*"],
        # jwt mode: a browser client may read why a token was refused (RFC 6750).
        "expose_headers": ["X-Request-Id", "Link"]
        + (["WWW-Authenticate"] if settings.auth_mode == "jwt" else []),
    }


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
    served = ROUTES + (web_app.routes() if settings.web_app else [])
    metrics = Metrics(served)
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
            for sweeper in (feed_sweeper(settings, pool), key_sweeper(settings, pool)):
                sweeper.start()
                stack.push_async_callback(sweeper.stop)
            if settings.auth_mode == "jwt":
                services.tokens = await stack.enter_async_context(token_verifier(settings))
            if settings.relay_enabled:
                services.relay = OutboxRelay(settings, services.outbox_pending)
                services.relay.start()
                stack.push_async_callback(services.relay.stop)
            await stack.enter_async_context(open_files.watch_open_files())
            await stack.enter_async_context(discovery.registered(registration))
            yield {"services": services}

    middleware = [
        Middleware(AccessLogMiddleware, metrics=metrics),
        Middleware(stream.DirectEventStreams, cors=cors(settings)),
        Middleware(CORSMiddleware, **cors(settings)),
        Middleware(
            BodyLimitMiddleware,
            max_body_size=settings.json_body_limit,
            timeout=settings.http_body_timeout,
        ),
        # A page's relative links need its folder's slash: /app/ keeps it, /app is sent there.
        Middleware(TrailingSlash, keep=(web_app.FOLDER,) if settings.web_app else ()),
    ]
    app = Starlette(
        routes=served,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # a 404, never a redirect built from the Host header
    return app
