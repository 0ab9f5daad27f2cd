"""A Consul agent double: a real HTTP server on a loopback port that checks requests like the agent.

It serves the agent endpoints the service uses and the KV endpoints the deploy scripts use:

    PUT  /v1/agent/service/register           validated as below; 200, empty body
    PUT  /v1/agent/service/deregister/<id>    200, or 404 `Unknown service ID "<id>". ...`
    GET  /v1/agent/services                   {id: service}
    GET  /v1/agent/service/<id>               the service, or 404
    GET  /v1/health/service/<name>            [{"Node", "Service", "Checks"}]; `?passing` filters
    GET  /v1/kv/<key>[?raw]                   the raw value, or Consul's JSON list; 404 if missing
    PUT  /v1/kv/<key>                         stores the body; answers `true`
    DELETE /v1/kv/<key>                       answers `true`

Registration bodies are checked the way the agent checks them (field names and types of its
service definition, a required `Name`, Go duration strings such as `15s` and `1m`, an address
that is not a wildcard, a check that says what to probe and how often) with 400 and a message
in the agent's words. It is stricter than the agent in two ways, on purpose: snake_case and
unknown field names are refused (the agent ignores unknown names, which hides typos such as
`interval`), and durations must be strings (the agent also takes nanoseconds as numbers).

Checks are not run: every registered check reports `passing` unless a test sets
`check_status[service_id]`. Every request is recorded in `calls` with a `time.monotonic()`
timestamp, so tests can order it against events they observe themselves.
"""

import base64
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# Go's time.ParseDuration grammar.
GO_DURATION = re.compile(r"[-+]?(?:0|(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)")
_UNIT_NANOSECONDS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_META_KEY = re.compile(r"[a-zA-Z0-9_-]+")
_WILDCARD_ADDRESSES = {"0.0.0.0", "::", "[::]"}


class Invalid(Exception):
    """A request the agent would refuse with 400 and this text."""


def go_duration_nanoseconds(field: str, value: object) -> int:
    """Parse a Go duration string as the agent does, or raise Invalid naming the field."""
    if not isinstance(value, str):
        raise Invalid(
            f"Request decode failed: {field}: expected a duration string such as"
            f' "15s", got {json.dumps(value)}'
        )
    if not GO_DURATION.fullmatch(value):
        raise Invalid(f'Request decode failed: time: invalid duration "{value}"')
    sign = -1 if value.startswith("-") else 1
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)", value):
        total += float(number) * _UNIT_NANOSECONDS[unit]
    return sign * int(total)


def _string(value: object) -> bool:
    return isinstance(value, str)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _boolean(value: object) -> bool:
    return isinstance(value, bool)


def _object(value: object) -> bool:
    return isinstance(value, dict)


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _string_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(item, str) for item in value.values())


def _header_map(value: object) -> bool:
    return isinstance(value, dict) and all(_strings(item) for item in value.values())


_DURATION = "duration"
FieldType = Callable[[object], bool] | str

# The agent's service definition (structs.ServiceDefinition) and check (structs.CheckType).
SERVICE_FIELDS: dict[str, FieldType] = {
    "ID": _string,
    "Name": _string,
    "Tags": _strings,
    "Address": _string,
    "TaggedAddresses": _object,
    "Meta": _string_map,
    "Port": _integer,
    "SocketPath": _string,
    "Kind": _string,
    "Proxy": _object,
    "Connect": _object,
    "Check": _object,
    "Checks": lambda value: isinstance(value, list),
    "EnableTagOverride": _boolean,
    "Weights": _object,
    "Namespace": _string,
    "Partition": _string,
    "Locality": _object,
}
CHECK_FIELDS: dict[str, FieldType] = {
    "CheckID": _string,
    "Name": _string,
    "Status": _string,
    "Notes": _string,
    "ScriptArgs": _strings,
    "Args": _strings,
    "HTTP": _string,
    "Header": _header_map,
    "Method": _string,
    "Body": _string,
    "DisableRedirects": _boolean,
    "TCP": _string,
    "UDP": _string,
    "GRPC": _string,
    "GRPCUseTLS": _boolean,
    "H2PING": _string,
    "H2PingUseTLS": _boolean,
    "OSService": _string,
    "AliasNode": _string,
    "AliasService": _string,
    "DockerContainerID": _string,
    "Shell": _string,
    "TLSServerName": _string,
    "TLSSkipVerify": _boolean,
    "Interval": _DURATION,
    "Timeout": _DURATION,
    "TTL": _DURATION,
    "DeregisterCriticalServiceAfter": _DURATION,
    "SuccessBeforePassing": _integer,
    "FailuresBeforeWarning": _integer,
    "FailuresBeforeCritical": _integer,
    "OutputMaxSize": _integer,
}
CHECK_STATUSES = {"passing", "warning", "critical", "maintenance"}


