"""The generated OpenAPI document means exactly what the hand-built one (issue 14) did.

`tests/openapi_before.py` is the hand-built module as it last was; the generator must give the
same paths, operations, parameters, schemas, status codes, headers, links, examples and error
texts once every `$ref` is resolved (the generator also names each answer shape in components,
where the old module wrote them inline). Dict key order is no part of the meaning; list order
is compared as it is.
"""

from typing import Any

from messenger import openapi
from tests import openapi_before


def resolved(node: Any, document: dict[str, Any]) -> Any:
    """`node` with every `{"$ref": "#/components/<kind>/<name>"}` replaced by what it names."""
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            _, _, kind, name = node["$ref"].split("/")
            return resolved(document["components"][kind][name], document)
        return {key: resolved(value, document) for key, value in node.items()}
    if isinstance(node, list):
        return [resolved(item, document) for item in node]
    return node


def without_components(document: dict[str, Any]) -> dict[str, Any]:
    return resolved({k: v for k, v in document.items() if k != "components"}, document)


def test_the_generated_document_means_what_the_hand_built_one_did() -> None:
    before, generated = openapi_before.document(), openapi.document()
    assert without_components(generated) == without_components(before)


def test_every_component_the_hand_built_document_named_is_generated_the_same() -> None:
    before, generated = openapi_before.document(), openapi.document()
    for kind in ("schemas", "parameters", "responses", "headers"):
        for name, component in before["components"][kind].items():
            assert resolved(generated["components"][kind][name], generated) == resolved(
                component, before
            ), (kind, name)
