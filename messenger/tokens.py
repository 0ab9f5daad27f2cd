"""Bearer tokens (AUTH_MODE=jwt): a JWT's signature and claims checked, and its user id taken.

PyJWT checks the signature with a key of the key set (messenger.keys) and the registered
claims: `iss` equal to AUTH_ISSUER, `aud` containing AUTH_AUDIENCE, `exp` required and ahead,
`nbf` and `iat` not ahead, each with AUTH_LEEWAY seconds of skew. The algorithm named in the
token's header must be one of AUTH_ALGORITHMS *and* one its key is for, so a token can never
choose `none`, or HMAC keyed with a published public key.

A verified token is remembered by its SHA-256 until it expires (a client sends the same token
with every request until it renews it), so a repeat costs a hash and a lookup, not a signature
check. The entries are dropped when the key set stops publishing a key.
"""

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidKeyError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWTError,
)

from messenger.errors import (
    KEYS_UNAVAILABLE,
    TOKEN_ALGORITHM,
    TOKEN_BAD_SIGNATURE,
    TOKEN_CLAIM_INVALID,
    TOKEN_CLAIM_MISSING,
    TOKEN_EXPIRED,
    TOKEN_MALFORMED,
    TOKEN_NO_KEY_ID,
    TOKEN_NOT_YET_VALID,
    TOKEN_UNKNOWN_KEY,
    TOKEN_USER_INVALID,
    TOKEN_WRONG_AUDIENCE,
    TOKEN_WRONG_ISSUER,
    Unauthorized,
    Unavailable,
)
from messenger.ids import integer
from messenger.keys import KeySet, KeysUnavailable, UnknownKey, VerificationKey
from messenger.settings import Settings

MAX_CACHED_TOKENS = 10_000  # about 2 MB: the tokens of that many clients active at once


@dataclass(frozen=True, slots=True)
class _Verified:
    user_id: int
    expires: float  # `exp` plus the leeway, as time.time() counts
    generation: int  # of the key set that verified it


class TokenVerifier:
    def __init__(
        self, settings: Settings, keys: KeySet, *, clock: Callable[[], float] = time.time
    ) -> None:
        assert settings.auth_issuer is not None
        assert settings.auth_audience is not None
        self.keys = keys
        self._issuer = settings.auth_issuer
        self._audience = settings.auth_audience
        self._algorithms = frozenset(settings.auth_algorithms)
        self._accepted = ", ".join(settings.auth_algorithms)
        self._leeway = settings.auth_leeway
        self._claim = settings.auth_user_claim
        self._clock = clock
        self._verified: dict[bytes, _Verified] = {}

    async def user_id(self, token: str) -> int:
        """The caller a token names; Unauthorized naming the flaw, or Unavailable (no keys)."""
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(digest)
        if known is not None:
            if known.generation == self.keys.generation and self._clock() < known.expires:
                return known.user_id
            del self._verified[digest]
        key, algorithm = await self._key_for(token)
        generation = self.keys.generation
        claims = self._claims(token, key, algorithm)
        user_id = self._user_of(claims)
        # PyJWT took `exp` as int(exp) to check it, so this cannot fail.
        self._remember(digest, _Verified(user_id, int(claims["exp"]) + self._leeway, generation))
        return user_id

    async def _key_for(self, token: str) -> tuple[VerificationKey, str]:
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError:
            raise Unauthorized(TOKEN_MALFORMED) from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise Unauthorized(TOKEN_ALGORITHM.format(accepted=self._accepted))
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Unauthorized(TOKEN_NO_KEY_ID)
        key = self.keys.cached(kid)
        if key is None:
            try:
                key = await self.keys.key(kid)
            except UnknownKey:
                raise Unauthorized(TOKEN_UNKNOWN_KEY) from None
            except KeysUnavailable as error:
                raise Unavailable(KEYS_UNAVAILABLE, retry_after=error.retry_after) from None
        if algorithm not in key.algorithms:
            raise Unauthorized(TOKEN_ALGORITHM.format(accepted=", ".join(sorted(key.algorithms))))
        return key, algorithm

    def _claims(self, token: str, key: VerificationKey, algorithm: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                # `sub` may be a number here (contract section 9): the user claim is checked
                # below, whichever claim AUTH_USER_CLAIM names.
                options={"require": ["exp", "iss", "aud"], "verify_sub": False},
            )
        except ExpiredSignatureError:
            raise Unauthorized(TOKEN_EXPIRED) from None
        except ImmatureSignatureError:
            raise Unauthorized(TOKEN_NOT_YET_VALID) from None
        except InvalidIssuerError:
            raise Unauthorized(TOKEN_WRONG_ISSUER) from None
        except InvalidAudienceError:
            raise Unauthorized(TOKEN_WRONG_AUDIENCE) from None
        except MissingRequiredClaimError as error:
            raise Unauthorized(TOKEN_CLAIM_MISSING.format(claim=error.claim)) from None
        except InvalidIssuedAtError:
            raise Unauthorized(TOKEN_CLAIM_INVALID.format(claim="iat")) from None
        except (InvalidSignatureError, InvalidKeyError):
            raise Unauthorized(TOKEN_BAD_SIGNATURE) from None
        except InvalidAlgorithmError:
            raise Unauthorized(TOKEN_ALGORITHM.format(accepted=self._accepted)) from None
        except (PyJWTError, ValueError, TypeError):
            # DecodeError and the rest: segments or claims that are not what a JWT holds.
            raise Unauthorized(TOKEN_MALFORMED) from None
        return claims

    def _user_of(self, claims: dict[str, Any]) -> int:
        if self._claim not in claims:
            raise Unauthorized(TOKEN_CLAIM_MISSING.format(claim=self._claim))
        user_id = integer(claims[self._claim], minimum=1)
        if user_id is None:
            raise Unauthorized(TOKEN_USER_INVALID.format(claim=self._claim))
        return user_id

    def _remember(self, digest: bytes, verified: _Verified) -> None:
        if len(self._verified) >= MAX_CACHED_TOKENS:
            # The oldest entry goes: dicts keep insertion order.
            del self._verified[next(iter(self._verified))]
        self._verified[digest] = verified
