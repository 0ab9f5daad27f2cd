"""The OpenAPI document: valid 3.1, exactly the app's routes, every error text the code has."""

import re
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from starlette.routing import Route

from messenger import errors, openapi
from messenger.app import ROUTES

METHODS = {"get", "post", "put", "patch", "delete", "options", "head", "trace"}


def operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every operation of the document by operationId."""
    return {
        operation["operationId"]: operation
        for item in document["paths"].values()
        for method, operation in item.items()
        if method in METHODS
    }


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi.document()
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_every_route_the_app_serves_is_documented_and_nothing_else() -> None:
    served = {
        (route.path, method.lower())
        for route in ROUTES
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"  # Starlette adds HEAD to every GET route
    }
    documented = {
        (path, method)
        for path, item in openapi.document()["paths"].items()
        for method in item
        if method in METHODS
    }
    assert documented == served


async def test_the_app_serves_the_document_rendered_once(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == openapi.render()
    assert openapi.render() is openapi.render()


def error_schemas(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The schema of the `error` member of every error response in the document."""
    found = []
    for response in document["components"]["responses"].values():
        found.append(response["content"]["application/json"]["schema"]["properties"]["error"])
    for operation in operations(document).values():
        for status, response in operation["responses"].items():
            if status.startswith("4") and "content" in response:
                schema = response["content"]["application/json"]["schema"]
                found.append(schema["properties"]["error"])
    return found


def matches(schema: dict[str, Any], text: str) -> bool:
    choices = schema.get("anyOf", [schema])
    return any(
        text in choice.get("enum", ()) or re.search(choice.get("pattern", "(?!)"), text)
        for choice in choices
    )


SAMPLES = {
    "id": 42,
    "request_id": "abc-1",
    "position": 3,
    "reason": "x",
    "name": "limit",
    "charset": "UTF-16",
    "encoding": "gzip",
    "limit": 8192,
    "accepted": "RS256, ES256",
    "claim": "sub",
}


def test_every_error_text_of_the_code_is_in_the_document() -> None:
    document = openapi.document()
    schemas = error_schemas(document)
    texts = {
        name: value
        for name, value in vars(errors).items()
        if name.isupper() and isinstance(value, str)
    }
    # Unknown routes and wrong methods are no operation: the description states them.
    for name in ("NOT_FOUND", "METHOD_NOT_ALLOWED"):
        assert f'{{"error": "{texts.pop(name)}"}}' in document["info"]["description"]
    for name, template in texts.items():
        text = template.replace("{value!r}", "'abc'").format(**SAMPLES)
        if name == "INVALID_PATH_ID":
            text = template.replace("{value!r}", "'abc'").format(name="conversation id")
        assert any(matches(schema, text) for schema in schemas), name


def test_a_text_pattern_matches_only_its_texts() -> None:
    pattern = re.compile(openapi._pattern(errors.CONVERSATION_EXISTS))
    assert pattern.fullmatch(errors.CONVERSATION_EXISTS.format(id=7))
    assert not pattern.fullmatch(errors.CONVERSATION_EXISTS.format(id="x"))
    assert re.fullmatch(openapi._pattern("a (b) {x}."), "a (b) anything.")
    assert not re.fullmatch(openapi._pattern("a (b) {x}."), "a b anything!")


def test_links_name_real_operations_and_their_parameters() -> None:
    document = openapi.document()
    by_id = operations(document)
    parameters = document["components"]["parameters"]
    for operation in by_id.values():
        for response in operation["responses"].values():
            for link in response.get("links", {}).values():
                target = by_id[link["operationId"]]
                path = next(p for p, item in document["paths"].items() if target in item.values())
                declared = [*document["paths"][path].get("parameters", ()), *target["parameters"]]
                names = set()
                for parameter in declared:
                    if "$ref" in parameter:
                        parameter = parameters[parameter["$ref"].rsplit("/", 1)[1]]
                    prefix = "" if parameter["in"] == "path" else f"{parameter['in']}."
                    names.add(prefix + parameter["name"])
                assert set(link["parameters"]) <= names, link


def test_the_api_document_lists_every_error_text() -> None:
    api = Path(__file__).resolve().parent.parent / "docs" / "api.md"
    document = " ".join(api.read_text().split())
    for name, text in vars(errors).items():
        if name.isupper() and isinstance(text, str):
            longest_literal = max(re.split(r"\{[^}]*\}", text), key=len)
            assert longest_literal in document, name


def test_every_error_example_is_a_text_its_schema_allows() -> None:
    document = openapi.document()
    responses = [
        *document["components"]["responses"].values(),
        *(r for op in operations(document).values() for r in op["responses"].values()),
    ]
    examples = [
        response["content"]["application/json"]
        for response in responses
        if "example" in response.get("content", {}).get("application/json", {})
    ]
    assert len(examples) >= 8
    for media in examples:
        Draft202012Validator(media["schema"]).validate(media["example"])
