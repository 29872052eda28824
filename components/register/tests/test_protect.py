"""Signed and encrypted bundles, and S3 server-side encryption (keel.components._common.protect).

Keys come from the environment (monkeypatch.setenv), as in a pod. The tamper
tests change the stored bytes behind Keel's back, the way someone with write
access to the store would.
"""

import base64
import hashlib
import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import urllib3
from keel.components._common import protect, storage
from keel.components._common.config import RegistrySection
from keel.components._common.errors import ConfigError, DataError, StorageError
from keel.components._common.protect import ENCRYPTED_MAGIC, Protection
from keel.components._common.registry.bundle import load_bundle, load_bundle_dir
from keel.components.register.register import register
from keel.components._common.registry.registry import (
    MANIFEST,
    SIGNATURE,
    Registry,
    bundle_hash,
    export_version,
)

KEY_VARS = ("KEEL_BUNDLE_KEY", "KEEL_BUNDLE_KEY_FILE", "KEEL_SIGNING_KEY", "KEEL_SIGNING_KEY_FILE", "KEEL_VERIFY_KEY",
            "KEEL_VERIFY_KEY_FILE", "KEEL_REQUIRE_SIGNED", "KEEL_S3_SSE", "KEEL_S3_SSE_KMS_KEY_ID")
SCHEMA = b'{"version": 1, "target": "grade", "columns": {"annual_income": {"type": "float"}}}'


@pytest.fixture(autouse=True)
def no_keys(monkeypatch):
    """Every test starts with no key configured, whatever the shell exported."""
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def keys() -> dict:
    """Two independent sets of keys, as `keygen` makes them."""
    return {"a": protect.generate_keys(), "b": protect.generate_keys()}


def files(tag: str) -> dict[str, bytes]:
    return {"model.joblib": f"model-{tag}".encode(), "schema.json": SCHEMA, "metrics.json": f'{{"tag": "{tag}"}}'.encode()}


def use(monkeypatch, keyset: dict, *, bundle=False, sign=False, verify=False):
    if bundle:
        monkeypatch.setenv("KEEL_BUNDLE_KEY", keyset["bundle"])
    if sign:
        monkeypatch.setenv("KEEL_SIGNING_KEY", keyset["signing"])
    if verify:
        monkeypatch.setenv("KEEL_VERIFY_KEY", keyset["verify"])


def rewrite_manifest(version_dir: Path, **changes) -> None:
    """Edits MANIFEST.json and recomputes every hash and the bundle hash: a careful tamperer."""
    manifest = json.loads((version_dir / MANIFEST).read_text())
    for name, entry in manifest["files"].items():
        data = (version_dir / name).read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    manifest["bundle_hash"] = bundle_hash(manifest["files"])
    manifest.update(changes)
    (version_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


# -- signatures -------------------------------------------------------------------------------------


def test_signed_bundle_round_trip(tmp_path, monkeypatch, keys):
    use(monkeypatch, keys["a"], sign=True, verify=True)
    reg = Registry(str(tmp_path))
    assert reg.publish("m", files("a")) == 1
    where = Path(reg.uri("m", 1))
    assert sorted(p.name for p in where.iterdir()) == sorted([*files("a"), MANIFEST, SIGNATURE])
    record = json.loads((where / SIGNATURE).read_text())
    assert record["algorithm"] == "Ed25519" and record["key_id"] == keys["a"]["signing_key_id"]
    # The signature is over the exact manifest bytes.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(base64.b64decode(keys["a"]["verify"])).verify(
        base64.b64decode(record["signature"]), (where / MANIFEST).read_bytes())
    manifest, read = reg.read_verified("m", 1)
    assert read == files("a") and SIGNATURE not in manifest["files"]
    assert reg.read_file("m", 1, "schema.json") == SCHEMA
    assert reg.verify("m", 1)["bundle_hash"] == manifest["bundle_hash"]


def test_file_modified_after_publishing_is_refused_by_name(tmp_path, monkeypatch, keys):
    use(monkeypatch, keys["a"], sign=True, verify=True)
    reg = Registry(str(tmp_path))
    reg.publish("m", files("a"))
    (Path(reg.uri("m", 1)) / "model.joblib").write_bytes(b"evil")
    with pytest.raises(DataError, match=r"v1/model.joblib: sha256 .* does not match MANIFEST.json"):
        reg.read_verified("m", 1)


