"""The operations endpoints: liveness for Consul, readiness for the load balancer, metrics."""

from typing import Literal

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from messenger.operations import Answer, operation
from messenger.readiness import probe, readiness
from messenger.responses import JSONResponse
from messenger.schemas import Readiness
from messenger.services import Services


@operation(
    "health",
    "operations",
    Answer(200, "The process serves HTTP.", Literal["OK"], media=["text/plain"]),
    database=False,
)
async def health(request: Request) -> Response:
    """Liveness: answers OK, checks no dependency

    As the Node service answered it; the Consul check calls it, so a database blip does not
    make every instance deregister at once.
    """
    return PlainTextResponse("OK")


@operation(
    "ready",
    "operations",
    Answer(200, "Ready.", Readiness),
    Answer(503, "Not ready; the body says why.", Readiness),
    database=False,
)
async def ready(request: Request) -> Response:
    """Readiness: whether this instance should get traffic

    503 while PostgreSQL does not answer within 2 s or the instance is shutting down. A broker
    outage does not make it unready: events wait in the outbox. `broker` is null when the
    relay is disabled, `registered` is null when CONSUL_SERVICE_NAME is unset.
    """
    services = Services.of(request)
    is_ready, body = readiness(services, await probe(services))
    return JSONResponse(body, status_code=200 if is_ready else 503)


@operation(
    "metrics",
    "operations",
    Answer(200, "The exposition.", str, media=["text/plain", "application/openmetrics-text"]),
    database=False,
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this instance

    The text exposition format, or OpenMetrics when the Accept header asks for
    application/openmetrics-text.
    """
    services = Services.of(request)
    assert services.metrics is not None
    found = await probe(services)
    accept = request.headers.get("accept", "")
    content, content_type = services.metrics.render(services, found, accept)
    return Response(content, headers={"Content-Type": content_type})
