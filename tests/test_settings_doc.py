"""docs/configuration.md is generated from Settings: every field described, the file current."""

from pathlib import Path

from messenger import settings_doc
from messenger.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_has_a_description() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not field.description]
    assert missing == []


def test_the_configuration_document_is_current() -> None:
    document = ROOT / settings_doc.OUTPUT
    written = document.read_text() if document.exists() else ""
    assert written == settings_doc.render(), (
        f"{settings_doc.OUTPUT} is stale: run {settings_doc.COMMAND} and commit the result"
    )


def test_every_variable_has_a_row_in_the_document() -> None:
    document = (ROOT / settings_doc.OUTPUT).read_text()
    for name in Settings.model_fields:
        assert f"| `{name.upper()}`" in document, name


def test_sizes_durations_secrets_and_profiles_are_shown_as_they_are_written() -> None:
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in settings_doc.render().splitlines()
        if line.startswith("| `")
    }
    assert rows["`JSON_BODY_LIMIT`"][:2] == ["size", "`100kb`"]
    assert rows["`HTTP_HEADER_LIMIT`"][:2] == ["size 1kb to 1mb", "`16kb`"]
    assert rows["`CONSUL_CHECK_INTERVAL`"][:2] == ["duration", "`15s`"]
    assert rows["`PGPASSWORD`"][2] == "secret"
    assert rows["`AMQPPASSWORD`"][2] == "secret"
    assert rows["`PGUSER`"][2] == ""
    assert rows["`PGHOST`"][1] == "development, test: `localhost`; production: required"
    assert rows["`MESSENGER_ENV`, `NODE_ENV`"][1] == "`development`"
