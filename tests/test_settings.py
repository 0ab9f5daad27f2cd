"""Configuration: the Node service's variables and profiles, and refusing bad values at start."""

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from messenger.settings import Settings
from tests.conftest import bare_env
from tests.processes import free_port

SECRET = "s3cr3t-value"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment with none of the service's variables; each test sets what it needs."""
    kept = bare_env()
    for name in list(os.environ):
        if name not in kept:
            monkeypatch.delenv(name)
    return monkeypatch


def run(command: str = "serve", **variables: str) -> subprocess.CompletedProcess[str]:
    """`python -m messenger COMMAND` with only `variables` configured; it must stop at once."""
    return subprocess.run(
        [sys.executable, "-m", "messenger", command],
        env=bare_env(**variables),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_refused(result: subprocess.CompletedProcess[str], variable: str) -> None:
    """Exit code 2 and exactly one line, naming `variable`, and nothing else said."""
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"messenger: invalid configuration: {variable}"), lines[0]


def test_development_is_the_default_profile_with_the_node_defaults() -> None:
    settings = Settings()
    assert settings.messenger_env == "development"
    assert (settings.port, settings.pghost, settings.pgport) == (4000, "localhost", 5432)
    assert settings.pguser == "postgres"
    assert settings.pgpassword is not None
    assert settings.pgpassword.get_secret_value() == "postgres"
    assert settings.pgdatabase == "messenger_dev"
    assert (settings.amqphost, settings.amqpport) == ("localhost", 5672)
    assert settings.json_body_limit == 100 * 1024
    assert (settings.http_header_limit, settings.http_header_timeout) == (16 * 1024, 10.0)


def test_test_profile_differs_from_development_only_in_the_database(
    environment: pytest.MonkeyPatch,
) -> None:
    development = Settings()
    environment.setenv("MESSENGER_ENV", "test")
    test = Settings()
    assert test.pgdatabase == "messenger_test"
    assert test.model_dump(exclude={"messenger_env", "pgdatabase"}) == development.model_dump(
        exclude={"messenger_env", "pgdatabase"}
    )


