"""scripts/dev: the tutorial on a PostgreSQL from PG* or an embedded one, stopped by Ctrl-C."""

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiormq
import httpx
import pytest

from messenger.settings import Settings
from tests.conftest import bare_env, base_settings, drop_database
from tests.processes import free_port
from tests.test_events import AMQP_URL, take

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT / "scripts" / "dev"
# The first run may install the `local` extra into .venv.
START_TIMEOUT = 240.0
STOP_TIMEOUT = 30.0

pytestmark = pytest.mark.timeout(600)


class DevScript:
    """scripts/dev running in its own process group, as a terminal would run it."""

    def __init__(self, env: dict[str, str], output: Path) -> None:
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = output
        with output.open("ab") as sink:
            self.process = subprocess.Popen(
                [str(DEV)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pgid = self.process.pid

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"scripts/dev exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).text == "OK":
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"scripts/dev did not serve within {START_TIMEOUT}s:\n{self.log()}")

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the whole process group, as the terminal sends it."""
        os.killpg(self.pgid, signal.SIGINT)
        return self.process.wait(timeout=STOP_TIMEOUT)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.pgid, signal.SIGKILL)
            self.process.wait()


def live_processes(*, group: int | None = None, argument: str | None = None) -> list[str]:
    """Processes (not zombies) in process group `group` or with `argument` in their command."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, _, process_group = stat.rpartition(")")[2].split()[:3]
        if state == "Z":
            continue
        if (group is not None and int(process_group) == group) or (
            argument is not None and argument in command
        ):
            found.append(f"{entry.name} {command}")
    return found


def nothing_left(dev: DevScript, argument: str | None = None) -> list[str]:
    """What scripts/dev left running, waiting a moment for processes that are on their way out."""
    deadline = time.monotonic() + 10
    while True:
        left = live_processes(group=dev.pgid, argument=argument)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def tutorial_step(dev: DevScript) -> httpx.Response:
    """Create the tutorial's conversation between users 1 and 2 (or find it) and send into it."""
    created = httpx.post(f"{dev.url}/conversations", json={"participant_ids": [1, 2]})
    assert created.status_code in (201, 400), created.text
    listed = httpx.get(f"{dev.url}/conversations", headers={"User-Id": "1"}).json()
    conversation_id = listed["conversations"][0]["id"]
    sent = httpx.post(
        f"{dev.url}/conversations/{conversation_id}/messages",
        headers={"User-Id": "1"},
        json={"content": "This is the first message"},
    )
    assert sent.status_code == 201, sent.text
    return httpx.get(f"{dev.url}/conversations/{conversation_id}/messages")


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue of the test's own for scripts/dev's events, deleted afterwards."""
    name = f"test_dev_queue_{uuid.uuid4().hex[:10]}"
    yield name

    async def delete() -> None:
        connection = await aiormq.connect(AMQP_URL)
        channel = await connection.channel()
        await channel.queue_delete(name)
        await connection.close()

    asyncio.run(delete())


@pytest.fixture
def system_database() -> Iterator[Settings]:
    settings = base_settings(pgdatabase=f"messenger_dev_{uuid.uuid4().hex[:12]}")
    yield settings
    asyncio.run(drop_database(settings))


def test_dev_serves_the_tutorial_on_the_postgresql_named_by_pg_variables(
    system_database: Settings, queue: str, tmp_path: Path
) -> None:
    password = system_database.pgpassword
    env = bare_env(
        PGHOST=system_database.pghost,
        PGPORT=str(system_database.pgport),
        PGUSER=system_database.pguser,
        PGPASSWORD=password.get_secret_value() if password else "",
        PGDATABASE=system_database.pgdatabase,
        HOST="127.0.0.1",
        PORT=str(free_port()),
        DEV_PGDATA=str(tmp_path / "unused"),
        AMQP_QUEUE=queue,
    )
    dev = DevScript(env, tmp_path / "dev.log")
    try:
        dev.wait_until_healthy()
        messages = tutorial_step(dev).json()["messages"]
        assert [m["content"] for m in messages] == ["This is the first message"]
        assert messages[0]["username"] == "James Blanderphone"
        assert len(asyncio.run(take(queue, 1))) == 1, "the event goes to the AMQP_QUEUE asked for"
        assert httpx.get(f"{dev.url}/app/", timeout=5).status_code == 200, "the chat page"

        assert dev.interrupt() == 0, dev.log()
        assert nothing_left(dev) == []
    finally:
        dev.kill()
    log = dev.log()
    assert f"{system_database.pgdatabase!r} created" in log
    assert "seed: 3 users created" in log
    assert f"events are published to queue {queue}" in log
    assert f"listening on {dev.url} " in log
    assert f"chat page: {dev.url}/app/ " in log
    assert not (tmp_path / "unused").exists(), "the embedded PostgreSQL must not start"


@pytest.fixture
def embedded_data() -> Iterator[Path]:
    """A data folder for the embedded server; its server is stopped if a test left it running.

    Not under pytest's tmp_path: every pytest session that starts on the machine makes
    pytest's temporary root private again (0700), and the server, which runs as a system user
    of its own when started as root, then loses access to its own files mid-test.
    """
    folder = Path(tempfile.mkdtemp(prefix="messenger-test-dev-"))
    data = folder / "pgdata"
    yield data
    pid_file = data / "postmaster.pid"
    if pid_file.exists() and live_processes(argument=str(data)):
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)  # fast shutdown
    shutil.rmtree(folder, ignore_errors=True)


def test_dev_runs_an_embedded_postgresql_whose_data_survives_a_restart(
    embedded_data: Path, tmp_path: Path
) -> None:
    data = embedded_data
    # No broker (a free port): this test's events stay in the outbox, off any shared queue.
    env = bare_env(DEV_PGDATA=str(data), PORT=str(free_port()), AMQPPORT=str(free_port()))
    for run in (1, 2):
        dev = DevScript(env, tmp_path / f"dev{run}.log")
        try:
            dev.wait_until_healthy()
            assert live_processes(argument=str(data)), "the embedded server should be running"
            messages = tutorial_step(dev).json()["messages"]
            assert [m["content"] for m in messages] == ["This is the first message"] * run
            assert [m["index"] for m in messages] == [str(i) for i in range(1, run + 1)]

            assert dev.interrupt() == 0, dev.log()
            assert nothing_left(dev, argument=str(data)) == []
        finally:
            dev.kill()
        log = dev.log()
        assert "PostgreSQL: embedded" in log
        assert "stopping the embedded PostgreSQL" in log
        assert ("seed: 3 users created" if run == 1 else "seed: 0 users created") in log
        assert "listening on every interface (HOST=0.0.0.0)" in log
        assert "events go to queue chat_queue_dev, not the notifier's chat_queue" in log


def run_dev(script: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """scripts/dev (or a copy) to its end, its messages kept; for the runs that stop early."""
    return subprocess.run(
        [str(script)],
        env=bare_env(**env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )


def messages(done: subprocess.CompletedProcess[str]) -> list[str]:
    """What scripts/dev said, but for the install of the `local` extra a first run makes."""
    lines = (done.stdout + done.stderr).splitlines()
    return [line for line in lines if not line.startswith("==> installing messenger[local]")]


def test_dev_on_a_port_in_use_stops_at_once_with_one_line_naming_port_and_variable(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # HOST is left at its default, 0.0.0.0, which a listener on 127.0.0.1 already blocks.
        done = run_dev(DEV, PORT=str(port), DEV_PGDATA=str(tmp_path / "unused"))

    assert done.returncode == 1, done.stderr
    [line] = messages(done)
    assert re.fullmatch(
        rf"error: port {port} is already in use \(HOST=0\.0\.0\.0\): stop what listens there,"
        r" or set PORT, e\.g\. PORT=\d+ scripts/dev",
        line,
    ), line
    assert not (tmp_path / "unused").exists(), "nothing may start before the port is checked"


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """scripts/dev, scripts/lib.sh and pyproject.toml in a folder of their own: the .venv the
    copy makes, breaks or removes is not the project's."""
    copy = tmp_path / "project"
    (copy / "scripts").mkdir(parents=True)
    for name in ("scripts/dev", "scripts/lib.sh", "pyproject.toml"):
        shutil.copy2(ROOT / name, copy / name)
    return copy


