"""Static checks of what ships the service: both Dockerfiles (hadolint), every shell script
(shellcheck), the load balancer's nginx configuration (`nginx -t`, with instances and with none),
docker-compose.yml (Compose v2's own `config` and the Compose Specification schema), and the
image's layout run for real: `python -m messenger` from a directory holding only messenger/
(its migrations included), as in /app."""

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import compose
import pytest

from messenger.settings import Settings
from tests.conftest import base_settings, drop_database

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOCKERFILES = [ROOT / "Dockerfile", ROOT / "load-balancer" / "Dockerfile"]
ENV_EXAMPLE = ROOT / ".env.example"


def run(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **kwargs,
    )


def shell_scripts() -> list[Path]:
    """Every tracked or new shell script: by shebang, or by a `shellcheck shell=` directive."""
    listed = run("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    scripts = []
    for name in listed.stdout.split():
        path = ROOT / name
        if not path.is_file() or path.suffix in {".py", ".md", ".lua", ".toml", ".yml"}:
            continue
        head = path.read_bytes()[:200].decode(errors="replace")
        if re.match(r"#!.*\b(ba)?sh\b", head) or "# shellcheck shell=" in head:
            scripts.append(path)
    return scripts


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_dockerfile_passes_hadolint(dockerfile):
    result = run(BIN / "hadolint", dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_shell_script_passes_shellcheck():
    scripts = shell_scripts()
    assert ROOT / "scripts" / "local-stack" in scripts
    assert ROOT / "infrastructure" / "messenger-deploy.sh" in scripts
    result = run(BIN / "shellcheck", "--external-sources", *scripts, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_service_image_is_slim_multi_stage_non_root_under_an_init():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm$", text, re.M)
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER 10001:10001$", runtime, re.M)
    assert re.search(r"^EXPOSE 4000$", runtime, re.M)
    assert "PYTHONUNBUFFERED=1" in runtime
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", runtime, re.M)
    assert re.search(r'^ENTRYPOINT \["dumb-init", "--"\]$', runtime, re.M)
    assert re.search(r'^CMD \["python", "-m", "messenger"\]$', runtime, re.M)
    # Dependencies are installed before the code is copied, so code changes keep that layer.
    assert runtime.index("pip install") < runtime.index("COPY messenger/")


def test_docker_build_context_holds_only_what_the_image_needs():
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*") :][:3] == ["*", "!requirements.lock", "!messenger/"]
    assert not [line for line in lines if line.startswith("!")][2:]


def test_load_balancer_image_pins_and_verifies_consul_template():
    text = (ROOT / "load-balancer" / "Dockerfile").read_text()
    assert re.search(r"^ARG NGINX_IMAGE=nginx:\d+\.\d+\.\d+-bookworm$", text, re.M)
    assert re.search(r"^ARG CONSUL_TEMPLATE_VERSION=\d+\.\d+\.\d+$", text, re.M)
    assert re.search(r"^ARG CONSUL_TEMPLATE_SHA256_AMD64=[0-9a-f]{64}$", text, re.M)
    assert "sha256sum -c" in text
    assert re.search(r'^ENTRYPOINT \["/usr/bin/tini", "--"\]$', text, re.M)


# --- nginx ----------------------------------------------------------------------------------


def nginx_binary() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(found).exists():
        pytest.fail("nginx is not installed: scripts/test installs it (ensure_nginx)")
    return found


def render(directory: Path, *upstreams: str) -> Path:
    """The load balancer's configuration as scripts/local-stack renders it."""
    result = run(ROOT / "scripts" / "local-stack", "render", directory, *upstreams)
    assert result.returncode == 0, result.stderr
    return directory / "nginx.conf"


@pytest.mark.parametrize(
    "upstreams",
    [("10.0.0.11:4000", "10.0.0.12:4000", "10.0.0.13:4000"), ()],
    ids=["three instances", "no instance"],
)
def test_rendered_nginx_configuration_passes_nginx_t(tmp_path, upstreams):
    config = render(tmp_path, *upstreams)
    result = run(nginx_binary(), "-t", "-p", tmp_path, "-c", config, "-e", tmp_path / "error.log")
    assert result.returncode == 0, result.stderr
    rendered = (tmp_path / "messenger.conf").read_text()
    assert "{{" not in rendered
    servers = re.findall(r"^ +server ([0-9.:]+)", rendered, re.M)
    assert servers == (list(upstreams) or ["127.0.0.1:9"])


def test_local_stack_renders_the_templates_own_empty_upstream():
    """The static renderer and consul-template must agree on what "no instance" looks like."""
    template = (ROOT / "load-balancer" / "nginx.ctmpl").read_text()
    script = (ROOT / "scripts" / "local-stack").read_text()
    placeholder = re.search(r'^NO_SERVER="(.*)"$', script, re.M)
    assert placeholder is not None
    assert placeholder.group(1) + "\n" in template
    assert '{{- range service "messenger|passing" }}' in template
    assert re.search(r"^    listen 8085;$", template, re.M)


# --- docker-compose.yml ---------------------------------------------------------------------


def compose_config(env_file: Path = ENV_EXAMPLE) -> dict[str, Any]:
    """docker-compose.yml as Compose v2 resolves it with the development .env example."""
    binary = Path(compose.__file__).parent / "docker-compose"  # the wrapper drops exit codes
    result = run(
        binary,
        "--env-file",
        env_file,
        "-f",
        ROOT / "docker-compose.yml",
        "config",
        "--format",
        "json",
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")},
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def env_example() -> dict[str, str]:
    pairs = [
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    ]
    return dict(pairs)


def test_compose_file_matches_the_compose_specification_schema():
    result = run(
        BIN / "check-jsonschema",
        "--builtin-schema",
        "vendor.compose-spec",
        ROOT / "docker-compose.yml",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_platform_services_and_images():
    services = compose_config()["services"]
    assert set(services) == {
        "postgres",
        "rabbitmq",
        "consul-server",
        "consul-client",
        "migrator",
        "seed",
        "messenger",
        "load-balancer",
    }
    assert services["postgres"]["image"].startswith("postgres:15.")
    assert services["rabbitmq"]["image"] == "rabbitmq:3.11-management"
    consul_version = services["consul-server"]["image"].split(":")[1]
    assert tuple(map(int, consul_version.split(".")[:2])) >= (1, 14)
    assert services["consul-client"]["image"] == services["consul-server"]["image"]
    assert services["load-balancer"]["ports"][0]["published"] == "8085"


def test_compose_orders_startup_with_health_and_the_migrators_completion():
    config = compose_config()
    services = config["services"]
    conditions = {
        name: {dep: spec["condition"] for dep, spec in service.get("depends_on", {}).items()}
        for name, service in services.items()
    }
    assert conditions["messenger"] == {
        "migrator": "service_completed_successfully",
        "rabbitmq": "service_healthy",
        "consul-client": "service_healthy",
    }
    assert conditions["migrator"] == {"postgres": "service_healthy"}
    assert conditions["seed"] == {"migrator": "service_completed_successfully"}
    assert conditions["load-balancer"] == {"consul-client": "service_healthy"}
    for name in ("postgres", "rabbitmq", "consul-server", "consul-client"):
        assert services[name]["healthcheck"]["test"], name
    assert list(config["networks"]) == ["messenger"]
    assert all(service["networks"] == {"messenger": None} for service in services.values())
    assert set(config["volumes"]) == {
        "postgres-data",
        "rabbitmq-data",
        "consul-server-data",
        "consul-client-data",
    }


def test_compose_serving_instances_scale_and_use_the_least_privilege_user():
    services = compose_config()["services"]
    env = env_example()
    messenger, migrator = services["messenger"], services["migrator"]
    # Scalable: no fixed container name, no published port.
    assert "container_name" not in messenger
    assert "ports" not in messenger
    assert messenger["environment"]["PGUSER"] == env["MESSENGER_DB_APPLICATION_USER"]
    assert messenger["environment"]["PGPASSWORD"] == env["MESSENGER_DB_APPLICATION_PASSWORD"]
    assert messenger["environment"]["CONSUL_SERVICE_NAME"] == "messenger"
    assert migrator["environment"]["MESSENGER_ROLE"] == "migrator"
    assert migrator["environment"]["PGUSER"] == env["MESSENGER_DB_MIGRATOR_USER"]
    assert migrator["environment"]["APP_DB_USER"] == env["MESSENGER_DB_APPLICATION_USER"]
    assert "CONSUL_SERVICE_NAME" not in migrator["environment"]


def test_compose_serves_in_header_mode_unless_env_picks_jwt(tmp_path):
    environment = compose_config()["services"]["messenger"]["environment"]
    assert environment["AUTH_MODE"] == "header"
    assert Settings(messenger_env="test", **{k.lower(): v for k, v in environment.items()})

    jwt_env = {
        "AUTH_MODE": "jwt",
        "AUTH_ISSUER": "https://id.example.com/",
        "AUTH_JWKS_URL": "https://id.example.com/.well-known/jwks.json",
        "AUTH_AUDIENCE": "https://messenger.example.com",
    }
    env_file = tmp_path / "jwt.env"
    lines = ENV_EXAMPLE.read_text() + "".join(f"{k}={v}\n" for k, v in jwt_env.items())
    env_file.write_text(lines)
    environment = compose_config(env_file)["services"]["messenger"]["environment"]
    assert {name: environment[name] for name in jwt_env} == jwt_env
    settings = Settings(messenger_env="test", **{k.lower(): v for k, v in environment.items()})
    assert settings.auth_mode == "jwt"


def test_compose_sets_the_open_file_limit_of_the_long_running_network_services():
    services = compose_config()["services"]
    for name in ("messenger", "load-balancer"):
        assert services[name]["ulimits"]["nofile"] == {"soft": 65536, "hard": 65536}, name


def test_compose_file_holds_no_secret_and_refuses_to_start_without_them(tmp_path):
    text = (ROOT / "docker-compose.yml").read_text()
    for name, value in env_example().items():
        if "PASSWORD" in name:
            assert value not in text
    binary = Path(compose.__file__).parent / "docker-compose"
    no_env = tmp_path / "empty.env"  # not the developer's .env, if there is one
    no_env.write_text("")
    result = run(
        binary,
        "--env-file",
        no_env,
        "-f",
        ROOT / "docker-compose.yml",
        "config",
        "--quiet",
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")},
    )
    assert result.returncode != 0
    assert re.search(r"required variable \w+ is missing a value: set \w+ in .env", result.stderr)


# --- the image's layout ---------------------------------------------------------------------


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """What the Dockerfile copies to /app: messenger/ (its migrations included), nothing else."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "messenger", tmp_path / "messenger", ignore=ignore)
    return tmp_path


def test_image_layout_answers_help(app_dir):
    result = run(sys.executable, "-m", "messenger", "--help", cwd=app_dir)
    assert result.returncode == 0, result.stderr
    assert "migrate" in result.stdout


def test_image_layout_with_the_migrator_role_migrates_and_exits(app_dir):
    settings = base_settings(pgdatabase=f"messenger_test_{uuid.uuid4().hex[:12]}")
    env = {
        "PATH": os.environ["PATH"],
        "MESSENGER_ENV": "production",
        "MESSENGER_ROLE": "migrator",
        "PGHOST": settings.pghost,
        "PGPORT": str(settings.pgport),
        "PGUSER": settings.pguser,
        "PGDATABASE": settings.pgdatabase,
    }
    if settings.pgpassword is not None:
        env["PGPASSWORD"] = settings.pgpassword.get_secret_value()
    try:
        result = run(sys.executable, "-m", "messenger", cwd=app_dir, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "migrate: done" in result.stdout
    finally:
        asyncio.run(drop_database(settings))
