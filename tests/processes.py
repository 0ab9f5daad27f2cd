"""Real service processes for tests: `python -m messenger serve` on a free loopback port."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from messenger.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a service process using `settings`' database, with nothing inherited
    from the developer's shell but PATH and HOME."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "MESSENGER_ENV": "test",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "PGHOST": settings.pghost,
        "PGPORT": str(settings.pgport),
        "PGUSER": settings.pguser,
        "PGDATABASE": settings.pgdatabase,
        "AMQPHOST": settings.broker_host,
        "AMQPPORT": str(settings.amqpport),
        "RELAY_ENABLED": "false",
        "LOG_LEVEL": "warning",
    }
    if settings.pgpassword is not None:
        env["PGPASSWORD"] = settings.pgpassword.get_secret_value()
    env.update(extra)
    return env


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str

    def output_lines(self) -> list[str]:
        """What the service wrote to its stdout (started with stdout=PIPE) once it has stopped;
        the pipe is closed after."""
        assert self.process.stdout is not None
        with self.process.stdout as stdout:
            return stdout.read().decode().splitlines()


def wait_for_health(url: str, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited with {process.returncode} before it was healthy")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url}/health did not answer within {timeout}s")


def terminate(process: subprocess.Popen[bytes], within: float) -> None:
    """SIGTERM, and SIGKILL if the process has not exited `within` seconds later."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def serve(
    env: dict[str, str],
    *args: str,
    stdout: int = subprocess.DEVNULL,
    preexec_fn: Callable[[], object] | None = None,
) -> Iterator[Service]:
    """Run the service until the block ends, then stop it with SIGTERM (SIGKILL if stuck).

    With `stdout=subprocess.PIPE` the service's log stays readable after the block;
    `preexec_fn` runs in the child before the service starts (e.g. to set resource limits).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "messenger", "serve", *args],
        cwd=ROOT,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        preexec_fn=preexec_fn,
    )
    url = f"http://127.0.0.1:{env['PORT']}"
    try:
        wait_for_health(url, process)
        yield Service(process, url)
    finally:
        terminate(process, within=15)
        if process.stderr is not None:
            process.stderr.close()
