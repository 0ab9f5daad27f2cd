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
import importlib.util
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

from messenger.settings import Settings

SCRIPTS = Path(__file__).resolve().parent
WRK_LUA = SCRIPTS / "bench_wrk.lua"
PYTHON = sys.executable
MESSAGE_CONTENT = "hello from the benchmark"
MESSAGE_BODY = json.dumps({"content": MESSAGE_CONTENT})
# pgbench gets as many clients as the service has pool connections.
POOL_MAX = int(Settings.model_fields["pg_pool_max"].default)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Targets of issues 2 and 3.
SEND_VS_PGBENCH = 0.5
READ_VS_PGBENCH = 0.25
SEND_P99_MS = 50.0
LARGE_VS_EMPTY = 1.2
RSS_MB = 120.0
DRAIN_SECONDS = 5.0
RELAY_ON_VS_OFF = 0.8

LARGE_ROUNDS = 4  # of the empty vs 1M-message comparison, seconds / LARGE_ROUNDS each
KEYED_ROUNDS = 3  # of the send with and without an Idempotency-Key, alternated
NEW_KEY_EACH = "*"
DRAIN_CAP_SECONDS = 30.0
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

    def start(self, *, relay: bool) -> None:
        env = self.database.env(
            MESSENGER_ENV="development",
            HOST="127.0.0.1",
            PORT=str(self.port),
            RELAY_ENABLED="true" if relay else "false",
            AMQP_QUEUE=self.queue,
            AMQPHOST=os.environ.get("AMQPHOST", "127.0.0.1"),
            AMQPPORT=os.environ.get("AMQPPORT", "5672"),
            # An access log line per request would cost the service more CPU than some
            # handlers do; warnings and errors still reach the log.
            LOG_LEVEL="warning",
        )
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [PYTHON, "-m", "messenger", "serve"], env=env, stdout=log, stderr=log
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
        """User and system CPU time of the process so far."""
        assert self.process is not None
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def create_conversation(self, low: int, high: int) -> int:
        body = {"participant_ids": [low, high]}
        response = httpx.post(f"{self.url}/conversations", json=body, timeout=10)
        if response.status_code != 201:
            raise BenchFailed(f"POST /conversations: {response.status_code} {response.text}")
        return int(response.json()["conversation"]["id"])

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
        run(command(warmup), env=database.env())
    output = run(command(seconds), env=database.env())
    tps = re.search(r"^tps = ([\d.]+)", output, re.MULTILINE)
    latency = re.search(r"^latency average = ([\d.]+) ms", output, re.MULTILINE)
    failed = re.search(r"^number of failed transactions: (\d+)", output, re.MULTILINE)
    if tps is None or latency is None:
        raise BenchFailed(f"cannot read pgbench's output:\n{output}")
    if failed is not None and int(failed[1]) > 0:
        raise BenchFailed(f"pgbench transactions failed:\n{output}")
    return PgbenchResult(float(tps[1]), float(latency[1]))


# ---------------------------------------------------------------------------------------------
# The relay


def relay_available() -> bool:
    return importlib.util.find_spec("messenger.events") is not None


@dataclass(frozen=True)
class RelayResult:
    off: WrkResult
    on: WrkResult
    written: int  # events written to the outbox during the measured load
    backlog_at_end: int
    peak_backlog: int
    drain_seconds: float | None  # None: not drained within DRAIN_CAP_SECONDS
    rss_mb: float

    @property
    def published_per_second(self) -> float:
        """Events published while the load ran."""
        return (self.written - self.backlog_at_end) / self.on.seconds


async def outbox_backlog(conn: asyncpg.Connection) -> int:
    value: int = await conn.fetchval("SELECT count(*) FROM outbox")
    return value


async def outbox_last_id(conn: asyncpg.Connection) -> int:
    value: int = await conn.fetchval("SELECT last_value FROM outbox_id_seq")
    return value


async def wait_drained(conn: asyncpg.Connection) -> float | None:
    """Seconds until the outbox is empty; None if it is not within DRAIN_CAP_SECONDS."""
    started = time.monotonic()
    while time.monotonic() - started < DRAIN_CAP_SECONDS:
        if await outbox_backlog(conn) == 0:
            return time.monotonic() - started
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    return None


