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

from bench import compare, report, scenarios, sustained
from bench.auth import Tokens
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


@contextlib.contextmanager
def key_set(needed: bool) -> Iterator[Tokens | None]:
    """The token key set on loopback while the bench runs, if a jwt-mode service needs it."""
    if not needed:
        yield None
        return
    tokens = Tokens()
    tokens.start()
    try:
        yield tokens
    finally:
        tokens.stop()


def benchmark(args: argparse.Namespace, scratch: Path) -> None:
    if args.compare is not None:
        compare.run(args, scratch)
        return
    with key_set(args.auth == "jwt" or args.auth_compare) as tokens:
        if args.auth_compare:
            compare_auth(args, scratch, tokens)
        else:
            run_all(args, scratch, tokens if args.auth == "jwt" else None)


def compare_auth(args: argparse.Namespace, scratch: Path, tokens: Tokens | None) -> None:
    """--auth-compare: the read and the send, header mode and jwt mode by turns."""
    database = Database.from_environment(args.database)
    header = Service(database, args.port or free_port(), args.queue, scratch / "header.log")
    verified = Service(database, free_port(), args.queue, scratch / "jwt.log", tokens)
    logs = not args.logs_off
    progress = Progress(scenarios.planned_seconds(args))
    say(
        f"messenger bench --auth-compare {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}:"
        f" {os.cpu_count()} cores, load average {load_average()}; two uvicorn processes, one"
        f" per AUTH_MODE, measured one at a time (LOG_LEVEL={'info' if logs else 'warning'},"
        f" relay off in both: the outbox only fills); wrk 1 thread; {args.duration:g} s per"
        f" round after {args.warmup:g} s warm-up; one token per user, reused (as clients do)"
    )
    section("setup")
    conversations = scenarios.setup(header, args, scratch)
    section(f"AUTH_MODE=header and AUTH_MODE=jwt by turns, {rounds_of(args.rounds)} each")
    header.start(relay=False, logs=logs)
    try:
        verified.start(relay=False, logs=logs)
        try:
            results = scenarios.auth_rounds([header, verified], conversations, args, progress)
        finally:
            verified.stop()
    finally:
        header.stop()
    section("jwt mode against header mode")
    table = Report()
    for name, by_mode in results.items():
        for line in report.auth_lines(name, by_mode["header"], by_mode["jwt"]):
            say(f"  {line}")
        ratio = report.auth_ratio(by_mode["header"], by_mode["jwt"], "rps")
        table.target(ratio >= 0.9, f"{name}: jwt / header throughput {ratio:.2f}", ">= 0.9")
    assert tokens is not None
    say(f"  key-set fetches by the jwt-mode service: {tokens.fetches}")
    say(f"  took {clock(time.monotonic() - progress.started)}")
    section("targets")
    for line in table.target_lines():
        say(line)


def run_all(args: argparse.Namespace, scratch: Path, tokens: Tokens | None) -> None:
    database = Database.from_environment(args.database)
    log = scratch / "service.log"
    service = Service(database, args.port or free_port(), args.queue, log, tokens)
    rounds, logs = args.rounds, not args.logs_off
    progress = Progress(scenarios.planned_seconds(args))
    table = Report()
    say(
        f"messenger bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}:"
        f" {os.cpu_count()} cores, load average {load_average()}; one uvicorn process"
        f" (LOG_LEVEL={'info' if logs else 'warning'}, relay on, PG_POOL_MAX={POOL_MAX},"
        f" AUTH_MODE={service.mode});"
        f" wrk 1 thread; {args.duration:g} s per round after {args.warmup:g} s warm-up"
        + (" (quick)" if args.quick else "")
    )
    say(
        f"about {clock(progress.left)} of load is planned, plus setup and the service's starts;"
        " a line before each step says what runs"
    )
    section("setup")
    conversations = scenarios.setup(service, args, scratch)
    if args.mixed:
        run_mixed(args, service, conversations, progress, table)
        return

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
        rss, peak_rss = service.memory_mb()  # the target's figure: before the mixed scenario
        if not args.quick:
            section("mixed: many users and conversations, each with an event stream")
            load = scenarios.mixed_load(conversations)
            mixed = scenarios.mixed(service, conversations, args, progress)
            table.http(f"{load.name} (median round)", load.connections, median_result(mixed))
            say(f"  resident memory after it: {service.memory_mb()[0]:.0f} MB")
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


def run_mixed(
    args: argparse.Namespace,
    service: Service,
    conversations: scenarios.Conversations,
    progress: Progress,
    table: Report,
) -> None:
    """--mixed: the mixed scenario alone, the relay on, as in the full run."""
    load = scenarios.mixed_load(conversations)
    section(f"{load.name}, {rounds_of(args.rounds)}")
    asyncio.run(delete_queue(args.queue))
    service.start(relay=True, logs=not args.logs_off)
    try:
        results = scenarios.mixed(service, conversations, args, progress)
        rss, peak_rss = service.memory_mb()
    finally:
        service.stop()
        asyncio.run(delete_queue(args.queue))
    table.http(f"{load.name} (median round)", load.connections, median_result(results))
    section("figures")
    for line in table.table():
        say(line)
    say(f"  resident memory after the run: {rss:.0f} MB (peak {peak_rss:.0f} MB)")
    say(f"  took {clock(time.monotonic() - progress.started)}")


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
