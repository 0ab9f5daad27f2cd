"""The settings of live delivery (`GET /events`, see stream.py and streams.py): part of
`Settings`, declared here so each module stays about one concept."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LiveSettings(BaseSettings):
    """Event streams: their limit, heartbeat, reconnection delay, slow readers; the feed's
    re-read interval and retention."""

    model_config = SettingsConfigDict(use_attribute_docstrings=True)

    sse_max_streams: int = Field(default=10_000, ge=0, le=1_000_000)
    """Event streams (`GET /events`) one instance serves at once; beyond it a new stream gets 503
    with `Retry-After`. Each stream holds a file descriptor and about 20 kB of memory.
    """
    sse_heartbeat_interval: float = Field(default=15.0, gt=0, le=3600)
    """Seconds of quiet after which a stream writes a `: ping` comment, so proxies and clients
    notice a dead connection. The load balancer's read timeout must be longer (nginx: 75 s).
    """
    sse_retry: float = Field(default=2.0, gt=0, le=3600)
    """Seconds a client waits before reconnecting a lost stream (the `retry:` line every stream
    opens with).
    """
    sse_send_timeout: float = Field(default=10.0, gt=0, le=600)
    """Seconds a stream waits for a client that stopped reading before it drops the connection;
    the client resumes with `Last-Event-ID`.
    """
    feed_poll_interval: float = Field(default=2.0, gt=0, le=600)
    """Seconds between two reads of the feed positions of every user with a stream on this
    instance: an event whose wake-up was missed (a notification lost, the database reconnected)
    is delivered at most this late.
    """
    feed_retention: float = Field(default=3600.0, gt=0, le=366 * 24 * 3600)
    """Seconds a user's events stay resumable. A stream resumed from an older event opens with
    `event: reset` (the client reloads through the REST routes).
    """
    feed_sweep_interval: float = Field(default=60.0, gt=0)
    """Seconds between two sweeps deleting events older than `FEED_RETENTION` (10,000 per
    statement).
    """
