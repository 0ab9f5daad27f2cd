"""How long to wait before trying a lost dependency again."""

import random


class Backoff:
    """Capped exponential backoff with equal jitter: a delay between half the ceiling and all
    of it, so retries spread out and none comes straight back."""

    def __init__(self, initial: float, cap: float) -> None:
        self.initial = initial
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
