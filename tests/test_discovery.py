"""Consul registration, against an agent double that checks requests the way the agent does."""

import asyncio
import ipaddress
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from asgi_lifespan import LifespanManager

from messenger import __version__
from messenger.app import create_app
from messenger.discovery import Registration, State, detect_address
from messenger.settings import Settings
from tests.conftest import app_client
from tests.consul_double import ConsulDouble
from tests.processes import ROOT, free_port, service_env, terminate


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    with ConsulDouble() as double:
        yield double


def registering(settings: Settings, consul_port: int, **changes: object) -> Settings:
    values: dict[str, object] = {
        "consul_service_name": "messenger",
        "consul_host": "127.0.0.1",
        "consul_port": consul_port,
        "service_address": "10.1.2.3",
        "port": 4321,
    }
    values.update(changes)
    return settings.model_copy(update=values)


async def test_registration_body_is_accepted_by_the_agent(
    database: Settings, consul: ConsulDouble
) -> None:
    app = create_app(registering(database, consul.port))
    async with LifespanManager(app):
        call = await asyncio.to_thread(consul.wait_for_call, "PUT", "/v1/agent/service/register")

    assert call.status == 200
    body = call.body
    assert body["Name"] == "messenger"
    assert body["ID"].startswith("messenger-")
    assert body["ID"] != "messenger"
    assert body["Address"] == "10.1.2.3"
    assert body["Port"] == 4321
    assert body["Meta"] == {"version": __version__}
    assert body["Check"]["HTTP"] == "http://10.1.2.3:4321/health"
    assert body["Check"]["Interval"] == "15s"
    assert body["Check"]["DeregisterCriticalServiceAfter"] == "1m"
    assert body["Check"]["Timeout"] == "5s"


async def test_stopping_the_app_deregisters_the_instance_it_registered(
    database: Settings, consul: ConsulDouble
) -> None:
    app = create_app(registering(database, consul.port))
    async with LifespanManager(app):
        registered = await asyncio.to_thread(
            consul.wait_for_call, "PUT", "/v1/agent/service/register"
        )
        assert list(consul.services) == [registered.body["ID"]]

    deregistered = consul.calls_to("PUT", "/v1/agent/service/deregister/")
    assert [call.path for call in deregistered] == [
        f"/v1/agent/service/deregister/{registered.body['ID']}"
    ]
    assert deregistered[0].status == 200
    assert consul.services == {}


async def test_each_instance_registers_under_its_own_id(
    database: Settings, consul: ConsulDouble
) -> None:
    settings = registering(database, consul.port)
    first, second = Registration(settings), Registration(settings)
    assert first.service_id != second.service_id
    async with (
        LifespanManager(create_app(settings, registration=first)),
        LifespanManager(create_app(settings, registration=second)),
    ):
        await asyncio.to_thread(consul.wait_for, lambda: len(consul.services) == 2)
        assert set(consul.services) == {first.service_id, second.service_id}