async def load_watching_outbox(
    service: Service, load: Load, seconds: float
) -> tuple[WrkResult, int, int, int, float | None]:
    """Run `load` while sampling the outbox, then time how long the backlog takes to drain."""
    conn = await service.database.connect()
    try:
        if await wait_drained(conn) is None:
            say("  the relay did not drain the warm-up's events within 30 s; measuring anyway")
        first_id = await outbox_last_id(conn)
        cpu_before = service.cpu_seconds()
        command, env = wrk_command(service, load, seconds)
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        finished = asyncio.ensure_future(process.communicate())
        peak = 0
        while not finished.done():
            peak = max(peak, await outbox_backlog(conn))
            await asyncio.wait([finished], timeout=0.25)
        at_end = await outbox_backlog(conn)
        written = await outbox_last_id(conn) - first_id
        cpu = service.cpu_seconds() - cpu_before
        drain = await wait_drained(conn)
        stdout, stderr = finished.result()
        if process.returncode != 0:
            raise BenchFailed(f"wrk failed:\n{stdout.decode()}{stderr.decode()}")
        return parse_wrk(stdout.decode(), cpu), written, at_end, max(peak, at_end), drain
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


def relay_benchmark(service: Service, load: Load, seconds: float, warmup: float) -> RelayResult:
    """Sends with the relay off, then on (a restart between), and how the relay keeps up."""
    service.database.psql("TRUNCATE outbox")
    service.start(relay=False)
    try:
        off = wrk(service, load, seconds, warmup)
    finally:
        service.stop()
    # Events left by earlier runs would be published now and muddle the figures.
    service.database.psql("TRUNCATE outbox")
    service.start(relay=True)
    try:
        command, env = wrk_command(service, load, warmup)
        run(command, env=env)
        on, written, at_end, peak, drain = asyncio.run(load_watching_outbox(service, load, seconds))
        rss, _ = service.memory_mb()
    finally:
        service.stop()
    return RelayResult(off, on, written, at_end, peak, drain, rss)


def run_relay_benchmark(
    service: Service, conversation: int, queue: str, seconds: float, warmup: float
) -> RelayResult:
    """The relay runs publish to their own queue, deleted before and after."""
    asyncio.run(delete_queue(queue))
    try:
        return relay_benchmark(service, send_load("send", conversation, 32, 5), seconds, warmup)
    finally:
        asyncio.run(delete_queue(queue))


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
        say("  pgbench rows: transactions/s and average latency, with as many clients as the")
        say("  service has pool connections. CPU us/req: the service process's CPU time per")
        say("  request; CPU: its share of one core (a CPU-bound scenario far below 100% means")
        say("  other processes on the machine took the rest).")

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


def send_load(name: str, conversation: int, connections: int, user_id: int) -> Load:
    path = f"/conversations/{conversation}/messages"
    return Load(name, path, connections, "POST", MESSAGE_BODY, user_id)


def idempotency_rounds(
    service: Service, conversation: int, sender: int, seconds: float, report: Report
) -> None:
    """A send without a key, with a new key each, and repeating one key, in alternated rounds
    so that the machine's other load hits all three alike; medians with their ranges."""
    plain = send_load("send, no key", conversation, 32, sender)
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


def median_result(rounds: list[WrkResult]) -> WrkResult:
    """Each figure's median over the rounds, as one row of the report."""

    def median(figure: str) -> float:
        return float(statistics.median(getattr(result, figure) for result in rounds))

    return WrkResult(
        requests=round(median("rps") * 1000),
        seconds=1000.0,
        errors=sum(result.errors for result in rounds),
        non_2xx=sum(result.non_2xx for result in rounds),
        p50_ms=median("p50_ms"),
        p99_ms=median("p99_ms"),
        mean_ms=median("mean_ms"),
        cpu_us_per_request=median("cpu_us_per_request"),
        cpu_share=median("cpu_share"),
    )


