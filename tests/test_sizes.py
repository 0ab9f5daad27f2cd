"""Sizes read like the npm `bytes` package, as JSON_BODY_LIMIT is written."""

import pytest

from messenger.sizes import parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100kb", 102_400),
        ("1.5mb", 1_572_864),
        ("1KB", 1024),
        ("1Kb", 1024),
        ("512", 512),
        ("512b", 512),
        ("1gb", 1 << 30),
        ("0.5kb", 512),
        (" 2 mb ", 2 << 20),
        (2048, 2048),
    ],
)
def test_sizes_read_like_the_npm_bytes_package(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["12xb", "-1", "abc", "", "kb", "1..5mb", -1, True, None])
def test_sizes_that_are_not_sizes_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)
