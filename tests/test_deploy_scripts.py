"""The deploy scripts in infrastructure/, run for real against the Consul double serving KV, with
a recording `docker` first on PATH: what they would start, and that they start nothing when
Consul or a key is missing."""

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.consul_double import ConsulDouble
from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
INFRASTRUCTURE = ROOT / "infrastructure"
RECORDING_DOCKER = ROOT / "tests" / "fixtures" / "deploy"

KV = {
    "messenger-db-host": "messenger-db",
    "messenger-db-port": "5432",
    "messenger-db-application-user": "messenger",
    "messenger-db-password-never-do-this": "application-secret",
    "messenger-db-migrator-user": "messenger_migrator",
    "messenger-db-migrator-password-never-do-this": "migrator-secret",
    "amqp-host": "rabbitmq",
    "amqp-port": "5672",
}
SERVING_KEYS = [
    "messenger-db-host",
    "messenger-db-port",
    "messenger-db-application-user",
    "messenger-db-password-never-do-this",
    "amqp-host",
    "amqp-port",
]
MIGRATOR_KEYS = [
    "messenger-db-host",
    "messenger-db-port",
    "messenger-db-migrator-user",
    "messenger-db-migrator-password-never-do-this",
    "messenger-db-application-user",
    "messenger-db-password-never-do-this",
]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    calls: list[dict[str, Any]]

    def runs(self) -> list[dict[str, Any]]:
        return [call for call in self.calls if call["args"][:1] == ["run"]]


def options(args: list[str]) -> dict[str, list[str]]:
    """`docker run` options by name: {"-e": ["A=1", "B"], "--name": ["x"], ...}."""
    found: dict[str, list[str]] = {}
    flags = {"-d", "--rm", "-i"}
    i = 1
    while i < len(args) and args[i].startswith("-"):
        if args[i] in flags:
            found.setdefault(args[i], []).append("")
            i += 1
        else:
            found.setdefault(args[i], []).append(args[i + 1])
            i += 2
    found["image+command"] = args[i:]
    return found


def environment(call: dict[str, Any]) -> dict[str, str]:
    """The container's environment as docker would build it from `-e` options."""
    env: dict[str, str] = {}
    for item in options(call["args"]).get("-e", []):
        name, sep, value = item.partition("=")
        env[name] = value if sep else call["env"][name]
    return env


