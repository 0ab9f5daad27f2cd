"""AUTH_MODE=jwt for the bench: a signing key, its key set served on a loopback port, and
bearer tokens for the bench's users, so the service verifies real tokens as in production.

`--auth jwt` runs the whole bench with them; `--auth-compare` runs the read and the send with
header mode and jwt mode by turns (two service processes, measured one at a time).
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ISSUER = "https://id.bench.invalid"
AUDIENCE = "https://messenger.bench.invalid"
KID = "bench-1"
TOKEN_SECONDS = 3600  # longer than any bench run: one token per user for the whole run


class Tokens:
    """An ES256 key, its JSON Web Key Set at http://127.0.0.1:<port>/jwks, and tokens."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        public: dict[str, Any] = ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        body = json.dumps({"keys": [{**public, "kid": KID, "alg": "ES256", "use": "sig"}]})
        self._body = body.encode()
        self._tokens: dict[int, str] = {}
        self._server: ThreadingHTTPServer | None = None
        self.fetches = 0

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(owner._body)))
                self.end_headers()
                self.wfile.write(owner._body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def env(self) -> dict[str, str]:
        """The service's settings for jwt mode with this key set."""
        assert self._server is not None, "start() first"
        return {
            "AUTH_MODE": "jwt",
            "AUTH_JWKS_URL": f"http://127.0.0.1:{self._server.server_address[1]}/jwks",
            "AUTH_ISSUER": ISSUER,
            "AUTH_AUDIENCE": AUDIENCE,
        }

    def authorization(self, user_id: int) -> str:
        """`Bearer <token>` for the user, the same token every time (as a client reuses one)."""
        token = self._tokens.get(user_id)
        if token is None:
            now = int(time.time())
            claims = {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": str(user_id),
                "iat": now,
                "exp": now + TOKEN_SECONDS,
            }
            token = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": KID})
            self._tokens[user_id] = token
        return f"Bearer {token}"
