"""The OpenAPI 3.1 document of the HTTP API, generated from the routes and their declarations.

Each handler declares its operation with `@operation(...)` (operations.py): answer and body
shapes, parameters, and error texts, which become enums (fixed texts) and patterns (templates
such as "... with id {id}"); its docstring gives the summary (first line) and description.
`render()` walks the app's routes (routes.ROUTES and its own); JSON Schemas come from the shapes
through pydantic. `GET /openapi.json` serves it; tests/test_openapi.py and tests/test_fuzz.py
check the app against it.
"""

import functools
import inspect
import string
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from typing_extensions import is_typeddict

from messenger import __version__, routes, schemas
from messenger.errors import (
    BODY_NOT_DECODABLE,
    BODY_NOT_IN_CHARSET,
    BODY_NOT_JSON,
    BODY_NOT_UTF8,
    SHARED_ERRORS,
    Errors,
)
from messenger.operations import Answer, Operation, declared, operation
from messenger.schemas import HEADERS, ErrorBody, Parameter, json_schema

Schema = dict[str, Any]

# What a `{field}` of an error template stands for, as a regular expression.
_FIELDS = {"id": "[0-9]+", "request_id": "[A-Za-z0-9._:-]+", "position": "[0-9]+"}
_EXAMPLE_VALUES = {
    "id": 7,
    "request_id": "4f1c",
    "position": 3,
    "reason": "...",
    "value": "x",
    "charset": "ISO-8859-1",
    "encoding": "br",
}
_REGEX_SPECIALS = frozenset(r".^$*+?()[]{}|\/")
_OPERATIONS_TAG = {"name": "operations", "description": "Probes, metrics, this document."}


def _pattern(template: str) -> str:
    """A regular expression matching every text `template.format(...)` can produce."""
    parts = []
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append("".join(f"\\{c}" if c in _REGEX_SPECIALS else c for c in literal))
        if name is not None:
            parts.append(_FIELDS.get(name, ".*"))
    return "^" + "".join(parts) + "$"


def _texts(texts: Sequence[str]) -> Schema:
    """The schema of an `error` member that is one of `texts` (fixed texts or templates)."""
    fixed = [text for text in texts if "{" not in text]
    choices: list[Schema] = [{"enum": fixed}] if fixed else []
    choices += [{"pattern": _pattern(text)} for text in texts if "{" in text]
    return {"type": "string", **(choices[0] if len(choices) == 1 else {"anyOf": choices})}


def _shape(shape: Any, components: Schema) -> Schema:
    """The schema of a body: a named shape by reference to components, any other inline."""
    if not is_typeddict(shape):
        return json_schema(shape, components["schemas"])
    components["schemas"][shape.__name__] = json_schema(shape, components["schemas"])
    return _ref("schemas", shape.__name__)


def _headers(names: Sequence[str] = ()) -> Schema:
    """Response headers: X-Request-Id on every response, and `names`."""
    return {name: _ref("headers", name) for name in ("X-Request-Id", *names)}


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _error(errors: Errors, components: Schema, headers: Sequence[str] = ()) -> Schema:
    schema = json_schema(ErrorBody, components["schemas"])
    schema["properties"]["error"] = _texts(errors.texts)
    example = {"error": errors.texts[0].format(**_EXAMPLE_VALUES)}
    content = {"application/json": {"schema": schema, "example": example}}
    return {"description": errors.description, "headers": _headers(headers), "content": content}


def _answer(answer: Answer, components: Schema) -> Schema:
    found: Schema = {"description": answer.description, "headers": _headers(answer.headers)}
    if answer.shape is not None:
        schema = _shape(answer.shape, components)
        found["content"] = {media: {"schema": schema} for media in answer.media}
    return found | ({"links": answer.links} if answer.links else {})


def _parameter(parameter: Parameter, components: Schema) -> Schema:
    found: Schema = {"name": parameter.name, "in": parameter.location}
    if parameter.location != "query":
        found["required"] = parameter.required
    found["description"] = parameter.description
    found["schema"] = json_schema(parameter.shape, components["schemas"])
    found |= {} if parameter.example is None else {"example": parameter.example}
    if parameter.component is None:
        return found
    components["parameters"][parameter.component] = found
    return _ref("parameters", parameter.component)


def _bad_request(op: Operation, path: Sequence[Parameter]) -> Sequence[Errors]:
    """The operation's errors, its 400 texts led by those of its parameters (headers, path,
    query, in the order the handler checks them) and ended by the body's decoding texts."""
    order = {"header": 0, "path": 1, "query": 2}
    given = sorted([*op.parameters, *path], key=lambda p: order[p.location])
    body = [BODY_NOT_UTF8, BODY_NOT_JSON, BODY_NOT_IN_CHARSET, BODY_NOT_DECODABLE]
    body = body if op.body is not None else []
    found = []
    for error in op.errors:
        if error.status == 400:
            texts = [*(t for p in given for t in p.errors), *error.texts, *body]
            error = Errors(400, error.description, list(dict.fromkeys(texts)))
        found.append(error)
    return found


