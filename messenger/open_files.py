"""The open-file ceiling: raise it at start, and warn before connections run into it.

Every client connection, pool connection and log file is a file descriptor. A container's
default soft limit (often 1024) is reached at about a thousand concurrent clients; after that
accept() fails with EMFILE and new clients hang in the listen queue. The hard limit is what
the operator granted (`ulimit -Hn`, Docker's `--ulimit nofile`, the container runtime's
default on Kubernetes), and a process may raise its soft limit up to it without privileges.
"""

import asyncio
import contextlib
import logging
import os
import resource
from collections.abc import AsyncIterator

# The name operators filter these lines by; it predates this module's name.
logger = logging.getLogger("messenger.limits")

CHECK_INTERVAL = 10.0  # seconds between two counts of open descriptors
WARN_SHARE = 0.8  # warn once this share of the soft limit is open
CLEAR_SHARE = 0.7  # and again only after dropping below this share


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as error:
        logger.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, error)
        return soft
    logger.info("open-files limit raised from %d to %d (the hard limit)", soft, hard)
    return hard


def open_files() -> int | None:
    """How many descriptors this process has open; None where /proc is not there."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class OpenFilesWatch:
    """Logs a warning when open descriptors near the soft limit, once per crossing."""

    def __init__(self) -> None:
        self.warned = False

    def check(self, limit: int | None = None) -> int | None:
        count = open_files()
        if limit is None:
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if count is None or limit == resource.RLIM_INFINITY:
            return count
        if count >= WARN_SHARE * limit and not self.warned:
            self.warned = True
            logger.warning(
                "%d of %d file descriptors open: new connections fail at the limit;"
                " raise the hard limit (ulimit -Hn, the container's nofile ulimit)",
                count,
                limit,
            )
        elif count < CLEAR_SHARE * limit:
            self.warned = False
        return count


@contextlib.asynccontextmanager
async def watch_open_files(interval: float = CHECK_INTERVAL) -> AsyncIterator[OpenFilesWatch]:
    """Count open descriptors every `interval` seconds while the block runs."""
    watch = OpenFilesWatch()

    async def loop() -> None:
        while True:
            watch.check()
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop(), name="watch-open-files")
    try:
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
