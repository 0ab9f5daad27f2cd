"""Typed configuration from the environment, with the Node service's variable names and profiles."""

import re
import sys
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from messenger.body_limit import parse_size

Profile = Literal["production", "development", "test"]
Port = Annotated[int, Field(ge=1, le=65535)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]

# A duration the way the Consul agent reads one (Go's time.ParseDuration): "15s", "1m", "1m30s".
GO_DURATION = re.compile(r"0|(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+")


def _check_go_duration(text: str) -> str:
    if not GO_DURATION.fullmatch(text):
        raise ValueError("expected a duration such as 10s, 1m or 1m30s")
    return text


GoDuration = Annotated[str, AfterValidator(_check_go_duration)]

# Defaults each profile gave in the Node service's convict files; what a profile leaves out
# must come from the environment.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "development": {
        "port": 4000,
        "pghost": "localhost",
        "pgport": 5432,
        "pguser": "postgres",
        "pgpassword": "postgres",
        "pgdatabase": "messenger_dev",
        "amqphost": "localhost",
        "amqpport": 5672,
    },
    "test": {
        "port": 4000,
        "pghost": "localhost",
        "pgport": 5432,
        "pguser": "postgres",
        "pgpassword": "postgres",
        "pgdatabase": "messenger_test",
        "amqphost": "localhost",
        "amqpport": 5672,
    },
    "production": {
        "port": 4000,
        "pgport": 5432,
        "pguser": "postgres",
        "pgdatabase": "messenger",
        "amqpport": 5672,
    },
}


