"""The load benchmark behind scripts/bench: the service under wrk, its SQL under pgbench, the relay.

Run it through scripts/bench, which installs wrk, pgbench, PostgreSQL and RabbitMQ first and
passes the configuration. It prints a table of figures and one PASS/MISS line per target, and
exits 0 whether or not the targets are met; non-zero means the benchmark itself could not run.

Besides requests/s and latency, each HTTP scenario reports the CPU time the service process
spent per request (from /proc): on a machine shared with other work, throughput moves with
the neighbours' load while CPU per request mostly does not, so it is the figure to compare
between runs and between versions of the service.
"""

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import aio_pika
import asyncpg
import httpx

from messenger import db
from messenger.settings import Settings

SCRIPTS = Path(__file__).resolve().parent
WRK_LUA = SCRIPTS / "bench_wrk.lua"
PYTHON = sys.executable
MESSAGE_CONTENT = "hello from the benchmark"
MESSAGE_BODY = json.dumps({"content": MESSAGE_CONTENT})
# pgbench gets as many clients as the service has pool connections.
POOL_MAX = int(Settings.model_fields["pg_pool_max"].default)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Targets of issue 8 (docs/performance.md), and the 1M-message one of issue 3.
READ_VS_PGBENCH = 0.25
SEND_VS_PGBENCH = 0.80
SEND_P99_MS = 40.0
SEND_256_P99_MS = 200.0
EVENTS_VS_SENDS = 1.0  # published / sent during the sustained load, two decimals
OLDEST_PENDING_SECONDS = 2.0
RSS_MB = 100.0
LARGE_VS_EMPTY = 1.2

LARGE_ROUNDS = 4  # of the empty vs 1M-message comparison, seconds / LARGE_ROUNDS each
SUSTAINED_CONVERSATIONS = 4  # the sustained load spreads its sends over this many
KEYED_ROUNDS = 3  # of the send with and without an Idempotency-Key, alternated
NEW_KEY_EACH = "*"
DRAIN_CAP_SECONDS = 30.0
PGBENCH_TRIES = 4
DRAIN_POLL_SECONDS = 0.1


class BenchFailed(Exception):
    """The benchmark could not run; the text says why."""


def say(text: str = "") -> None:
    print(text, flush=True)


def run(command: list[str], *, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchFailed(f"{' '.join(command[:3])} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


# ---------------------------------------------------------------------------------------------
# The database


@dataclass(frozen=True)
class Database:
    host: str
    port: int
    user: str
    name: str

    @classmethod
    def from_environment(cls, name: str) -> "Database":
        return cls(
            os.environ.get("PGHOST", "127.0.0.1"),
            int(os.environ.get("PGPORT", "5432")),
            os.environ.get("PGUSER", "postgres"),
            name,
        )

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.name,
            **extra,
        }

    def psql(self, sql: str, *, database: str | None = None) -> str:
        command = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql]
        return run(command, env=self.env(PGDATABASE=database or self.name)).strip()

    def drop(self) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)', database="postgres")

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=os.environ.get("PGPASSWORD"),
            database=self.name,
        )


def recreate_database(database: Database) -> None:
    """A fresh bench database built the way production's is: the migrate job, then seed."""
    database.drop()
    env = database.env(MESSENGER_ENV="development", LOG_LEVEL="warning")
    run([PYTHON, "-m", "messenger", "migrate"], env=env)
    run([PYTHON, "-m", "messenger", "seed"], env=env)
    # Six users beside the three seeded ones: two users share one conversation, we need six.
    database.psql("INSERT INTO users (name) SELECT 'bench user ' || i FROM generate_series(4, 9) i")


