"""What `docker compose up` meets in docker-compose.yml that can be checked without a registry:
every `build:` context is one scripts/test-images built (with the stand-in bases), and every
healthcheck of a service built here runs a command that exists in its image. The services on
registry images (postgres, rabbitmq, consul) are only linted (tests/test_containers.py)."""

import json
import shlex
from pathlib import Path
from typing import Any

from tests.images.conftest import IMAGE, LOAD_BALANCER_IMAGE, ROOT, podman
from tests.test_containers import compose_config

# The build contexts scripts/test-images builds, and the image each became.
BUILT = {ROOT: IMAGE, ROOT / "load-balancer": LOAD_BALANCER_IMAGE}


def built_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose_config()["services"]
    return {name: service for name, service in services.items() if "build" in service}


def test_every_build_context_is_built_with_its_default_dockerfile():
    services = built_services()
    assert set(services) == {"migrator", "seed", "messenger", "load-balancer"}
    for name, service in services.items():
        context = Path(service["build"]["context"])
        assert context in BUILT, f"{name}: {context} is not built by scripts/test-images"
        assert service["build"].get("dockerfile", "Dockerfile") == "Dockerfile", name


def healthcheck_command(service: dict[str, Any], image: str) -> list[str] | None:
    """The healthcheck a container of this service runs: compose's own, else the image's."""
    healthcheck = service.get("healthcheck")
    if healthcheck and healthcheck.get("disable"):
        return None
    test = (healthcheck or {}).get("test")
    if test is None:
        inspected = podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", image)
        test = (json.loads(inspected.stdout) or {}).get("Test")
    assert test, f"{image} has no HEALTHCHECK and compose sets none"
    if test[0] == "CMD-SHELL":
        return shlex.split(test[1])
    assert test[0] == "CMD", test
    return list(test[1:])


def test_every_healthcheck_command_exists_in_its_image():
    checked = {}
    for name, service in built_services().items():
        image = BUILT[Path(service["build"]["context"])]
        command = healthcheck_command(service, image)
        if command is None:
            continue
        found = podman(
            "run", "--rm", "--network", "none", "--entrypoint", "sh", image,
            "-c", 'command -v "$1"', "sh", command[0], check=False,
        )  # fmt: skip
        assert found.returncode == 0, f"{name}: {command[0]} is not in {image}"
        checked[name] = found.stdout.strip()
    # migrator and seed disable theirs; the serving instances and the load balancer keep them.
    assert set(checked) == {"messenger", "load-balancer"}, checked
