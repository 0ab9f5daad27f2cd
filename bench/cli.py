"""The bench's options and its --help; only the standard library is imported before the
options are read, so `scripts/bench --help` answers without installing anything."""

import argparse
import os
import re
import sys

# Spelled into SQL (CREATE and DROP DATABASE take no parameters): letters, digits and _ only.
DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

DESCRIPTION = """\
Load benchmark of one serving process as users run it: one uvicorn process on loopback with
the default LOG_LEVEL=info (an access-log line per request) and the in-process relay on.

What it runs, in order (each round --duration seconds, after one --warmup per scenario):
  1. The service under wrk and its SQL under pgbench, by turns (A/B/A/B/A/B, --rounds):
     GET of a 100-message conversation, POST of a message at 32 connections and (not in
     --quick) GET /conversations. pgbench runs the service's own statements from
     messenger.db, -M prepared, with as many clients as the service's pool (PG_POOL_MAX).
     Every round is printed as "service N req/s / pgbench M tps = ratio", then the medians
     and ranges, and why any round ran well below the median (the service's share of a core,
     its CPU per request, the machine's load average).
  2. Once each (not in --quick): GET /health, and the send at 256 connections.
  3. The send at 4 connections into an empty conversation and into one of --large-messages
     messages, in four short alternated rounds (not with --skip-large or --quick).
  4. Sends without an Idempotency-Key, with a new key each, and repeating one key, in three
     alternated rounds (not in --quick).
  5. A sustained send load (--sustained seconds; not in --quick) into four conversations,
     the relay in the service, then as its own process (`python -m messenger relay`):
     sends/s, events/s, backlog and its oldest age every few seconds, then the drain.
A line before each step says what runs, for how long, and how much load is left.

It installs what is missing (wrk, pgbench, PostgreSQL, RabbitMQ, .venv), creates its own
database with the migrate and seed jobs (and says "recreated" only if one of that name
existed), and drops it at the end unless --keep-database. Then: a table of figures and one
PASS or MISS line per target (issue 8's, and issue 3's 1M-message one)."""

EPILOG = """\
typical runs:
  scripts/bench --quick          the read and send rows only, 5 s rounds: about two minutes
  scripts/bench                  everything: about 10 minutes on 2 cores
  scripts/bench --logs-off       the service with LOG_LEVEL=warning (no access log)
  scripts/bench --auth jwt       every request with a bearer token (AUTH_MODE=jwt)
  scripts/bench --auth-compare --rounds 5   jwt mode against header mode, read and send
  scripts/bench --rounds 5 --sustained 120 --skip-large --keep-database

environment:
  BENCH_DATABASE        the database's name (default messenger_bench_<pid>: runs side by side
                        on a shared server never drop each other's)
  BENCH_QUEUE           the queue the relay publishes to (default bench_queue_<pid>; never the
                        real chat_queue), deleted after each part
  BENCH_LARGE_MESSAGES  default of --large-messages
  PGHOST PGPORT PGUSER PGPASSWORD  the PostgreSQL server (127.0.0.1:5432, postgres)
  AMQPHOST AMQPPORT     the RabbitMQ server (127.0.0.1:5672)

reading it: on a machine shared with other work, req/s moves with the neighbours' load while
the service's CPU time per request mostly does not: compare that between runs. A CPU-bound
scenario whose CPU share is well below 100% was starved by other processes.

exit status: 0 when the bench ran, whether targets were met or missed (it is a benchmark, not
a test); 1 when it could not run (the message says why); 2 for a bad option."""


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def not_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {text}")
    return value


def database_name(text: str) -> str:
    if DATABASE_NAME.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: letters, digits and _ only, not starting with a digit, at most 63"
        )
    return text


def parser() -> argparse.ArgumentParser:
    pid = os.getpid()
    options = argparse.ArgumentParser(
        prog="scripts/bench",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = options.add_argument
    add("--quick", action="store_true", help="read and send rows only, short rounds (~2 min)")
    add("--duration", type=positive, metavar="S", help="seconds per round (10; --quick 5)")
    add("--warmup", type=not_negative, metavar="S", help="warm-up seconds (3; --quick 1)")
    add("--rounds", type=at_least_one, default=3, metavar="N", help="alternated rounds (3)")
    add(
        "--sustained",
        type=not_negative,
        metavar="S",
        help="seconds of the sustained send load (60; --quick 0: skipped)",
    )
    add("--logs-off", action="store_true", help="LOG_LEVEL=warning: no access log")
    add("--skip-large", action="store_true", help="skip the 1M-message conversation")
    add(
        "--large-messages",
        type=at_least_one,
        default=int(os.environ.get("BENCH_LARGE_MESSAGES", "1000000")),
        metavar="N",
        help="messages in the large conversation (1000000; BENCH_LARGE_MESSAGES)",
    )
    add("--keep-database", action="store_true", help="keep the database at the end, to inspect")
    add(
        "--database",
        type=database_name,
        default=os.environ.get("BENCH_DATABASE", f"messenger_bench_{pid}"),
        metavar="NAME",
        help="the database to create and drop (BENCH_DATABASE; messenger_bench_<pid>)",
    )
    add(
        "--queue",
        default=os.environ.get("BENCH_QUEUE", f"bench_queue_{pid}"),
        metavar="NAME",
        help="the relay's queue, deleted after (BENCH_QUEUE; bench_queue_<pid>)",
    )
    add("--port", type=port, default=0, metavar="P", help="the service's port (0: a free one)")
    add(
        "--auth",
        choices=["header", "jwt"],
        default="header",
        help="the service's AUTH_MODE (header); jwt: every request carries a bearer token"
        " signed by a key the bench serves on loopback",
    )
    add(
        "--auth-compare",
        action="store_true",
        help="only the read and the send, AUTH_MODE=header and jwt by turns (--rounds each):"
        " throughput and CPU per request of jwt mode against header mode",
    )
    return options


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    defaults = (5.0, 1.0, 0.0) if args.quick else (10.0, 3.0, 60.0)
    for name, default in zip(("duration", "warmup", "sustained"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.skip_large = args.skip_large or args.quick or args.auth_compare
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from bench import run  # the service's libraries: imported once the options are good

    return run.main(args)


if __name__ == "__main__":
    sys.exit(main())
