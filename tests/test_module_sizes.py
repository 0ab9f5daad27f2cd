"""Every module of `messenger` stays a few hundred lines long; the OpenAPI generator shorter."""

from pathlib import Path

import messenger

PACKAGE = Path(messenger.__file__).parent
MAX_LINES = 400
MAX_OPENAPI_LINES = 250  # a generator over declared shapes (issue 14), not a hand-kept copy


def lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_module_is_over_400_lines() -> None:
    lengths = {str(path.relative_to(PACKAGE)): lines(path) for path in PACKAGE.rglob("*.py")}
    too_long = {name: n for name, n in sorted(lengths.items()) if n > MAX_LINES}
    assert too_long == {}, f"split by concept: {too_long}"


def test_the_openapi_generator_is_at_most_250_lines() -> None:
    assert lines(PACKAGE / "openapi.py") <= MAX_OPENAPI_LINES
