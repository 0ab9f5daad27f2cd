"""Ids as clients send them: PostgreSQL bigints, as JSON integers or canonical decimal text."""

import re

MAX_ID = 2**63 - 1  # ids are PostgreSQL bigints
_CANONICAL_INTEGER = re.compile(r"(0|[1-9][0-9]{0,18})")


def integer(value: object, *, minimum: int) -> int | None:
    """`value` as an integer in [minimum, MAX_ID]: a JSON integer or its canonical decimal text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if not _CANONICAL_INTEGER.fullmatch(value):
            return None
        value = int(value)
    if isinstance(value, int) and minimum <= value <= MAX_ID:
        return value
    return None
