"""Consul registration: announce this instance to the local agent, keep it there, and leave first.

The agent's HTTP API is reached with httpx. Registration runs in the background so the service
serves whether or not the agent is up; it retries with capped, jittered exponential backoff,
logs each change of state once, and registers again if the agent forgets the instance (an
agent restarted without its data). Deregistration is idempotent and bounded in time, so the
shutdown path can call it first and the lifespan teardown can call it again harmlessly.
"""

import asyncio
import contextlib
import enum
import logging
import random
import re
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from messenger import __version__
from messenger.settings import Settings

logger = logging.getLogger("messenger.discovery")

AGENT_TIMEOUT = 2.0  # seconds per agent call; the agent is local, so this is generous
BACKOFF_INITIAL = 0.5
BACKOFF_CAP = 30.0
RESYNC_INTERVAL = 30.0  # how often a registered instance checks the agent still knows it

# A documentation-only address (TEST-NET-1, RFC 5737): "connecting" a UDP socket to it sends
# nothing but makes the kernel pick the source address of the default route.
_UNROUTED = ("192.0.2.1", 9)
_UNSAFE_ID_CHARACTERS = re.compile(r"[^A-Za-z0-9.-]+")
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


class State(enum.StrEnum):
    PENDING = "pending"  # not registered yet: agent unreachable, refusing, or not asked yet
    REGISTERED = "registered"
    DEREGISTERED = "deregistered"  # left on purpose: the instance is shutting down


