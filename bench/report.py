"""What the bench prints about its figures: each scenario's rounds with labelled figures, the
table of every scenario, and one line per target.

Labels spell out what each number is: "service 2,535 req/s / pgbench 4,853 tps = 0.52", never a
bare "2,535/4,853". A MISS line says what was expected and that a missed target does not change
the exit code (0 whenever the bench ran).
"""

import statistics
from dataclasses import dataclass, field

from bench.figures import Paired, spread, why_slow
from bench.pgbench import POOL_MAX, PgbenchResult
from bench.wrk import WrkResult

MISS_NOTE = "a missed target does not change the exit code"


def service_figure(result: WrkResult) -> str:
    return (
        f"service {result.rps:,.0f} req/s (p99 {result.p99_ms:.1f} ms,"
        f" CPU {result.cpu_share:.0%} of a core, {result.cpu_us_per_request:,.0f} us/req)"
    )


def pair_lines(name: str, pair: Paired) -> list[str]:
    """Every alternated round, labelled, then the medians and ranges, then any slow round."""
    lines = [f"{name}: the service's req/s / pgbench's tps of its SQL, by round"]
    rounds = zip(pair.service, pair.sql, pair.ratios, strict=True)
    for number, (http, sql, ratio) in enumerate(rounds, 1):
        lines.append(
            f"  round {number}: {service_figure(http)} / pgbench {sql.tps:,.0f} tps"
            f" = {ratio:.2f}; load average {http.load_average:.2f}"
        )
    lines.append(f"  {rounds_summary(pair.service)}")
    lines.append(
        f"  pgbench tps median (range): {spread([sql.tps for sql in pair.sql], ',.0f')};"
        f" service / pgbench: {pair.describe()}"
    )
    lines += [f"  {line}" for line in why_slow(pair.service)]
    return lines


def rounds_summary(rounds: list[WrkResult]) -> str:
    """'service req/s by round: 1,469, 741, 679; median 741, range 679-1,469'."""
    figures = ", ".join(f"{result.rps:,.0f}" for result in rounds)
    ordered = sorted(result.rps for result in rounds)
    return (
        f"service req/s by round: {figures}; median {statistics.median(ordered):,.0f},"
        f" range {ordered[0]:,.0f}-{ordered[-1]:,.0f}"
    )


def single_line(name: str, connections: int, result: WrkResult) -> str:
    return (
        f"{name} at {connections}: {result.rps:,.0f} req/s, p99 {result.p99_ms:.0f} ms,"
        f" CPU {result.cpu_share:.0%} of a core; load average {result.load_average:.2f}"
    )


def rounds_lines(name: str, connections: int, rounds: list[WrkResult]) -> list[str]:
    """Alternated rounds of one load without a pgbench side: each round, medians and ranges."""
    lines = [f"{name} at {connections}, {len(rounds)} alternated rounds:"]
    for number, result in enumerate(rounds, 1):
        lines.append(
            f"  round {number}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.1f} ms,"
            f" p99 {result.p99_ms:.1f} ms, CPU {result.cpu_share:.0%} of a core,"
            f" {result.cpu_us_per_request:,.0f} us/req; load average {result.load_average:.2f}"
        )
    lines.append(
        f"  medians (ranges): {spread([r.rps for r in rounds], ',.0f')} req/s,"
        f" p50 {spread([r.p50_ms for r in rounds], '.1f')} ms,"
        f" p99 {spread([r.p99_ms for r in rounds], '.1f')} ms,"
        f" CPU {spread([r.cpu_us_per_request for r in rounds], ',.0f')} us/req,"
        f" non-2xx {sum(result.non_2xx for result in rounds)}"
    )
    lines += [f"  {line}" for line in why_slow(rounds)]
    return lines


def auth_lines(name: str, header: list[WrkResult], jwt: list[WrkResult]) -> list[str]:
    """Header mode against jwt mode, round by round, then the ratios of the medians."""
    lines = [f"{name}, AUTH_MODE=header / AUTH_MODE=jwt, by round"]
    for number, (plain, verified) in enumerate(zip(header, jwt, strict=True), 1):
        lines.append(
            f"  round {number}: header {plain.rps:,.0f} req/s, {plain.cpu_us_per_request:,.0f}"
            f" us/req / jwt {verified.rps:,.0f} req/s, {verified.cpu_us_per_request:,.0f}"
            f" us/req = {verified.rps / plain.rps:.2f} of header's throughput;"
            f" load average {verified.load_average:.2f}"
        )
    rps = auth_ratio(header, jwt, "rps")
    cpu = auth_ratio(header, jwt, "cpu_us_per_request")
    lines.append(
        f"  medians: header {spread([r.rps for r in header], ',.0f')} req/s,"
        f" jwt {spread([r.rps for r in jwt], ',.0f')} req/s; CPU per request"
        f" header {spread([r.cpu_us_per_request for r in header], ',.0f')} us,"
        f" jwt {spread([r.cpu_us_per_request for r in jwt], ',.0f')} us"
    )
    lines.append(
        f"  jwt / header: throughput {rps:.2f}, CPU per request {cpu:.2f};"
        f" non-2xx {sum(r.non_2xx for r in [*header, *jwt])}"
    )
    return lines


def auth_ratio(header: list[WrkResult], jwt: list[WrkResult], figure: str) -> float:
    """jwt's median of a figure over header's."""
    return float(
        statistics.median(getattr(r, figure) for r in jwt)
        / statistics.median(getattr(r, figure) for r in header)
    )


@dataclass(frozen=True)
class Target:
    passed: bool
    measured: str  # what was measured, with its figures
    expected: str  # the target, e.g. ">= 0.25"

    def line(self) -> str:
        if self.passed:
            return f"PASS  {self.measured} (target {self.expected})"
        return f"MISS  {self.measured}; expected {self.expected} ({MISS_NOTE})"


HEADER = (
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


@dataclass
class Report:
    rows: list[tuple[str, ...]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

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

    def target(self, passed: bool, measured: str, expected: str) -> None:
        self.targets.append(Target(passed, measured, expected))

    def table(self) -> list[str]:
        rows = [HEADER, *self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
        lines = []
        for row in rows:
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
            lines.append("  " + "  ".join(cells).rstrip())
        return [
            *lines,
            "  Alternated scenarios show their median round. pgbench rows: transactions/s and",
            "  average latency, with as many clients as the service has pool connections.",
            "  CPU us/req: the service process's CPU time per request; CPU: its share of one",
            "  core (a CPU-bound scenario far below 100% means other processes took the rest).",
        ]

    def target_lines(self) -> list[str]:
        met = sum(target.passed for target in self.targets)
        return [
            *(target.line() for target in self.targets),
            f"{met} of {len(self.targets)} targets met. The exit code is 0 whenever the bench"
            " ran, met or missed; it is non-zero only when the bench could not run.",
        ]
