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
from pydantic_settings import SettingsConfigDict

from messenger.auth_settings import AuthSettings
from messenger.live_settings import LiveSettings
from messenger.sizes import parse_size

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
        "web_app": True,
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
        "web_app": True,
    },
    "production": {
        "port": 4000,
        "pgport": 5432,
        "pguser": "postgres",
        "pgdatabase": "messenger",
        "amqpport": 5672,
    },
}


class Settings(LiveSettings, AuthSettings):
    """Everything the service and its jobs read from the environment (with the settings of live
    delivery and of authentication, declared in live_settings.py and auth_settings.py).

    Field names are the environment variable names, lower-cased (`PGHOST` -> `pghost`).
    """

    model_config = SettingsConfigDict(
        case_sensitive=False,
        extra="ignore",
        hide_input_in_errors=True,
        populate_by_name=True,
        use_attribute_docstrings=True,  # a field's description: the docstring below it
    )

    messenger_env: Profile = Field(
        default="development", validation_alias=AliasChoices("messenger_env", "node_env")
    )
    """The profile whose defaults apply: `production`, `development` or `test` (case-insensitive).
    `NODE_ENV`, the Node service's name, works too; `MESSENGER_ENV` wins when both are set.
    """
    messenger_role: Literal["serve", "migrator"] = "serve"
    """What `python -m messenger` does without a command: `serve`, or `migrator` (run `migrate` and
    exit). The image's one-off migration container sets `migrator`.
    """

    host: str = "0.0.0.0"
    """The address to listen on. The default is every interface; `127.0.0.1` keeps the service to
    this machine.
    """
    port: Port
    """The HTTP port to listen on."""
    keep_alive_timeout: int = Field(default=75, ge=1)
    """Seconds an idle keep-alive connection is kept open. Keep it above the load balancer's
    upstream `keepalive_timeout` (nginx: 60 s) so the balancer never reuses a connection the service
    is closing.
    """
    # Node's limit (--max-http-header-size) and a read deadline for slow clients.
    http_header_limit: ByteSize = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    """Largest request head (request line, headers and the blank line), 1kb to 1mb. A longer one
    gets 431 once that many bytes arrived, none kept beyond it (Node's `--max-http-header-size`).
    """
    http_header_timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds a client has to send a request's head: from the connection's start for its first
    request, from its first byte for each next one; then 408 and the connection is closed
    (slowloris). Idle keep-alive connections wait `KEEP_ALIVE_TIMEOUT` instead.
    """
    http_body_timeout: float = Field(default=30.0, gt=0, le=300)
    """Seconds a request's body may take to arrive, counted from the end of its headers; a body not
    complete by then is answered 408 and its connection closed. 30 s carries a body of
    `JSON_BODY_LIMIT`'s default (100 kB) over a 64 kbit/s link twice over, while a client that
    stalls holds its connection a tenth as long as Node's `requestTimeout` (300 s) allowed.
    """
    pghost: str
    """PostgreSQL's host name or address, or a Unix socket directory (a path starting with `/`)."""
    pgport: Port
    """PostgreSQL's port."""
    pguser: str
    """The PostgreSQL role: the least-privilege application role when serving, the migrator's
    elevated role (may create databases and roles) for `migrate` and `seed`.
    """
    pgpassword: SecretStr | None = None
    """The password of `PGUSER`."""
    pgdatabase: str = Field(min_length=1, max_length=63)
    """The database; `migrate` creates it when it is missing."""
    pg_pool_max: int = Field(default=10, ge=1)
    """Most PostgreSQL connections serving requests, per instance, opened on demand (an instance
    starts while PostgreSQL is down). An instance holds up to this + 2 in all (one for its relay,
    one for readiness and metrics): size PostgreSQL's `max_connections` for the most instances you
    run. A larger pool did not make sends faster (they queue on one row per conversation).
    """
    pg_command_timeout: float = Field(default=10.0, gt=0)
    """Seconds asyncpg waits for any answer from PostgreSQL: the client-side backstop behind
    `PG_STATEMENT_TIMEOUT`; keep it above that.
    """
    # Every wait of a request is bounded; each one running out is a 503 with Retry-After.
    pg_acquire_timeout: float = Field(default=2.0, gt=0)
    """Seconds a request waits for a pool connection, in line and connecting included, before it
    gets 503 `The database is busy, try again shortly`.
    """
    pg_lock_timeout: float = Field(default=1.0, gt=0)
    """Seconds a statement waits for a row lock (PostgreSQL's `lock_timeout`), such as a
    conversation's counter row, before the request gets 503.
    """
    pg_statement_timeout: float = Field(default=5.0, gt=0)
    """Seconds a statement may run (PostgreSQL's `statement_timeout`) before the request gets 503.
    """

    app_db_user: str | None = Field(default=None, min_length=1, max_length=63)
    """`migrate` only: the least-privilege role serving instances connect as. Created with
    `APP_DB_PASSWORD` when missing, then granted data access only (no DDL). Unset: no role is
    created or granted.
    """
    app_db_password: SecretStr | None = None
    """`migrate` only: the password `APP_DB_USER` is created with."""

    amqphost: str | None = None  # required by `serve` and `relay` only; see load_settings
    """RabbitMQ's host. Required by `serve` and `relay` in production; the service starts and serves
    without a broker (events wait in the outbox).
    """
    amqpport: Port
    """RabbitMQ's port."""
    amqpuser: str = "guest"
    """The RabbitMQ user."""
    amqppassword: SecretStr = SecretStr("guest")
    """The password of `AMQPUSER`."""

    amqp_queue: str = Field(default="chat_queue", min_length=1)
    """The queue `new_message` events are published to (the default exchange, this routing key): the
    notifier consumes `chat_queue`. `scripts/dev` uses `chat_queue_dev` so a development run never
    feeds a shared notifier.
    """
    relay_enabled: bool = True
    """Run the outbox relay inside this serving instance. Set `false` when `python -m messenger
    relay` runs as its own process.
    """
    relay_batch_size: int = Field(default=200, ge=1, le=10_000)
    """Outbox rows the relay claims, publishes and deletes per round."""
    relay_sweep_interval: float = Field(default=1.0, gt=0)
    """Seconds between the relay's sweeps for rows other processes wrote (a send in its own process
    wakes it at once): how long a separate relay's events may wait when it is idle.
    """
    relay_publish_timeout: float = Field(default=5.0, gt=0)
    """Seconds a publish may wait for RabbitMQ's confirm, and a connection attempt for the broker.
    """
    relay_backoff_max: float = Field(default=10.0, gt=0)
    """The cap, in seconds, of the relay's reconnect backoff (with jitter)."""
    relay_flush_timeout: float = Field(default=3.0, ge=0)
    """Seconds the relay keeps publishing pending events at shutdown."""
    relay_max_attempts: int = Field(default=10, ge=1)
    """Refusals by RabbitMQ after which an event is parked in the table `outbox_parked` (logged and
    counted; move it back once the cause is fixed).
    """

    json_body_limit: ByteSize = 100 * 1024
    """Largest request body; a larger one gets 413 before any handler runs. Sizes in the npm `bytes`
    style: `b`, `kb`, `mb`, `gb`, `tb`, `pb`, 1024-based, case-insensitive, fractions allowed
    (`1.5mb`); a bare number is bytes.
    """
    messages_page_max: int = Field(default=1000, ge=1, le=100_000)
    """Most messages one `GET /conversations/{id}/messages` returns, and the largest `limit` it
    accepts.
    """
    # Rendered pages kept per instance (a 100-message page is about 16 kB). Filled with pages
    # of up to 1,000 messages, 4 MB of them grew the process by about 7 MB (allocator overhead).
    messages_cache_size: ByteSize = Field(default=4 * 1024 * 1024, ge=0)
    """Memory for rendered message pages, per instance (sizes as for `JSON_BODY_LIMIT`); the least
    recently read pages go first; `0` turns the cache off. A 100-message page is about 16 kB.
    """
    idempotency_key_ttl: float = Field(default=24 * 3600, gt=0, le=366 * 24 * 3600)
    """Seconds an `Idempotency-Key` is remembered (default 24 h); an older key is free for a new
    message.
    """
    idempotency_sweep_interval: float = Field(default=60.0, gt=0)
    """Seconds between sweeps deleting expired idempotency keys (up to 100,000 per sweep, 1,000 per
    statement).
    """

    consul_service_name: str | None = Field(default=None, min_length=1)
    """Register `serve` with the Consul agent under this name (`messenger` for the load balancer).
    Unset: no Consul call is ever made (as on Kubernetes).
    """
    consul_host: str = "consul-client"
    """The Consul agent's host."""
    consul_port: Port = 8500
    """The Consul agent's HTTP API port."""
    service_address: str | None = Field(default=None, min_length=1)
    """The address other hosts reach this instance on, registered in Consul. Unset: `HOST` if it
    names one address, else the source address of the default route (127.0.0.1 only if there is no
    other).
    """
    consul_check_interval: GoDuration = "15s"
    """How often the Consul agent calls `/health`."""
    consul_check_timeout: GoDuration = "5s"
    """How long the Consul agent waits for `/health` to answer."""
    consul_deregister_after: GoDuration = "1m"
    """The Consul agent drops an instance whose check stays critical this long (one that crashed
    without deregistering).
    """
    # Docker stops a container 10 s after SIGTERM: grace + drain + the relay's flush fit in that.
    shutdown_grace: float = Field(default=2.0, ge=0, le=60)
    """Seconds to keep serving after deregistering from Consul on SIGTERM, while the load balancer
    drops the instance (skipped without Consul). Grace + drain + `RELAY_FLUSH_TIMEOUT` must fit in
    the orchestrator's stop timeout (Docker: 10 s).
    """
    shutdown_drain_timeout: int = Field(default=4, ge=1, le=300)
    """Whole seconds requests in flight get to finish once the listener is closed; then they are
    cancelled.
    """

    # wait-for-schema: how long a starting instance waits for the migrate job, and how often
    # it looks.
    schema_wait_timeout: float = Field(default=300.0, gt=0)
    """`wait-for-schema` only: seconds to wait for the database to reach the image's head revision
    before failing.
    """
    schema_wait_interval: float = Field(default=2.0, gt=0)
    """`wait-for-schema` only: seconds between two looks at the schema's revision."""

    web_app: bool = False
    """Serve the chat page at `/app/` (docs/chat-page.md); on in `test` for its browser test."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """The least severe log level written (case-insensitive); `info` includes one access-log line
    per request, `warning` drops them.
    """
    log_format: Literal["text", "json"] = "text"
    """`text` for people, `json` for one JSON object per line (log collectors)."""

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
            if isinstance(value, str) and key in {
                "log_level",
                "log_format",
                "messenger_env",
                "auth_mode",
            }:
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
