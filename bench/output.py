"""What the bench says while it runs: sections, and a line before each measured step saying
what runs, for how long, and about how long the whole bench has left."""

import os
import time


def say(text: str = "") -> None:
    print(text, flush=True)


def section(title: str) -> None:
    say(f"\n== {title}")


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def clock(seconds: float) -> str:
    """62.4 -> '1:02'."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


class Progress:
    """Counts down the planned seconds of load (the sum of every step's duration and warm-up).

    The plan leaves out starting the service, filling tables and draining the outbox, so "left"
    is a lower bound; "elapsed" is the wall clock since the bench started.
    """

    def __init__(self, planned_seconds: float) -> None:
        self.left = planned_seconds
        self.started = time.monotonic()

    def step(self, text: str, seconds: float) -> None:
        """Announce a step of `seconds` of load, then count it as done."""
        elapsed = time.monotonic() - self.started
        say(
            f"  .. {text}: {seconds:g} s  [{clock(elapsed)} elapsed,"
            f" at least {clock(self.left)} of load left]"
        )
        self.left = max(0.0, self.left - seconds)