def _check_fields(where: str, body: dict[str, Any], fields: dict[str, FieldType]) -> None:
    for name, value in body.items():
        kind = fields.get(name)
        if kind is None:
            known = ", ".join(sorted(fields))
            raise Invalid(f'Request decode failed: {where}unknown field "{name}" (known: {known})')
        if kind == _DURATION:
            go_duration_nanoseconds(f"{where}{name}", value)
        elif callable(kind) and value is not None and not kind(value):
            raise Invalid(
                f"Request decode failed: {where}{name}: unexpected JSON type"
                f" {type(value).__name__} for value {json.dumps(value)[:80]}"
            )


def validate_check(check: object, where: str) -> None:
    if not isinstance(check, dict):
        raise Invalid(f"Request decode failed: {where}: a check must be a JSON object")
    _check_fields(f"{where}.", check, CHECK_FIELDS)
    durations = {
        name: go_duration_nanoseconds(name, check[name])
        for name in ("Interval", "Timeout", "TTL", "DeregisterCriticalServiceAfter")
        if name in check
    }
    probes = [
        name for name in ("HTTP", "TCP", "UDP", "GRPC", "H2PING", "OSService") if check.get(name)
    ]
    probes += ["Args"] if check.get("Args") or check.get("ScriptArgs") else []
    if probes and durations.get("Interval", 0) <= 0:
        raise Invalid(
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks"
        )
    if not probes and durations.get("TTL", 0) <= 0 and not check.get("AliasService"):
        raise Invalid(
            "Invalid check: Must provide TTL or Script/DockerContainerID/HTTP/TCP/UDP/GRPC/H2PING"
            " and Interval"
        )
    if "HTTP" in check:
        url = urlsplit(check["HTTP"])
        if url.scheme not in {"http", "https"} or not url.hostname:
            raise Invalid(f"Invalid check: HTTP must be an http(s) URL, got {check['HTTP']!r}")
    if "Status" in check and check["Status"] not in CHECK_STATUSES:
        raise Invalid(f"Invalid check: Status must be one of {sorted(CHECK_STATUSES)}")


def validate_service(body: object) -> dict[str, Any]:
    """The registration, checked as the agent checks it; raises Invalid otherwise."""
    if not isinstance(body, dict):
        raise Invalid("Request decode failed: the body must be a JSON object")
    _check_fields("", body, SERVICE_FIELDS)
    if not body.get("Name"):
        raise Invalid("Missing service name")
    if body.get("Address") in _WILDCARD_ADDRESSES:
        raise Invalid("Invalid service address")
    port = body.get("Port", 0)
    if not 0 <= port <= 65535:
        raise Invalid(f"Invalid service port: {port}")
    for key, value in (body.get("Meta") or {}).items():
        if not _META_KEY.fullmatch(key) or key.startswith("consul-") or len(key) > 128:
            raise Invalid(f"Invalid Service Meta: Key {key!r} is not a valid metadata key")
        if len(value) > 512:
            raise Invalid(f"Invalid Service Meta: Value for key {key!r} is too long")
    if "Check" in body and body["Check"] is not None:
        validate_check(body["Check"], "Check")
    for position, check in enumerate(body.get("Checks") or []):
        validate_check(check, f"Checks[{position}]")
    return body


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any  # the decoded JSON, or the text when it is not JSON, or None when empty
    time: float  # time.monotonic() when the request arrived
    status: int = 0