def test_manifest_edited_with_recomputed_hashes_is_refused_by_the_signature(tmp_path, monkeypatch, keys):
    use(monkeypatch, keys["a"], sign=True, verify=True)
    reg = Registry(str(tmp_path))
    reg.publish("m", files("a"))
    where = Path(reg.uri("m", 1))
    (where / "model.joblib").write_bytes(b"evil")
    rewrite_manifest(where)
    key_id = keys["a"]["signing_key_id"]
    for read in (lambda: reg.read_verified("m", 1), lambda: reg.verify("m", 1),
                 lambda: reg.read_file("m", 1, "schema.json"), lambda: load_bundle_dir(where)):
        with pytest.raises(DataError, match=rf"v1/MANIFEST.json: does not match its signature by key id {key_id}; "
                                            "the manifest was edited after signing"):
            read()
    # What the signature adds: the hash manifest alone is fooled by this edit.
    monkeypatch.delenv("KEEL_VERIFY_KEY")
    assert reg.read_file("m", 1, "model.joblib") == b"evil"


def test_bundle_signed_by_another_key_is_refused_with_both_key_ids(tmp_path, monkeypatch, keys):
    use(monkeypatch, keys["b"], sign=True)
    use(monkeypatch, keys["a"], verify=True)
    reg = Registry(str(tmp_path))
    reg.publish("m", files("a"))
    with pytest.raises(DataError, match=rf"v1: is signed by key id {keys['b']['signing_key_id']}, but the verify key "
                                        rf"is key id {keys['a']['signing_key_id']}"):
        reg.read_verified("m", 1)


def test_unsigned_bundle_is_refused_when_signatures_are_required(tmp_path, monkeypatch, keys):
    reg = Registry(str(tmp_path))
    reg.publish("m", files("a"))  # no signing key: no MANIFEST.sig
    assert not (Path(reg.uri("m", 1)) / SIGNATURE).exists()
    assert reg.read_verified("m", 1)[1] == files("a")  # no key configured: as before
    monkeypatch.setenv("KEEL_REQUIRE_SIGNED", "1")
    with pytest.raises(ConfigError, match="KEEL_REQUIRE_SIGNED is set but no verify key is configured; set KEEL_VERIFY_KEY"):
        load_bundle(str(tmp_path), "m", 1)
    use(monkeypatch, keys["a"], verify=True)
    with pytest.raises(DataError, match=rf"v1: is not signed \(no MANIFEST.sig\) but KEEL_VERIFY_KEY "
                                        rf"\(key id {keys['a']['signing_key_id']}\) requires a signature"):
        reg.read_verified("m", 1)
    # A verify key alone requires signatures too: a deleted MANIFEST.sig is no way around it.
    monkeypatch.delenv("KEEL_REQUIRE_SIGNED")
    with pytest.raises(DataError, match="is not signed"):
        reg.read_file("m", 1, "schema.json")


@pytest.mark.parametrize("content, match", [
    (b"not json", "MANIFEST.sig: is malformed"),
    (b'{"algorithm": "Ed25519", "key_id": "<script>", "signature": "AAAA"}', "MANIFEST.sig: its key id is malformed"),
])
def test_malformed_signature_file_is_refused(tmp_path, monkeypatch, keys, content, match):
    use(monkeypatch, keys["a"], sign=True, verify=True)
    reg = Registry(str(tmp_path))
    reg.publish("m", files("a"))
    (Path(reg.uri("m", 1)) / SIGNATURE).write_bytes(content)
    with pytest.raises(DataError, match=match) as err:
        reg.read_verified("m", 1)
    assert "<script>" not in str(err.value)


def test_signature_file_is_reserved_and_never_listed(tmp_path, monkeypatch, keys):
    reg = Registry(str(tmp_path))
    with pytest.raises(StorageError, match="file name 'MANIFEST.sig' is not allowed"):
        reg.publish("m", {**files("a"), SIGNATURE: b"{}"})
    use(monkeypatch, keys["a"], sign=True)
    reg.publish("m", files("a"))
    assert SIGNATURE not in reg.verify("m", 1)["files"]  # and verify does not call it unlisted


# -- encryption -------------------------------------------------------------------------------------


