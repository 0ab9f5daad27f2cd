"""Figures of repeated rounds: a scenario's rounds against pgbench's, medians and ranges, and
what explains a slow round."""

import statistics
from dataclasses import dataclass

from bench.pgbench import PgbenchResult
from bench.wrk import WrkResult

SLOW_ROUND = 0.8  # of the median throughput: a round below it gets a line saying why
STARVED_SHARE = 0.9  # of one core: a CPU-bound service below it lost the CPU to others


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
            f" {rounds(len(ratios))})"
        )


def rounds(count: int) -> str:
    return f"{count} round" if count == 1 else f"{count} rounds"


def spread(values: list[float], form: str) -> str:
    """'741 (679-1,469)': the median and, in brackets, the range."""
    ordered = sorted(values)
    low, middle, high = ordered[0], statistics.median(ordered), ordered[-1]
    return f"{middle:{form}} ({low:{form}}-{high:{form}})"


def why_slow(rounds: list[WrkResult]) -> list[str]:
    """A line for each round well below the median throughput, with the figures that explain
    it: the service's share of a core, its CPU per request, and the machine's load average."""
    middle = sorted(rounds, key=lambda result: result.rps)[len(rounds) // 2]
    lines = []
    for number, result in enumerate(rounds, 1):
        if result.rps >= SLOW_ROUND * middle.rps:
            continue
        figures = (
            f"the service had {result.cpu_share:.0%} of a core ({middle.cpu_share:.0%} in the"
            f" median round), {result.cpu_us_per_request:,.0f} us of CPU per request"
            f" ({middle.cpu_us_per_request:,.0f}), load average {result.load_average:.2f}"
            f" ({middle.load_average:.2f})"
        )
        if result.cpu_share < STARVED_SHARE and result.cpu_share < middle.cpu_share:
            reason = "other processes took the CPU"
        elif result.cpu_us_per_request > middle.cpu_us_per_request * 1.2:
            reason = "each request cost the service more CPU"
        else:
            reason = "these figures do not explain it"
        lines.append(
            f"round {number} ran at {result.rps / middle.rps:.0%} of the median: {figures};"
            f" {reason}"
        )
    return lines
