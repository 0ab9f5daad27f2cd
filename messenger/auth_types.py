"""The types of the AUTH_* settings: an optional URL or text, and a list of signature algorithms."""

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator
from pydantic_settings import NoDecode

# Signature algorithms AUTH_ALGORITHMS may name: public-key ones only. `none` and HMAC (HS*)
# are refused, so a token can never be "signed" with nothing or with the published key.
SIGNING_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip


def _empty_as_unset(value: object) -> object:
    """`AUTH_ISSUER=` (as compose writes an unset `${VAR:-}`) means not set."""
    return None if isinstance(value, str) and not value.strip() else value


def _check_http_url(url: str | None) -> str | None:
    if url is not None and not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", url):
        raise ValueError("expected an http:// or https:// URL")
    return url


def _algorithm_list(value: object) -> object:
    if isinstance(value, str):
        return tuple(name.strip() for name in value.split(",") if name.strip())
    return value


def _check_algorithms(names: tuple[str, ...]) -> tuple[str, ...]:
    if not names:
        raise ValueError("name at least one algorithm, e.g. RS256,ES256,EdDSA")
    for name in names:
        if name not in SIGNING_ALGORITHMS:
            raise ValueError(
                f"{name[:20]!r} is not accepted; choose from {', '.join(SIGNING_ALGORITHMS)}"
                " (never none or HMAC)"
            )
    return names


OptionalText = Annotated[str | None, BeforeValidator(_empty_as_unset)]
HttpUrl = Annotated[str | None, BeforeValidator(_empty_as_unset), AfterValidator(_check_http_url)]
Algorithms = Annotated[
    tuple[str, ...],
    NoDecode,
    BeforeValidator(_algorithm_list),
    AfterValidator(_check_algorithms),
]
