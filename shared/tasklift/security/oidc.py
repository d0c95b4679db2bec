"""OIDC bearer tokens (JWTs from an identity provider such as Microsoft Entra ID).

The issuer, audience, accepted algorithms and clock leeway are pinned by settings; a token must
carry ``exp``, ``iss``, ``aud`` and ``sub``. Signing keys come from the issuer's JWKS through
:class:`jwt.PyJWKClient`, cached for ``oidc_jwks_cache_seconds`` (a token signed with an unknown
``kid`` makes it fetch the set again, which is how the provider's key rollover reaches us).
Only asymmetric algorithms are accepted: with an HMAC algorithm anyone holding the public JWKS
could forge tokens.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from tasklift.security.identity import Identity
from tasklift.settings import Settings

ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES256K", "ES384", "ES512", "EdDSA"}
)


class InvalidToken(Exception):
    """The bearer token is not one tasklift accepts (the reason is for logs, not for the client)."""


class IssuerUnavailable(Exception):
    """The issuer's signing keys could not be fetched: a token cannot be checked right now."""


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    audience: str
    jwks_url: str | None
    algorithms: tuple[str, ...]
    roles_claim: str
    admin_role: str | None
    leeway: int
    cache_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcConfig | None:
        """The configuration, or None when OIDC is off (issuer or audience unset)."""
        if not settings.oidc_issuer or not settings.oidc_audience:
            return None
        unsafe = set(settings.oidc_algorithms) - ASYMMETRIC
        if unsafe or not settings.oidc_algorithms:
            raise ValueError(f"TASKLIFT_OIDC_ALGORITHMS must list asymmetric algorithms only, not {sorted(unsafe)}")
        return cls(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks_url=settings.oidc_jwks_url,
            algorithms=tuple(settings.oidc_algorithms),
            roles_claim=settings.oidc_roles_claim,
            admin_role=settings.oidc_admin_role,
            leeway=settings.oidc_leeway_seconds,
            cache_seconds=settings.oidc_jwks_cache_seconds,
        )


class OidcVerifier:
    """Checks bearer JWTs against one issuer; thread-safe, one per API runtime."""

    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self._jwks: jwt.PyJWKClient | None = None
        self._lock = threading.Lock()

    def _client(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._jwks is None:
                url = self.config.jwks_url or _discover_jwks_url(self.config.issuer)
                self._jwks = jwt.PyJWKClient(
                    url, cache_keys=True, lifespan=max(1, self.config.cache_seconds), timeout=5
                )
            return self._jwks

    def verify(self, token: str) -> Identity:
        """The identity a valid token proves.

        Raises:
            InvalidToken: bad signature, wrong issuer/audience/algorithm, expired, or claims missing.
            IssuerUnavailable: the JWKS could not be fetched.
        """
        config = self.config
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in config.algorithms:
                raise InvalidToken(f"algorithm {header.get('alg')!r} is not accepted")
            key = self._client().get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=list(config.algorithms),
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise IssuerUnavailable(str(exc)) from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"{type(exc).__name__}: {exc}") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("sub must be a non-empty string")
        return Identity(f"oidc:{subject}", admin=self._is_admin(claims), method="oidc")

    def _is_admin(self, claims: dict[str, Any]) -> bool:
        if not self.config.admin_role:
            return False
        roles = claims.get(self.config.roles_claim) or []
        if isinstance(roles, str):  # some providers send a space-separated string (like "scp")
            roles = roles.split()
        return isinstance(roles, list) and self.config.admin_role in roles


def _discover_jwks_url(issuer: str) -> str:
    """``jwks_uri`` from the issuer's OpenID Provider Configuration (OIDC Discovery 1.0 §4)."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = httpx.get(url, timeout=5)
        response.raise_for_status()
        jwks_uri = response.json()["jwks_uri"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise IssuerUnavailable(f"OpenID discovery at {url} failed: {exc}") from None
    if not isinstance(jwks_uri, str):
        raise IssuerUnavailable(f"OpenID discovery at {url} has no jwks_uri")
    return jwks_uri


def verifier_for(settings: Settings) -> OidcVerifier | None:
    """A verifier for the configured issuer (None when OIDC is off); the API runtime makes one per
    process (tasklift.http.runtime), which caches the issuer's signing keys."""
    config = OidcConfig.from_settings(settings)
    return None if config is None else OidcVerifier(config)
