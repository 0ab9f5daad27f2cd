"""Idempotent sends: the `Idempotency-Key` header, and the background sweep of expired keys."""

import re

import asyncpg
from starlette.requests import Request

from messenger import db
from messenger.errors import IDEMPOTENCY_KEY_INVALID, IDEMPOTENCY_KEY_REPEATED, BadRequest
from messenger.settings import Settings
from messenger.sweeper import Sweeper

HEADER = "idempotency-key"
# Visible ASCII (0x21-0x7E): no spaces, control characters or anything a proxy may re-encode.
VALID_KEY = re.compile(r"[!-~]{1,255}")
# Rows deleted per statement: a send that takes over an expired key the sweep is deleting
# waits for one batch at most.
SWEEP_BATCH = 1000


def idempotency_key(request: Request) -> str | None:
    """The request's `Idempotency-Key`, or None without one; a malformed one is a 400."""
    values = request.headers.getlist(HEADER)
    if not values:
        return None
    if len(set(values)) > 1:
        raise BadRequest(IDEMPOTENCY_KEY_REPEATED)
    key = values[0]
    if not VALID_KEY.fullmatch(key):
        raise BadRequest(IDEMPOTENCY_KEY_INVALID)
    return key


def key_sweeper(settings: Settings, pool: asyncpg.Pool) -> Sweeper:
    """Deletes expired keys every IDEMPOTENCY_SWEEP_INTERVAL seconds. Expiry does not depend on
    it (a send ignores a key older than IDEMPOTENCY_KEY_TTL): it only keeps the table small."""
    return Sweeper(
        "idempotency keys",
        db.sweep_idempotency_keys,
        pool,
        age=settings.idempotency_key_ttl,
        interval=settings.idempotency_sweep_interval,
        batch=SWEEP_BATCH,
    )
