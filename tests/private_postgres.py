"""A PostgreSQL cluster of the test's own, in a temporary folder on a free port, to restart at will.

The shared server the other tests use must never be restarted. PostgreSQL refuses to run as
root, so as root the cluster belongs to the `postgres` user and its commands run through
`runuser`.
"""

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.processes import free_port


def _bindir() -> Path:
    """The newest installed server's programs (Debian keeps them out of PATH)."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name),
    )
    if not candidates:
        raise RuntimeError("no PostgreSQL server installed under /usr/lib/postgresql")
    return candidates[-1].parent


@dataclass
class PrivatePostgres:
    folder: Path
    port: int
    bindir: Path
    owner: str | None  # run commands as this user (when we are root)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self.owner is not None:
            command = ["runuser", "-u", self.owner, "--", *command]
        # Output goes to a file, not a pipe: the server started by pg_ctl inherits it, and a
        # pipe would stay open as long as the server runs.
        with (self.folder / "pg_ctl.log").open("ab") as output:
            subprocess.run(command, check=True, stdout=output, stderr=output, timeout=120)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c max_connections=60"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def restart(self, mode: str) -> None:
        """`pg_ctl restart -m fast|immediate`: immediate kills backends mid-statement."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", mode, "-w", "restart")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """initdb, start, yield, stop, remove: trust authentication for `postgres` over TCP."""
    owner = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="messenger-pg-"))
    if owner is not None:
        user = pwd.getpwnam(owner)
        os.chown(folder, user.pw_uid, user.pw_gid)
    cluster = PrivatePostgres(folder, free_port(), _bindir(), owner)
    try:
        cluster._run(
            "initdb", "-D", str(cluster.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