def test_encrypted_bundle_stores_no_plaintext_and_hashes_what_is_stored(tmp_path, monkeypatch, keys):
    use(monkeypatch, keys["a"], bundle=True)
    reg = Registry(str(tmp_path))
    reg.publish("m", files("a"))
    where = Path(reg.uri("m", 1))
    manifest = json.loads((where / MANIFEST).read_text())
    assert manifest["encryption"] == {"algorithm": "AES-256-GCM", "key_id": keys["a"]["bundle_key_id"]}
    for name, plain in files("a").items():
        stored = (where / name).read_bytes()
        assert stored.startswith(ENCRYPTED_MAGIC) and plain not in stored and b'"target"' not in stored
        assert manifest["files"][name]["sha256"] == hashlib.sha256(stored).hexdigest()
    # No secret in the manifest, only the key id.
    assert keys["a"]["bundle"] not in (where / MANIFEST).read_text()
    assert reg.read_verified("m", 1)[1] == files("a")
    # Integrity is checked on the stored bytes: verify needs no key.
    monkeypatch.delenv("KEEL_BUNDLE_KEY")
    assert reg.verify("m", 1)["bundle_hash"] == manifest["bundle_hash"]


def test_encrypted_bundle_without_a_key_is_refused(tmp_path, monkeypatch, keys):
    use(monkeypatch, keys["a"], bundle=True)
    reg = Registry(str(tmp_path))
    reg.publish("m", files("a"))
    monkeypatch.delenv("KEEL_BUNDLE_KEY")
    message = rf"v1: is encrypted with key id {keys['a']['bundle_key_id']}; set KEEL_BUNDLE_KEY or KEEL_BUNDLE_KEY_FILE"
    for read in (lambda: reg.read_verified("m", 1), lambda: reg.read_file("m", 1, "schema.json"),
                 lambda: load_bundle(str(tmp_path), "m")):
        with pytest.raises(ConfigError, match=message):
            read()


def test_wrong_bundle_key_is_refused_with_both_key_ids(tmp_path, monkeypatch, keys):
    use(monkeypatch, keys["a"], bundle=True)
    reg = Registry(str(tmp_path))
    reg.publish("m", files("a"))
    use(monkeypatch, keys["b"], bundle=True)
    with pytest.raises(ConfigError, match=rf"v1: is encrypted with key id {keys['a']['bundle_key_id']} but the "
                                          rf"configured key is {keys['b']['bundle_key_id']}"):
        reg.read_verified("m", 1)


def test_file_swapped_between_encrypted_versions_is_refused(tmp_path, monkeypatch, keys):
    use(monkeypatch, keys["a"], bundle=True)
    reg = Registry(str(tmp_path))
    reg.publish("m", files("a"))
    reg.publish("m", files("b"))
    v1, v2 = Path(reg.uri("m", 1)), Path(reg.uri("m", 2))
    (v2 / "model.joblib").write_bytes((v1 / "model.joblib").read_bytes())
    with pytest.raises(DataError, match=r"v2/model.joblib: sha256 .* does not match MANIFEST.json"):
        reg.read_verified("m", 2)
    # With the hashes recomputed (no signature to stop it), the cipher still refuses: the
    # ciphertext is bound to v1.
    rewrite_manifest(v2)
    assert reg.verify("m", 2)  # the hash check alone is fooled
    with pytest.raises(DataError, match=r"v2/model.joblib: fails AES-GCM authentication with key id "
                                        rf"{keys['a']['bundle_key_id']}; the file was modified, or moved"):
        reg.read_verified("m", 2)
    with pytest.raises(DataError, match="v2/model.joblib: fails AES-GCM authentication"):
        reg.read_file("m", 2, "model.joblib")


def test_file_renamed_within_an_encrypted_version_is_refused(tmp_path, monkeypatch, keys):
    use(monkeypatch, keys["a"], bundle=True)
    reg = Registry(str(tmp_path))
    reg.publish("m", files("a"))
    where = Path(reg.uri("m", 1))
    metrics, schema = (where / "metrics.json").read_bytes(), (where / "schema.json").read_bytes()
    (where / "metrics.json").write_bytes(schema)
    (where / "schema.json").write_bytes(metrics)
    rewrite_manifest(where)
    with pytest.raises(DataError, match="v1/metrics.json: fails AES-GCM authentication"):
        reg.read_verified("m", 1)


