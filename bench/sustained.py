"""The sustained send load: do events keep up with sends?

32 connections send into four conversations for --sustained seconds, first with the relay in
the service, then with RELAY_ENABLED=false and `python -m messenger relay` as its own process.
Every few seconds it samples the sends (the outbox id sequence), the backlog and the age of its
oldest event (the service's own outbox_backlog query) and prints that interval's sends/s and
events/s as it goes; then events published during the load / events written, the worst oldest
age, and how long the backlog took to drain after the load.
"""

import asyncio
import subprocess
import time
from dataclasses import dataclass

import asyncpg

from bench.output import Progress, say
from bench.service import Service, cpu_seconds, delete_queue
from bench.shell import MESSENGER, BenchFailed
from bench.wrk import Load, WrkResult, parse_wrk, warm, wrk_command
from messenger import db

CONVERSATIONS = 4  # the sustained load spreads its sends over this many
DRAIN_CAP_SECONDS = 30.0
DRAIN_POLL_SECONDS = 0.1


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


def sample_line(previous: Sample, sample: Sample) -> str:
    interval = sample.seconds - previous.seconds
    sends = sample.written - previous.written
    events = previous.pending + sends - sample.pending
    return (
        f"    {sample.seconds:5.1f} s  {sends / interval:7,.0f} sends/s"
        f"  {events / interval:7,.0f} events/s  {sample.pending:7,} pending"
        f"  oldest {sample.oldest_age:5.1f} s"
    )


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
    """Run `load` for `seconds`, sampling the outbox every `every` seconds (each sample printed
    as it comes), then time the drain."""
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
        say("    time, sends/s and events/s over the last interval, pending, oldest age")
        samples: list[Sample] = []
        previous = Sample(0.0, 0, pending_before, 0.0)
        while True:
            await asyncio.wait([finished], timeout=every)
            pending, oldest_age = await db.outbox_backlog(conn)
            written = await outbox_written(conn) - first_id
            samples.append(Sample(time.monotonic() - started, written, pending, oldest_age))
            say(sample_line(previous, samples[-1]))
            previous = samples[-1]
            if finished.done():
                break
        cpu = service.cpu_seconds() - cpu_before
        say(f"    load done; waiting for the outbox to drain (at most {DRAIN_CAP_SECONDS:g} s)")
        drain = await wait_drained(conn)
        stdout, stderr = finished.result()
        if process.returncode != 0:
            raise BenchFailed(f"wrk failed:\n{stdout.decode()}{stderr.decode()}")
        return parse_wrk(stdout.decode(), cpu), samples, pending_before, drain
    finally:
        await conn.close()


def sustained(
    service: Service,
    load: Load,
    *,
    separate: bool,
    logs: bool,
    seconds: float,
    warmup: float,
    progress: Progress,
) -> Sustained:
    """The send load for `seconds` with the relay in the service or as its own process."""
    name = "relay process" if separate else "in-process relay"
    asyncio.run(delete_queue(service.queue))
    service.database.psql("TRUNCATE outbox")
    relay: subprocess.Popen[bytes] | None = None
    log_size = service.log.stat().st_size if service.log.exists() else 0
    service.start(relay=not separate, logs=logs)
    try:
        if separate:
            with service.log.open("ab") as log:
                relay = subprocess.Popen(
                    [*MESSENGER, "relay"],
                    env=service.env(relay=True, logs=logs),
                    stdout=log,
                    stderr=log,
                )
        progress.step(f"sustained send load, {name} (warm-up, then measured)", warmup + seconds)
        warm(service, load, warmup)
        relay_cpu = cpu_seconds(relay.pid) if relay else 0.0
        result, samples, before, drain = asyncio.run(
            watch_outbox(service, load, seconds, max(1.0, min(5.0, seconds / 12)))
        )
        relay_share = (cpu_seconds(relay.pid) - relay_cpu) / result.seconds if relay else None
    finally:
        if relay is not None:
            relay.terminate()
            relay.wait(timeout=20)
        service.stop()
        asyncio.run(delete_queue(service.queue))
    # A stall in the figures is explained here: a publish timeout, the broker restarted, ...
    for line in service.relay_problems(since=log_size)[-5:]:
        say(f"  {name} logged: {line}")
    return Sustained(name, result, samples, before, drain, relay_share)


def summary(run: Sustained) -> str:
    seconds = run.load.seconds
    drained = "not within 30 s" if run.drain_seconds is None else f"{run.drain_seconds:.1f} s"
    cpu = "" if run.relay_cpu_share is None else f"; relay process CPU {run.relay_cpu_share:.0%}"
    return (
        f"  {run.name}: {run.sent / seconds:,.0f} sends/s, {run.published / seconds:,.0f}"
        f" events/s published during the load (ratio {run.ratio:.2f}); oldest pending"
        f" {run.oldest_age:.1f} s at worst; drained {drained} after the load; service CPU"
        f" {run.load.cpu_share:.0%}{cpu}; wrk errors {run.load.errors}, non-2xx"
        f" {run.load.non_2xx}"
    )
