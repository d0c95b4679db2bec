"""A tiny OpenID provider for tests: discovery document and JWKS over real HTTP, RS256 tokens.

Used by tests/security/test_oidc.py and by tests/infra/test_sam_build.py (the Lambda layer's OIDC path).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.support import http_server
from tests.support.http_server import QuietHandler

AUDIENCE = "api://tasklift-tests"


@dataclass
class Issuer:
    """A tiny OpenID provider: discovery document and JWKS over HTTP, tokens signed with its RSA key."""

    url: str
    key: rsa.RSAPrivateKey
    kid: str = "test-key-1"
    hits: dict[str, int] = field(default_factory=dict)

    def token(self, sub: str = "user-1", **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.url, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid})


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    state: dict[str, Issuer] = {}

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            iss = state["issuer"]
            iss.hits[self.path] = iss.hits.get(self.path, 0) + 1
            if self.path == "/.well-known/openid-configuration":
                body = {"issuer": iss.url, "jwks_uri": f"{iss.url}/keys"}
            elif self.path == "/keys":
                body = {"keys": [{**jwk, "kid": iss.kid, "use": "sig", "alg": "RS256"}]}
            else:
                self.send_error(404)
                return
            self.reply(json.dumps(body).encode(), "application/json")

    server = http_server.start(Handler)
    state["issuer"] = Issuer(f"http://127.0.0.1:{server.server_address[1]}", key)
    yield state["issuer"]
    http_server.stop(server)
