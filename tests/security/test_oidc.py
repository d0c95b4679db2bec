"""OIDC bearer tokens: issuer, audience, expiry and algorithms pinned by settings; JWKS fetched and cached."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tasklift.security.oidc import OidcConfig
from tasklift.settings import Settings
from tests.security.conftest import submit
from tests.support.oidc import AUDIENCE, Issuer


def _hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


@pytest.fixture
def oidc(configure: Callable[..., None], issuer: Issuer) -> Issuer:
    """The API accepts tokens of ``issuer`` (found by OpenID discovery); role ``tasklift.admin`` is admin."""
    configure(oidc_issuer=issuer.url, oidc_audience=AUDIENCE, oidc_admin_role="tasklift.admin")
    return issuer


def test_a_valid_token_authenticates_as_oidc_sub(oidc: Issuer, client_for: Callable[..., httpx.Client], db) -> None:
    http = client_for(oidc.token(sub="alice@example"))
    task = submit(http)
    with db.connect() as conn:
        owner = conn.exec_driver_sql("SELECT owner FROM tasks WHERE id = %s", (task["task_id"],)).scalar()
    assert owner == "oidc:alice@example"
    assert http.get(f"/tasks/{task['task_id']}").status_code == 200


def test_signing_keys_are_fetched_once_and_cached(oidc: Issuer, client_for: Callable[..., httpx.Client]) -> None:
    for n in range(5):
        assert client_for(oidc.token(sub=f"user-{n}")).get("/tasks").status_code == 200
    assert oidc.hits == {"/.well-known/openid-configuration": 1, "/keys": 1}


@pytest.mark.parametrize(
    ("case", "claims"),
    [
        ("expired", {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}),
        ("wrong audience", {"aud": "api://someone-else"}),
        ("wrong issuer", {"iss": "https://evil.example"}),
        ("no subject", {"sub": None}),
        ("no expiry", {"exp": None}),
    ],
)
def test_tokens_failing_a_pinned_claim_are_401(
    oidc: Issuer, client_for: Callable[..., httpx.Client], case: str, claims: dict[str, Any]
) -> None:
    token = oidc.token(**claims) if "sub" not in claims else oidc.token(sub=claims.pop("sub") or "", **claims)
    resp = client_for(token).get("/tasks")
    assert resp.status_code == 401, case
    assert resp.headers["www-authenticate"] == 'Bearer realm="tasklift", error="invalid_token"'


def test_unsigned_symmetric_and_foreign_tokens_are_401(oidc: Issuer, client_for: Callable[..., httpx.Client]) -> None:
    now = int(time.time())
    claims = {"iss": oidc.url, "aud": AUDIENCE, "sub": "mallory", "exp": now + 300}
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    # HS256 keyed with the issuer's *public* key: the classic algorithm-confusion forgery (built by
    # hand, since PyJWT itself refuses to sign with an asymmetric key as an HMAC secret).
    public_pem = oidc.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    confused = _hs256({"alg": "HS256", "typ": "JWT", "kid": oidc.kid}, claims, public_pem)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = jwt.encode(claims, other_key, "RS256", {"kid": oidc.kid})
    for token in (unsigned, confused, stranger):
        assert client_for(token).get("/tasks").status_code == 401


def test_the_configured_role_claim_makes_an_admin(oidc: Issuer, alice: httpx.Client, client_for) -> None:
    task = submit(alice)
    user = client_for(oidc.token(sub="carol", roles=["reader"]))
    admin = client_for(oidc.token(sub="ops", roles=["tasklift.admin"]))
    assert user.get(f"/tasks/{task['task_id']}").status_code == 404
    assert admin.get(f"/tasks/{task['task_id']}").status_code == 200


@pytest.fixture
def unreachable_issuer(configure: Callable[..., None]) -> None:
    """An issuer nobody answers for, configured before the API starts (its runtime makes the verifier)."""
    configure(oidc_issuer="http://127.0.0.1:9", oidc_audience=AUDIENCE, oidc_jwks_url="http://127.0.0.1:9/keys")


def test_an_unreachable_issuer_is_503_not_401(unreachable_issuer: None, client_for) -> None:
    token = jwt.encode({"sub": "x"}, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")
    resp = client_for(token).get("/tasks")
    assert resp.status_code == 503 and resp.headers["retry-after"]


@pytest.mark.parametrize("algorithms", [["HS256"], ["none"], ["RS256", "HS512"], []])
def test_settings_refuse_symmetric_or_no_algorithms(algorithms: list[str]) -> None:
    settings = Settings(oidc_issuer="https://login.example", oidc_audience=AUDIENCE, oidc_algorithms=algorithms)
    with pytest.raises(ValueError, match="asymmetric"):
        OidcConfig.from_settings(settings)