@pytest.fixture
def run_script(tmp_path: Path) -> Any:
    def run(script: str, *args: str, consul_url: str, env: dict[str, str] | None = None) -> Run:
        record = tmp_path / "docker-calls.jsonl"
        record.unlink(missing_ok=True)
        full_env = {
            "PATH": f"{RECORDING_DOCKER}:{os.environ['PATH']}",
            "HOME": os.environ.get("HOME", "/root"),
            "DOCKER_RECORD": str(record),
            "CONSUL_HTTP_ADDR": consul_url,
            **(env or {}),
        }
        result = subprocess.run(
            [str(INFRASTRUCTURE / script), *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        calls = (
            [json.loads(line) for line in record.read_text().splitlines()]
            if (record.exists())
            else []
        )
        return Run(result.returncode, result.stdout, result.stderr, calls)

    return run


AGENT = {"CONSUL_HOST": "consul-client", "CONSUL_PORT": "8500"}


def test_db_deploy_starts_postgres_15_creates_both_users_and_writes_the_keys(run_script):
    with ConsulDouble() as consul:
        result = run_script(
            "messenger-db-deploy.sh",
            consul_url=consul.url,
            env={"MESSENGER_DB_MIGRATOR_PASSWORD": "chosen-migrator-secret"},
        )
        kv = dict(consul.kv)
    assert result.returncode == 0, result.stderr

    (run,) = result.runs()
    opts = options(run["args"])
    assert opts["image+command"][0].startswith("postgres:15")
    assert opts["--name"] == ["messenger-db"]
    assert opts["--network"] == ["messenger"]
    env = environment(run)
    assert env["POSTGRES_USER"] == "messenger_migrator"
    assert env["POSTGRES_PASSWORD"] == "chosen-migrator-secret"

    (create_user,) = [call for call in result.calls if call["stdin"]]
    assert "CREATE ROLE" in create_user["stdin"]
    assert create_user["env"]["APP_DB_PASSWORD"] == kv["messenger-db-password-never-do-this"]

    assert kv == {
        "messenger-db-host": "messenger-db",
        "messenger-db-port": "5432",
        "messenger-db-migrator-user": "messenger_migrator",
        "messenger-db-migrator-password-never-do-this": "chosen-migrator-secret",
        "messenger-db-application-user": "messenger",
        "messenger-db-password-never-do-this": kv["messenger-db-password-never-do-this"],
    }
    assert len(kv["messenger-db-password-never-do-this"]) >= 32  # generated
    secrets = {"chosen-migrator-secret", kv["messenger-db-password-never-do-this"]}
    for call in result.calls:
        assert not secrets & {part for arg in call["args"] for part in re.split("[= ]", arg)}


def test_db_deploy_with_consul_unreachable_starts_nothing(run_script):
    result = run_script("messenger-db-deploy.sh", consul_url=f"http://127.0.0.1:{free_port()}")
    assert result.returncode != 0
    assert "Consul is unreachable" in result.stderr
    assert result.calls == []


def test_migrator_runs_the_job_with_the_elevated_user_then_seeds(run_script):
    with ConsulDouble(kv=KV) as consul:
        result = run_script("messenger-db-migrator-deploy.sh", consul_url=consul.url)
    assert result.returncode == 0, result.stderr

    migrate, seed = result.runs()
    opts = options(migrate["args"])
    assert "--rm" in opts
    assert "-d" not in opts
    assert opts["image+command"] == ["messenger:latest"]
    env = environment(migrate)
    assert env["MESSENGER_ROLE"] == "migrator"
    assert env["MESSENGER_ENV"] == "production"
    assert env["PGUSER"] == "messenger_migrator"
    assert env["PGPASSWORD"] == "migrator-secret"
    assert env["APP_DB_USER"] == "messenger"
    assert env["APP_DB_PASSWORD"] == "application-secret"
    assert env["PGHOST"] == "messenger-db"
    assert env["PGPORT"] == "5432"
    assert "CONSUL_SERVICE_NAME" not in env  # a job never appears as `messenger`
    assert "AMQPHOST" not in env  # the jobs do not publish
    seed_command = ["messenger:latest", "python", "-m", "messenger", "seed"]
    assert options(seed["args"])["image+command"] == seed_command


def test_migrator_failure_fails_the_script_and_skips_the_seed(run_script):
    with ConsulDouble(kv=KV) as consul:
        result = run_script(
            "messenger-db-migrator-deploy.sh", consul_url=consul.url, env={"DOCKER_FAIL": "run"}
        )
    assert result.returncode != 0
    assert "migrate job failed" in result.stderr
    assert len(result.runs()) == 1


@pytest.mark.parametrize("key", MIGRATOR_KEYS)
def test_migrator_with_a_missing_key_starts_nothing(run_script, key):
    kv = {name: value for name, value in KV.items() if name != key}
    with ConsulDouble(kv=kv) as consul:
        result = run_script("messenger-db-migrator-deploy.sh", consul_url=consul.url)
    assert result.returncode != 0
    assert f"'{key}' is missing" in result.stderr
    assert result.calls == []


def test_deploy_starts_one_registering_instance_with_the_application_user(run_script):
    with ConsulDouble(kv=KV) as consul:
        result = run_script(
            "messenger-deploy.sh",
            consul_url=consul.url,
            env={**AGENT, "AMQPUSER": "messenger", "AMQPPASSWORD": "amqp-secret"},
        )
    assert result.returncode == 0, result.stderr

    (run,) = result.runs()
    opts = options(run["args"])
    assert "-d" in opts
    assert opts["image+command"] == ["messenger:latest"]
    assert opts["--network"] == ["messenger"]
    assert int(opts["--stop-timeout"][0]) >= 10
    (name,) = opts["--name"]
    assert re.fullmatch(r"messenger-[0-9a-f]{8}", name)
    assert result.stdout.split() == [name]
    assert environment(run) == {
        "MESSENGER_ENV": "production",
        "PORT": "4000",
        "JSON_BODY_LIMIT": "100kb",
        "LOG_FORMAT": "json",
        "PGHOST": "messenger-db",
        "PGPORT": "5432",
        "PGUSER": "messenger",
        "PGPASSWORD": "application-secret",
        "PGDATABASE": "messenger",
        "AMQPHOST": "rabbitmq",
        "AMQPPORT": "5672",
        "AMQPUSER": "messenger",
        "AMQPPASSWORD": "amqp-secret",
        "CONSUL_SERVICE_NAME": "messenger",
        "CONSUL_HOST": "consul-client",
        "CONSUL_PORT": "8500",
    }
    assert not any("secret" in arg for arg in run["args"])


def test_deploy_with_three_replicas_starts_three_uniquely_named_instances(run_script):
    with ConsulDouble(kv=KV) as consul:
        result = run_script(
            "messenger-deploy.sh", "--replicas", "3", consul_url=consul.url, env=AGENT
        )
    assert result.returncode == 0, result.stderr
    names = [options(run["args"])["--name"][0] for run in result.runs()]
    assert len(names) == 3
    assert len(set(names)) == 3


@pytest.mark.parametrize("key", SERVING_KEYS)
def test_deploy_with_a_missing_key_starts_nothing(run_script, key):
    kv = {name: value for name, value in KV.items() if name != key}
    with ConsulDouble(kv=kv) as consul:
        result = run_script("messenger-deploy.sh", consul_url=consul.url, env=AGENT)
    assert result.returncode != 0
    assert f"Consul KV key '{key}' is missing" in result.stderr
    assert result.calls == []


def test_deploy_with_an_empty_key_starts_nothing(run_script):
    with ConsulDouble(kv={**KV, "messenger-db-host": ""}) as consul:
        result = run_script("messenger-deploy.sh", consul_url=consul.url, env=AGENT)
    assert result.returncode != 0
    assert "'messenger-db-host' is empty" in result.stderr
    assert result.calls == []


def test_deploy_with_consul_unreachable_starts_nothing(run_script):
    result = run_script(
        "messenger-deploy.sh", consul_url=f"http://127.0.0.1:{free_port()}", env=AGENT
    )
    assert result.returncode != 0
    assert "Consul is unreachable" in result.stderr
    assert result.calls == []


@pytest.mark.parametrize("missing", ["CONSUL_HOST", "CONSUL_PORT"])
def test_deploy_without_the_agent_address_starts_nothing(run_script, missing):
    env = {name: value for name, value in AGENT.items() if name != missing}
    with ConsulDouble(kv=KV) as consul:
        result = run_script("messenger-deploy.sh", consul_url=consul.url, env=env)
    assert result.returncode != 0
    assert f"{missing} is required" in result.stderr
    assert result.calls == []


def test_load_balancer_follows_the_callers_consul_agent_on_8085(run_script):
    with ConsulDouble(kv=KV) as consul:
        result = run_script("messenger-load-balancer-deploy.sh", consul_url=consul.url, env=AGENT)
    assert result.returncode == 0, result.stderr
    (run,) = result.runs()
    opts = options(run["args"])
    assert opts["--publish"] == ["8085:8085"]
    assert opts["image+command"] == ["messenger-load-balancer:latest"]
    assert environment(run) == {"CONSUL_HTTP_ADDR": "consul-client:8500"}


def listed(tmp_path: Path, *created: tuple[str, str]) -> dict[str, str]:
    """`docker ps` and `docker inspect` outputs for these (name, creation time) instances,
    listed in the order given (podman's Docker API lists the oldest first, Docker the newest)."""
    names, inspected = tmp_path / "ps.txt", tmp_path / "inspect.txt"
    names.write_text("".join(f"{name}\n" for name, _ in created))
    inspected.write_text("".join(f"{at} /{name}\n" for name, at in created))
    return {"DOCKER_PS_OUTPUT": str(names), "DOCKER_INSPECT_OUTPUT": str(inspected)}


def test_scale_down_stops_the_newest_instances_with_sigterm_and_removes_them(run_script, tmp_path):
    outputs = listed(
        tmp_path,
        ("messenger-aaaaaaaa", "2026-11-25T14:24:09.5Z"),
        ("messenger-cccccccc", "2026-11-25T14:24:11.123456789Z"),
        ("messenger-bbbbbbbb", "2026-11-25T14:24:11.12Z"),
    )
    with ConsulDouble(kv=KV) as consul:
        result = run_script(
            "messenger-scale.sh",
            "1",
            consul_url=consul.url,
            env={**AGENT, **outputs},
        )
    assert result.returncode == 0, result.stderr
    commands = [call["args"] for call in result.calls if call["args"][0] not in ("ps", "inspect")]
    assert commands == [
        ["stop", "--time", "30", "messenger-cccccccc"],
        ["rm", "messenger-cccccccc"],
        ["stop", "--time", "30", "messenger-bbbbbbbb"],
        ["rm", "messenger-bbbbbbbb"],
    ]


def test_scale_up_starts_the_missing_instances(run_script, tmp_path):
    outputs = listed(tmp_path, ("messenger-aaaaaaaa", "2026-11-25T14:24:09Z"))
    with ConsulDouble(kv=KV) as consul:
        result = run_script(
            "messenger-scale.sh",
            "3",
            consul_url=consul.url,
            env={**AGENT, **outputs},
        )
    assert result.returncode == 0, result.stderr
    assert len(result.runs()) == 2


@pytest.mark.parametrize("wanted", ["0", "2"])
def test_scale_fails_and_changes_nothing_when_docker_cannot_list_the_instances(
    run_script, tmp_path, wanted
):
    """An unreachable daemon is not "0 instances running": scaling to 0 would report success
    having stopped nothing, and scaling up would start a second set."""
    with ConsulDouble(kv=KV) as consul:
        result = run_script(
            "messenger-scale.sh",
            wanted,
            consul_url=consul.url,
            env={**AGENT, "DOCKER_FAIL": "ps"},
        )
    assert result.returncode == 1
    assert "could not list the running instances" in result.stderr
    assert "Docker daemon" in result.stderr
    assert "nothing was changed" in result.stderr
    assert [call["args"][0] for call in result.calls] == ["ps"]


def test_scale_with_no_instance_running_and_none_wanted_does_nothing(run_script, tmp_path):
    running = tmp_path / "ps.txt"
    running.write_text("")
    with ConsulDouble(kv=KV) as consul:
        result = run_script(
            "messenger-scale.sh",
            "0",
            consul_url=consul.url,
            env={**AGENT, "DOCKER_PS_OUTPUT": str(running)},
        )
    assert result.returncode == 0, result.stderr
    assert "0 instance(s) running, 0 wanted" in result.stderr
    assert [call["args"][0] for call in result.calls] == ["ps"]
