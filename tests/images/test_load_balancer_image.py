"""The load balancer image built for real (on a stand-in nginx base, with a consul-template
stand-in that renders nothing): its nginx accepts the configuration consul-template renders
from nginx.ctmpl, with three instances and with none, and answers its own HEALTHCHECK."""

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.images.conftest import LOAD_BALANCER_IMAGE, ROOT, podman

TEMPLATE = ROOT / "load-balancer" / "nginx.ctmpl"
CONF = "/etc/nginx/conf.d/messenger.conf"  # consul-template's destination (config.hcl)
SERVERS = re.compile(
    r'\{\{- range service "messenger\|passing" \}\}(?P<each>.*?)'
    r"\{\{- else \}\}(?P<none>.*?)\{\{- end \}\}",
    re.S,
)


def render(*instances: tuple[str, int]) -> str:
    """nginx.ctmpl as consul-template renders it for these passing instances: its only
    directives are the range/else/end over the service, and `{{-` trims the whitespace before."""
    template = TEMPLATE.read_text()
    block = SERVERS.search(template)
    assert block is not None, "nginx.ctmpl no longer has the range over messenger|passing"
    each, none = block["each"].rstrip(), block["none"].rstrip()
    servers = "".join(
        each.replace("{{ .Address }}", address).replace("{{ .Port }}", str(port))
        for address, port in instances
    )
    rendered = template[: block.start()].rstrip() + (servers or none) + template[block.end() :]
    assert "{{" not in rendered
    return rendered


@pytest.mark.parametrize(
    "instances",
    [(("127.0.0.11", 4000), ("127.0.0.12", 4000), ("127.0.0.13", 4000)), ()],
    ids=["three instances", "no instance"],
)
def test_nginx_in_the_image_accepts_the_rendered_configuration(tmp_path, instances):
    config = tmp_path / "messenger.conf"
    config.write_text(render(*instances))
    result = podman(
        "run", "--rm", "--network", "none", "--volume", f"{config}:{CONF}:ro",
        "--entrypoint", "nginx", LOAD_BALANCER_IMAGE, "-t",
    )  # fmt: skip
    assert "test is successful" in result.stderr, result.stderr
    servers = re.findall(r"^ +server (\S+)", config.read_text(), re.M)
    assert servers == ([f"{a}:{p}" for a, p in instances] or ["127.0.0.1:9"])


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[str]:
    """nginx alone (consul-template is a stand-in here) on the no-instance configuration, in a
    network namespace of its own: port 8085 is the container's, not the host's."""
    config = tmp_path / "messenger.conf"
    config.write_text(render())
    name = f"messenger-img-lb-{uuid.uuid4().hex[:10]}"
    podman(
        "run", "--detach", "--name", name, "--network", "none",
        "--volume", f"{config}:{CONF}:ro",
        LOAD_BALANCER_IMAGE, "nginx", "-g", "daemon off;",
    )  # fmt: skip
    try:
        yield name
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def request(container: str, path: str) -> str:
    """An HTTP request from inside the container, as its HEALTHCHECK makes one."""
    script = (
        "for _ in $(seq 50); do exec 3<>/dev/tcp/127.0.0.1/8085 && break; sleep 0.1; done;"
        f" printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    )
    return podman("exec", container, "bash", "-c", script).stdout


def test_the_images_healthcheck_passes_and_no_instance_answers_503_json(balancer):
    assert " 200 " in request(balancer, "/lb-health")
    result = podman("healthcheck", "run", balancer, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    answer = request(balancer, "/conversations/1/messages")
    assert answer.startswith("HTTP/1.1 503"), answer
    assert answer.endswith('{"error":"no messenger instance is available, try again shortly"}')


def test_the_image_has_tini_as_pinned_and_the_consul_template_it_was_given():
    def output(*command: str) -> str:
        result = podman("run", "--rm", "--network", "none", "--entrypoint", command[0],
                        LOAD_BALANCER_IMAGE, *command[1:])  # fmt: skip
        return result.stdout  # stderr: podman's complaints that it has no systemd for timers

    dockerfile = (ROOT / "load-balancer" / "Dockerfile").read_text()
    pinned = re.search(r"tini=(\S+)", dockerfile)
    assert pinned is not None
    assert output("dpkg-query", "-W", "-f", "${Version}", "tini") == pinned.group(1)
    assert "tini version 0.19.0" in output("/usr/bin/tini", "--version")
    assert "consul-template v" in output("consul-template", "-version")


def test_the_load_balancer_stops_on_sigterm_as_its_entrypoint_says():
    inspected = podman(
        "image", "inspect", "--format", "{{json .Config.Entrypoint}} {{.Config.StopSignal}}",
        LOAD_BALANCER_IMAGE,
    ).stdout.strip()  # fmt: skip
    assert inspected == '["/usr/bin/tini","--"] SIGTERM'
