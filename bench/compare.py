"""`scripts/bench --compare REF`: the service of REF (A) against this tree's (B), by turns.

What a change costs or saves is a few percent of CPU per request, and a shared machine moves
throughput by more than that from one minute to the next. So both services run side by side
(one `python -m messenger serve` process each, REF's `messenger/` package taken out with
`git archive` and put first on PYTHONPATH), each on its own database with the same setup,
and every scenario goes to A and B by turns: A first in odd rounds, B first in even ones.
Only one of them is under load at a time. The figure to read is CPU per request (the
service's own, from /proc); each round is printed, then medians with their ranges, and B/A.
"""

import argparse
import asyncio
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bench import scenarios
from bench.database import Database
from bench.output import Progress, say, section
from bench.service import Service, delete_queue, free_port
from bench.shell import BenchFailed
from bench.wrk import NEW_KEY_EACH, Load, WrkResult, send_load, wrk

SIDES = ("A", "B")


def loads(conv: scenarios.Conversations) -> list[Load]:
    """The read, the send at 32 and 256 connections, the send with a new Idempotency-Key
    each, and the mixed scenario."""
    send = send_load("send, one conversation", [conv.send], 32, 1)
    keyed = send_load("send, new Idempotency-Key each", [conv.keyed], 32, 8)
    return [
        Load("list a 100-message conversation", f"/conversations/{conv.read}/messages", 32),
        send,
        replace(send, connections=256),
        replace(keyed, idempotency_key=NEW_KEY_EACH),
        scenarios.mixed_load(conv),
    ]


def source_tree(ref: str, scratch: Path) -> Path:
    """REF's `messenger` package in a directory of its own, to put first on PYTHONPATH."""
    tree = scratch / "compare-a"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref, "messenger"], capture_output=True, check=False)
    if archive.returncode != 0:
        raise BenchFailed(f"git archive {ref}: {archive.stderr.decode(errors='replace')}")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def run(args: argparse.Namespace, scratch: Path) -> None:
    progress = Progress(scenarios.planned_seconds(args))
    section(f"setup: A = {args.compare}, B = this tree")
    tree = source_tree(args.compare, scratch)
    sides: dict[str, Service] = {}
    for side, source in zip(SIDES, (tree, None), strict=True):
        database = Database.from_environment(f"{args.database}_{side.lower()}")
        log = scratch / f"service-{side}.log"
        sides[side] = Service(database, free_port(), f"{args.queue}_{side}", log, source=source)
    try:
        conversations = {side: scenarios.setup(s, args, scratch) for side, s in sides.items()}
        compare(args, sides, conversations, progress)
    finally:
        for service in sides.values():
            if not args.keep_database:
                service.database.drop()


def compare(
    args: argparse.Namespace,
    sides: dict[str, Service],
    conversations: dict[str, scenarios.Conversations],
    progress: Progress,
) -> None:
    by_side = {side: loads(conversations[side]) for side in SIDES}
    names = [f"{load.name} at {load.connections}" for load in by_side["A"]]
    results: dict[str, dict[str, list[WrkResult]]] = {
        name: {side: [] for side in SIDES} for name in names
    }
    for service in sides.values():
        asyncio.run(delete_queue(service.queue))
        service.start(relay=True, logs=not args.logs_off)
    try:
        section(f"A and B by turns, {args.rounds} rounds of {args.duration:g} s")
        for number in range(1, args.rounds + 1):
            warmup = args.warmup if number == 1 else 0
            order = SIDES if number % 2 else SIDES[::-1]
            for index, name in enumerate(names):
                for side in order:
                    side_load = by_side[side][index]
                    progress.step(f"{name}, {side}, round {number}", args.duration + warmup)
                    result = wrk(sides[side], side_load, args.duration, warmup)
                    results[name][side].append(result)
                    say(f"    {side}: {round_line(result)}")
    finally:
        for service in sides.values():
            service.stop()
            asyncio.run(delete_queue(service.queue))
    section(f"medians (ranges) of {args.rounds} rounds; A = {args.compare}, B = this tree")
    for name, rounds in results.items():
        say(f"  {name}:")
        for side in SIDES:
            say(f"    {side}: {medians_line(rounds[side])}")
        ratio = median(rounds["B"], "cpu") / median(rounds["A"], "cpu")
        say(f"    B/A CPU per request: {ratio:.2f}")


def round_line(result: WrkResult) -> str:
    return (
        f"{result.rps:,.0f} req/s, CPU {result.cpu_us_per_request:,.0f} us/req"
        f" ({result.cpu_share:.0%} of a core), p99 {result.p99_ms:.1f} ms,"
        f" errors {result.errors}, non-2xx {result.non_2xx}; load average"
        f" {result.load_average:.1f}"
    )


FIGURES: dict[str, Callable[[WrkResult], float]] = {
    "cpu": lambda result: result.cpu_us_per_request,
    "rps": lambda result: result.rps,
    "p99": lambda result: result.p99_ms,
}


def median(rounds: list[WrkResult], figure: str) -> float:
    return statistics.median(FIGURES[figure](result) for result in rounds)


def spread(rounds: list[WrkResult], figure: str, unit: str) -> str:
    values = [FIGURES[figure](result) for result in rounds]
    return f"{median(rounds, figure):,.0f}{unit} ({min(values):,.0f}-{max(values):,.0f})"


def medians_line(rounds: list[WrkResult]) -> str:
    errors = sum(result.errors for result in rounds)
    non_2xx = sum(result.non_2xx for result in rounds)
    return (
        f"CPU {spread(rounds, 'cpu', ' us/req')}, {spread(rounds, 'rps', ' req/s')},"
        f" p99 {spread(rounds, 'p99', ' ms')}, errors {errors}, non-2xx {non_2xx}"
    )