def fake_python(path: Path, version: str) -> Path:
    """An interpreter that only reports `version`, and notes every call in `path`.calls."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "$*" >>"$0.calls"\necho {version}\n')
    path.chmod(0o755)
    return path


def test_dev_with_a_too_old_python_says_which_is_needed_and_how_to_pick_it(
    project_copy: Path, tmp_path: Path
) -> None:
    python = fake_python(tmp_path / "bin" / "python3", "3.9.18")

    done = run_dev(project_copy / "scripts" / "dev", PYTHON=str(python), PORT=str(free_port()))

    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(
        f"error: messenger needs Python 3.11 or newer, and {python} is Python 3.9.18:"
        " pick another with PYTHON, e.g. PYTHON=python3."
    ), line
    assert line.endswith(("is on your PATH)", "once one is installed")), line
    assert len(Path(f"{python}.calls").read_text().splitlines()) == 1, "asked its version only"
    assert not (project_copy / ".venv").exists()


def test_dev_with_a_venv_of_an_old_python_says_to_delete_it(project_copy: Path) -> None:
    fake_python(project_copy / ".venv" / "bin" / "python", "3.9.18")

    done = run_dev(project_copy / "scripts" / "dev", PORT=str(free_port()))

    assert done.returncode == 1
    venv = project_copy / ".venv"
    assert done.stderr.splitlines() == [
        f"error: {venv} was made with Python 3.9.18; messenger needs 3.11 or newer: delete it"
        f" (rm -rf {venv}) and run again, with PYTHON naming a newer Python if need be"
    ]


def test_dev_whose_install_fails_leaves_no_venv_behind(project_copy: Path, tmp_path: Path) -> None:
    venv = project_copy / ".venv"
    venv.mkdir()
    (venv / ".unfinished").touch()  # what an interrupted first run leaves
    no_packages = tmp_path / "no-packages"
    no_packages.mkdir()

    # Offline and with no package to be found, pip fails at its first requirement.
    done = run_dev(
        project_copy / "scripts" / "dev",
        PORT=str(free_port()),
        PYTHON="python3",
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(no_packages),
    )

    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == f"==> removing {venv}: its creation did not finish"
    assert lines[1].startswith(f"==> creating {venv} with python3 (Python 3.")
    assert lines[-1] == (
        f"error: installing messenger[local] failed (pip's messages above); the new {venv}"
        " was removed, so the next run starts afresh"
    )
    assert not venv.exists()
