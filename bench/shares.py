"""Where a service process's busy samples went: py-spy raw profiles as one markdown table.

    .venv/bin/py-spy record --native -r 200 -d 15 -f raw -o artifacts/read.txt --pid <pid>
    .venv/bin/python -m bench.shares artifacts/read.txt artifacts/send.txt

Each sample goes to the first part below whose marker is in its stack (deepest concerns
first); samples of a thread waiting (the event loop in epoll, the log writer asleep) are
left out. The shares are of wall-clock samples of running threads, not of CPU time.
"""

import sys
from collections import Counter
from pathlib import Path

PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("garbage collector", ("gcmodule.c",)),
    ("relay: publish to RabbitMQ (aiormq, incl. its socket)", ("_publish_all", "aiormq")),
    ("relay: claim and commit statements", ("OutboxRelay",)),
    ("wake-ups: NOTIFY after the commit", ("WakeUps",)),
    ("access log (request side and writer thread)", ("LogWriter", "log_access", "uuid")),
    ("metrics", ("observe_request",)),
    ("response: send chain and socket write", ("Response.__call__",)),
    ("pool acquire/release", ("_BoundedAcquire", "PoolAcquireContext", "Pool.release")),
    ("statement: asyncpg protocol and its socket", ("asyncpg",)),
    ("the send's line (db.batches)", ("messenger/db/batches.py",)),
    ("handler, page cache, JSON", ("messenger/handlers.py",)),
    ("routing (starlette Router/Route, request_response)", ("starlette/routing.py",)),
    ("middleware stack (errors, access log, CORS, body limit)", ("Starlette.__call__",)),
    ("HTTP parsing (httptools protocol)", ("httptools_impl", "http_limits")),
    ("event loop, task switching, other", ("",)),
]
WAITING = ("epoll_wait", "time_sleep", "SimpleQueue_get", "pthread_cond_timedwait")


def shares(profile: Path) -> tuple[Counter[str], int]:
    counts: Counter[str] = Counter()
    for line in profile.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if any(marker in stack for marker in WAITING):
            continue
        part = next(name for name, markers in PARTS if any(m in stack for m in markers))
        counts[part] += int(samples)
    return counts, sum(counts.values())


def main(paths: list[str]) -> None:
    found = [shares(Path(path)) for path in paths]
    print("| where | " + " | ".join(Path(path).stem for path in paths) + " |")
    print("|---" * (len(paths) + 1) + "|")
    for name, _ in PARTS:
        cells = (f"{100 * counts[name] / max(1, total):.0f}%" for counts, total in found)
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| samples (busy) | " + " | ".join(str(total) for _, total in found) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