def detect_address() -> str:
    """The address other hosts reach this one on; 127.0.0.1 only if there is no other."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(_UNROUTED)
        address: str = probe.getsockname()[0]
        if not address.startswith("127.") and address != "0.0.0.0":
            return address
    with contextlib.suppress(OSError):
        for *_, sockaddr in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            candidate = str(sockaddr[0])
            if not candidate.startswith("127."):
                return candidate
    return "127.0.0.1"


def advertised_address(settings: Settings) -> str:
    """HOST when it names one address (the only one we listen on), else the detected one."""
    if settings.host not in _WILDCARD_HOSTS:
        return settings.host
    return detect_address()


def _backoff_delays() -> Iterator[float]:
    """Capped exponential backoff with full jitter: 0.5 s, 1 s, 2 s ... up to 30 s, randomised."""
    ceiling = BACKOFF_INITIAL
    while True:
        yield random.uniform(ceiling / 2, ceiling)
        ceiling = min(ceiling * 2, BACKOFF_CAP)


class Registration:
    """This instance's entry in the Consul agent's service list.

    The ID is unique per process and stable for its life: service name, host name, port and a
    random suffix. `start` needs the HTTP client the lifespan owns.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        address: str | None = None,
        resync_interval: float = RESYNC_INTERVAL,
    ) -> None:
        if settings.consul_service_name is None:
            raise ValueError("a Registration needs CONSUL_SERVICE_NAME")
        self.settings = settings
        self.name = settings.consul_service_name
        self.address = address or settings.service_address or advertised_address(settings)
        suffix = f"{socket.gethostname()}-{settings.port}-{uuid.uuid4().hex[:8]}"
        self.service_id = f"{self.name}-{_UNSAFE_ID_CHARACTERS.sub('-', suffix)}"
        self.agent_url = f"http://{settings.consul_host}:{settings.consul_port}"
        self.resync_interval = resync_interval
        self.state = State.PENDING
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._attempted = False  # a register request left: the agent may know us
        self._problem: str | None = None  # the last failure logged, so each is logged once

    @classmethod
    def for_settings(cls, settings: Settings) -> "Registration | None":
        """A registration when CONSUL_SERVICE_NAME is set; without it, no Consul call is made."""
        return cls(settings) if settings.consul_service_name else None

    def definition(self) -> dict[str, Any]:
        """The body of `PUT /v1/agent/service/register`, in the agent's field names."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return {
            "ID": self.service_id,
            "Name": self.name,
            "Tags": [f"version-{__version__}"],
            "Meta": {"version": __version__},
            "Address": self.address,
            "Port": self.settings.port,
            "Check": {
                "Name": f"{self.name} HTTP /health",
                "HTTP": f"http://{host}:{self.settings.port}/health",
                "Method": "GET",
                "Interval": self.settings.consul_check_interval,
                "Timeout": self.settings.consul_check_timeout,
                "DeregisterCriticalServiceAfter": self.settings.consul_deregister_after,
            },
        }

    def start(self, client: httpx.AsyncClient) -> None:
        """Register in the background, retrying until the agent accepts, then keep it so."""
        if self.state is State.DEREGISTERED:
            return  # a signal came before the app was up: never announce a leaving instance
        self._client = client
        self._task = asyncio.create_task(self._run(), name="consul-registration")

    async def deregister(self) -> None:
        """Leave the agent's service list now; safe to call again, never raises."""
        if self.state is State.DEREGISTERED:
            return
        registered = self.state is State.REGISTERED
        self.state = State.DEREGISTERED
        await self._stop_task()
        if not (registered or self._attempted) or self._client is None:
            return
        path = f"/v1/agent/service/deregister/{self.service_id}"
        try:
            response = await self._client.put(path, timeout=AGENT_TIMEOUT)
        except httpx.HTTPError as error:
            logger.warning(
                "could not deregister %s from the Consul agent at %s (%s); it drops the"
                " instance once its check has failed for %s",
                self.service_id,
                self.agent_url,
                _describe(error),
                self.settings.consul_deregister_after,
            )
            return
        if response.is_success:
            logger.info("deregistered %s from Consul", self.service_id)
        elif response.status_code == 404:
            logger.info("%s was not registered with Consul; nothing to deregister", self.service_id)
        else:
            logger.warning(
                "the Consul agent refused to deregister %s: %d %s",
                self.service_id,
                response.status_code,
                response.text[:200],
            )

    async def close(self) -> None:
        """Stop the background work without deregistering (deregister first to leave)."""
        await self._stop_task()

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self._register_until_accepted()
            await self._watch()

    async def _register_until_accepted(self) -> None:
        assert self._client is not None
        for delay in _backoff_delays():
            self._attempted = True
            try:
                response = await self._client.put(
                    "/v1/agent/service/register", json=self.definition(), timeout=AGENT_TIMEOUT
                )
            except httpx.HTTPError as error:
                reason = _describe(error)
                self._fail(f"the Consul agent at {self.agent_url} is not reachable ({reason})")
            else:
                if response.is_success:
                    self._become(State.REGISTERED)
                    return
                self._fail(
                    f"the Consul agent at {self.agent_url} refused the registration:"
                    f" {response.status_code} {response.text.strip()[:200]}"
                )
            await asyncio.sleep(delay)

    async def _watch(self) -> None:
        """Return once the agent no longer lists this instance (it must be registered again)."""
        assert self._client is not None
        while True:
            await asyncio.sleep(self.resync_interval)
            path = f"/v1/agent/service/{self.service_id}"
            try:
                response = await self._client.get(path, timeout=AGENT_TIMEOUT)
            except httpx.HTTPError:
                continue  # an agent that is away keeps its registrations; ask again later
            if response.status_code == 404:
                self._become(State.PENDING, "the Consul agent lost the registration")
                return

    def _become(self, state: State, reason: str = "") -> None:
        if state is self.state or self.state is State.DEREGISTERED:
            return
        self.state = state
        self._problem = None
        if state is State.REGISTERED:
            logger.info(
                "registered with Consul as %s (%s at %s:%d)",
                self.service_id,
                self.name,
                self.address,
                self.settings.port,
            )
        else:
            logger.warning("%s; registering %s again", reason, self.service_id)

    def _fail(self, problem: str) -> None:
        if problem != self._problem:
            self._problem = problem
            logger.warning("%s; serving anyway and retrying with backoff", problem)


def _describe(error: httpx.HTTPError) -> str:
    text = str(error)
    return f"{error.__class__.__name__}: {text}" if text else error.__class__.__name__


@contextlib.asynccontextmanager
async def registered(registration: Registration | None) -> AsyncIterator[None]:
    """Keep `registration` in Consul while the block runs; leave the agent on the way out."""
    if registration is None:
        yield
        return
    async with httpx.AsyncClient(base_url=registration.agent_url) as client:
        registration.start(client)
        try:
            yield
        finally:
            await registration.deregister()
            await registration.close()