def test_encrypted_and_signed_model_round_trip_predicts_the_same(upstream, tmp_path, monkeypatch, keys):
    use(monkeypatch, keys["a"], bundle=True, sign=True, verify=True)
    registry = RegistrySection(store=str(tmp_path / "store"), model_name="loans-risk")
    registered = register(upstream.artifacts, {"registry": registry}, registry, target_task="binary")
    assert registered.manifest["encryption"]["key_id"] == keys["a"]["bundle_key_id"]
    bundle = load_bundle(str(tmp_path / "store"), "loans-risk")
    x = upstream.test.drop(columns="__label__")
    np.testing.assert_array_equal(bundle.model.predict_proba(x), upstream.pipeline.predict_proba(x))
    assert bundle.schema == json.loads(Path(upstream.artifacts["schema"].path).read_text())
    assert bundle.files["model_card.md"] == Path(upstream.artifacts["card_md"].path).read_bytes()
    stored_schema = (Path(registered.uri) / "schema.json").read_bytes()
    assert b'"target"' not in stored_schema and b"annual_income" not in stored_schema

    # A local copy of the version as stored (KServe's /mnt/models, a KFP output) loads with the key...
    export_version(registered.uri, tmp_path / "copy")
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == sorted(
        [*registered.manifest["files"], MANIFEST, SIGNATURE])
    copy = load_bundle_dir(tmp_path / "copy")
    np.testing.assert_array_equal(copy.model.predict(x), upstream.pipeline.predict(x))
    assert copy.bundle_hash == registered.manifest["bundle_hash"] and copy.version == 1
    # ...and not without it.
    monkeypatch.delenv("KEEL_BUNDLE_KEY")
    with pytest.raises(ConfigError, match=rf"copy: is encrypted with key id {keys['a']['bundle_key_id']}"):
        load_bundle_dir(tmp_path / "copy")


# -- S3 ---------------------------------------------------------------------------------------------


def test_s3_encrypted_and_signed_round_trip(upstream, s3_store, tmp_path, monkeypatch, keys):
    use(monkeypatch, keys["a"], bundle=True, sign=True, verify=True)
    order = []
    real = storage.write_bytes
    monkeypatch.setattr(storage, "write_bytes",
                        lambda uri, data, content_type="application/octet-stream":
                        order.append(uri) or real(uri, data, content_type))
    registry = RegistrySection(store=s3_store, model_name="loans-risk")
    registered = register(upstream.artifacts, {"registry": registry}, registry, target_task="binary")
    # The signature goes up before the manifest, whose appearance publishes the version (the stage
    # log's claim and event follow, outside the version's prefix).
    order = [uri.rsplit("/", 1)[-1] for uri in order if "/loans-risk/v1/" in uri]
    assert order.index(SIGNATURE) < order.index(MANIFEST) == len(order) - 1
    bundle = load_bundle(s3_store, "loans-risk", 1)
    x = upstream.test.drop(columns="__label__")
    np.testing.assert_array_equal(bundle.model.predict_proba(x), upstream.pipeline.predict_proba(x))
    assert b'"target"' not in storage.read_bytes(f"{registered.uri}/schema.json")
    # What KServe's storage initializer does: download the prefix, then load the directory.
    storage.download_dir(registered.uri, tmp_path / "mnt-models")
    assert load_bundle_dir(tmp_path / "mnt-models").bundle_hash == registered.manifest["bundle_hash"]
    use(monkeypatch, keys["b"], bundle=True)
    with pytest.raises(ConfigError, match=rf"is encrypted with key id {keys['a']['bundle_key_id']} but the configured "
                                          rf"key is {keys['b']['bundle_key_id']}"):
        load_bundle(s3_store, "loans-risk", 1)


@pytest.fixture
def sent(monkeypatch):
    """(method, url, headers) of every HTTP request the S3 client sends: a spy on the real transport."""
    requests = []
    real = urllib3.PoolManager.urlopen

    def urlopen(self, method, url, *args, **kwargs):
        requests.append((method, url, {k.lower(): v for k, v in (kwargs.get("headers") or {}).items()}))
        return real(self, method, url, *args, **kwargs)

    monkeypatch.setattr(urllib3.PoolManager, "urlopen", urlopen)
    return requests


def _writes(requests, key_part: str) -> list[tuple[str, str, dict]]:
    """The requests that create content under a key: PUT (object, copy) and POST ?uploads."""
    return [(m, u, h) for m, u, h in requests
            if key_part in u and (m == "PUT" and "partNumber=" not in u or m == "POST" and u.endswith("?uploads="))]


