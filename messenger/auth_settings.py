"""The settings of authentication (AUTH_*, see identity.py and tokens.py): part of `Settings`,
declared here with their types so each module stays about one concept."""

import re
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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


class AuthSettings(BaseSettings):
    """How the caller is known: the `User-Id` header, or verified bearer tokens."""

    model_config = SettingsConfigDict(use_attribute_docstrings=True)

    auth_mode: Literal["header", "jwt"] = "header"
    """How the caller is known (case-insensitive): `header` trusts the `User-Id` header as sent,
    safe only behind a gateway that authenticates clients and sets it; `jwt` needs
    `Authorization: Bearer <JWT>` on every route but `/health`, `/health/ready`, `/metrics` and
    `/openapi.json` (see [the API](api.md#authentication)).
    """
    auth_jwks_url: HttpUrl = None
    """`jwt` mode, required: the JSON Web Key Set whose keys sign the tokens (the OpenID
    provider's `jwks_uri`), http or https. Fetched when first needed and cached.
    """
    auth_issuer: OptionalText = None
    """`jwt` mode, required: the `iss` every token must carry, exactly (the provider's `issuer`).
    """
    auth_audience: OptionalText = None
    """`jwt` mode, required: a value the token's `aud` must contain, this service's identifier at
    the provider (its resource indicator or API identifier).
    """
    # Written as the variable is (the document shows it so); validated into a tuple.
    auth_algorithms: Algorithms = Field(default="RS256,ES256,EdDSA", validate_default=True)
    """`jwt` mode: the signature algorithms accepted, comma-separated, from RS256/384/512,
    PS256/384/512, ES256/384/512 and EdDSA; `none` and HMAC stop the process at start.
    """
    auth_leeway: int = Field(default=30, ge=0, le=600)
    """`jwt` mode: seconds of clock skew allowed when checking `exp`, `nbf` and `iat`."""
    auth_user_claim: str = Field(default="sub", min_length=1)
    """`jwt` mode: the claim holding the caller's user id, a positive integer or its decimal
    string.
    """
    auth_jwks_min_refresh: float = Field(default=60.0, gt=0, le=86_400)
    """`jwt` mode: a token whose key id is not in the cached key set refetches the set at most
    once in this many seconds, however many ask: a key rotated in at the provider is found
    without a restart, and made-up key ids cost the provider one fetch per interval.
    """
    auth_jwks_timeout: float = Field(default=5.0, gt=0, le=60)
    """`jwt` mode: seconds one fetch of the key set may take in all; a request waiting for a key
    that is not cached then gets 503 with `Retry-After`.
    """

    @model_validator(mode="after")
    def _check_jwt_mode(self) -> Self:
        if self.auth_mode == "jwt":
            required = ("auth_jwks_url", "auth_issuer", "auth_audience")
            missing = [name.upper() for name in required if getattr(self, name) is None]
            if missing:
                them = "them" if len(missing) > 1 else "it"
                raise ValueError(
                    f"{', '.join(missing)}: required when AUTH_MODE=jwt"
                    f" (set {them} in the environment)"
                )
        return self
