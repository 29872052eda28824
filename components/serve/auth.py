"""Who may call the predictor: a static bearer token and/or JWTs checked against a JWKS.

In a cluster, Istio's RequestAuthentication/AuthorizationPolicy reject
unauthenticated calls before they reach the pod; the predictor checks again so
that the same guarantee holds locally, in a port-forward, or when the mesh is
misconfigured. Secrets only ever come from the environment or a mounted file,
never from a command-line argument (which `ps` shows to every user).
"""

from __future__ import annotations

import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

from keel.components._common.errors import ConfigError


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    reason: str = ""
    subject: str = ""


class Authenticator:
    """Checks an `Authorization: Bearer ...` header.

    Args:
        token: the static token (compared in constant time), or None.
        jwks: a JWKS document (dict) whose keys may sign JWTs, or None.
        issuer: required `iss` claim for JWTs, or None.
        audience: required `aud` claim for JWTs, or None.
    """

    def __init__(self, token: str | None = None, jwks: dict | None = None, issuer: str | None = None, audience: str | None = None):
        self._token = token.encode() if token else None
        self._issuer, self._audience = issuer, audience
        self._keys = {}
        if jwks is not None:
            import jwt

            try:
                keyset = jwt.PyJWKSet.from_dict(jwks)
            except jwt.exceptions.PyJWTError as err:
                raise ConfigError(f"KEEL_SERVE_JWKS_FILE: not a usable JWKS ({err})") from None
            self._keys = {key.key_id: key for key in keyset.keys}

    @property
    def enabled(self) -> bool:
        return self._token is not None or bool(self._keys)

    def check(self, authorization: str | None) -> AuthResult:
        if not self.enabled:
            return AuthResult(True)
        if not authorization:
            return AuthResult(False, "missing Authorization header; send 'Authorization: Bearer <token>'")
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return AuthResult(False, "Authorization must be 'Bearer <token>'")
        credential = credential.strip()
        if self._token is not None and hmac.compare_digest(credential.encode(), self._token):
            return AuthResult(True, subject="token")
        if self._keys and credential.count(".") == 2:
            return self._check_jwt(credential)
        return AuthResult(False, "invalid token")

    def _check_jwt(self, credential: str) -> AuthResult:
        import jwt

        try:
            header = jwt.get_unverified_header(credential)
            key = self._keys.get(header.get("kid")) if header.get("kid") else (next(iter(self._keys.values())) if len(self._keys) == 1 else None)
            if key is None:
                return AuthResult(False, "invalid token: unknown signing key")
            claims = jwt.decode(
                credential,
                key.key,
                algorithms=[key.algorithm_name] if getattr(key, "algorithm_name", None) else ["RS256", "ES256"],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp"], "verify_aud": self._audience is not None},
            )
        except jwt.exceptions.PyJWTError as err:
            return AuthResult(False, f"invalid token: {err}")
        return AuthResult(True, subject=str(claims.get("sub", "")))


def authenticator_from_env(environ=os.environ) -> Authenticator:
    """KEEL_SERVE_TOKEN or KEEL_SERVE_TOKEN_FILE; KEEL_SERVE_JWKS_FILE (+ _JWT_ISSUER, _JWT_AUDIENCE)."""
    token = environ.get("KEEL_SERVE_TOKEN") or None
    token_file = environ.get("KEEL_SERVE_TOKEN_FILE")
    if token and token_file:
        raise ConfigError("KEEL_SERVE_TOKEN and KEEL_SERVE_TOKEN_FILE are both set; keep one")
    if token_file:
        token = _read(token_file, "KEEL_SERVE_TOKEN_FILE").strip()
        if not token:
            raise ConfigError(f"KEEL_SERVE_TOKEN_FILE: {token_file} is empty")
    if token is not None and len(token) < 16:
        raise ConfigError("KEEL_SERVE_TOKEN: shorter than 16 characters; use a random token (e.g. `openssl rand -hex 32`)")
    jwks = None
    jwks_file = environ.get("KEEL_SERVE_JWKS_FILE")
    if jwks_file:
        try:
            jwks = json.loads(_read(jwks_file, "KEEL_SERVE_JWKS_FILE"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"KEEL_SERVE_JWKS_FILE: {jwks_file} is not JSON ({err})") from None
    elif environ.get("KEEL_SERVE_JWT_ISSUER") or environ.get("KEEL_SERVE_JWT_AUDIENCE"):
        raise ConfigError("KEEL_SERVE_JWT_ISSUER/AUDIENCE need KEEL_SERVE_JWKS_FILE (the keys that sign the JWTs)")
    return Authenticator(token, jwks, environ.get("KEEL_SERVE_JWT_ISSUER") or None, environ.get("KEEL_SERVE_JWT_AUDIENCE") or None)


def _read(path: str, variable: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"{variable}: cannot read {path} ({err.strerror})") from None
