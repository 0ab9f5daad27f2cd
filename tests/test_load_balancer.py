"""The load balancer end to end: scripts/local-stack runs three real instances behind a real
nginx with the image's configuration, and clients talk to nginx only."""

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import base_settings, drop_database
from tests.processes import free_port, service_env
from tests.sse import open_stream

ROOT = Path(__file__).resolve().parent.parent
LOCAL_STACK = ROOT / "scripts" / "local-stack"
REPLICAS = 3
TUTORIAL_PORT = 8085


def ports_free(first: int, count: int = 1) -> bool:
    """Nobody listens on the loopback ports first .. first + count - 1."""
    try:
        with contextlib.ExitStack() as probes:
            for port in range(first, first + count):
                probe = probes.enter_context(socket.socket())
                probe.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def free_port_range(count: int) -> int:
    """The first of `count` consecutive free loopback ports."""
    for _ in range(50):
        first = random.randrange(20_000, 60_000)
        if ports_free(first, count):
            return first
    raise RuntimeError("no free port range")


@dataclass
class Stack:
    env: dict[str, str]
    state_dir: Path
    url: str
    ports: list[int]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(LOCAL_STACK), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def pid(self, port: int) -> int:
        return int((self.state_dir / f"instance-{port}.pid").read_text())

    def leftover_pids(self) -> list[int]:
        """The pids of pid files left behind (one being written may still be empty)."""
        texts = (path.read_text().strip() for path in self.state_dir.glob("*.pid"))
        return [int(text) for text in texts if text.isdigit()]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = base_settings(pgdatabase=f"messenger_test_{uuid.uuid4().hex[:12]}")
    state_dir = tmp_path_factory.mktemp("local-stack")
    # The tutorial's port when it is free here, another one otherwise.
    base_port = free_port_range(REPLICAS)
    lb_port = TUTORIAL_PORT if ports_free(TUTORIAL_PORT) else free_port()
    env = service_env(
        settings,
        LOCAL_STACK_DIR=str(state_dir),
        LOCAL_STACK_SETUP="0",
        LB_PORT=str(lb_port),
        BASE_PORT=str(base_port),
    )
    del env["PORT"], env["HOST"]  # the stack gives each instance its own
    stack = Stack(
        env=env,
        state_dir=state_dir,
        url=f"http://127.0.0.1:{lb_port}",
        ports=[base_port + i for i in range(REPLICAS)],
    )
    try:
        stack.run("up", "--replicas", str(REPLICAS))
        yield stack
    finally:
        subprocess.run([str(LOCAL_STACK), "down"], env=env, capture_output=True, timeout=120)
        for pid in stack.leftover_pids():  # only if `down` could not stop them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        import asyncio

        asyncio.run(drop_database(settings))


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        yield client


