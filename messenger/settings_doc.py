"""docs/configuration.md, generated from the `Settings` fields so the variables are declared once.

Usage: python -m messenger.settings_doc [OUTPUT]   (scripts/docs writes docs/configuration.md)
"""

import sys
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from messenger.settings import PROFILE_DEFAULTS, ByteSize, GoDuration, Settings

PROFILES = ("development", "test", "production")
COMMAND = "scripts/docs"
OUTPUT = Path("docs/configuration.md")
_UNITS = ("b", "kb", "mb", "gb", "tb", "pb")

HEADER = f"""\
# Configuration

<!-- Generated from the fields of messenger/settings.py by {COMMAND}: edit a field's
description there and run {COMMAND}; tests/test_settings_doc.py fails while this is stale. -->

Everything comes from environment variables, with the Node service's names, so its deploy
scripts map one to one. `MESSENGER_ENV` (or the Node service's `NODE_ENV`) picks a profile whose
defaults are the Node service's convict files; any variable overrides its profile's value.
Values are validated at start: an unknown or invalid value stops the process with exit code 2
and one line per bad variable naming it (`messenger: invalid configuration: PGPORT: ...`),
never echoing a value. A secret is held as pydantic's `SecretStr`, shown as `**********`.

Sizes are written in the npm `bytes` style (`100kb`, `1.5mb`, a bare number is bytes);
durations for Consul in Go's style (`15s`, `1m`, `1m30s`); booleans as `true` or `false`.
"""

FOOTER = """\
The scripts read a few variables of their own, described with them: `DEV_PGDATA`
(`scripts/dev`, in the [README](../README.md)), `LB_PORT`, `BASE_PORT` and `LOCAL_STACK_DIR`
(`scripts/local-stack`) and the deploy scripts' variables ([deployment](deployment.md)),
`BENCH_QUEUE` and `BENCH_DATABASE` ([performance](performance.md)).
"""


def _kind(field: FieldInfo) -> str | None:
    """`size` or `duration` when the field's annotation is one of the settings' own types."""
    for alias, kind in ((ByteSize, "size"), (GoDuration, "duration")):
        if all(marker in field.metadata for marker in get_args(alias)[1:]):
            return kind
    return None


def _base(annotation: Any) -> tuple[Any, bool]:
    """The annotation without `| None`, and whether None was allowed."""
    if get_origin(annotation) in (Union, UnionType):
        members = [arg for arg in get_args(annotation) if arg is not NoneType]
        if len(members) == 1:
            return members[0], True
    return annotation, False


def _range(field: FieldInfo, kind: str) -> str:
    """The bounds the settings check, as a reader writes them: `1 to 65535`, `> 0`."""
    low = high = ""
    lengths = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            low = _number(item.ge, kind)
        elif isinstance(item, annotated_types.Gt):
            low = f"> {_number(item.gt, kind)}"
        elif isinstance(item, annotated_types.Le):
            high = _number(item.le, kind)
        elif isinstance(item, annotated_types.Lt):
            high = f"< {_number(item.lt, kind)}"
        elif isinstance(item, annotated_types.MaxLen):
            lengths.append(f"at most {item.max_length} characters")
    if low and high and not low.startswith(">") and not high.startswith("<"):
        bounds = [f"{low} to {high}"]
    else:
        bounds = [
            *([low if low.startswith(">") else f"≥ {low}"] if low else []),
            *([high if high.startswith("<") else f"≤ {high}"] if high else []),
        ]
    return ", ".join([*bounds, *lengths])


def _number(value: Any, kind: str) -> str:
    if kind == "size":
        return _size(int(value))
    return f"{value:,g}" if isinstance(value, float) else f"{value:,}"


def _size(value: int) -> str:
    for power, unit in reversed(list(enumerate(_UNITS))):
        if value and value % (1024**power) == 0:
            return f"{value // 1024**power}{unit}"
    return str(value)


def type_of(field: FieldInfo) -> str:
    """How the variable is written, with the bounds the settings check."""
    kind = _kind(field)
    annotation, _ = _base(field.annotation)
    if kind == "size":
        text = "size"
    elif kind == "duration":
        text = "duration"
    elif get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    elif annotation is bool:
        return "boolean"
    elif annotation is int:
        text = "integer"
    elif annotation is float:
        text = "number"
    else:
        text = "string"
    bounds = _range(field, kind or "")
    return (
        f"{text} {bounds}"
        if bounds and bounds[0].isdigit()
        else ", ".join(filter(None, [text, bounds]))
    )


def _value(value: Any, field: FieldInfo) -> str:
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if _kind(field) == "size" and isinstance(value, int):
        return f"`{_size(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def default_of(name: str, field: FieldInfo) -> str:
    """The default, per profile where the profiles differ; `required` where there is none."""
    by_profile = {}
    for profile in PROFILES:
        if name == "messenger_env":
            value = _value(field.default, field)
        elif name in PROFILE_DEFAULTS[profile]:
            value = _value(PROFILE_DEFAULTS[profile][name], field)
        elif field.default is PydanticUndefined:
            value = "required"
        else:
            value = _value(field.default, field)
        by_profile[profile] = value
    if len(set(by_profile.values())) == 1:
        return by_profile["development"]
    groups: dict[str, list[str]] = {}
    for profile, value in by_profile.items():
        groups.setdefault(value, []).append(profile)
    return "; ".join(f"{', '.join(profiles)}: {value}" for value, profiles in groups.items())


def variable_names(name: str, field: FieldInfo) -> str:
    aliases = getattr(field.validation_alias, "choices", None) or [name]
    return ", ".join(f"`{str(alias).upper()}`" for alias in aliases)


def is_secret(field: FieldInfo) -> bool:
    return _base(field.annotation)[0] is SecretStr


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """The whole document, one table row per `Settings` field in declaration order."""
    rows = [
        "| variable | type | default | secret | what it does |",
        "|---|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise ValueError(f"Settings.{name} has no description")
        cells = (
            variable_names(name, field),
            type_of(field),
            default_of(name, field),
            "secret" if is_secret(field) else "",
            field.description,
        )
        rows.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return HEADER + "\n" + "\n".join(rows) + "\n\n" + FOOTER


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0] in {"-h", "--help"}):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    output = Path(argv[0]) if argv else OUTPUT
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render())
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