async def test_registers_once_the_agent_comes_up_late(
    database: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    registration = Registration(registering(database, port))
    caplog.set_level(logging.INFO, logger="messenger.discovery")
    consul = ConsulDouble(port=port)
    try:
        async with LifespanManager(create_app(registration.settings, registration=registration)):
            await asyncio.sleep(1.6)  # several attempts fail meanwhile
            assert registration.state is State.PENDING
            consul.start()
            await asyncio.to_thread(consul.wait_for_call, "PUT", "/v1/agent/service/register", 15)
            await asyncio.to_thread(
                consul.wait_for, lambda: registration.state is State.REGISTERED, 5
            )
            assert list(consul.services) == [registration.service_id]
        assert consul.calls_to("PUT", "/v1/agent/service/deregister/")
    finally:
        consul.stop()

    messages = [record.getMessage() for record in caplog.records]
    unreachable = [text for text in messages if "not reachable" in text]
    assert len(unreachable) == 1, messages  # each state change is logged once
    assert sum("registered with Consul" in text for text in messages) == 1


async def test_registers_again_when_the_agent_forgets_the_instance(
    database: Settings, consul: ConsulDouble
) -> None:
    registration = Registration(registering(database, consul.port), resync_interval=0.1)
    async with LifespanManager(create_app(registration.settings, registration=registration)):
        await asyncio.to_thread(consul.wait_for_call, "PUT", "/v1/agent/service/register")
        consul.services.clear()  # what an agent restarted without its data directory knows
        await asyncio.to_thread(
            consul.wait_for,
            lambda: len(consul.calls_to("PUT", "/v1/agent/service/register")) == 2,
        )
        await asyncio.to_thread(consul.wait_for, lambda: registration.state is State.REGISTERED, 5)
    assert consul.services == {}


async def test_a_refused_registration_is_retried_and_serving_goes_on(
    database: Settings, consul: ConsulDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="messenger.discovery")
    settings = registering(database, consul.port, service_address="0.0.0.0")
    async with LifespanManager(create_app(settings)) as manager:
        await asyncio.to_thread(
            consul.wait_for,
            lambda: len(consul.calls_to("PUT", "/v1/agent/service/register")) >= 2,
        )
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://messenger") as client:
            assert (await client.get("/health")).text == "OK"
    refusals = [
        r.getMessage() for r in caplog.records if "refused the registration" in r.getMessage()
    ]
    assert len(refusals) == 1
    assert "Invalid service address" in refusals[0]
    # Never registered, but a request may have reached the agent: deregistering is harmless.
    assert all(call.status in {200, 404} for call in consul.calls_to("PUT", "/v1/agent/service/d"))


async def test_no_consul_call_is_made_without_a_service_name(
    database: Settings, consul: ConsulDouble
) -> None:
    settings = registering(database, consul.port, consul_service_name=None)
    assert Registration.for_settings(settings) is None
    async with app_client(settings) as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/health/ready")).json()["registered"] is None
        await asyncio.sleep(0.3)
    assert consul.calls == []


@pytest.mark.parametrize("command", ["migrate", "seed"])
def test_job_commands_never_register(
    database: Settings, consul: ConsulDouble, command: str
) -> None:
    env = service_env(
        database,
        **consul.agent_env(),
    )
    finished = subprocess.run(
        [sys.executable, "-m", "messenger", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr.decode()
    assert consul.calls == []


def test_the_relay_job_never_registers(database: Settings, consul: ConsulDouble) -> None:
    env = service_env(
        database,
        **consul.agent_env(),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "messenger", "relay"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=2)  # running, publishing whatever the outbox holds
    finally:
        terminate(process, within=10)
    assert consul.calls == []


def test_the_advertised_address_is_an_address_of_this_host() -> None:
    detected = detect_address()
    address = ipaddress.ip_address(detected)
    assert not address.is_unspecified
    with socket.socket() as listener:
        listener.bind((detected, 0))  # only an address of one of this host's interfaces binds


def test_service_address_overrides_detection(database: Settings) -> None:
    settings = registering(database, 8500, service_address="messenger-1.internal")
    registration = Registration(settings)
    assert registration.address == "messenger-1.internal"
    assert registration.definition()["Check"]["HTTP"] == "http://messenger-1.internal:4321/health"


VALID_SERVICE = {
    "ID": "web-1",
    "Name": "web",
    "Address": "10.0.0.5",
    "Port": 80,
    "Check": {"HTTP": "http://10.0.0.5:80/health", "Interval": "15s"},
}


def test_a_specific_listening_host_is_the_advertised_address(database: Settings) -> None:
    specific = registering(database, 8500, service_address=None, host="10.9.8.7")
    assert Registration(specific).address == "10.9.8.7"
    wildcard = registering(database, 8500, service_address=None, host="0.0.0.0")
    assert Registration(wildcard).address == detect_address()


class TestTheDouble:
    """The double refuses what the agent refuses, so passing tests mean something."""

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"Name": ""}, "Missing service name"),
            ({"name": "web"}, 'unknown field "name"'),
            ({"Port": "80"}, "Port: unexpected JSON type"),
            ({"Address": "0.0.0.0"}, "Invalid service address"),
            ({"Check": {"HTTP": "http://x/health", "Interval": "15"}}, 'invalid duration "15"'),
            ({"Check": {"HTTP": "http://x/health", "Interval": 15}}, "Interval: expected a"),
            ({"Check": {"HTTP": "http://x/health"}}, "Interval must be > 0"),
            ({"Check": {"http": "http://x/health", "Interval": "15s"}}, 'unknown field "http"'),
            (
                {"Check": {"TTL": "10s", "DeregisterCriticalServiceAfter": "1 minute"}},
                'invalid duration "1 minute"',
            ),
            ({"Meta": {"version": 1}}, "Meta: unexpected JSON type"),
        ],
    )
    def test_registration_the_agent_would_refuse_is_a_400(
        self, consul: ConsulDouble, change: dict[str, object], message: str
    ) -> None:
        response = httpx.put(
            f"{consul.url}/v1/agent/service/register", json={**VALID_SERVICE, **change}
        )
        assert response.status_code == 400
        assert message in response.text
        assert consul.services == {}

    def test_deregistering_an_unknown_id_is_a_404_like_the_agent(
        self, consul: ConsulDouble
    ) -> None:
        response = httpx.put(f"{consul.url}/v1/agent/service/deregister/web-9")
        assert response.status_code == 404
        assert response.text.startswith('Unknown service ID "web-9"')

    def test_registered_services_are_listed_and_reported_healthy(
        self, consul: ConsulDouble
    ) -> None:
        assert httpx.put(f"{consul.url}/v1/agent/service/register", json=VALID_SERVICE).is_success
        assert httpx.get(f"{consul.url}/v1/agent/services").json()["web-1"]["Service"] == "web"
        health = httpx.get(f"{consul.url}/v1/health/service/web?passing").json()
        assert [entry["Service"]["ID"] for entry in health] == ["web-1"]
        consul.check_status["web-1"] = "critical"
        assert httpx.get(f"{consul.url}/v1/health/service/web?passing").json() == []

    def test_kv_answers_raw_values_like_the_deploy_scripts_read_them(self) -> None:
        with ConsulDouble(kv={"amqp-host": "rabbitmq"}) as consul:
            assert httpx.get(f"{consul.url}/v1/kv/amqp-host?raw=true").text == "rabbitmq"
            assert httpx.get(f"{consul.url}/v1/kv/missing?raw=true").status_code == 404
            stored = httpx.put(f"{consul.url}/v1/kv/messenger-db-port", content=b"5432")
            assert stored.json() is True
            assert consul.kv["messenger-db-port"] == "5432"
            assert consul.calls[0].query == {"raw": "true"}