def test_s3_sse_header_is_sent_with_every_put(s3_store, sent, monkeypatch, tmp_path):
    monkeypatch.setenv("KEEL_S3_SSE", "AES256")
    storage.write_bytes(f"{s3_store}/sse/small.bin", b"hello keel")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(6 * (1 << 20)))
    storage.upload_file(big, f"{s3_store}/sse/big.bin", part_size=5 * (1 << 20))
    small, multipart = _writes(sent, "small.bin"), _writes(sent, "big.bin")
    # The staged PUT and the copy that publishes it; the multipart upload's creation.
    assert [m for m, _, _ in small] == ["PUT", "PUT"] and "x-amz-copy-source" in small[1][2]
    assert [m for m, _, _ in multipart] == ["POST"]
    for _, url, headers in small + multipart:
        assert headers.get("x-amz-server-side-encryption") == "AES256", url
    assert storage.read_bytes(f"{s3_store}/sse/small.bin") == b"hello keel"
    assert storage.read_bytes(f"{s3_store}/sse/big.bin") == big.read_bytes()

    sent.clear()
    monkeypatch.setenv("KEEL_S3_SSE", "aws:kms")
    monkeypatch.setenv("KEEL_S3_SSE_KMS_KEY_ID", "alias/keel-models")
    Registry(s3_store).publish("m", files("a"))
    puts = _writes(sent, "/registry/m/")
    assert {u.rsplit("/", 1)[-1] for _, u, _ in puts} >= {*files("a"), MANIFEST}
    for _, url, headers in puts:
        assert headers.get("x-amz-server-side-encryption") == "aws:kms", url
        assert headers.get("x-amz-server-side-encryption-aws-kms-key-id") == "alias/keel-models", url


def test_s3_sse_unknown_value_is_refused_before_any_upload(s3_store, sent, monkeypatch):
    monkeypatch.setenv("KEEL_S3_SSE", "aes256-gcm")
    with pytest.raises(ConfigError, match=r"KEEL_S3_SSE: 'aes256-gcm' is not supported; use one of AES256, aws:kms"):
        storage.write_bytes(f"{s3_store}/sse/x.bin", b"x")
    assert not [m for m, _, _ in sent if m in ("PUT", "POST")]
    monkeypatch.setenv("KEEL_S3_SSE", "AES256")
    monkeypatch.setenv("KEEL_S3_SSE_KMS_KEY_ID", "alias/k")
    with pytest.raises(ConfigError, match="KEEL_S3_SSE_KMS_KEY_ID: is set but KEEL_S3_SSE is AES256"):
        storage.write_bytes(f"{s3_store}/sse/x.bin", b"x")


def test_no_sse_header_without_the_setting(s3_store, sent):
    storage.write_bytes(f"{s3_store}/plain.bin", b"x")
    assert all("x-amz-server-side-encryption" not in h for _, _, h in _writes(sent, "plain.bin"))


# -- keys -------------------------------------------------------------------------------------------


def test_keygen_prints_keys_that_work(tmp_path, monkeypatch, capsys):
    assert protect.main(["keygen"]) == 0
    out = capsys.readouterr().out
    values = dict(line.split("=", 1) for line in out.splitlines() if line.startswith("KEEL_"))
    assert set(values) == {"KEEL_BUNDLE_KEY", "KEEL_SIGNING_KEY", "KEEL_VERIFY_KEY"}
    assert not list(tmp_path.iterdir())  # nothing written without --out
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    reg = Registry(str(tmp_path))
    reg.publish("m", files("a"))
    assert reg.read_verified("m", 1)[1] == files("a")
    ids = Protection.from_env()
    assert f"bundle key id {ids.bundle_key_id}, signing key id {ids.signing_key_id}" in out


