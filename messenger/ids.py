"""Ids as clients send them: PostgreSQL bigints, as JSON integers or canonical decimal text."""

import re

from messenger.schemas import ID_DIGITS, MAX_ID

_CANONICAL_INTEGER = re.compile(f"(0|{ID_DIGITS})")


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