def running(pid: int) -> bool:
    """The process runs and is not a zombie (instances are reaped by init, not by the tests)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(") ", 1)[1].split()[0] != "Z"


def instance_of(response: httpx.Response) -> str:
    """The instance that answered: the last address nginx tried."""
    return response.headers["Upstream-Host"].split(",")[-1].strip()


@dataclass
class Load:
    """Steady GETs from a few threads until stopped, bounded in count and time."""

    url: str
    threads: int = 4
    max_requests: int = 20_000
    # Retry once, as browsers and HTTP libraries do for an idempotent request, when the server
    # closed or reset a kept-alive connection just as the request was sent (RFC 9112, 9.3.1):
    # nginx's old workers close their idle client connections when a reload retires them.
    retry_closed_connections: bool = False
    retried: int = 0
    statuses: Counter[int | str] = field(default_factory=Counter)
    instances: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set() and self.total < self.max_requests:
                try:
                    try:
                        response = client.get(self.url)
                    except (httpx.RemoteProtocolError, httpx.ReadError):
                        if not self.retry_closed_connections:
                            raise
                        with self._lock:
                            self.retried += 1
                        response = client.get(self.url)
                    outcome: int | str = response.status_code
                except httpx.HTTPError as error:
                    outcome, response = type(error).__name__, None
                with self._lock:
                    self.statuses[outcome] += 1
                    if response is not None and "Upstream-Host" in response.headers:
                        self.instances[instance_of(response)] += 1

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return self.total - self.statuses[200]

    @contextlib.contextmanager
    def running(self) -> Iterator["Load"]:
        workers = [threading.Thread(target=self._run) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        try:
            yield self
        finally:
            self._stop.set()
            for worker in workers:
                worker.join(timeout=30)


def test_tutorial_walk_through_the_load_balancer(client):
    created = client.post("/conversations", json={"participant_ids": [1, 2]})
    assert created.status_code == 201, created.text
    conversation = created.json()["conversation"]["id"]
    first = client.post(
        f"/conversations/{conversation}/messages",
        headers={"User-Id": "1"},
        json={"content": "This is the first message"},
    )
    second = client.post(
        f"/conversations/{conversation}/messages",
        headers={"User-Id": "2"},
        json={"content": "This is the second message"},
    )
    assert (first.status_code, second.status_code) == (201, 201)
    messages = client.get(f"/conversations/{conversation}/messages").json()["messages"]
    assert [message["content"] for message in messages] == [
        "This is the first message",
        "This is the second message",
    ]
    health = client.get("/health")
    assert (health.status_code, health.text) == (200, "OK")


def test_responses_spread_over_all_three_instances(stack, client):
    seen = Counter(instance_of(client.get("/health")) for _ in range(30))
    assert set(seen) == {f"127.0.0.1:{port}" for port in stack.ports}


def test_request_ids_are_passed_to_the_instance_and_made_when_missing(client):
    given = client.get("/health", headers={"X-Request-Id": "trace-123"})
    assert given.headers["X-Request-Id"] == "trace-123"
    made = client.get("/health")
    assert len(made.headers["X-Request-Id"]) == 32  # nginx's $request_id


def test_sigterm_to_an_instance_under_steady_get_load_fails_no_request(stack, client):
    client.post("/conversations", json={"participant_ids": [1, 3]})
    stopped_port = stack.ports[1]
    pid = stack.pid(stopped_port)
    with Load(f"{stack.url}/conversations/1/messages").running() as load:
        time.sleep(1.0)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(pid), "the instance did not stop on SIGTERM"
        time.sleep(1.0)  # keep the load on after the instance is gone
    print(f"SIGTERM under load: {load.total} requests, {load.failed} failed, {load.instances}")
    assert load.total > 100
    assert load.failed == 0, load.statuses
    assert load.instances[f"127.0.0.1:{stopped_port}"] > 0  # it did take part before
    stack.run("up", "--replicas", str(REPLICAS))  # back to three for the next tests


def test_crashed_instance_is_skipped_for_gets(stack, client):
    crashed_port = stack.ports[2]
    os.kill(stack.pid(crashed_port), signal.SIGKILL)
    time.sleep(0.2)
    responses = [client.get("/conversations/1/messages") for _ in range(30)]
    assert [response.status_code for response in responses] == [200] * 30
    answered = {instance_of(response) for response in responses}
    assert f"127.0.0.1:{crashed_port}" not in answered
    stack.run("up", "--replicas", str(REPLICAS))


def test_scaling_down_and_up_under_load_fails_no_request(stack):
    load = Load(f"{stack.url}/conversations/1/messages", retry_closed_connections=True)
    with load.running():
        stack.run("up", "--replicas", "2")  # out of nginx first (reload), then SIGTERM
        stack.run("up", "--replicas", str(REPLICAS))
        time.sleep(0.5)
    print(
        f"scaling 3 -> 2 -> 3 under load: {load.total} requests, {load.failed} failed,"
        f" {load.retried} retried on a connection closed by an nginx reload"
    )
    assert load.total > 100
    assert load.failed == 0, load.statuses
    assert load.retried <= 2 * load.threads  # at most once per client connection and reload


async def test_a_stream_survives_a_scale_down_of_its_instance(stack: Stack) -> None:
    """A stream on the instance that a scale-down stops ends, the client reconnects through
    nginx with Last-Event-ID to another instance, and gets every message once, in order."""
    leaving = f"127.0.0.1:{stack.ports[2]}"
    sent: list[str] = []
    got: list[str] = []
    instances: list[str] = []
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as lb:
        created = await lb.post("/conversations", json={"participant_ids": [2, 3]})
        assert created.status_code == 201, created.text
        conversation = created.json()["conversation"]["id"]

        async def send(count: int) -> None:
            for _ in range(count):
                content = f"message {len(sent) + 1}"
                response = await lb.post(
                    f"/conversations/{conversation}/messages",
                    headers={"User-Id": "2"},
                    json={"content": content},
                )
                assert response.status_code == 201, response.text
                sent.append(content)
                await asyncio.sleep(0.02)

        async def reconnecting() -> None:
            """Read events, reconnecting with the last id whenever the stream ends; the first
            stream is one on the instance that will leave (round robin: within three)."""
            last_id = None
            while len(got) < 60:
                async with open_stream(lb, 3, last_event_id=last_id) as stream:
                    last_id = stream.last_id
                    instance = instance_of(stream.response)
                    if not instances and instance != leaving:
                        continue
                    instances.append(instance)
                    while len(got) < 60:
                        block = await stream.next_block(timeout=20)
                        if block is None:
                            break
                        if block.event == "message":
                            got.append(orjson.loads(block.data)["message"]["content"])
                    last_id = stream.last_id

        reader = asyncio.create_task(reconnecting())
        await asyncio.sleep(0.3)
        assert instances == [leaving]
        await send(20)
        scaling = asyncio.create_task(asyncio.to_thread(stack.run, "up", "--replicas", "2"))
        await send(20)
        await scaling
        await send(20)
        await asyncio.wait_for(reader, 30)
    assert got == sent
    assert len(instances) >= 2
    assert leaving not in instances[1:]
    stack.run("up", "--replicas", str(REPLICAS))


def test_with_no_instance_nginx_answers_503_json(stack, client):
    stack.run("up", "--replicas", "0")
    response = client.get("/conversations/1/messages")
    assert response.status_code == 503
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"error": "no messenger instance is available, try again shortly"}
    assert client.get("/lb-health").text == "OK"