class ConsulDouble:
    """`with ConsulDouble(kv={...}) as consul:` serves on `consul.url` until the block ends."""

    def __init__(self, kv: dict[str, str] | None = None, port: int = 0) -> None:
        self.kv: dict[str, str] = dict(kv or {})
        self.services: dict[str, dict[str, Any]] = {}
        self.check_status: dict[str, str] = {}
        self.calls: list[Call] = []
        self.host = "127.0.0.1"
        self.port = port
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def agent_env(self, service_name: str = "messenger") -> dict[str, str]:
        """The variables that make a messenger process register with this double."""
        return {
            "CONSUL_SERVICE_NAME": service_name,
            "CONSUL_HOST": self.host,
            "CONSUL_PORT": str(self.port),
        }

    def start(self) -> "ConsulDouble":
        double = self

        class Handler(_AgentHandler):
            consul = double

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "ConsulDouble":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def calls_to(self, method: str, path_prefix: str) -> list[Call]:
        with self._changed:
            return [c for c in self.calls if c.method == method and c.path.startswith(path_prefix)]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Block until `condition()` holds after some request, or fail after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the Consul double did not see it; calls: {self.calls}")
                self._changed.wait(remaining)

    def wait_for_call(self, method: str, path_prefix: str, timeout: float = 10.0) -> Call:
        """The first successful request of this kind, waiting for it if need be."""

        def answered() -> list[Call]:
            return [c for c in self.calls_to(method, path_prefix) if 200 <= c.status < 300]

        self.wait_for(lambda: bool(answered()), timeout)
        return answered()[0]

    def _record(self, call: Call) -> None:
        with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    def _health_entry(self, service: dict[str, Any]) -> dict[str, Any]:
        service_id = service["ID"]
        status = self.check_status.get(service_id, "passing")
        checks = []
        for position, check in enumerate(_checks_of(service), start=1):
            suffix = "" if len(_checks_of(service)) == 1 else f":{position}"
            checks.append(
                {
                    "Node": "consul-double",
                    "CheckID": check.get("CheckID") or f"service:{service_id}{suffix}",
                    "Name": check.get("Name") or f"Service '{service['Service']}' check",
                    "Status": status,
                    "ServiceID": service_id,
                    "ServiceName": service["Service"],
                    "ServiceTags": service["Tags"],
                }
            )
        return {
            "Node": {"Node": "consul-double", "Address": self.host, "Datacenter": "dc1"},
            "Service": _public(service),
            "Checks": checks,
        }

    def handle(self, method: str, path: str, query: dict[str, str], raw: bytes) -> tuple[int, Any]:
        """Answer one request: (status, body); a str body is sent as text, others as JSON."""
        with self._changed:
            if path == "/v1/agent/service/register":
                if method != "PUT":
                    return 405, f"method {method} not allowed"
                try:
                    body = validate_service(json.loads(raw or b"null"))
                except json.JSONDecodeError as error:
                    return 400, f"Request decode failed: {error}"
                except Invalid as error:
                    return 400, str(error)
                service_id = body.get("ID") or body["Name"]
                self.services[service_id] = {
                    "ID": service_id,
                    "Service": body["Name"],
                    "Tags": body.get("Tags") or [],
                    "Meta": body.get("Meta") or {},
                    "Port": body.get("Port", 0),
                    "Address": body.get("Address", ""),
                    "Weights": body.get("Weights") or {"Passing": 1, "Warning": 1},
                    "EnableTagOverride": body.get("EnableTagOverride", False),
                    "Datacenter": "dc1",
                    "Definition": body,
                }
                return 200, ""
            if path.startswith("/v1/agent/service/deregister/"):
                if method != "PUT":
                    return 405, f"method {method} not allowed"
                service_id = unquote(path.removeprefix("/v1/agent/service/deregister/"))
                if self.services.pop(service_id, None) is None:
                    return 404, _unknown_service(service_id)
                return 200, ""
            if path == "/v1/agent/services" and method == "GET":
                return 200, {key: _public(value) for key, value in self.services.items()}
            if path.startswith("/v1/agent/service/") and method == "GET":
                service_id = unquote(path.removeprefix("/v1/agent/service/"))
                found = self.services.get(service_id)
                return (200, _public(found)) if found else (404, _unknown_service(service_id))
            if path.startswith("/v1/health/service/") and method == "GET":
                name = unquote(path.removeprefix("/v1/health/service/"))
                entries = [
                    self._health_entry(service)
                    for service in self.services.values()
                    if service["Service"] == name
                ]
                if "passing" in query:
                    entries = [
                        e for e in entries if all(c["Status"] == "passing" for c in e["Checks"])
                    ]
                return 200, entries
            if path.startswith("/v1/kv/"):
                return self._kv(method, unquote(path.removeprefix("/v1/kv/")), query, raw)
            return 404, "404 page not found"

    def _kv(self, method: str, key: str, query: dict[str, str], raw: bytes) -> tuple[int, Any]:
        if method == "GET":
            if key not in self.kv:
                return 404, ""
            value = self.kv[key]
            if "raw" in query:
                return 200, value
            encoded = base64.b64encode(value.encode()).decode()
            return 200, [
                {
                    "Key": key,
                    "Value": encoded,
                    "Flags": 0,
                    "LockIndex": 0,
                    "CreateIndex": 1,
                    "ModifyIndex": 1,
                }
            ]
        if method == "PUT":
            self.kv[key] = raw.decode()
            return 200, True
        if method == "DELETE":
            self.kv.pop(key, None)
            return 200, True
        return 405, f"method {method} not allowed"


def _checks_of(service: dict[str, Any]) -> list[dict[str, Any]]:
    definition = service.get("Definition") or {}
    checks = list(definition.get("Checks") or [])
    if definition.get("Check"):
        checks.insert(0, definition["Check"])
    return checks


def _public(service: dict[str, Any]) -> dict[str, Any]:
    """The service as the agent lists it (without the stored definition)."""
    return {key: value for key, value in service.items() if key != "Definition"}


def _unknown_service(service_id: str) -> str:
    return (
        f'Unknown service ID "{service_id}".'
        " Ensure that the service ID is passed, not the service name."
    )


class _AgentHandler(BaseHTTPRequestHandler):
    consul: ConsulDouble
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the calls list is the log

    def _serve(self) -> None:
        arrived = time.monotonic()
        url = urlsplit(self.path)
        query = {
            key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()
        }
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, body = self.consul.handle(self.command, url.path, query, raw)
        try:
            decoded: Any = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw.decode(errors="replace")
        self.consul._record(Call(self.command, url.path, query, decoded, arrived, status))
        if isinstance(body, str):
            payload, content_type = body.encode(), "text/plain; charset=utf-8"
        else:
            payload, content_type = json.dumps(body).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = _serve
