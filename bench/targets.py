"""The targets of issues 8 and 18 (one serving process, as users run it) and the 1M-message
one of issue 3, checked against the figures of a run. A miss is a finding, not a failure: the
bench exits 0 either way."""

from dataclasses import dataclass

from bench.figures import Paired
from bench.report import Report
from bench.sustained import Sustained
from bench.wrk import WrkResult, combine, median_result

READ_VS_PGBENCH = 0.5
SEND_VS_PGBENCH = 0.80
READ_CPU_US = 250.0  # the service's CPU per 100-message read, median round
SEND_CPU_US = 400.0  # per send, its event's publishing included
SEND_P99_MS = 40.0
SEND_256_P99_MS = 200.0
EVENTS_VS_SENDS = 1.0  # published / sent during the sustained load, two decimals
OLDEST_PENDING_SECONDS = 2.0
RSS_MB = 100.0
LARGE_VS_EMPTY = 1.2


@dataclass(frozen=True)
class Figures:
    """What the targets are checked against."""

    paired: dict[str, Paired]
    single: dict[str, WrkResult]
    large: tuple[list[WrkResult], list[WrkResult]] | None  # empty, 1M-message rounds
    sustained: list[Sustained]
    rss_mb: float


def check(figures: Figures, report: Report) -> None:
    for key, name, target in (
        ("read", "100-message read", READ_VS_PGBENCH),
        ("send_32", "send at 32 connections", SEND_VS_PGBENCH),
    ):
        pair = figures.paired[key]
        report.target(
            pair.median_ratio >= target,
            f"{name}: service req/s / pgbench tps of its SQL = {pair.describe()}",
            f">= {target}",
        )
    for key, name, limit in (
        ("read", "100-message read", READ_CPU_US),
        ("send_32", "send at 32 connections", SEND_CPU_US),
    ):
        cpu = median_result(figures.paired[key].service).cpu_us_per_request
        report.target(
            cpu <= limit, f"{name}: CPU {cpu:.0f} us per request, median round", f"<= {limit:g} us"
        )
    p99 = median_result(figures.paired["send_32"].service).p99_ms
    report.target(
        p99 <= SEND_P99_MS,
        f"send p99 at 32 connections = {p99:.1f} ms, median round",
        f"<= {SEND_P99_MS:g} ms",
    )
    if "send_256" in figures.single:
        at_256 = figures.single["send_256"]
        report.target(
            at_256.p99_ms <= SEND_256_P99_MS and at_256.errors == 0 and at_256.non_2xx == 0,
            f"send at 256 connections: p99 {at_256.p99_ms:.0f} ms, {at_256.errors} errors,"
            f" {at_256.non_2xx} non-2xx",
            f"p99 <= {SEND_256_P99_MS:g} ms, 0 errors, 0 non-2xx",
        )
    if figures.large is not None:
        empty, large = figures.large
        empty_p50, large_p50 = combine(empty).p50_ms, combine(large).p50_ms
        ratio = large_p50 / empty_p50
        report.target(
            ratio <= LARGE_VS_EMPTY,
            f"send p50 at 4 connections, 1M-message / empty conversation = {large_p50:.2f} /"
            f" {empty_p50:.2f} ms = {ratio:.2f}, means of {len(empty)} rounds",
            f"<= {LARGE_VS_EMPTY}",
        )
    for run in figures.sustained:
        report.target(
            round(run.ratio, 2) >= EVENTS_VS_SENDS and run.oldest_age < OLDEST_PENDING_SECONDS,
            f"{run.name}: events published / sends = {run.ratio:.2f},"
            f" oldest pending {run.oldest_age:.1f} s",
            f">= {EVENTS_VS_SENDS}, < {OLDEST_PENDING_SECONDS:g} s",
        )
    report.target(
        figures.rss_mb <= RSS_MB,
        f"resident memory after the run = {figures.rss_mb:.0f} MB",
        f"<= {RSS_MB:g} MB",
    )