class Settings(BaseSettings):
    """Everything the service and its jobs read from the environment.

    Field names are the environment variable names, lower-cased (`PGHOST` -> `pghost`).
    """

    model_config = SettingsConfigDict(
        case_sensitive=False,
        extra="ignore",
        hide_input_in_errors=True,
        populate_by_name=True,
    )

    messenger_env: Profile = Field(
        default="development", validation_alias=AliasChoices("messenger_env", "node_env")
    )
    messenger_role: Literal["serve", "migrator"] = "serve"

    host: str = "0.0.0.0"
    port: Port
    keep_alive_timeout: int = Field(default=75, ge=1)
    # Node's limit (--max-http-header-size) and a read deadline for slow clients.
    http_header_limit: ByteSize = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    http_header_timeout: float = Field(default=10.0, gt=0, le=300)
    pghost: str
    pgport: Port
    pguser: str
    pgpassword: SecretStr | None = None
    pgdatabase: str = Field(min_length=1, max_length=63)
    pg_pool_max: int = Field(default=10, ge=1)
    pg_command_timeout: float = Field(default=10.0, gt=0)
    # Every wait of a request is bounded; each one running out is a 503 with Retry-After.
    pg_acquire_timeout: float = Field(default=2.0, gt=0)
    pg_lock_timeout: float = Field(default=1.0, gt=0)
    pg_statement_timeout: float = Field(default=5.0, gt=0)

    app_db_user: str | None = Field(default=None, min_length=1, max_length=63)
    app_db_password: SecretStr | None = None

    amqphost: str | None = None  # required by `serve` and `relay` only; see load_settings
    amqpport: Port
    amqpuser: str = "guest"
    amqppassword: SecretStr = SecretStr("guest")

    amqp_queue: str = Field(default="chat_queue", min_length=1)
    relay_enabled: bool = True
    relay_batch_size: int = Field(default=200, ge=1, le=10_000)
    relay_sweep_interval: float = Field(default=1.0, gt=0)
    relay_publish_timeout: float = Field(default=5.0, gt=0)
    relay_backoff_max: float = Field(default=10.0, gt=0)
    relay_flush_timeout: float = Field(default=3.0, ge=0)
    relay_max_attempts: int = Field(default=10, ge=1)

    json_body_limit: ByteSize = 100 * 1024
    messages_page_max: int = Field(default=1000, ge=1, le=100_000)
    # Rendered pages kept per instance (a 100-message page is about 16 kB). Filled with pages
    # of up to 1,000 messages, 4 MB of them grew the process by about 7 MB (allocator overhead).
    messages_cache_size: ByteSize = Field(default=4 * 1024 * 1024, ge=0)
    idempotency_key_ttl: float = Field(default=24 * 3600, gt=0, le=366 * 24 * 3600)
    idempotency_sweep_interval: float = Field(default=60.0, gt=0)

    sse_max_streams: int = Field(
        default=10_000,
        ge=0,
        le=1_000_000,
        description="Event streams (GET /events) one instance serves at once; beyond it a new"
        " stream gets 503 with Retry-After. Each stream is a file descriptor and about"
        " 20 kB of memory.",
    )
    sse_heartbeat_interval: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="Seconds of quiet after which a stream sends a `: ping` comment, so proxies"
        " and clients notice a dead connection; the load balancer's read timeout must be"
        " longer.",
    )
    sse_retry: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="Seconds a client waits before reconnecting a lost stream (the `retry:`"
        " line every stream opens with).",
    )
    sse_send_timeout: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Seconds a stream waits for a client that stopped reading before it drops"
        " the connection (the client resumes with Last-Event-ID).",
    )
    feed_poll_interval: float = Field(
        default=2.0,
        gt=0,
        le=600,
        description="Seconds between two reads of the feed positions of every user with a"
        " stream here: an event whose wake-up was missed (notification lost, database"
        " reconnected) is delivered at most this late.",
    )
    feed_retention: float = Field(
        default=3600.0,
        gt=0,
        le=366 * 24 * 3600,
        description="Seconds a user's events stay resumable. A stream resumed from an older"
        " event opens with `event: reset` (the client reloads through the REST routes).",
    )
    feed_sweep_interval: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between two deletions of events older than FEED_RETENTION.",
    )

    consul_service_name: str | None = Field(default=None, min_length=1)
    consul_host: str = "consul-client"
    consul_port: Port = 8500
    service_address: str | None = Field(default=None, min_length=1)
    consul_check_interval: GoDuration = "15s"
    consul_check_timeout: GoDuration = "5s"
    consul_deregister_after: GoDuration = "1m"
    # Docker stops a container 10 s after SIGTERM: grace + drain + the relay's flush fit in that.
    shutdown_grace: float = Field(default=2.0, ge=0, le=60)
    shutdown_drain_timeout: int = Field(default=4, ge=1, le=300)

    # wait-for-schema: how long a starting instance waits for the migrate job, and how often
    # it looks.
    schema_wait_timeout: float = Field(default=300.0, gt=0)
    schema_wait_interval: float = Field(default=2.0, gt=0)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        lowered = {str(key).lower(): value for key, value in data.items()}
        profile = lowered.get("messenger_env") or lowered.get("node_env") or "development"
        defaults = PROFILE_DEFAULTS.get(str(profile).lower())
        if defaults is None:
            # Said here, once: without a profile every variable it defaults would be "required".
            # The environment source files NODE_ENV under messenger_env, so name both.
            raise ValueError(
                "MESSENGER_ENV/NODE_ENV: expected 'production', 'development' or 'test'"
            )
        for key, value in lowered.items():
            if isinstance(value, str) and key in {"log_level", "log_format", "messenger_env"}:
                lowered[key] = value.lower()
        return {**defaults, **lowered}

    @property
    def broker_host(self) -> str:
        """AMQPHOST; only the commands that publish need it, and they check it at start."""
        if self.amqphost is None:
            raise RuntimeError("AMQPHOST is not set")
        return self.amqphost


def describe_errors(error: ValidationError) -> list[str]:
    """One line per problem, naming the environment variable and never echoing its value."""
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:  # a check across variables: its message names them
            lines.append(message)
            continue
        name = str(item["loc"][0]).upper()
        if item["type"] == "missing":
            message = "is required (set it in the environment)"
        elif item["type"] == "literal_error":
            message = message.replace("Input should be", "expected")
        lines.append(f"{name}: {message}")
    return lines


def load_settings(*, broker: bool = False, **overrides: Any) -> Settings:
    """Build the settings, or stop the process with exit code 2 and one line per bad variable.

    `broker`: the command publishes to RabbitMQ, so AMQPHOST must be known (the production
    profile has no default for it; the migrator's jobs never need it).
    """
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        lines = describe_errors(error)
    else:
        if not broker or settings.amqphost is not None:
            return settings
        lines = ["AMQPHOST: is required (set it in the environment)"]
    for line in lines:
        print(f"messenger: invalid configuration: {line}", file=sys.stderr)
    raise SystemExit(2)