def _operation(
    path: list[Parameter], op: Operation, handler: Callable[..., Any], comp: Schema
) -> Schema:
    summary, _, description = inspect.cleandoc(handler.__doc__ or "").partition("\n")
    found: Schema = {"operationId": op.id, "summary": summary}
    found |= {"description": " ".join(description.split())} if description.strip() else {}
    found["tags"] = [op.tag]
    if op.parameters:
        found["parameters"] = [_parameter(p, comp) for p in op.parameters]
    if op.body is not None:
        content = {"schema": _shape(op.body, comp), "example": op.example}
        found["requestBody"] = {"required": True, "content": {"application/json": content}}
    responses = {str(a.status): _answer(a, comp) for a in op.answers}
    own = _bad_request(op, path)
    # An operation may declare a shared answer of its own (the stream's 503): by reference.
    shared_names = {id(errors): name for name, errors in SHARED_ERRORS.items()}
    for e in own:
        name = shared_names.get(id(e))
        responses[str(e.status)] = _error(e, comp) if name is None else _ref("responses", name)
    shared = ["ConversationNotFound"] if schemas.CONVERSATION_ID in path else []
    shared += ["BodyTooLarge", "UnsupportedBody"] if op.body is not None else []
    shared += ["BodyTimeout", "InternalError"] if op.database else []
    shared += ["DatabaseUnavailable"] if op.database and all(e.status != 503 for e in own) else []
    shared += ["Unauthorized", "Forbidden"] if op.caller else []
    responses |= {str(SHARED_ERRORS[name].status): _ref("responses", name) for name in shared}
    return found | {"responses": responses}


def _paths(routes: Sequence[BaseRoute], components: Schema) -> Schema:
    paths: Schema = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        handlers = getattr(route.endpoint, "by_method", None) or {
            method.lower(): route.endpoint for method in route.methods or () if method != "HEAD"
        }
        path = [schemas.PATH_PARAMETERS[name] for name in route.param_convertors]
        item: Schema = {"parameters": [_parameter(p, components) for p in path]} if path else {}
        for method, handler in handlers.items():
            item[method] = _operation(path, declared(handler), handler, components)
        paths[route.path] = item
    return paths


DESCRIPTION = """\
A chat service: conversations between two users and their messages. Wire-compatible with the \
Node.js service it replaces: routes, statuses, JSON shapes, types and key order, error texts.

- Every response is JSON except `GET /health` and `GET /metrics`; every error is \
`{"error": "<text>"}`. Unknown routes answer 404 `{"error": "Not found"}`, a wrong method 405 \
`{"error": "Method not allowed"}` with `Allow`.
- Timestamps are UTC, `2026-11-24T10:32:39.000Z`.
- CORS: any origin; preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered for \
every path; `X-Request-Id` and `Link` are exposed.
- Request bodies are read as JSON only with `Content-Type: application/json`; any body is \
refused with 413 above JSON_BODY_LIMIT (inflated size for `Content-Encoding: gzip` or \
`deflate`) and 408 when not complete within HTTP_BODY_TIMEOUT.
- `HEAD` is answered wherever `GET` is; a trailing slash is served as the path without it.
"""


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document as a dict (a new one each call: callers may change it)."""
    return orjson.loads(render())  # type: ignore[no-any-return]


@functools.cache
def render() -> bytes:
    """The document as JSON bytes, built once per process from the app's routes."""
    components: Schema = {"schemas": {}, "parameters": {}, "headers": HEADERS}
    responses = {name: _error(e, components) for name, e in SHARED_ERRORS.items()}
    responses["DatabaseUnavailable"]["headers"] = _headers(["Retry-After"])
    responses["StreamUnavailable"]["headers"] = _headers(["Retry-After"])
    responses["Unauthorized"]["headers"] = _headers(["WWW-Authenticate"])
    components["responses"] = responses
    return orjson.dumps(
        {
            "openapi": "3.1.0",
            "info": {"title": "messenger", "version": __version__, "description": DESCRIPTION},
            "tags": [
                {"name": "conversations"},
                {"name": "messages"},
                {"name": "events", "description": "Live delivery: server-sent events."},
                _OPERATIONS_TAG,
            ],
            "paths": _paths([*routes.ROUTES, ROUTE], components),
            "components": components,
        }
    )


@operation(
    "openapi",
    "operations",
    Answer(200, "The OpenAPI 3.1 document.", dict[str, Any]),
    database=False,
)
async def serve(request: Request) -> Response:
    """This document"""
    return Response(render(), media_type="application/json")


# Not in routes.ROUTES, which this module reads: the app adds it (app.ROUTES).
ROUTE = Route("/openapi.json", serve, methods=["GET"], name="openapi")