def test_node_env_picks_the_profile_as_in_the_node_service(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("NODE_ENV", "test")
    assert Settings().pgdatabase == "messenger_test"


def test_messenger_env_wins_over_node_env(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("NODE_ENV", "development")
    environment.setenv("MESSENGER_ENV", "test")
    assert Settings().messenger_env == "test"


def test_profile_names_are_case_insensitive(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("MESSENGER_ENV", "Test")
    assert Settings().messenger_env == "test"


def test_production_profile_gives_ports_user_and_database_but_no_hosts(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("MESSENGER_ENV", "production")
    environment.setenv("PGHOST", "messenger-db")
    environment.setenv("AMQPHOST", "rabbitmq")
    settings = Settings()
    assert (settings.port, settings.pguser, settings.pgport) == (4000, "postgres", 5432)
    assert settings.pgdatabase == "messenger"
    assert settings.pgpassword is None
    assert (settings.pghost, settings.amqphost, settings.amqpport) == (
        "messenger-db",
        "rabbitmq",
        5672,
    )
    assert settings.json_body_limit == 100 * 1024


def test_the_chat_page_is_served_in_development_and_test_but_not_in_production(
    environment: pytest.MonkeyPatch,
) -> None:
    assert Settings().web_app is True
    environment.setenv("MESSENGER_ENV", "test")
    assert Settings().web_app is True
    environment.setenv("MESSENGER_ENV", "production")
    environment.setenv("PGHOST", "messenger-db")
    assert Settings().web_app is False
    environment.setenv("WEB_APP", "true")
    assert Settings().web_app is True
    description = Settings.model_fields["web_app"].description
    assert description is not None
    assert "/app/" in description


def test_web_app_can_be_turned_off_in_development(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("WEB_APP", "false")
    assert Settings().web_app is False


def test_production_requires_the_database_host(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("MESSENGER_ENV", "production")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert {error["loc"] for error in raised.value.errors()} == {("pghost",)}


def test_environment_overrides_profile_defaults(environment: pytest.MonkeyPatch) -> None:
    for name, value in {
        "PORT": "4100",
        "PGHOST": "db.internal",
        "PGPORT": "6432",
        "PGUSER": "messenger",
        "PGPASSWORD": SECRET,
        "PGDATABASE": "chat",
        "AMQPHOST": "broker.internal",
        "AMQPPORT": "5673",
        "JSON_BODY_LIMIT": "1.5mb",
        "HTTP_HEADER_LIMIT": "8kb",
        "HTTP_HEADER_TIMEOUT": "2.5",
        "CONSUL_SERVICE_NAME": "messenger",
    }.items():
        environment.setenv(name, value)
    settings = Settings()
    assert (settings.port, settings.pghost, settings.pgport) == (4100, "db.internal", 6432)
    assert (settings.pguser, settings.pgdatabase) == ("messenger", "chat")
    assert settings.pgpassword is not None
    assert settings.pgpassword.get_secret_value() == SECRET
    assert (settings.amqphost, settings.amqpport) == ("broker.internal", 5673)
    assert settings.json_body_limit == 1536 * 1024
    assert (settings.http_header_limit, settings.http_header_timeout) == (8192, 2.5)
    assert settings.consul_service_name == "messenger"
    assert (settings.consul_host, settings.consul_port) == ("consul-client", 8500)


def test_consul_registration_is_off_unless_a_service_name_is_set() -> None:
    assert Settings().consul_service_name is None


def test_secrets_never_appear_in_the_settings_repr(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("PGPASSWORD", SECRET)
    environment.setenv("AMQPPASSWORD", SECRET)
    settings = Settings()
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"PGPORT": "abc"}, "PGPORT"),
        ({"PGPORT": "70000"}, "PGPORT"),
        ({"PORT": ""}, "PORT"),
        ({"MESSENGER_ENV": "staging"}, "MESSENGER_ENV"),
        ({"NODE_ENV": "staging"}, "MESSENGER_ENV/NODE_ENV"),
        ({"JSON_BODY_LIMIT": "12xb"}, "JSON_BODY_LIMIT"),
        ({"JSON_BODY_LIMIT": "-1"}, "JSON_BODY_LIMIT"),
        ({"HTTP_HEADER_LIMIT": "512b"}, "HTTP_HEADER_LIMIT"),
        ({"HTTP_HEADER_LIMIT": "2mb"}, "HTTP_HEADER_LIMIT"),
        ({"HTTP_HEADER_TIMEOUT": "0"}, "HTTP_HEADER_TIMEOUT"),
        ({"MESSENGER_ENV": "production", "AMQPHOST": "rabbitmq"}, "PGHOST"),
        ({"MESSENGER_ENV": "production", "PGHOST": "messenger-db"}, "AMQPHOST"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
    ],
    ids=lambda value: (
        ",".join(f"{k}={v}" for k, v in value.items())
        if isinstance(value, dict)
        else "names-" + value
    ),
)
def test_a_bad_value_stops_the_process_with_one_line_naming_the_variable(
    variables: dict[str, str], named: str
) -> None:
    assert_refused(run(**variables), named)


def test_a_bad_value_next_to_a_secret_never_echoes_the_secret() -> None:
    result = run(PGPASSWORD=SECRET, APP_DB_PASSWORD=SECRET, AMQPPASSWORD=SECRET, PGPORT="abc")
    assert_refused(result, "PGPORT")
    assert SECRET not in result.stdout + result.stderr


def test_a_bad_value_is_not_echoed_either() -> None:
    result = run(PGPORT="port-" + SECRET)
    assert_refused(result, "PGPORT")
    assert SECRET not in result.stderr


def test_jobs_check_the_configuration_the_same_way() -> None:
    assert_refused(run("migrate", MESSENGER_ENV="production", AMQPHOST="rabbitmq"), "PGHOST")


def test_the_migrator_jobs_do_not_need_the_broker_host() -> None:
    closed = str(free_port())
    result = run("migrate", MESSENGER_ENV="production", PGHOST="127.0.0.1", PGPORT=closed)
    assert result.returncode == 1, result
    assert "cannot reach PostgreSQL" in result.stderr
    assert "AMQPHOST" not in result.stdout + result.stderr


# AUTH_MODE=jwt ------------------------------------------------------------------------------

JWT = {
    "AUTH_MODE": "jwt",
    "AUTH_JWKS_URL": "https://id.example/jwks",
    "AUTH_ISSUER": "https://id.example",
    "AUTH_AUDIENCE": "https://messenger.example",
}


def test_header_mode_is_the_default_and_needs_no_auth_settings() -> None:
    settings = Settings(messenger_env="test")
    assert settings.auth_mode == "header"
    assert settings.auth_algorithms == ("RS256", "ES256", "EdDSA")
    assert (settings.auth_leeway, settings.auth_user_claim) == (30, "sub")
    assert settings.auth_jwks_min_refresh == 60


def test_jwt_mode_reads_its_settings_from_the_environment(
    environment: pytest.MonkeyPatch,
) -> None:
    for name, value in {**JWT, "AUTH_MODE": "JWT", "AUTH_ALGORITHMS": "ES256, PS256"}.items():
        environment.setenv(name, value)
    settings = Settings(messenger_env="test")
    assert settings.auth_mode == "jwt"
    assert settings.auth_jwks_url == JWT["AUTH_JWKS_URL"]
    assert settings.auth_algorithms == ("ES256", "PS256")


@pytest.mark.parametrize("missing", ["AUTH_JWKS_URL", "AUTH_ISSUER", "AUTH_AUDIENCE"])
def test_jwt_mode_without_its_key_set_issuer_or_audience_stops_naming_it(missing: str) -> None:
    variables = {name: value for name, value in JWT.items() if name != missing}
    result = run(**variables)
    assert_refused(result, missing)
    assert "required when AUTH_MODE=jwt" in result.stderr
    empty = run(**{**variables, missing: ""})  # as compose passes an unset ${VAR:-}
    assert_refused(empty, missing)


def test_jwt_mode_without_any_of_them_names_all_three() -> None:
    result = run(AUTH_MODE="jwt")
    assert_refused(result, "AUTH_JWKS_URL, AUTH_ISSUER, AUTH_AUDIENCE")


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"AUTH_ALGORITHMS": "none"}, "AUTH_ALGORITHMS"),
        ({"AUTH_ALGORITHMS": "RS256,HS256"}, "AUTH_ALGORITHMS"),
        ({"AUTH_ALGORITHMS": " , "}, "AUTH_ALGORITHMS"),
        ({"AUTH_JWKS_URL": "file:///etc/jwks.json"}, "AUTH_JWKS_URL"),
        ({"AUTH_LEEWAY": "-1"}, "AUTH_LEEWAY"),
        ({"AUTH_JWKS_MIN_REFRESH": "0"}, "AUTH_JWKS_MIN_REFRESH"),
        ({"AUTH_MODE": "basic"}, "AUTH_MODE"),
    ],
    ids=lambda value: ",".join(value) if isinstance(value, dict) else value,
)
def test_a_bad_auth_setting_stops_the_process_naming_it(
    variables: dict[str, str], named: str
) -> None:
    assert_refused(run(**{**JWT, **variables}), named)


def test_every_auth_setting_is_described() -> None:
    for name, field in Settings.model_fields.items():
        if name.startswith("auth_"):
            assert field.description, name
