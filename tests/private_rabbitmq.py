"""A RabbitMQ node of the test's own, in a temporary folder on free ports, to stop or break.

The machine's shared broker (the one scripts/test starts, and other test runs use at the same
time) must never be stopped or given policies. This node has its own name, its own AMQP and
distribution ports on loopback, its own data, logs, plugins (none) and Erlang cookie. As root
it runs as the `rabbitmq` user, who owns its folder, as the packaged server does.
"""

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.processes import free_port

BIN = Path("/usr/lib/rabbitmq/bin")  # the real programs; /usr/sbin's wrapper writes shared logs
START_TIMEOUT = 120.0
COMMAND_TIMEOUT = 120.0


@dataclass
class PrivateRabbitMQ:
    folder: Path
    port: int
    node: str
    owner: str | None  # run commands as this user (when we are root)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def _env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.folder),  # its own .erlang.cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_PID_FILE": str(self.folder / "rabbitmq.pid"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
        }

    @property
    def dist_port(self) -> int:
        return int((self.folder / "dist_port").read_text())

    def _command(self, program: str, *args: str) -> list[str]:
        # runuser sets HOME to the user's; the node's cookie is in its own folder.
        command = ["env", f"HOME={self.folder}", str(BIN / program), *args]
        if self.owner is not None:
            command = ["runuser", "-u", self.owner, "--", *command]
        return command

    def ctl(self, *args: str) -> str:
        """`rabbitmqctl -n NODE ARGS...`; raises with rabbitmqctl's output when it fails."""
        done = subprocess.run(
            self._command("rabbitmqctl", "-n", self.node, *args),
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                self._command("rabbitmq-server"),
                env=self._env(),
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,  # a Ctrl-C of pytest does not reach it: stop() does
            )
        # await_startup gives up at once while the node is not yet known to epmd: ask again.
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.ctl("--timeout", "10", "await_startup")
                return
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                if self.process.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                self.stop()
                log = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the private RabbitMQ did not start: {error}\n{log}") from None

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("--timeout", str(int(START_TIMEOUT)), "await_startup")

    def set_policy(self, name: str, pattern: str, definition: str) -> None:
        self.ctl("set_policy", "--apply-to", "queues", name, pattern, definition)

    def stop(self) -> None:
        """`rabbitmqctl stop`, then the server's process group killed if it is still there."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.ctl("stop")
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@contextlib.contextmanager
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """Start a node (about 5 s), yield it, stop it and remove its folder."""
    owner = "rabbitmq" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="messenger-rabbitmq-"))
    port, dist_port = free_port(), free_port()
    (folder / "dist_port").write_text(str(dist_port))
    (folder / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{port}\n"
        # Nothing but AMQP: a management or Prometheus listener would collide with the shared
        # node's ports, and the tests need neither.
        "log.console = false\n"
    )
    (folder / "enabled_plugins").write_text("[].\n")
    # Erlang distribution on loopback only, like the shared node's configuration.
    (folder / "rabbitmq-env.conf").write_text(
        "ERL_EPMD_ADDRESS=127.0.0.1\n"
        'export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"\n'
    )
    cookie = folder / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(20))
    cookie.chmod(0o400)
    if owner is not None:
        user = pwd.getpwnam(owner)
        for path in [folder, *folder.iterdir()]:
            os.chown(path, user.pw_uid, user.pw_gid)
    broker = PrivateRabbitMQ(folder, port, f"messenger-test-{os.getpid()}-{port}@localhost", owner)
    try:
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
