"""Sizes as configuration writes them, like the npm `bytes` package: "100kb", "1.5mb", "512"."""

import re

_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}
_SIZE = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>[a-z]+)?\s*$", re.IGNORECASE)


def parse_size(text: object) -> int:
    """Return the number of bytes `text` names: `100kb`, `1.5mb`, `512` (bytes).

    As in the npm `bytes` package: 1024-based, units case-insensitive, fractions floored.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    if not isinstance(text, str):
        raise ValueError("expected a size such as 100kb, 1.5mb or a number of bytes")
    match = _SIZE.match(text)
    if match is None:
        raise ValueError("expected a size such as 100kb, 1.5mb or a number of bytes")
    unit = (match["unit"] or "b").lower()
    if unit not in _UNITS:
        raise ValueError(f"unknown size unit {unit!r}; expected b, kb, mb, gb, tb or pb")
    return int(float(match["number"]) * _UNITS[unit])
