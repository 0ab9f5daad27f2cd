"""Shutdown of a real `python -m messenger serve` process: deregister, grace, drain, exit 0."""

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from messenger.settings import Settings
from tests import factories
from tests.consul_double import ConsulDouble
from tests.processes import ROOT, service_env, wait_for_health

GRACE = 1.0
UPLOAD_SECONDS = 2.5  # each slow request is still sending its body when the listener closes


@dataclass
class Process:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    with ConsulDouble() as double:
        yield double


def start(env: dict[str, str], log: Path) -> Process:
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "messenger", "serve"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    port = int(env["PORT"])
    return Process(process, f"http://127.0.0.1:{port}", port, log)


def stop(service: Process) -> None:
    if service.process.poll() is None:
        service.process.kill()
        service.process.wait()


@pytest.fixture
def registered_service(
    database: Settings, consul: ConsulDouble, tmp_path: Path
) -> Iterator[Process]:
    env = service_env(
        database,
        **consul.agent_env(),
        SERVICE_ADDRESS="127.0.0.1",
        SHUTDOWN_GRACE=str(GRACE),
        SHUTDOWN_DRAIN_TIMEOUT="8",
        LOG_LEVEL="info",
    )
    service = start(env, tmp_path / "service.log")
    try:
        wait_for_health(service.url, service.process)
        consul.wait_for_call("PUT", "/v1/agent/service/register")
        yield service
    finally:
        stop(service)


async def slowly(body: bytes, seconds: float) -> AsyncIterator[bytes]:
    """The body in five chunks spread over `seconds`, as a slow client on a bad link sends it."""
    step = -(-len(body) // 5)
    for offset in range(0, len(body), step):
        yield body[offset : offset + step]
        await asyncio.sleep(seconds / 5)


@dataclass
class Finished:
    status: int
    at: float


async def send_slowly(client: httpx.AsyncClient, conversation: str, user: int) -> Finished:
    response = await client.post(
        f"/conversations/{conversation}/messages",
        headers={"User-Id": str(user), "Content-Type": "application/json"},
        content=slowly(json.dumps({"content": "sent during shutdown"}).encode(), UPLOAD_SECONDS),
    )
    return Finished(response.status_code, time.monotonic())


async def read(client: httpx.AsyncClient, conversation: str) -> Finished:
    response = await client.get(f"/conversations/{conversation}/messages")
    return Finished(response.status_code, time.monotonic())


@dataclass
class ListenerWatch:
    last_accepted: float | None = None
    first_refused: float | None = None


async def watch_listener(port: int, watch: ListenerWatch) -> None:
    """Open a new connection every few milliseconds until one is refused."""
    while True:
        attempted = time.monotonic()
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
        except OSError:
            watch.first_refused = attempted
            return
        watch.last_accepted = attempted
        writer.close()
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_deregisters_then_serves_the_grace_then_drains_and_exits_0(
    registered_service: Process,
    consul: ConsulDouble,
    pool: asyncpg.Pool,
    clean: None,
    sig: signal.Signals,
) -> None:
    service = registered_service
    registered = consul.wait_for_call("PUT", "/v1/agent/service/register")
    first, second = await factories.users(pool, "Ada", "Grace")
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=service.url, limits=limits, timeout=20) as client:
        conversation = await factories.conversation(client, first, second)
        uploads = [
            asyncio.create_task(send_slowly(client, conversation, user))
            for user in (first, second) * 3
        ]
        await asyncio.sleep(0.5)  # every upload has started and is sending its body

        signalled = time.monotonic()
        service.process.send_signal(sig)
        watch = ListenerWatch()
        watcher = asyncio.create_task(watch_listener(service.port, watch))
        await asyncio.sleep(0.2)
        reads = [asyncio.create_task(read(client, conversation)) for _ in range(20)]

        finished = await asyncio.gather(*uploads, *reads)
        await asyncio.wait_for(watcher, 10)
    exit_code = await asyncio.to_thread(service.process.wait, 15)

    log = service.output()
    assert exit_code == 0, log
    deregistered = consul.wait_for_call("PUT", "/v1/agent/service/deregister/")
    assert deregistered.path.endswith(registered.body["ID"])
    assert consul.services == {}
    assert watch.first_refused is not None
    assert watch.last_accepted is not None
    # 1. deregistered first, 2. still accepting connections during the grace, 3. then closed.
    assert signalled < deregistered.time < watch.last_accepted < watch.first_refused
    assert watch.first_refused - deregistered.time >= GRACE - 0.05
    # 4. every request in flight (or begun during the grace) completed, even those whose
    # bodies were still arriving when the listener closed.
    assert [result.status for result in finished] == [201] * 6 + [200] * 20, log
    assert max(result.at for result in finished) > watch.first_refused
    messages = await pool.fetch("SELECT index FROM messages ORDER BY index")
    assert [row["index"] for row in messages] == list(range(1, 7))
    timings = {
        "deregistered_after_signal": round(deregistered.time - signalled, 3),
        "listener_closed_after_deregister": round(watch.first_refused - deregistered.time, 3),
        "last_upload_done_after_close": round(
            max(result.at for result in finished) - watch.first_refused, 3
        ),
    }
    print(f"{sig.name} timings (s): {timings}")


def test_a_second_signal_skips_the_rest_of_the_grace(
    database: Settings, consul: ConsulDouble, tmp_path: Path
) -> None:
    env = service_env(
        database,
        **consul.agent_env(),
        SERVICE_ADDRESS="127.0.0.1",
        SHUTDOWN_GRACE="30",
    )
    service = start(env, tmp_path / "service.log")
    try:
        wait_for_health(service.url, service.process)
        consul.wait_for_call("PUT", "/v1/agent/service/register")
        service.process.send_signal(signal.SIGTERM)
        consul.wait_for_call("PUT", "/v1/agent/service/deregister/")
        started = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        stop(service)


async def test_draining_is_bounded_by_the_drain_timeout(
    database: Settings, tmp_path: Path, pool: asyncpg.Pool, clean: None
) -> None:
    env = service_env(database, SHUTDOWN_DRAIN_TIMEOUT="1")
    service = start(env, tmp_path / "service.log")
    try:
        await asyncio.to_thread(wait_for_health, service.url, service.process)
        first, second = await factories.users(pool, "Ada", "Grace")
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            conversation = await factories.conversation(client, first, second)
            body = json.dumps({"content": "too slow"}).encode()
            stuck = asyncio.create_task(
                client.post(
                    f"/conversations/{conversation}/messages",
                    headers={"User-Id": str(first)},
                    content=slowly(body, 20),
                )
            )
            await asyncio.sleep(0.5)
            signalled = time.monotonic()
            service.process.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(service.process.wait, 15)
            stopped_after = time.monotonic() - signalled
            with pytest.raises(httpx.HTTPError):
                await stuck
        assert exit_code == 0, service.output()
        assert stopped_after < 3  # no Consul, so no grace; 1 s of drain, then out
    finally:
        stop(service)
