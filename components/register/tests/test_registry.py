"""Registry: append-only versions on a local directory and on a real S3 server."""

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from keel.components._common import storage
from keel.components._common.errors import ConfigError, DataError, StorageError
from keel.components._common.registry import registry as registry_mod
from keel.components._common.registry.registry import MANIFEST, Registry, bundle_hash


def files(tag: str) -> dict[str, bytes]:
    return {"model.joblib": f"model-{tag}".encode(), "schema.json": b'{"version": 1}', "metrics.json": f'{{"tag": "{tag}"}}'.encode()}


# -- local ----------------------------------------------------------------------


def test_versions_increase_and_read_back(tmp_path):
    reg = Registry(str(tmp_path / "store"))
    assert reg.versions("churn") == [] and reg.latest("churn") is None
    assert reg.publish("churn", files("a")) == 1
    assert reg.publish("churn", files("b")) == 2
    assert reg.versions("churn") == [1, 2] and reg.latest("churn") == 2
    assert reg.read_file("churn", 1, "model.joblib") == b"model-a"
    assert reg.read_file("churn", 2, "model.joblib") == b"model-b"
    assert reg.uri("churn", 2) == str(tmp_path / "store" / "registry" / "churn" / "v2")
    # Another model name is its own sequence.
    assert reg.publish("fraud", files("c")) == 1


def test_manifest_records_every_file_and_a_recomputable_bundle_hash(tmp_path):
    reg = Registry(str(tmp_path))
    version = reg.publish("m", files("a"))
    manifest = reg.verify("m", version)
    assert manifest["version"] == 1 and manifest["model_name"] == "m"
    for name, data in files("a").items():
        assert manifest["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    # What `sha256sum * | sort -k2 | sha256sum` gives in the version directory (MANIFEST aside).
    lines = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in sorted(files("a").items()))
    assert manifest["bundle_hash"] == "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    assert bundle_hash(manifest["files"]) == manifest["bundle_hash"]
    on_disk = sorted(p.name for p in Path(reg.uri("m", 1)).iterdir())
    assert on_disk == sorted([*files("a"), MANIFEST])


def test_a_taken_version_is_never_overwritten(tmp_path, monkeypatch):
    """A publisher that saw a stale listing (a racer published meanwhile) takes the next number."""
    reg = Registry(str(tmp_path))
    reg.publish("m", files("first"))
    real = Registry._numbered
    calls = []

    def stale_once(self, name):
        calls.append(name)
        return [] if len(calls) == 1 else real(self, name)

    monkeypatch.setattr(Registry, "_numbered", stale_once)
    built_for = []
    assert reg.publish("m", lambda v: built_for.append(v) or {**files("second"), "v.txt": str(v).encode()}) == 2
    assert built_for == [1, 2]  # rebuilt for the version it really got
    assert reg.read_file("m", 1, "model.joblib") == b"model-first"
    assert reg.read_file("m", 2, "v.txt") == b"2"
    assert not [p for p in Path(reg.model_uri("m")).iterdir() if p.name.startswith(".staging")]


def test_racing_publishers_get_distinct_versions(tmp_path):
    reg = Registry(str(tmp_path))
    start = threading.Barrier(8)

    def publish(i):
        start.wait()
        return i, reg.publish("m", files(str(i)))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(publish, range(8)))
    assert sorted(v for _, v in results) == list(range(1, 9))
    for i, version in results:  # each publisher's files are in the version it was told
        assert reg.read_file("m", version, "model.joblib") == f"model-{i}".encode()
        reg.verify("m", version)


def test_failed_publish_leaves_nothing(tmp_path, monkeypatch):
    reg = Registry(str(tmp_path))
    real = registry_mod._write_synced
    written = []

    def failing(path, data):
        written.append(path.name)
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(registry_mod, "_write_synced", failing)
    with pytest.raises(StorageError, match=r"cannot publish v1 \(No space left on device\)"):
        reg.publish("m", files("a"))
    assert reg.versions("m") == []
    assert list(Path(reg.model_uri("m")).iterdir()) == []  # no v1, no staging directory

    monkeypatch.setattr(registry_mod, "_write_synced", real)

    def broken(version):
        raise RuntimeError("building the files failed")

    with pytest.raises(RuntimeError):
        reg.publish("m", broken)
    assert reg.publish("m", files("b")) == 1  # the failures used up nothing


