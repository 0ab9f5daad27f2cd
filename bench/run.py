"""One run of the bench, from an empty database to the targets, as `python -m bench` starts it."""

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench import report, scenarios, sustained
from bench.database import Database
from bench.figures import Paired
from bench.figures import rounds as rounds_of
from bench.output import Progress, clock, load_average, say, section
from bench.pgbench import POOL_MAX, median_tps
from bench.report import Report
from bench.service import Service, delete_queue, free_port
from bench.shell import BenchFailed
from bench.targets import Figures, check
from bench.wrk import Load, WrkResult, combine, median_result, send_load


@contextlib.contextmanager
def scratch_directory() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="messenger-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def benchmark(args: argparse.Namespace, scratch: Path) -> None:
    database = Database.from_environment(args.database)
    service = Service(database, args.port or free_port(), args.queue, scratch / "service.log")
    rounds, logs = args.rounds, not args.logs_off
    progress = Progress(scenarios.planned_seconds(args))
    table = Report()
    say(
        f"messenger bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}:"
        f" {os.cpu_count()} cores, load average {load_average()}; one uvicorn process"
        f" (LOG_LEVEL={'info' if logs else 'warning'}, relay on, PG_POOL_MAX={POOL_MAX});"
        f" wrk 1 thread; {args.duration:g} s per round after {args.warmup:g} s warm-up"
        + (" (quick)" if args.quick else "")
    )
    say(
        f"about {clock(progress.left)} of load is planned, plus setup and the service's starts;"
        " a line before each step says what runs"
    )
    section("setup")
    conversations = scenarios.setup(service, args, scratch)

    title = f"the service under wrk and its SQL under pgbench, alternated, {rounds_of(rounds)} each"
    section(title)
    asyncio.run(delete_queue(args.queue))
    service.start(relay=True, logs=logs)
    paired: dict[str, Paired] = {}
    single: dict[str, WrkResult] = {}
    large: tuple[list[WrkResult], list[WrkResult]] | None = None
    try:
        for key, scenario in scenarios.alternated(args, conversations, scratch).items():
            paired[key] = pair = scenarios.alternate(service, scenario, args, progress)
            table.http(scenario.load.name, scenario.load.connections, median_result(pair.service))
            table.sql(scenario.sql_name, median_tps(pair.sql))
            for line in report.pair_lines(scenario.load.name, pair):
                say(f"  {line}")
        if not args.quick:
            section("once each")
            for key, load in {
                "health": Load("health", "/health", 32),
                "send_256": send_load("send, one conversation", [conversations.send], 256, 1),
            }.items():
                single[key] = result = scenarios.once(service, load, args, progress)
                table.http(load.name, load.connections, result)
        if not args.skip_large:
            section(
                "send into an empty and a 1M-message conversation,"
                f" {scenarios.LARGE_ROUNDS} alternated rounds"
            )
            large = scenarios.large_rounds(service, conversations, args, progress)
            for name, side in (
                ("send, empty conversation", large[0]),
                ("send, 1M-message conversation", large[1]),
            ):
                table.http(f"{name} ({scenarios.LARGE_ROUNDS} rounds)", 4, combine(side))
        if not args.quick:
            section("send with an Idempotency-Key")
            keyed = scenarios.idempotency_rounds(service, conversations.keyed, 8, args, progress)
            for name, keyed_rounds in keyed.items():
                row = f"{name} ({scenarios.KEYED_ROUNDS} rounds, medians)"
                table.http(row, 32, median_result(keyed_rounds))
        rss, peak_rss = service.memory_mb()
    finally:
        service.stop()
        asyncio.run(delete_queue(args.queue))

    runs: list[sustained.Sustained] = []
    if args.sustained > 0:
        section(
            f"sustained send load: {args.sustained:g} s, 32 connections over"
            f" {sustained.CONVERSATIONS} conversations"
        )
        load = send_load("send, sustained", conversations.sustained, 32, 7)
        for separate in (False, True):
            runs.append(
                sustained.sustained(
                    service,
                    load,
                    separate=separate,
                    logs=logs,
                    seconds=args.sustained,
                    warmup=args.warmup,
                    progress=progress,
                )
            )
            say(sustained.summary(runs[-1]))
            table.http(f"send, sustained ({runs[-1].name})", 32, runs[-1].load)

    section("figures")
    for line in table.table():
        say(line)
    say(f"  resident memory after the run: {rss:.0f} MB (peak {peak_rss:.0f} MB)")
    say(f"  load average at the end: {load_average()}, this benchmark's own load included")
    say(f"  took {clock(time.monotonic() - progress.started)}")

    section("targets")
    check(Figures(paired, single, large, runs, rss), table)
    for line in table.target_lines():
        say(line)


def main(args: argparse.Namespace) -> int:
    """Run the bench; 0 when it ran (targets met or not), 1 when it could not run."""
    database = Database.from_environment(args.database)
    with scratch_directory() as scratch:
        try:
            benchmark(args, scratch)
        except BenchFailed as error:
            print(f"bench: cannot run: {error}", file=sys.stderr)
            return 1
        finally:
            if args.keep_database:
                say(f"\ndatabase {database.name} kept (--keep-database): psql {database.name}")
            else:
                try:
                    database.drop()
                    say(f"database {database.name} dropped")
                except BenchFailed as error:
                    print(
                        f"bench: could not drop database {database.name}: {error}", file=sys.stderr
                    )
    return 0
