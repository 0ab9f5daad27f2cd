"""The service under measurement: one `python -m messenger serve` process (one uvicorn process,
as one container runs it), started and stopped by the bench and read from /proc for its CPU
time and memory; and the RabbitMQ queue its relay publishes to, deleted after each part."""

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import aio_pika
import httpx

from bench.auth import Tokens
from bench.database import Database
from bench.shell import MESSENGER, BenchFailed

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_SECONDS = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Service:
    """One `python -m messenger serve` process: one uvicorn process, as in production."""

    def __init__(
        self, database: Database, port: int, queue: str, log: Path, tokens: Tokens | None = None
    ) -> None:
        self.database = database
        self.port = port
        self.queue = queue
        self.log = log
        self.tokens = tokens  # AUTH_MODE=jwt with these tokens; None: header mode
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, *, relay: bool, logs: bool) -> dict[str, str]:
        env = self.database.env(
            MESSENGER_ENV="development",
            HOST="127.0.0.1",
            PORT=str(self.port),
            RELAY_ENABLED="true" if relay else "false",
            AMQP_QUEUE=self.queue,
            AMQPHOST=os.environ.get("AMQPHOST", "127.0.0.1"),
            AMQPPORT=os.environ.get("AMQPPORT", "5672"),
        )
        env.pop("LOG_LEVEL", None)  # the default (info, with the access log), as users run it
        if not logs:
            env["LOG_LEVEL"] = "warning"
        if self.tokens is not None:
            env.update(self.tokens.env())
        return env

    @property
    def mode(self) -> str:
        return "header" if self.tokens is None else "jwt"

    def caller(self, user_id: int) -> dict[str, str]:
        """The headers naming the caller in this service's AUTH_MODE."""
        if self.tokens is None:
            return {"User-Id": str(user_id)}
        return {"Authorization": self.tokens.authorization(user_id)}

    def start(self, *, relay: bool, logs: bool) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*MESSENGER, "serve"],
                env=self.env(relay=relay, logs=logs),
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchFailed(f"the service exited at start:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise BenchFailed(
            f"the service did not answer /health within {START_SECONDS} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def memory_mb(self) -> tuple[float, float]:
        """Resident memory now and at its peak (VmRSS, VmHWM), in MB."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.MULTILINE))
        return int(values["VmRSS"]) / 1024, int(values["VmHWM"]) / 1024

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def create_conversation(self, low: int, high: int) -> int:
        body = {"participant_ids": [low, high]}
        response = httpx.post(
            f"{self.url}/conversations", json=body, headers=self.caller(low), timeout=10
        )
        if response.status_code != 201:
            raise BenchFailed(f"POST /conversations: {response.status_code} {response.text}")
        return int(response.json()["conversation"]["id"])

    def relay_problems(self, since: int) -> list[str]:
        """The relay's warnings and errors logged after byte `since` of the log."""
        with self.log.open("rb") as log:
            log.seek(since)
            lines = log.read().decode(errors="replace").splitlines()
        return [line for line in lines if "messenger.events" in line and " INFO " not in line]

    def log_tail(self) -> str:
        return "".join(self.log.read_text(errors="replace").splitlines(keepends=True)[-20:])


async def delete_queue(queue: str) -> None:
    """Delete the bench's queue (its events go nowhere else); BenchFailed if RabbitMQ is down."""
    host, port = os.environ.get("AMQPHOST", "127.0.0.1"), int(os.environ.get("AMQPPORT", "5672"))
    try:
        connection = await aio_pika.connect(host=host, port=port, timeout=10)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as error:
        raise BenchFailed(f"cannot reach RabbitMQ at {host}:{port}: {error!r}") from error
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue)
    finally:
        await connection.close()
