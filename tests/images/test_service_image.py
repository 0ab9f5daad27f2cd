"""The service image run for real: the migrator and seed jobs against a fresh database, then a
serving container as the least-privileged user with a read-only root filesystem, registered
with the Consul double, stopped with SIGTERM while a request is in flight."""

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from alembic.script import ScriptDirectory

from messenger import jobs
from messenger.settings import Settings
from tests.consul_double import ConsulDouble
from tests.images.conftest import (
    AMQPHOST,
    AMQPPORT,
    IMAGE,
    PGHOST,
    PGPORT,
    Database,
    env_options,
    podman,
    unique,
    wait_for_health,
    walk_tutorial,
)
from tests.processes import free_port

STOP_TIMEOUT = 30  # as messenger-deploy.sh and docker-compose.yml give a serving container
GRACE = 1.0
UPLOAD_SECONDS = 3.0


def run_job(db: Database, *command: str) -> str:
    result = podman(
        "run", "--rm", "--network", "host", *db.job_env(), IMAGE, *command, timeout=180, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def head_revision() -> str:
    settings = Settings(messenger_env="test", pghost=PGHOST)  # type: ignore[call-arg]
    head = ScriptDirectory.from_config(jobs.alembic_config(settings)).get_current_head()
    assert head is not None
    return head


def schema(db: Database) -> list[tuple[object, ...]]:
    """Columns, indexes, grants and the revision: what a second migration must not change."""
    rows = db.fetch(
        """
        SELECT 'column', table_name, column_name, data_type, column_default
          FROM information_schema.columns WHERE table_schema = 'public'
        UNION ALL
        SELECT 'index', tablename, indexname, indexdef, NULL FROM pg_indexes
         WHERE schemaname = 'public'
        UNION ALL
        SELECT 'grant', table_name, grantee, privilege_type, NULL
          FROM information_schema.role_table_grants WHERE table_schema = 'public'
        UNION ALL
        SELECT 'revision', version_num, NULL, NULL, NULL FROM alembic_version
        ORDER BY 1, 2, 3, 4
        """
    )
    return [tuple(row) for row in rows]


# --- the migrator role -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated(db: Database) -> Database:
    output = run_job(db)  # MESSENGER_ROLE=migrator, the image's own command
    assert "granted" in output, output
    return db


def test_migrator_role_creates_the_database_migrates_it_to_head_and_grants_the_app_role(
    migrated: Database,
):
    db = migrated
    assert [row[0] for row in db.fetch("SELECT version_num FROM alembic_version")] == [
        head_revision()
    ]
    privileges = db.fetch(
        "SELECT privilege_type FROM information_schema.role_table_grants"
        " WHERE grantee = $1 AND table_name = 'messages' ORDER BY 1",
        db.app_user,
    )
    assert [row[0] for row in privileges] == ["DELETE", "INSERT", "SELECT", "UPDATE"]
    (owner,) = db.fetch(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", db.name
    )
    assert owner[0] == db.migrator  # created by the job, not by the test


def test_migrator_role_run_again_exits_0_and_changes_nothing(migrated: Database):
    before = schema(migrated)
    run_job(migrated)
    assert schema(migrated) == before


def test_seed_run_twice_leaves_the_tutorials_three_users(migrated: Database):
    for _ in range(2):
        run_job(migrated, "python", "-m", "messenger", "seed")
        names = [row[0] for row in migrated.fetch("SELECT name FROM users ORDER BY id")]
        assert len(names) == 3, names


# --- a serving container ---------------------------------------------------------------------


@dataclass
class Served:
    name: str
    port: int
    consul: ConsulDouble
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    def exec(self, *command: str) -> str:
        return podman("exec", self.name, *command).stdout


@pytest.fixture(scope="module")
def served(migrated: Database) -> Iterator[Served]:
    run_job(migrated, "python", "-m", "messenger", "seed")
    name = unique("messenger-img-serve").replace("_", "-")
    port = free_port()
    with ConsulDouble() as consul:
        podman(
            "run", "--detach", "--name", name,
            "--network", "host",
            # Docker's --read-only: no tmpfs added (podman's default would add /tmp, /run).
            "--read-only", "--read-only-tmpfs=false",
            "--stop-timeout", str(STOP_TIMEOUT),
            *env_options(
                MESSENGER_ENV="production",
                HOST="127.0.0.1",
                PORT=str(port),
                PGHOST=PGHOST,
                PGPORT=PGPORT,
                PGUSER=migrated.app_user,
                PGPASSWORD=migrated.app_password,
                PGDATABASE=migrated.name,
                AMQPHOST=AMQPHOST,
                AMQPPORT=AMQPPORT,
                AMQP_QUEUE=migrated.queue,
                CONSUL_SERVICE_NAME="messenger",
                CONSUL_HOST=consul.host,
                CONSUL_PORT=str(consul.port),
                SHUTDOWN_GRACE=str(GRACE),
                LOG_FORMAT="json",
            ),
            IMAGE,
        )  # fmt: skip
        try:
            served = Served(name, port, consul)
            wait_for_health(served.url)
            yield served
        finally:
            logs = podman("logs", name, check=False)
            print(logs.stdout[-4000:], logs.stderr[-4000:])
            podman("rm", "--force", "--time", "0", name, check=False)


def test_serving_container_registers_its_address_and_port(served: Served):
    call = served.consul.wait_for_call("PUT", "/v1/agent/service/register", timeout=30)
    body = call.body
    # On the host's network the container's address is the host's; it listens on loopback only.
    assert (body["Name"], body["Address"], body["Port"]) == ("messenger", "127.0.0.1", served.port)
    assert body["Check"]["HTTP"] == f"http://127.0.0.1:{served.port}/health"


def test_the_tutorial_walk_through_the_container(served: Served):
    walk_tutorial(served.url)


def test_the_images_healthcheck_passes(served: Served):
    result = podman("healthcheck", "run", served.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pid_1_is_dumb_init_and_the_service_runs_as_uid_10001(served: Served):
    pid1 = served.exec("cat", "/proc/1/cmdline").split("\0")
    assert pid1[0].endswith("dumb-init"), pid1
    processes = served.exec(
        "sh",
        "-c",
        "for p in /proc/[0-9]*; do echo \"$(awk '/^Uid:/ {print $2}' $p/status)"
        " $(tr '\\0' ' ' < $p/cmdline)\"; done",
    )
    service = [line for line in processes.splitlines() if "-m messenger" in line]
    assert service, processes
    assert all(line.split()[0] == "10001" for line in service), processes
    assert served.exec("id", "-u").strip() == "10001"


def test_the_root_filesystem_is_read_only(served: Served):
    result = podman("exec", served.name, "touch", "/app/written", check=False)
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr


def test_no_compiler_in_the_runtime_image():
    result = podman(
        "run", "--rm", "--network", "none", "--entrypoint", "sh", IMAGE, "-c",
        "for tool in gcc cc c++ g++ clang make ld as; do command -v $tool; done; true",
    )  # fmt: skip
    assert result.stdout.strip() == "", result.stdout


async def slowly(body: bytes, seconds: float) -> AsyncIterator[bytes]:
    """The body in five chunks over `seconds`: a request still in flight when SIGTERM comes."""
    step = -(-len(body) // 5)
    for offset in range(0, len(body), step):
        yield body[offset : offset + step]
        await asyncio.sleep(seconds / 5)


async def upload_slowly(url: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        created = await client.post("/conversations", json={"participant_ids": [1, 3]})
        assert created.status_code == 201, created.text
        return await client.post(
            f"/conversations/{created.json()['conversation']['id']}/messages",
            headers={"User-Id": "1", "Content-Type": "application/json"},
            content=slowly(json.dumps({"content": "sent during podman stop"}).encode(), 3.0),
        )


def test_podman_stop_deregisters_drains_the_request_in_flight_and_exits_0(served: Served):
    """Last: it stops the container."""
    registered = served.consul.wait_for_call("PUT", "/v1/agent/service/register", timeout=30)
    outcome: dict[str, httpx.Response | BaseException] = {}

    def upload() -> None:
        try:
            outcome["response"] = asyncio.run(upload_slowly(served.url))
        except BaseException as error:  # reported by the assertion below
            outcome["response"] = error

    uploader = threading.Thread(target=upload)
    uploader.start()
    time.sleep(1.0)  # the upload has started and is still sending its body
    started = time.monotonic()
    podman("stop", "--time", str(STOP_TIMEOUT), served.name, timeout=STOP_TIMEOUT + 30)
    took = time.monotonic() - started
    uploader.join(timeout=30)

    deregistered = served.consul.wait_for_call("PUT", "/v1/agent/service/deregister/")
    assert deregistered.path.endswith(registered.body["ID"])
    response = outcome["response"]
    assert isinstance(response, httpx.Response), repr(response)
    assert response.status_code == 201, response.text
    state = json.loads(podman("inspect", "--format", "{{json .State}}", served.name).stdout)
    assert state["ExitCode"] == 0, state
    assert not state.get("OOMKilled")
    assert took < STOP_TIMEOUT, f"podman stop took {took:.1f}s: SIGKILL, not a clean exit"
    print(f"podman stop: {took:.1f}s (grace {GRACE}s + drain)")
    logs = podman("logs", served.name)
    assert "deregistered" in logs.stdout + logs.stderr
