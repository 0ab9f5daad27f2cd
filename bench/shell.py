"""Running the tools the bench drives (psql, wrk, pgbench, the service's jobs), and the one
error that stops the bench: it could not run, and the text says why."""

import subprocess
import sys

# `python -m messenger ROLE` in the bench's own virtual environment: serve, relay, migrate, seed.
MESSENGER = (sys.executable, "-m", "messenger")


class BenchFailed(Exception):
    """The benchmark could not run; the text says why."""


def run(command: list[str], *, env: dict[str, str] | None = None) -> str:
    """The command's standard output; BenchFailed with all it printed if it exits non-zero."""
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchFailed(f"{' '.join(command[:3])} failed:\n{done.stdout}{done.stderr}")
    return done.stdout