def fill(database: Database, conversation: int, user_id: int, count: int) -> float:
    """Give a conversation `count` messages with one INSERT ... SELECT; returns seconds taken."""
    started = time.monotonic()
    conversation, user_id, count = int(conversation), int(user_id), int(count)
    # Integers only: nothing to inject.
    database.psql(
        f"""
        BEGIN;
        INSERT INTO messages (content, user_id, channel_id, index)
        SELECT 'message number ' || i, {user_id}, {conversation}, i
        FROM generate_series(1, {count}) AS i;
        UPDATE channels SET last_index = {count} WHERE id = {conversation};
        COMMIT;
        """  # noqa: S608
    )
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------------
# The service


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

    def __init__(self, database: Database, port: int, queue: str, log: Path) -> None:
        self.database = database
        self.port = port
        self.queue = queue
        self.log = log
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
        return env

    def start(self, *, relay: bool, logs: bool) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [PYTHON, "-m", "messenger", "serve"],
                env=self.env(relay=relay, logs=logs),
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchFailed(f"the service exited at start:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise BenchFailed(f"the service did not answer /health within 30 s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _status(self) -> str:
        assert self.process is not None
        return Path(f"/proc/{self.process.pid}/status").read_text()

    def memory_mb(self) -> tuple[float, float]:
        """Resident memory now and at its peak (VmRSS, VmHWM), in MB."""
        values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", self._status(), re.MULTILINE))
        return int(values["VmRSS"]) / 1024, int(values["VmHWM"]) / 1024

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def create_conversation(self, low: int, high: int) -> int:
        body = {"participant_ids": [low, high]}
        response = httpx.post(f"{self.url}/conversations", json=body, timeout=10)
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


# ---------------------------------------------------------------------------------------------
# wrk and pgbench


@dataclass(frozen=True)
class Load:
    """One HTTP request shape: wrk sends it over and over on `connections` connections."""

    name: str
    path: str
    connections: int
    method: str = "GET"
    body: str = ""
    user_id: int | None = None
    more_paths: tuple[str, ...] = ()  # cycled through with `path`
    idempotency_key: str = ""  # "": none; NEW_KEY_EACH: a new one per request; else this one


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int  # connect, read and write errors and timeouts (wrk's default timeout: 2 s)
    non_2xx: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    cpu_us_per_request: float = 0.0
    cpu_share: float = 0.0  # of one core: below ~0.9 in a CPU-bound scenario, the machine is busy

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def wrk_command(service: Service, load: Load, seconds: float) -> tuple[list[str], dict[str, str]]:
    command = [
        "wrk",
        "--threads=1",  # one wrk thread outpaces one Python process and leaves it the CPU
        f"--connections={load.connections}",
        f"--duration={max(1, round(seconds))}s",
        f"--script={WRK_LUA}",
        f"{service.url}{load.path}",
    ]
    env = {
        **os.environ,
        "BENCH_METHOD": load.method,
        "BENCH_BODY": load.body,
        "BENCH_USER_ID": "" if load.user_id is None else str(load.user_id),
        "BENCH_PATHS": " ".join((load.path, *load.more_paths)) if load.more_paths else "",
        "BENCH_IDEMPOTENCY_KEY": "",
        "BENCH_IDEMPOTENCY_KEY_PREFIX": "",
    }
    if load.idempotency_key == NEW_KEY_EACH:  # a prefix per run: no key repeats an earlier run's
        env["BENCH_IDEMPOTENCY_KEY_PREFIX"] = f"{uuid.uuid4().hex}-"
    else:
        env["BENCH_IDEMPOTENCY_KEY"] = load.idempotency_key
    return command, env


def parse_wrk(output: str, cpu_seconds: float = 0.0) -> WrkResult:
    match = re.search(r"^BENCH_RESULT (\{.*\})$", output, re.MULTILINE)
    if match is None:
        raise BenchFailed(f"wrk printed no result line:\n{output}")
    raw = json.loads(match[1])
    requests, seconds = raw["requests"], raw["duration_us"] / 1e6
    return WrkResult(
        requests=requests,
        seconds=seconds,
        errors=raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
        non_2xx=raw["non_2xx"],
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
        cpu_us_per_request=cpu_seconds / requests * 1e6 if requests else 0.0,
        cpu_share=cpu_seconds / seconds,
    )


def combine(rounds: list[WrkResult]) -> WrkResult:
    """Several runs of one load as one: totals, and the means of their percentiles."""
    requests = sum(result.requests for result in rounds)
    seconds = sum(result.seconds for result in rounds)
    return WrkResult(
        requests=requests,
        seconds=seconds,
        errors=sum(result.errors for result in rounds),
        non_2xx=sum(result.non_2xx for result in rounds),
        p50_ms=sum(result.p50_ms for result in rounds) / len(rounds),
        p99_ms=sum(result.p99_ms for result in rounds) / len(rounds),
        mean_ms=sum(result.mean_ms * result.requests for result in rounds) / requests,
        cpu_us_per_request=sum(r.cpu_us_per_request * r.requests for r in rounds) / requests,
        cpu_share=sum(result.cpu_share * result.seconds for result in rounds) / seconds,
    )


def wrk(service: Service, load: Load, seconds: float, warmup: float) -> WrkResult:
    """Load the service for `warmup` seconds unmeasured, then for `seconds` measured."""
    if warmup > 0:
        command, env = wrk_command(service, load, warmup)
        run(command, env=env)
    command, env = wrk_command(service, load, seconds)
    cpu_before = service.cpu_seconds()
    output = run(command, env=env)
    return parse_wrk(output, service.cpu_seconds() - cpu_before)


@dataclass(frozen=True)
class PgbenchResult:
    tps: float
    latency_ms: float


def run_pgbench(command: list[str], database: Database) -> str:
    """pgbench, tried again a few times while a shared server has no connection slot free."""
    for _ in range(PGBENCH_TRIES - 1):
        try:
            return run(command, env=database.env())
        except BenchFailed as error:
            if "too many clients" not in str(error):
                raise
            say("  pgbench: the server had no connection slot free; trying again")
            time.sleep(5)
    return run(command, env=database.env())


def pgbench(
    database: Database, script: Path, variables: dict[str, object], seconds: float, warmup: float
) -> PgbenchResult:
    def command(duration: float) -> list[str]:
        return [
            "pgbench",
            "--no-vacuum",
            "--protocol=prepared",  # the service's statements are prepared too (asyncpg)
            f"--client={POOL_MAX}",
            f"--jobs={min(POOL_MAX, os.cpu_count() or 1)}",
            f"--time={max(1, round(duration))}",
            *(f"--define={name}={value}" for name, value in variables.items()),
            f"--file={script}",
            database.name,
        ]

    if warmup > 0:
        run_pgbench(command(warmup), database)
    output = run_pgbench(command(seconds), database)
    tps = re.search(r"^tps = ([\d.]+)", output, re.MULTILINE)
    latency = re.search(r"^latency average = ([\d.]+) ms", output, re.MULTILINE)
    failed = re.search(r"^number of failed transactions: (\d+)", output, re.MULTILINE)
    if tps is None or latency is None:
        raise BenchFailed(f"cannot read pgbench's output:\n{output}")
    if failed is not None and int(failed[1]) > 0:
        raise BenchFailed(f"pgbench transactions failed:\n{output}")
    return PgbenchResult(float(tps[1]), float(latency[1]))


# ---------------------------------------------------------------------------------------------
# Alternated rounds: the service and pgbench by turns, so the machine's load hits both alike


@dataclass(frozen=True)
class Paired:
    """Rounds of one HTTP scenario and of pgbench running its SQL, taken by turns."""

    service: list[WrkResult]
    sql: list[PgbenchResult]

    @property
    def ratios(self) -> list[float]:
        return [http.rps / sql.tps for http, sql in zip(self.service, self.sql, strict=True)]

    @property
    def median_ratio(self) -> float:
        return statistics.median(self.ratios)

    def describe(self) -> str:
        ratios = self.ratios
        return (
            f"median {self.median_ratio:.2f} (range {min(ratios):.2f}-{max(ratios):.2f},"
            f" {len(ratios)} rounds)"
        )


def alternate(
    service: Service,
    load: Load,
    script: Path,
    variables: dict[str, object],
    rounds: int,
    seconds: float,
    warmup: float,
) -> Paired:
    """A/B/A/B/...: `rounds` runs of the service under wrk, each followed by one of pgbench."""
    paired = Paired([], [])
    for number in range(rounds):
        first = number == 0  # warm each side up once: caches, plans, connections
        paired.service.append(wrk(service, load, seconds, warmup if first else 0))
        paired.sql.append(
            pgbench(service.database, script, variables, seconds, warmup if first else 0)
        )
    return paired


def median_result(rounds: list[WrkResult]) -> WrkResult:
    """The round with the median throughput (an odd count gives a real round)."""
    ordered = sorted(rounds, key=lambda result: result.rps)
    return ordered[len(ordered) // 2]


def median_tps(rounds: list[PgbenchResult]) -> PgbenchResult:
    ordered = sorted(rounds, key=lambda result: result.tps)
    return ordered[len(ordered) // 2]


# ---------------------------------------------------------------------------------------------
# The sustained send load: do events keep up with sends?


@dataclass(frozen=True)
class Sample:
    seconds: float  # since the measured load started
    written: int  # events written (one per send) since the load started
    pending: int
    oldest_age: float


@dataclass(frozen=True)
class Sustained:
    name: str
    load: WrkResult
    samples: list[Sample]
    pending_before: int
    drain_seconds: float | None  # after the load; None: not within DRAIN_CAP_SECONDS
    relay_cpu_share: float | None  # of one core, when the relay is its own process

    @property
    def sent(self) -> int:
        return self.samples[-1].written

    @property
    def published(self) -> int:
        """Events published while the load ran: the backlog before, plus written, minus left."""
        return self.pending_before + self.sent - self.samples[-1].pending

    @property
    def ratio(self) -> float:
        return self.published / self.sent if self.sent else 0.0

    @property
    def oldest_age(self) -> float:
        return max(sample.oldest_age for sample in self.samples)


async def outbox_written(conn: asyncpg.Connection) -> int:
    value: int = await conn.fetchval("SELECT last_value FROM outbox_id_seq")
    return value


async def wait_drained(conn: asyncpg.Connection) -> float | None:
    """Seconds until the outbox is empty; None if it is not within DRAIN_CAP_SECONDS."""
    started = time.monotonic()
    while time.monotonic() - started < DRAIN_CAP_SECONDS:
        pending, _ = await db.outbox_backlog(conn)
        if pending == 0:
            return time.monotonic() - started
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    return None


async def watch_outbox(
    service: Service, load: Load, seconds: float, every: float
) -> tuple[WrkResult, list[Sample], int, float | None]:
    """Run `load` for `seconds`, sampling the outbox every `every` seconds, then time the drain."""
    conn = await service.database.connect()
    try:
        # The warm-up's events first: a relay process that is still starting would otherwise
        # count against the measured load.
        if await wait_drained(conn) is None:
            say("  the relay did not drain the warm-up's events within 30 s; measuring anyway")
        pending_before, _ = await db.outbox_backlog(conn)
        first_id = await outbox_written(conn)
        cpu_before = service.cpu_seconds()
        command, env = wrk_command(service, load, seconds)
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        finished = asyncio.ensure_future(process.communicate())
        samples = []
        while True:
            await asyncio.wait([finished], timeout=every)
            pending, oldest_age = await db.outbox_backlog(conn)
            written = await outbox_written(conn) - first_id
            samples.append(Sample(time.monotonic() - started, written, pending, oldest_age))
            if finished.done():
                break
        cpu = service.cpu_seconds() - cpu_before
        drain = await wait_drained(conn)
        stdout, stderr = finished.result()
        if process.returncode != 0:
            raise BenchFailed(f"wrk failed:\n{stdout.decode()}{stderr.decode()}")
        return parse_wrk(stdout.decode(), cpu), samples, pending_before, drain
    finally:
        await conn.close()


async def delete_queue(queue: str) -> None:
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


def sustained(
    service: Service, load: Load, *, separate: bool, logs: bool, seconds: float, warmup: float
) -> Sustained:
    """The send load for `seconds` with the relay in the service or as its own process."""
    asyncio.run(delete_queue(service.queue))
    service.database.psql("TRUNCATE outbox")
    relay: subprocess.Popen[bytes] | None = None
    log_size = service.log.stat().st_size if service.log.exists() else 0
    service.start(relay=not separate, logs=logs)
    try:
        if separate:
            with service.log.open("ab") as log:
                relay = subprocess.Popen(
                    [PYTHON, "-m", "messenger", "relay"],
                    env=service.env(relay=True, logs=logs),
                    stdout=log,
                    stderr=log,
                )
        if warmup > 0:
            command, env = wrk_command(service, load, warmup)
            run(command, env=env)
        relay_cpu = cpu_seconds(relay.pid) if relay else 0.0
        result, samples, before, drain = asyncio.run(
            watch_outbox(service, load, seconds, max(1.0, min(5.0, seconds / 12)))
        )
        relay_share = (cpu_seconds(relay.pid) - relay_cpu) / result.seconds if relay else None
    finally:
        if relay is not None:
            relay.send_signal(signal.SIGTERM)
            relay.wait(timeout=20)
        service.stop()
        asyncio.run(delete_queue(service.queue))
    name = "relay process" if separate else "in-process relay"
    # A stall in the figures is explained here: a publish timeout, the broker restarted, ...
    for line in service.relay_problems(since=log_size)[-5:]:
        say(f"  {name} logged: {line}")
    return Sustained(name, result, samples, before, drain, relay_share)


def print_sustained(run: Sustained) -> None:
    say(f"  {run.name}: time, sends/s and events/s over the last interval, pending, oldest age")
    previous = Sample(0.0, 0, run.pending_before, 0.0)
    for sample in run.samples:
        interval = sample.seconds - previous.seconds
        sends = sample.written - previous.written
        events = previous.pending + sends - sample.pending
        say(
            f"    {sample.seconds:5.1f} s  {sends / interval:7,.0f} sends/s"
            f"  {events / interval:7,.0f} events/s  {sample.pending:7,} pending"
            f"  oldest {sample.oldest_age:5.1f} s"
        )
        previous = sample
    seconds = run.load.seconds
    drained = "not within 30 s" if run.drain_seconds is None else f"{run.drain_seconds:.1f} s"
    cpu = "" if run.relay_cpu_share is None else f"; relay process CPU {run.relay_cpu_share:.0%}"
    say(
        f"  {run.name}: {run.sent / seconds:,.0f} sends/s, {run.published / seconds:,.0f}"
        f" events/s published during the load (ratio {run.ratio:.2f}); oldest pending"
        f" {run.oldest_age:.1f} s at worst; drained {drained} after the load; service CPU"
        f" {run.load.cpu_share:.0%}{cpu}"
    )


# ---------------------------------------------------------------------------------------------
# The report


@dataclass
class Report:
    rows: list[tuple[str, ...]] = field(default_factory=list)
    targets: list[tuple[bool | None, str]] = field(default_factory=list)

    def http(self, name: str, connections: int, result: WrkResult) -> None:
        self.rows.append(
            (
                name,
                str(connections),
                f"{result.rps:,.0f}",
                f"{result.p50_ms:.1f}",
                f"{result.p99_ms:.1f}",
                str(result.errors),
                str(result.non_2xx),
                f"{result.cpu_us_per_request:,.0f}",
                f"{result.cpu_share:.0%}",
            )
        )

    def sql(self, name: str, result: PgbenchResult) -> None:
        latency = f"{result.latency_ms:.1f}"
        row = (name, str(POOL_MAX), f"{result.tps:,.0f}", latency, "", "0", "", "", "")
        self.rows.append(row)

    def target(self, passed: bool | None, text: str) -> None:
        self.targets.append((passed, text))

    def print(self) -> None:
        header = (
            "scenario",
            "conns",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "non-2xx",
            "CPU us/req",
            "CPU",
        )
        rows = [header, *self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
            say("  " + "  ".join(cells).rstrip())
        say("  Alternated scenarios show their median round. pgbench rows: transactions/s and")
        say("  average latency, with as many clients as the service has pool connections.")
        say("  CPU us/req: the service process's CPU time per request; CPU: its share of one")
        say("  core (a CPU-bound scenario far below 100% means other processes took the rest).")

    def print_targets(self) -> None:
        for passed, text in self.targets:
            say(f"{ {True: 'PASS', False: 'MISS', None: 'SKIP'}[passed] }  {text}")


def section(title: str) -> None:
    say(f"\n== {title}")


@contextlib.contextmanager
def scratch_directory() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="messenger-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def send_load(name: str, conversations: list[int], connections: int, user_id: int) -> Load:
    paths = tuple(f"/conversations/{conversation}/messages" for conversation in conversations)
    return Load(name, paths[0], connections, "POST", MESSAGE_BODY, user_id, paths[1:])


@dataclass(frozen=True)
class Conversations:
    send: int
    read: int
    pgbench: int
    empty: int
    large: int
    sustained: list[int]
    keyed: int


def setup(service: Service, args: argparse.Namespace, scratch: Path) -> Conversations:
    database = service.database
    recreate_database(database)
    run([PYTHON, str(SCRIPTS / "bench_sql.py"), str(scratch)])
    say(f"database {database.name} recreated; pgbench scripts generated from messenger.db")
    service.start(relay=False, logs=False)
    try:
        # Users 1-3 are the seeded ones, 4-9 bench users; each pair shares one conversation.
        # User 1 has two conversations: the list-of-conversations scenario reads them.
        conversations = Conversations(
            send=service.create_conversation(1, 2),
            read=service.create_conversation(1, 3),
            pgbench=service.create_conversation(2, 3),
            empty=service.create_conversation(4, 5),
            large=service.create_conversation(4, 6),
            sustained=[service.create_conversation(7, high) for high in (5, 6, 8, 9)],
            keyed=service.create_conversation(8, 9),
        )
    finally:
        service.stop()
    fill(database, conversations.read, 1, 100)
    if not args.skip_large:
        took = fill(database, conversations.large, 4, args.large_messages)
        say(
            f"conversation {conversations.large} filled with {args.large_messages:,}"
            f" messages in {took:.1f} s"
        )
    database.psql("VACUUM ANALYZE")
    return conversations


def idempotency_rounds(
    service: Service, conversation: int, sender: int, seconds: float, report: Report
) -> None:
    """A send without a key, with a new key each, and repeating one key, in alternated rounds
    so that the machine's other load hits all three alike; medians with their ranges."""
    plain = send_load("send, no key", [conversation], 32, sender)
    loads = [
        plain,
        replace(plain, name="send, new key each", idempotency_key=NEW_KEY_EACH),
        replace(plain, name="send, repeated key", idempotency_key="bench-1"),
    ]
    rounds: dict[str, list[WrkResult]] = {load.name: [] for load in loads}
    for _ in range(KEYED_ROUNDS):
        for load in loads:
            rounds[load.name].append(wrk(service, load, seconds, 1))

    def spread(name: str, figure: str, form: str) -> str:
        values = sorted(getattr(result, figure) for result in rounds[name])
        low, middle, high = values[0], statistics.median(values), values[-1]
        return f"{middle:{form}} ({low:{form}}-{high:{form}})"

    for load in loads:
        name = load.name
        report.http(f"{name} ({KEYED_ROUNDS} rounds, medians)", 32, median_result(rounds[name]))
        say(
            f"  {name} at 32, medians (ranges) of {KEYED_ROUNDS} alternated rounds:"
            f" {spread(name, 'rps', ',.0f')} req/s, p50 {spread(name, 'p50_ms', '.1f')} ms,"
            f" p99 {spread(name, 'p99_ms', '.1f')} ms,"
            f" CPU {spread(name, 'cpu_us_per_request', ',.0f')} us/req,"
            f" non-2xx {sum(result.non_2xx for result in rounds[name])}"
        )


def benchmark(args: argparse.Namespace, scratch: Path) -> None:
    database = Database.from_environment(args.database)
    service = Service(database, args.port or free_port(), args.queue, scratch / "service.log")
    seconds, warmup, rounds, logs = args.duration, args.warmup, args.rounds, not args.logs_off
    report = Report()
    say(
        f"messenger bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}:"
        f" {os.cpu_count()} cores, load average {load_average()}; one uvicorn process"
        f" (LOG_LEVEL={'info' if logs else 'warning'}, relay on, PG_POOL_MAX={POOL_MAX});"
        f" wrk 1 thread; {seconds:g} s per round after {warmup:g} s warm-up"
        + (" (quick)" if args.quick else "")
    )
    section("setup")
    conversations = setup(service, args, scratch)

    section(f"the service under wrk and its SQL under pgbench, alternated, {rounds} rounds each")
    alternated: dict[str, tuple[Load, str, Path, dict[str, object]]] = {
        "read": (
            Load(
                "list a 100-message conversation",
                f"/conversations/{conversations.read}/messages",
                32,
            ),
            "pgbench: 100-message read SQL",
            scratch / "read.sql",
            {"channel_id": conversations.read, "after_index": 0, "page_limit": 1000},
        ),
        "send_32": (
            send_load("send, one conversation", [conversations.send], 32, 1),
            "pgbench: send SQL",
            scratch / "send.sql",
            {"channel_id": conversations.pgbench, "user_id": 2, "content": MESSAGE_CONTENT},
        ),
    }
    if not args.quick:
        alternated["conversations"] = (
            Load("list conversations", "/conversations", 32, user_id=1),
            "pgbench: list conversations SQL",
            scratch / "conversations.sql",
            {"user_id": 1},
        )
    asyncio.run(delete_queue(args.queue))
    service.start(relay=True, logs=logs)
    paired: dict[str, Paired] = {}
    single: dict[str, WrkResult] = {}
    try:
        for key, (load, sql_name, script, variables) in alternated.items():
            paired[key] = pair = alternate(
                service, load, script, variables, rounds, seconds, warmup
            )
            report.http(load.name, load.connections, median_result(pair.service))
            report.sql(sql_name, median_tps(pair.sql))
            pairs = zip(pair.service, pair.sql, strict=True)
            rates = ", ".join(f"{http.rps:,.0f}/{sql.tps:,.0f}" for http, sql in pairs)
            say(f"  {load.name} / its SQL: {rates}; {pair.describe()}")
        if not args.quick:
            for key, load in {
                "health": Load("health", "/health", 32),
                "send_256": send_load("send, one conversation", [conversations.send], 256, 1),
            }.items():
                single[key] = result = wrk(service, load, seconds, warmup)
                report.http(load.name, load.connections, result)
                say(
                    f"  {load.name} at {load.connections}: {result.rps:,.0f} req/s,"
                    f" p99 {result.p99_ms:.0f} ms"
                )
        large_rounds: list[tuple[WrkResult, WrkResult]] = []
        if not args.skip_large:
            empty = send_load("send, empty conversation", [conversations.empty], 4, 4)
            large = send_load("send, 1M-message conversation", [conversations.large], 4, 4)
            for _ in range(LARGE_ROUNDS):
                pair_ = (
                    wrk(service, empty, seconds / LARGE_ROUNDS, 1),
                    wrk(service, large, seconds / LARGE_ROUNDS, 1),
                )
                large_rounds.append(pair_)
            for name, side in ((empty.name, 0), (large.name, 1)):
                combined = combine([pair_[side] for pair_ in large_rounds])
                report.http(f"{name} ({LARGE_ROUNDS} rounds)", 4, combined)
        if not args.quick:
            section("send with an Idempotency-Key")
            idempotency_rounds(service, conversations.keyed, 8, seconds, report)
        rss, peak_rss = service.memory_mb()
    finally:
        service.stop()
        asyncio.run(delete_queue(args.queue))

    runs: list[Sustained] = []
    if args.sustained > 0:
        section(
            f"sustained send load: {args.sustained:g} s, 32 connections over"
            f" {SUSTAINED_CONVERSATIONS} conversations"
        )
        load = send_load("send, sustained", conversations.sustained, 32, 7)
        for separate in (False, True):
            runs.append(
                sustained(
                    service,
                    load,
                    separate=separate,
                    logs=logs,
                    seconds=args.sustained,
                    warmup=warmup,
                )
            )
            print_sustained(runs[-1])
            report.http(f"send, sustained ({runs[-1].name})", 32, runs[-1].load)

    section("figures")
    report.print()
    say(f"  resident memory after the run: {rss:.0f} MB (peak {peak_rss:.0f} MB)")
    say(f"  load average at the end: {load_average()}, this benchmark's own load included")

    section("targets")
    for key, name, target in (
        ("read", "100-message read", READ_VS_PGBENCH),
        ("send_32", "send at 32 connections", SEND_VS_PGBENCH),
    ):
        ratio = paired[key].median_ratio
        report.target(
            ratio >= target,
            f"{name} / pgbench of its SQL: {paired[key].describe()} (target >= {target})",
        )
    p99 = median_result(paired["send_32"].service).p99_ms
    report.target(
        p99 <= SEND_P99_MS,
        f"send p99 at 32 connections = {p99:.1f} ms, median round (target <= {SEND_P99_MS:g} ms)",
    )
    if "send_256" in single:
        at_256 = single["send_256"]
        report.target(
            at_256.p99_ms <= SEND_256_P99_MS and at_256.errors == 0 and at_256.non_2xx == 0,
            f"send at 256 connections: p99 {at_256.p99_ms:.0f} ms, {at_256.errors} errors,"
            f" {at_256.non_2xx} non-2xx (target <= {SEND_256_P99_MS:g} ms, 0, 0)",
        )
    if large_rounds:
        empty_p50 = combine([pair_[0] for pair_ in large_rounds]).p50_ms
        large_p50 = combine([pair_[1] for pair_ in large_rounds]).p50_ms
        ratio = large_p50 / empty_p50
        report.target(
            ratio <= LARGE_VS_EMPTY,
            f"send p50 at 4 connections, 1M-message / empty conversation = {large_p50:.2f} /"
            f" {empty_p50:.2f} ms = {ratio:.2f}, means of {len(large_rounds)} rounds"
            f" (target <= {LARGE_VS_EMPTY})",
        )
    for sustained_run in runs:
        report.target(
            round(sustained_run.ratio, 2) >= EVENTS_VS_SENDS
            and sustained_run.oldest_age < OLDEST_PENDING_SECONDS,
            f"{sustained_run.name}: events published / sends = {sustained_run.ratio:.2f},"
            f" oldest pending {sustained_run.oldest_age:.1f} s"
            f" (target >= {EVENTS_VS_SENDS}, < {OLDEST_PENDING_SECONDS:g} s)",
        )
    report.target(
        rss <= RSS_MB, f"resident memory after the run = {rss:.0f} MB (target <= {RSS_MB:g} MB)"
    )
    report.print_targets()


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="read and send rows only, short rounds"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per round (10; quick 5)"
    )
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds (3; quick 1)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of each side")
    parser.add_argument(
        "--sustained",
        type=float,
        default=None,
        help="seconds of the sustained send load (60; quick 0: skipped)",
    )
    parser.add_argument("--logs-off", action="store_true", help="LOG_LEVEL=warning: no access log")
    parser.add_argument("--database", default=f"messenger_bench_{os.getpid()}", help="then dropped")
    parser.add_argument("--queue", default=f"bench_queue_{os.getpid()}", help="deleted after")
    parser.add_argument("--port", type=int, default=0, help="service port (default: a free one)")
    parser.add_argument("--large-messages", type=int, default=1_000_000)
    parser.add_argument("--skip-large", action="store_true", help="skip the large conversation")
    parser.add_argument("--keep-database", action="store_true", help="keep it for inspection")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    defaults = (5.0, 1.0, 0.0) if args.quick else (10.0, 3.0, 60.0)
    for name, default in zip(("duration", "warmup", "sustained"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.skip_large = args.skip_large or args.quick
    database = Database.from_environment(args.database)
    with scratch_directory() as scratch:
        try:
            benchmark(args, scratch)
        except BenchFailed as error:
            print(f"bench: cannot run: {error}", file=sys.stderr)
            return 1
        finally:
            if not args.keep_database:
                with contextlib.suppress(BenchFailed):
                    database.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
