"""Command line: `python -m messenger COMMAND` (serve, migrate, seed, relay, wait-for-schema)."""

import argparse
import gc
import logging
import os
import sys

from messenger import __version__
from messenger.logs import configure_logging
from messenger.settings import Settings, load_settings

DESCRIPTION = """\
messenger: conversations between two users and their messages.

Without a command, MESSENGER_ROLE picks one: `serve` (the default) or `migrator`, which runs
`migrate` and exits. Configuration comes from the environment; see docs/configuration.md.
"""


def serve(settings: Settings) -> int:
    import uvicorn

    from messenger.app import create_app
    from messenger.discovery import Registration
    from messenger.http_limits import bounded_protocol
    from messenger.open_files import raise_open_files_limit
    from messenger.server import Server
    from messenger.streams import Streams

    raise_open_files_limit()
    # One registration shared by the app (which registers) and the server (which deregisters
    # first on a signal, before uvicorn stops accepting connections).
    registration = Registration.for_settings(settings)
    streams = Streams(settings)  # ended by the server when it starts draining
    config = uvicorn.Config(
        lambda: create_app(settings, registration=registration, streams=streams),
        factory=True,
        http=bounded_protocol(
            max_head=settings.http_header_limit, head_timeout=settings.http_header_timeout
        ),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips="*",
        timeout_keep_alive=settings.keep_alive_timeout,
        timeout_graceful_shutdown=settings.shutdown_drain_timeout,
        lifespan="on",
    )
    # What the imports made lives as long as the process: keep the collector's full passes,
    # which run while requests wait, from walking those ~50,000 objects again and again.
    gc.collect()
    gc.freeze()
    # Collect the young generation every 10,000 allocations, not every 700: at 256 connections
    # the objects of requests in flight are walked again at each collection.
    gc.set_threshold(10_000, 20, 100)
    Server(
        config, registration=registration, grace=settings.shutdown_grace, on_drain=streams.end_all
    ).run()
    return 0


def migrate(settings: Settings) -> int:
    from messenger import jobs

    logging.getLogger("alembic").setLevel(logging.INFO)
    print(f"migrate: {settings.pguser}@{settings.pghost}:{settings.pgport}/{settings.pgdatabase}")
    jobs.run_migrate(settings)
    return 0


def seed(settings: Settings) -> int:
    from messenger import jobs

    jobs.run_seed(settings)
    return 0


def wait_for_schema(settings: Settings) -> int:
    from messenger import jobs

    print(
        f"wait-for-schema: {settings.pguser}@{settings.pghost}:{settings.pgport}"
        f"/{settings.pgdatabase}, for up to {settings.schema_wait_timeout:g}s"
    )
    jobs.run_wait_for_schema(settings)
    return 0


def relay(settings: Settings) -> int:
    import asyncio

    from messenger.relay import run_relay

    asyncio.run(run_relay(settings))
    return 0


COMMANDS = {
    "serve": (serve, "serve the HTTP API (one uvicorn process; scale by running more)"),
    "migrate": (
        migrate,
        "create the database if missing, migrate it to the latest schema (safe to rerun,"
        " never drops data) and grant APP_DB_USER data access; needs elevated credentials",
    ),
    "seed": (seed, "insert the tutorial's three users unless they exist (safe to rerun)"),
    "wait-for-schema": (
        wait_for_schema,
        "exit 0 once the database is at the schema revision this image carries; wait while it"
        " is behind or unreachable (at most SCHEMA_WAIT_TIMEOUT seconds), fail at once when it"
        " is ahead (a newer image migrated it): run before serving, e.g. as an init container",
    ),
    "relay": (
        relay,
        "publish the event outbox to RabbitMQ without serving HTTP (for a separate relay;"
        " serving instances run one too unless RELAY_ENABLED=false)",
    ),
}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m messenger",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument("--version", action="version", version=f"messenger {__version__}")
    commands = root.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text, description=help_text)
    return root


def _role() -> str:
    """MESSENGER_ROLE, read before the settings: which command runs decides what is required."""
    return os.environ.get("MESSENGER_ROLE", "serve").strip().lower()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    name = args.command or ("migrate" if _role() == "migrator" else "serve")
    settings = load_settings(broker=name in {"serve", "relay"})
    # Serving writes its log from a thread; a job's log lines interleave with what it prints.
    configure_logging(settings, background=name in {"serve", "relay"})
    run, _ = COMMANDS[name]
    try:
        return run(settings)
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        # Imported here: alembic and SQLAlchemy (about 20 MB) load only in the jobs that use them.
        from messenger.jobs import JobFailed

        if not isinstance(error, JobFailed):
            raise
        print(f"messenger {name}: failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