def test_interrupted_publish_is_cleaned_up(tmp_path, monkeypatch):
    """Not only OSError: an interrupt after the files are staged still removes them."""
    reg = Registry(str(tmp_path))

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(registry_mod.os, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reg.publish("m", files("a"))
    assert list(Path(reg.model_uri("m")).iterdir()) == []


def test_a_version_without_manifest_does_not_exist(tmp_path):
    reg = Registry(str(tmp_path))
    reg.publish("m", files("a"))
    half = Path(reg.model_uri("m")) / "v2"
    half.mkdir()
    (half / "model.joblib").write_bytes(b"half written")
    assert reg.versions("m") == [1] and reg.latest("m") == 1
    with pytest.raises(StorageError, match=r"v2: no such version of model 'm' .*versions: v1"):
        reg.load_manifest("m", 2)
    # ...and its number is not reused: the next publish goes past it.
    assert reg.publish("m", files("b")) == 3


@pytest.mark.parametrize("tamper, error, match", [
    (lambda d: (d / "model.joblib").write_bytes(b"evil"), DataError, r"v1/model.joblib: sha256 .* does not match MANIFEST.json"),
    (lambda d: (d / "schema.json").unlink(), StorageError, r"v1/schema.json: listed in MANIFEST.json but missing"),
    (lambda d: (d / "extra.py").write_text("import os"), DataError, r"v1/extra.py: not listed in MANIFEST.json"),
    (lambda d: (d / MANIFEST).write_text(json.dumps({**json.loads((d / MANIFEST).read_text()), "bundle_hash": "sha256:0"})),
     DataError, r"MANIFEST.json: bundle_hash does not match"),
    (lambda d: (d / MANIFEST).write_text(json.dumps({**json.loads((d / MANIFEST).read_text()), "version": 7})),
     DataError, r"describes 'm' v7, not 'm' v1"),
    (lambda d: (d / MANIFEST).write_text("[]"), DataError, r"MANIFEST.json: is not a Keel manifest"),
])
def test_tampered_version_is_refused_naming_the_file(tmp_path, tamper, error, match):
    reg = Registry(str(tmp_path))
    reg.publish("m", files("a"))
    tamper(Path(reg.uri("m", 1)))
    with pytest.raises(error, match=match):
        reg.verify("m", 1)


def test_read_file_checks_the_hash(tmp_path):
    reg = Registry(str(tmp_path))
    reg.publish("m", files("a"))
    (Path(reg.uri("m", 1)) / "metrics.json").write_bytes(b'{"tag": "b"}')
    with pytest.raises(DataError, match="metrics.json: sha256"):
        reg.read_file("m", 1, "metrics.json")
    with pytest.raises(StorageError, match="has no file 'card.md'; files are: metrics.json, model.joblib, schema.json"):
        reg.read_file("m", 1, "card.md")


def test_bad_names_and_stores(tmp_path):
    reg = Registry(str(tmp_path))
    with pytest.raises(ConfigError, match="registry.model_name"):
        reg.publish("../escape", files("a"))
    with pytest.raises(ConfigError, match="registry.model_name"):
        reg.versions("Upper Case")
    for bad in ({MANIFEST: b"{}"}, {"a/b.txt": b""}, {".hidden": b""}):
        with pytest.raises(StorageError, match="is not allowed"):
            reg.publish("m", bad)
    with pytest.raises(StorageError, match="must be bytes"):
        reg.publish("m", {"a.txt": "text"})
    with pytest.raises(StorageError, match="no files"):
        reg.publish("m", {})
    assert reg.versions("m") == []
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StorageError, match="a-file/registry/m: cannot create the registry directory"):
        Registry(str(tmp_path / "a-file")).publish("m", files("a"))
    with pytest.raises(StorageError, match="registry.store: is empty"):
        Registry("")
    with pytest.raises(StorageError, match="not an s3://bucket/key URI"):
        Registry("s3://")