def test_keygen_out_writes_private_files_that_load_as_key_files(tmp_path, monkeypatch, capsys):
    out = tmp_path / "keys"
    assert protect.main(["keygen", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    paths = {p.name: p for p in out.iterdir()}
    assert sorted(paths) == ["bundle.key", "signing.key", "verify.key"]
    for path in paths.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().strip() not in printed  # the secrets went to the files only
    for var, name in (("KEEL_BUNDLE_KEY_FILE", "bundle.key"), ("KEEL_SIGNING_KEY_FILE", "signing.key"),
                      ("KEEL_VERIFY_KEY_FILE", "verify.key")):
        monkeypatch.setenv(var, str(paths[name]))
    reg = Registry(str(tmp_path / "store"))
    reg.publish("m", files("a"))
    assert reg.read_verified("m", 1)[1] == files("a")
    assert (Path(reg.uri("m", 1)) / SIGNATURE).exists()
    # Never overwritten.
    assert protect.main(["keygen", "--out", str(out)]) == 2
    assert "already holds bundle.key" in capsys.readouterr().err


def test_pem_keys_are_accepted(tmp_path, monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    monkeypatch.setenv("KEEL_SIGNING_KEY", private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())
    (tmp_path / "verify.pem").write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    monkeypatch.setenv("KEEL_VERIFY_KEY_FILE", str(tmp_path / "verify.pem"))
    protection = Protection.from_env()
    assert protection.signing_key_id == protection.verify_key_id == protect.signing_key_id(private.public_key())
    reg = Registry(str(tmp_path / "store"))
    reg.publish("m", files("a"))
    assert reg.read_verified("m", 1)[1] == files("a")


def test_raw_32_byte_key_file_is_accepted(tmp_path, monkeypatch):
    (tmp_path / "bundle.key").write_bytes(os.urandom(32))
    monkeypatch.setenv("KEEL_BUNDLE_KEY_FILE", str(tmp_path / "bundle.key"))
    reg = Registry(str(tmp_path / "store"))
    reg.publish("m", files("a"))
    assert (Path(reg.uri("m", 1)) / "schema.json").read_bytes().startswith(ENCRYPTED_MAGIC)
    assert reg.read_verified("m", 1)[1] == files("a")


@pytest.mark.parametrize("env, match", [
    ({"KEEL_BUNDLE_KEY": "c2hvcnQ="}, "KEEL_BUNDLE_KEY: decodes to 5 bytes, not 32"),
    ({"KEEL_BUNDLE_KEY": "not base64 at all!"}, "KEEL_BUNDLE_KEY: is neither PEM nor base64 of 32 bytes"),
    # 32 hex characters are 16 bytes of key: never taken as 32 raw bytes from a variable.
    ({"KEEL_BUNDLE_KEY": "0123456789abcdef0123456789abcdef"}, "KEEL_BUNDLE_KEY: decodes to 24 bytes, not 32"),
    ({"KEEL_SIGNING_KEY": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"},
     "KEEL_SIGNING_KEY: is not an unencrypted PKCS8 PEM private key"),
    ({"KEEL_VERIFY_KEY_FILE": "/no/such/key"}, "KEEL_VERIFY_KEY_FILE: cannot read /no/such/key"),
    ({"KEEL_BUNDLE_KEY": "x", "KEEL_BUNDLE_KEY_FILE": "/x"}, "KEEL_BUNDLE_KEY and KEEL_BUNDLE_KEY_FILE are both set"),
    ({"KEEL_REQUIRE_SIGNED": "maybe"}, "KEEL_REQUIRE_SIGNED: 'maybe' is not a yes/no value"),
])
def test_bad_key_settings_name_the_variable_not_the_value(tmp_path, monkeypatch, env, match):
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=match) as err:
        Registry(str(tmp_path)).publish("m", files("a"))
    assert "AAAA" not in str(err.value) and "c2hvcnQ" not in str(err.value)
    assert not (tmp_path / "registry" / "m" / "v1").exists()


def test_key_objects_never_show_the_secret(monkeypatch, keys):
    use(monkeypatch, keys["a"], bundle=True, sign=True, verify=True)
    protection = Protection.from_env()
    text = repr(protection) + str(protection.bundle_key)
    assert keys["a"]["bundle_key_id"] in text and keys["a"]["signing_key_id"] in text
    for secret in (keys["a"]["bundle"], keys["a"]["signing"]):
        assert secret not in text and base64.b64decode(secret).hex() not in text


def test_bundle_key_id_is_not_a_plain_hash_of_the_key(keys):
    raw = base64.b64decode(keys["a"]["bundle"])
    assert keys["a"]["bundle_key_id"] != hashlib.sha256(raw).hexdigest()[:16]
    assert keys["a"]["bundle_key_id"] == hashlib.sha256(b"keel-bundle-key" + raw).hexdigest()[:16]


def test_export_version_copies_the_stored_bytes(tmp_path, monkeypatch, keys):
    use(monkeypatch, keys["a"], bundle=True)
    reg = Registry(str(tmp_path / "store"))
    reg.publish("m", files("a"))
    export_version(reg.uri("m", 1), tmp_path / "copy")
    for path in Path(reg.uri("m", 1)).iterdir():
        assert (tmp_path / "copy" / path.name).read_bytes() == path.read_bytes()
    with pytest.raises(StorageError, match="no MANIFEST.json"):
        export_version(str(tmp_path), tmp_path / "other")
    (Path(reg.uri("m", 1)) / "schema.json").write_bytes(io.BytesIO(b"evil").read())
    with pytest.raises(DataError, match="v1/schema.json: sha256"):
        export_version(reg.uri("m", 1), tmp_path / "third")
