"""The tutorial's deploy scripts (infrastructure/) run for real: the docker CLI against podman's
Docker API (`podman system service`), Consul KV served by the Consul double, the image built by
scripts/test-images, this machine's PostgreSQL and RabbitMQ.

Unlike a real Docker host: the containers run on the host's network (MESSENGER_NETWORK=host),
because the shared PostgreSQL and RabbitMQ listen on loopback only and no container network
reaches them; so each instance gets its own port and the host's name and address instead of a
name and address of their own on the `messenger` network. The database, its users and the
queue are unique to this run (MESSENGER_DB_NAME, AMQP_QUEUE); messenger-db-deploy.sh and
messenger-load-balancer-deploy.sh need the postgres and load balancer images from a registry
(or a published port) and are not run here."""

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from messenger.discovery import detect_address
from tests.consul_double import ConsulDouble
from tests.images.conftest import (
    AMQPPORT,
    IMAGE,
    PGPORT,
    Database,
    fresh_database,
    wait_for_health,
    walk_tutorial,
)
from tests.images.test_service_image import head_revision
from tests.processes import terminate

ROOT = Path(__file__).resolve().parents[2]
INFRASTRUCTURE = ROOT / "infrastructure"
ROLE_LABEL = "messenger.role=serve"


@dataclass
class Platform:
    db: Database
    consul: ConsulDouble
    env: dict[str, str]
    started: list[str]

    def script(
        self, name: str, *args: str, timeout: float = 240
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(INFRASTRUCTURE / name), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        print(f"{name} {' '.join(args)}: exit {result.returncode}\n{result.stderr}")
        return result

    def docker(self, *args: str) -> str:
        result = subprocess.run(
            ["docker", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
        return result.stdout

    def port_of(self, container: str) -> int:
        return int(
            self.docker(
                "inspect", "--format", '{{index .Config.Labels "messenger.port"}}', container
            )
        )


@pytest.fixture(scope="module")
def docker_host() -> Iterator[str]:
    """podman's Docker API on a Unix socket of its own, stopped (by its PID) afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="messenger-img-docker-"))
    socket = directory / "podman.sock"
    log = (directory / "service.log").open("wb")
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"unix://{socket}"
    try:
        deadline = time.monotonic() + 30
        while True:
            version = subprocess.run(
                ["docker", "version", "--format", "{{.Server.Version}}"],
                env={**os.environ, "DOCKER_HOST": url},
                capture_output=True,
                text=True,
                check=False,
            )
            if version.returncode == 0:
                break
            assert service.poll() is None, (directory / "service.log").read_text()
            assert time.monotonic() < deadline, version.stderr
            time.sleep(0.3)
        yield url
    finally:
        terminate(service, within=10)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def platform(docker_host: str) -> Iterator[Platform]:
    with fresh_database() as db:
        kv = {
            "messenger-db-host": "127.0.0.1",
            "messenger-db-port": PGPORT,
            "messenger-db-migrator-user": db.migrator,
            "messenger-db-migrator-password-never-do-this": db.migrator_password,
            "messenger-db-application-user": db.app_user,
            "messenger-db-password-never-do-this": db.app_password,
            "amqp-host": "127.0.0.1",
            "amqp-port": AMQPPORT,
        }
        with ConsulDouble(kv=kv) as consul:
            env = {
                "PATH": os.environ["PATH"],
                "HOME": os.environ.get("HOME", "/root"),
                "DOCKER_HOST": docker_host,
                "CONSUL_HTTP_ADDR": consul.url,
                "CONSUL_HOST": consul.host,
                "CONSUL_PORT": str(consul.port),
                "MESSENGER_IMAGE": IMAGE,
                "MESSENGER_NETWORK": "host",
                "MESSENGER_DB_NAME": db.name,
                "AMQP_QUEUE": db.queue,
            }
            platform = Platform(db, consul, env, [])
            try:
                yield platform
            finally:
                for name in platform.started:
                    # SIGKILL and remove; the one messenger-scale.sh removed is gone already.
                    subprocess.run(
                        ["docker", "rm", "--force", name],
                        env=env,
                        capture_output=True,
                        timeout=60,
                        check=False,
                    )
                left = platform.docker("ps", "-aq", "--filter", f"label={ROLE_LABEL}")
                assert left == "", f"instances left behind: {left}"


def test_migrator_deploy_migrates_and_seeds_a_real_database(platform: Platform):
    result = platform.script("messenger-db-migrator-deploy.sh")
    assert result.returncode == 0, result.stdout + result.stderr
    db = platform.db
    assert [row[0] for row in db.fetch("SELECT version_num FROM alembic_version")] == [
        head_revision()
    ]
    assert [row[0] for row in db.fetch("SELECT count(*) FROM users")] == [3]
    assert db.fetch("SELECT has_table_privilege($1, 'messages', 'INSERT')", db.app_user)[0][0]
    # The jobs ran with --rm: nothing is left behind.
    assert "messenger-migrator-" not in platform.docker("ps", "-a", "--format", "{{.Names}}")


def test_deploy_twice_starts_two_instances_that_answer_and_register(platform: Platform):
    for _ in range(2):
        result = platform.script("messenger-deploy.sh")
        assert result.returncode == 0, result.stdout + result.stderr
        platform.started.append(result.stdout.strip())
    listed = platform.docker("ps", "--filter", f"label={ROLE_LABEL}", "--format", "{{.Names}}")
    assert sorted(listed.split()) == sorted(platform.started)
    ports = [platform.port_of(name) for name in platform.started]
    assert len(set(ports)) == 2
    for port in ports:
        wait_for_health(f"http://127.0.0.1:{port}")
    platform.consul.wait_for(lambda: len(platform.consul.services) == 2, timeout=30)
    registered = sorted(
        (service["Address"], service["Port"]) for service in platform.consul.services.values()
    )
    # On the host's network an instance advertises the host's address and its own port.
    assert registered == sorted((detect_address(), port) for port in ports)
    walk_tutorial(f"http://127.0.0.1:{ports[1]}")


def test_scale_to_1_stops_the_newest_with_sigterm_and_it_deregisters(platform: Platform):
    oldest, newest = platform.started
    newest_port = platform.port_of(newest)
    started = time.monotonic()
    result = platform.script("messenger-scale.sh", "1")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"stopping {newest}" in result.stderr
    assert "2 instance(s) running, 1 wanted" in result.stderr
    # SIGTERM, not the SIGKILL after 30 s: the instance deregistered itself on the way out.
    deregistered = platform.consul.wait_for_call("PUT", "/v1/agent/service/deregister/")
    assert f"-{newest_port}-" in deregistered.path  # the ID names the instance's port
    assert [service["Port"] for service in platform.consul.services.values()] == [
        platform.port_of(oldest)
    ]
    assert took < 30
    names = platform.docker("ps", "-a", "--format", "{{.Names}}").split()
    assert newest not in names  # removed after it stopped
    assert oldest in names
    wait_for_health(f"http://127.0.0.1:{platform.port_of(oldest)}", timeout=10)
