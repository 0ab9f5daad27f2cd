"""The token signing keys: the JSON Web Key Set at AUTH_JWKS_URL, fetched when needed and cached.

A key id (`kid`) not in the cache refetches the set, at most once per AUTH_JWKS_MIN_REFRESH
seconds however many requests ask (they share one fetch), so a key rotated in at the provider
is found without a restart and a flood of made-up key ids costs the provider one request per
interval. While the set cannot be fetched, the keys already cached keep working; a key that is
not cached is then `KeysUnavailable` (a 503 with Retry-After), not "unknown" (a 401), since the
provider may well publish it.
"""

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from jwt import PyJWK, PyJWTError

from messenger.settings import Settings

log = logging.getLogger(__name__)

MAX_KEY_SET_BYTES = 512 * 1024  # a key set is a few kB; a bigger answer is not one
MAX_KEYS = 100

# What a key without an `alg` member may verify, by its type (and curve: RFC 7518 3.4).
_ALGORITHMS_BY_KEY_TYPE: dict[tuple[object, object], frozenset[str]] = {
    ("RSA", None): frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    ("EC", "P-256"): frozenset({"ES256"}),
    ("EC", "P-384"): frozenset({"ES384"}),
    ("EC", "P-521"): frozenset({"ES512"}),
    ("OKP", "Ed25519"): frozenset({"EdDSA"}),
    ("OKP", "Ed448"): frozenset({"EdDSA"}),
}


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A published public key and the algorithms a token signed by it may name."""

    kid: str
    key: Any  # a `cryptography` public key object, as PyJWT takes it
    algorithms: frozenset[str]


class KeySetError(Exception):
    """The key set could not be fetched or is not a JSON Web Key Set (the reason, for the log)."""


class UnknownKey(Exception):
    """The key set, fetched recently enough, does not publish this key id."""


class KeysUnavailable(Exception):
    """The key is not cached and the key set cannot be fetched now; try after `retry_after` s."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class KeySet:
    """The keys by id, the cache behind them, and the one fetch in flight.

    `generation` counts the fetches that took a key away: a cache of what these keys verified
    drops its entries when it changes.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert settings.auth_jwks_url is not None
        self._client = client
        self._url = settings.auth_jwks_url
        self._algorithms = frozenset(settings.auth_algorithms)
        self._min_refresh = settings.auth_jwks_min_refresh
        self._timeout = settings.auth_jwks_timeout
        self._clock = clock
        self._keys: dict[str, VerificationKey] = {}
        self._last_attempt: float | None = None
        self._last_failed = False
        self._fetch: asyncio.Task[None] | None = None
        self.generation = 0
        self.fetches = 0  # attempts, for the metrics and the tests

    def cached(self, kid: str) -> VerificationKey | None:
        return self._keys.get(kid)

    async def key(self, kid: str) -> VerificationKey:
        """The key with this id, fetching the set if it may; UnknownKey or KeysUnavailable."""
        found = self._keys.get(kid)
        if found is not None:
            return found
        if self._fetch is None and self._may_fetch():
            self._fetch = asyncio.create_task(self._refresh(), name="jwks-fetch")
        if self._fetch is not None:
            # Shielded: a client that goes away does not cancel the fetch others wait for.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._fetch)
        found = self._keys.get(kid)
        if found is not None:
            return found
        if self._last_failed:
            raise KeysUnavailable(self._retry_after())
        raise UnknownKey(kid)

    async def close(self) -> None:
        if self._fetch is not None:
            self._fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._fetch

    def _may_fetch(self) -> bool:
        return self._last_attempt is None or self._clock() - self._last_attempt >= self._min_refresh

    def _retry_after(self) -> int:
        if self._last_attempt is None:
            return 1
        remaining = self._last_attempt + self._min_refresh - self._clock()
        return max(1, math.ceil(remaining))

    async def _refresh(self) -> None:
        self._last_attempt = self._clock()
        self.fetches += 1
        try:
            async with asyncio.timeout(self._timeout):
                keys = await self._download()
        except Exception as error:
            self._last_failed = True
            if not isinstance(error, KeySetError | TimeoutError):
                log.exception("token key set %s: unexpected error reading it", self._url)
            reason = str(error) or f"no answer within {self._timeout:g}s"
            log.warning(
                "token key set %s not fetched: %s; cached keys (%d) stay in use, next try in"
                " at most %gs",
                self._url,
                reason,
                len(self._keys),
                self._min_refresh,
            )
        else:
            self._last_failed = False
            if not set(self._keys) <= set(keys):
                self.generation += 1
            if set(keys) != set(self._keys):
                log.info("token key set %s: key ids %s", self._url, ", ".join(sorted(keys)))
            self._keys = keys
        finally:
            self._fetch = None

    async def _download(self) -> dict[str, VerificationKey]:
        try:
            async with self._client.stream(
                "GET", self._url, headers={"Accept": "application/json"}
            ) as response:
                if response.status_code != 200:
                    raise KeySetError(f"HTTP {response.status_code}")
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_KEY_SET_BYTES:
                        raise KeySetError(f"answer larger than {MAX_KEY_SET_BYTES} bytes")
        except httpx.HTTPError as error:
            raise KeySetError(f"{error.__class__.__name__}: {error}") from error
        return self._parse(body)

    def _parse(self, body: bytes) -> dict[str, VerificationKey]:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise KeySetError("answer is not JSON") from error
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise KeySetError("answer is not a JSON Web Key Set (no `keys` array)")
        keys: dict[str, VerificationKey] = {}
        skipped = 0
        for entry in entries[:MAX_KEYS]:
            key = self._signing_key(entry)
            if key is None:
                skipped += 1
            else:
                keys[key.kid] = key
        if skipped:
            log.info("token key set %s: %d keys skipped (not for verifying)", self._url, skipped)
        return keys

    def _signing_key(self, entry: object) -> VerificationKey | None:
        """A public verification key with an id, for one of AUTH_ALGORITHMS; else None."""
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            return None
        if entry.get("use", "sig") != "sig" or "d" in entry or entry.get("kty") == "oct":
            return None
        if "alg" in entry:
            if not isinstance(entry["alg"], str):
                return None
            algorithms = frozenset({entry["alg"]})
        else:
            curve = entry.get("crv") if entry.get("kty") != "RSA" else None
            algorithms = _ALGORITHMS_BY_KEY_TYPE.get((entry.get("kty"), curve), frozenset())
        algorithms &= self._algorithms
        if not algorithms:
            return None
        try:
            key = PyJWK(entry, algorithm=next(iter(algorithms)))
        except (PyJWTError, ValueError, TypeError):  # a member missing or not a valid key
            return None
        return VerificationKey(entry["kid"], key.key, algorithms)
