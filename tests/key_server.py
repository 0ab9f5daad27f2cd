"""Signing keys, tokens made with them, and a real key-set server on a loopback port.

The server is what an OpenID provider's `jwks_uri` is: `GET /jwks` answers the public JSON Web
Key Set. It counts the fetches, and can be taken down (connections refused) and brought back,
or made to answer an error, so tests watch the service's cache from the outside.
"""

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tests.processes import free_port

ISSUER = "https://id.messenger.test"
AUDIENCE = "https://messenger.test"


@dataclass
class SigningKey:
    """A private key with its id and algorithm, as a provider holds one."""

    algorithm: str
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    private: Any = None

    def __post_init__(self) -> None:
        if self.private is None:
            self.private = new_private_key(self.algorithm)

    @property
    def public_jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        codec = {"RS": RSAAlgorithm, "PS": RSAAlgorithm, "ES": ECAlgorithm}.get(
            self.algorithm[:2], OKPAlgorithm
        )
        jwk: dict[str, Any] = codec.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def token(
        self, user: int | str = 1, /, *, headers: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        """A token for `user` valid for five minutes; `claims` override or add (None: drop)."""
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": str(user),
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        payload = {name: value for name, value in payload.items() if value is not None}
        return jwt.encode(
            payload,
            self.private,
            algorithm=self.algorithm,
            headers={"kid": self.kid, **(headers or {})},
        )


def new_private_key(algorithm: str) -> Any:
    if algorithm.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(algorithm)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class KeySetServer:
    """`GET /jwks` on 127.0.0.1:<free port>; `keys` is what it publishes."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.status = 200  # another status: answered with it and no key set
        self.delay = 0.0  # seconds before answering
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/jwks"
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def document(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk for key in self.keys]}

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.fetches += 1
                if owner.delay:
                    time.sleep(owner.delay)
                if self.path != "/jwks":
                    self.send_error(404)
                    return
                body = json.dumps(owner.document()).encode()
                if owner.status != 200:
                    body = b'{"error": "unavailable"}'
                with contextlib.suppress(ConnectionError):  # a client that gave up waiting
                    self.send_response(owner.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Down: the port refuses connections until `start()`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextlib.contextmanager
def key_set_server(*keys: SigningKey) -> Iterator[KeySetServer]:
    server = KeySetServer(*keys)
    server.start()
    try:
        yield server
    finally:
        server.stop()