def test_relative_store_is_recorded_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reg = Registry("./runs")
    assert reg.uri("m", 1) == str(tmp_path / "runs" / "registry" / "m" / "v1")


# -- S3 (a real server: nanio) ----------------------------------------------------


def test_s3_publish_verify_and_latest(s3_store, s3_server):
    reg = Registry(s3_store)
    assert reg.latest("m") is None
    assert reg.publish("m", files("a")) == 1
    assert reg.publish("m", files("b")) == 2
    assert reg.versions("m") == [1, 2] and reg.latest("m") == 2, s3_server.kind
    assert reg.uri("m", 2) == f"{s3_store}/registry/m/v2"
    manifest = reg.verify("m", 2)
    assert manifest["files"]["model.joblib"]["sha256"] == hashlib.sha256(b"model-b").hexdigest()
    assert reg.read_file("m", 1, "model.joblib") == b"model-a"
    # Claims live beside the versions, never inside them.
    assert storage.list_names(reg.uri("m", 1)) == sorted([*files("a"), MANIFEST])


def test_s3_tampered_object_is_refused(s3_store):
    reg = Registry(s3_store)
    reg.publish("m", files("a"))
    storage.write_bytes(f"{reg.uri('m', 1)}/model.joblib", b"evil")
    with pytest.raises(DataError, match=r"registry/m/v1/model.joblib: sha256 .* does not match"):
        reg.verify("m", 1)


def test_s3_failed_publish_leaves_no_version_and_no_files(s3_store, monkeypatch):
    reg = Registry(s3_store)
    real = storage.write_bytes
    uploads = []

    def failing(uri, data, content_type="application/octet-stream"):
        if "/v1/" in uri:
            uploads.append(uri)
            if len(uploads) == 2:
                raise StorageError(f"{uri}: S3 request failed (SlowDown): injected")
        real(uri, data, content_type)

    monkeypatch.setattr(storage, "write_bytes", failing)
    with pytest.raises(StorageError, match="injected"):
        reg.publish("m", files("a"))
    monkeypatch.setattr(storage, "write_bytes", real)
    assert reg.versions("m") == []
    assert storage.list_names(reg.uri("m", 1)) == []  # the first upload was removed again
    # The claim keeps the burned number from being reused: versions skip, never repeat.
    assert reg.publish("m", files("b")) == 2


def test_s3_foreign_claim_makes_publisher_move_on(s3_store):
    reg = Registry(s3_store)
    storage.write_bytes(f"{reg.model_uri('m')}/.claims/v1.someone-else", b"{}")
    assert reg.publish("m", files("a")) == 2
    assert reg.versions("m") == [2]


def test_s3_writer_ignoring_claims_is_detected(s3_store):
    """A MANIFEST that appears under our claimed version (someone bypassing the claims) stops the publish."""
    reg = Registry(s3_store)

    def rogue(version):
        storage.write_bytes(f"{reg.uri('m', version)}/{MANIFEST}", b'{"rogue": true}')
        return files("a")

    with pytest.raises(StorageError, match=r"v1: was published concurrently by a writer that ignores \.claims/"):
        reg.publish("m", rogue)
    # The rogue's objects are left for an operator to inspect, not deleted by us.
    assert storage.read_bytes(f"{reg.uri('m', 1)}/{MANIFEST}") == b'{"rogue": true}'


def test_s3_racing_publishers_get_distinct_versions(s3_store):
    reg = Registry(s3_store)
    start = threading.Barrier(4)

    def publish(i):
        start.wait()
        return i, reg.publish("m", files(str(i)))

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(publish, range(4)))
    versions = [v for _, v in results]
    assert len(set(versions)) == 4  # distinct; numbers lost to tied claims are skipped
    for i, version in results:
        assert reg.read_file("m", version, "model.joblib") == f"model-{i}".encode()
    assert reg.versions("m") == sorted(versions)


def test_s3_bad_credentials_are_one_clear_error(s3_store, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StorageError, match="S3 request failed"):
        Registry(s3_store).versions("m")