def benchmark(args: argparse.Namespace, scratch: Path) -> None:
    database = Database.from_environment(args.database)
    service = Service(database, args.port or free_port(), args.queue, scratch / "service.log")
    seconds, warmup = args.duration, args.warmup
    report = Report()

    say(
        f"messenger bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}:"
        f" {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; one uvicorn process"
        f" (LOG_LEVEL=warning, PG_POOL_MAX={POOL_MAX}); wrk 1 thread; {seconds:g} s per"
        f" scenario after {warmup:g} s warm-up"
    )
    section("setup")
    recreate_database(database)
    run([PYTHON, str(SCRIPTS / "bench_sql.py"), str(scratch)])
    say(f"database {database.name} recreated; pgbench scripts generated from messenger.db")

    service.start(relay=False)
    try:
        # Users 1-3 are the seeded ones, 4-9 bench users; each pair shares one conversation.
        send_conversation = service.create_conversation(1, 2)
        read_conversation = service.create_conversation(1, 3)
        pgbench_conversation = service.create_conversation(2, 3)
        empty_conversation = service.create_conversation(4, 5)
        large_conversation = service.create_conversation(4, 6)
        relay_conversation = service.create_conversation(5, 6)
        keyed_conversation = service.create_conversation(7, 8)
        fill(database, read_conversation, 1, 100)
        if not args.skip_large:
            took = fill(database, large_conversation, 4, args.large_messages)
            say(
                f"conversation {large_conversation} filled with {args.large_messages:,}"
                f" messages in {took:.1f} s"
            )
        database.psql("VACUUM ANALYZE")

        section("the service under wrk; its SQL under pgbench right after, on the same database")
        loads = {
            "health": Load("health", "/health", 32),
            "conversations": Load("list conversations", "/conversations", 32, user_id=1),
            "read": Load(
                "list a 100-message conversation",
                f"/conversations/{read_conversation}/messages",
                32,
            ),
            "send_32": send_load("send, one conversation", send_conversation, 32, 1),
            "send_256": send_load("send, one conversation", send_conversation, 256, 1),
        }
        # The statement each scenario issues, for pgbench to run just after the scenario, so
        # that both see the same load from the machine's other tenants.
        sql: dict[str, tuple[str, Path, dict[str, object]]] = {
            "read": (
                "pgbench: 100-message read SQL",
                scratch / "read.sql",
                {"channel_id": read_conversation, "after_index": 0, "page_limit": 1000},
            ),
            "send_32": (
                "pgbench: send SQL",
                scratch / "send.sql",
                {"channel_id": pgbench_conversation, "user_id": 2, "content": MESSAGE_CONTENT},
            ),
        }
        results: dict[str, WrkResult] = {}
        sql_results: dict[str, PgbenchResult] = {}
        for key, load in loads.items():
            results[key] = result = wrk(service, load, seconds, warmup)
            report.http(load.name, load.connections, result)
            say(f"  {load.name} at {load.connections}: {result.rps:,.0f} req/s")
            if key in sql:
                name, script, variables = sql[key]
                sql_results[key] = tps = pgbench(database, script, variables, seconds, warmup)
                report.sql(name, tps)
                say(f"  {name}: {tps.tps:,.0f} transactions/s")

        # Short runs, alternated, so that a change in the machine's load hits both alike.
        large_rounds: list[tuple[WrkResult, WrkResult]] = []
        if not args.skip_large:
            empty = send_load("send, empty conversation", empty_conversation, 4, 4)
            large = send_load("send, 1M-message conversation", large_conversation, 4, 4)
            for _ in range(LARGE_ROUNDS):
                pair = (
                    wrk(service, empty, seconds / LARGE_ROUNDS, 1),
                    wrk(service, large, seconds / LARGE_ROUNDS, 1),
                )
                large_rounds.append(pair)
            for name, side in ((empty.name, 0), (large.name, 1)):
                combined = combine([pair[side] for pair in large_rounds])
                report.http(f"{name} ({LARGE_ROUNDS} rounds)", 4, combined)
                say(f"  {name} at 4: {combined.rps:,.0f} req/s, p50 {combined.p50_ms:.2f} ms")

        section("send with an Idempotency-Key")
        idempotency_rounds(service, keyed_conversation, 7, seconds, report)
        rss, peak_rss = service.memory_mb()
    finally:
        service.stop()
    pg_send, pg_read = sql_results["send_32"], sql_results["read"]

    section("the relay")
    relay: RelayResult | None = None
    relay_missing = "not available (messenger/events.py is missing: RELAY_ENABLED has no effect)"
    if relay_available():
        try:
            relay = run_relay_benchmark(service, relay_conversation, args.queue, seconds, warmup)
        except BenchFailed as error:
            relay_missing = f"could not run: {error}"
    if relay is None:
        say(f"  relay: {relay_missing}")
    else:
        report.http("send, relay off", 32, relay.off)
        report.http("send, relay on", 32, relay.on)
        drain = relay.drain_seconds
        drained = "not within 30 s" if drain is None else f"in {drain:.1f} s"
        if drain and relay.backlog_at_end:
            drained += f" ({relay.backlog_at_end / drain:,.0f} events/s)"
        say(
            f"  relay on: {relay.written:,} events written during the {relay.on.seconds:.0f} s"
            f" load, {relay.published_per_second:,.0f} events/s published during it; backlog"
            f" {relay.backlog_at_end:,} when the load ended (peak {relay.peak_backlog:,}),"
            f" drained {drained} after it; queue {args.queue} deleted"
        )

    section("figures")
    report.print()
    relay_rss = f"; relay-on instance {relay.rss_mb:.0f} MB" if relay else ""
    say(f"  resident memory after the run: {rss:.0f} MB (peak {peak_rss:.0f} MB){relay_rss}")
    say(f"  load average at the end: {os.getloadavg()[0]:.2f}, this benchmark's own load included")

    section("targets")
    send_ratio = results["send_32"].rps / pg_send.tps
    report.target(
        send_ratio >= SEND_VS_PGBENCH,
        f"send at 32 connections / pgbench of its SQL = {results['send_32'].rps:,.0f} /"
        f" {pg_send.tps:,.0f} = {send_ratio:.2f} (target >= {SEND_VS_PGBENCH})",
    )
    at_256 = results["send_256"]
    report.target(
        at_256.errors == 0 and at_256.non_2xx == 0,
        f"send at 256 connections: {at_256.errors} errors, {at_256.non_2xx} non-2xx"
        " (target 0 and 0)",
    )
    read_ratio = results["read"].rps / pg_read.tps
    report.target(
        read_ratio >= READ_VS_PGBENCH,
        f"100-message read / pgbench of its SQL = {results['read'].rps:,.0f} /"
        f" {pg_read.tps:,.0f} = {read_ratio:.2f} (target >= {READ_VS_PGBENCH})",
    )
    p99 = results["send_32"].p99_ms
    report.target(
        p99 <= SEND_P99_MS,
        f"send p99 at 32 connections = {p99:.1f} ms (target <= {SEND_P99_MS:g} ms)",
    )
    if large_rounds:
        empty_p50 = combine([pair[0] for pair in large_rounds]).p50_ms
        large_p50 = combine([pair[1] for pair in large_rounds]).p50_ms
        ratio = large_p50 / empty_p50
        report.target(
            ratio <= LARGE_VS_EMPTY,
            f"send p50 at 4 connections, 1M-message / empty conversation = {large_p50:.2f} /"
            f" {empty_p50:.2f} ms = {ratio:.2f}, means of {len(large_rounds)} rounds"
            f" (target <= {LARGE_VS_EMPTY})",
        )
    else:
        report.target(None, "send into a 1M-message conversation: skipped (--skip-large)")
    worst_rss = max(rss, relay.rss_mb if relay else 0.0)
    report.target(
        worst_rss <= RSS_MB,
        f"resident memory of one instance after the run = {worst_rss:.0f} MB"
        f" (target <= {RSS_MB:g} MB)",
    )
    if relay is None:
        report.target(None, f"relay drains the backlog within 5 s: relay {relay_missing}")
        report.target(None, "send with the relay on / off: see above")
    else:
        drain = relay.drain_seconds
        report.target(
            drain is not None and drain <= DRAIN_SECONDS,
            "backlog drained "
            + ("not within 30 s" if drain is None else f"{drain:.1f} s")
            + f" after the load ended (target <= {DRAIN_SECONDS:g} s)",
        )
        on_off = relay.on.rps / relay.off.rps
        report.target(
            on_off >= RELAY_ON_VS_OFF,
            f"send at 32 connections, relay on / off = {relay.on.rps:,.0f} /"
            f" {relay.off.rps:,.0f} = {on_off:.2f} (target >= {RELAY_ON_VS_OFF})",
        )
    report.print_targets()


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=10, help="seconds per scenario")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up seconds per scenario")
    parser.add_argument("--database", default="messenger_bench", help="recreated, then dropped")
    parser.add_argument("--queue", default="bench_queue", help="AMQP_QUEUE of the relay runs")
    parser.add_argument("--port", type=int, default=0, help="service port (default: a free one)")
    parser.add_argument("--large-messages", type=int, default=1_000_000)
    parser.add_argument("--skip-large", action="store_true", help="skip the large conversation")
    parser.add_argument("--keep-database", action="store_true", help="keep it for inspection")
    args = parser.parse_args()
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
