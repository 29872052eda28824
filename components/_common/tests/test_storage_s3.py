"""S3 storage against a real, signature-checking S3 server (nanio): atomic, multipart, checksummed."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import xxhash
from keel.components._common import storage
from keel.components._common.errors import DataError, StorageError
from testkit.s3 import SECRET_KEY

MIB = 1 << 20
SMALL_PART = 5 * MIB  # S3's minimum part size


def payload(size: int, seed: int = 0) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).bytes(size)


def raw(s3_store):
    """(minio client, bucket, key prefix), for reaching behind Keel's back."""
    bucket, prefix = storage.split_s3(s3_store)
    return storage.s3_client(), bucket, prefix


def all_keys(s3_store) -> list[str]:
    client, bucket, _ = raw(s3_store)
    return sorted(o.object_name for o in client.list_objects(bucket, recursive=True))


def incomplete_uploads(s3_store) -> list[str]:
    """Keys of the multipart uploads begun and neither completed nor aborted: invisible to readers."""
    client, bucket, _ = raw(s3_store)
    return sorted(upload.object_name for upload in client._list_multipart_uploads(bucket).uploads)


def xxh3(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def meta(s3_store, name: str, key: str = storage.XXH3_META) -> str | None:
    client, bucket, prefix = raw(s3_store)
    return client.stat_object(bucket, f"{prefix}/{name}").metadata.get(f"x-amz-meta-{key}")


def test_write_and_read_bytes_round_trip_records_xxh3(s3_store):
    uri = f"{s3_store}/data/small.bin"
    storage.write_bytes(uri, b"hello keel")
    assert storage.read_bytes(uri) == b"hello keel"
    assert meta(s3_store, "data/small.bin") == xxh3(b"hello keel")
    assert meta(s3_store, "data/small.bin", storage.SHA256_META) is None
    # The temporary key was published and then removed: only the final object is left.
    _, _, prefix = raw(s3_store)
    assert all_keys(s3_store) == [f"{prefix}/data/small.bin"]


def test_empty_object_round_trips(s3_store, tmp_path):
    storage.write_bytes(f"{s3_store}/empty", b"")
    assert storage.read_bytes(f"{s3_store}/empty") == b""
    assert storage.download_file(f"{s3_store}/empty", tmp_path / "empty").read_bytes() == b""


def test_upload_and_download_single_part_file(s3_store, tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(payload(300_000))
    digest = storage.upload_file(source, f"{s3_store}/a.bin")
    assert digest == xxh3(source.read_bytes()) == meta(s3_store, "a.bin")
    target = storage.download_file(f"{s3_store}/a.bin", tmp_path / "out" / "a.bin")
    assert target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.bin"]  # no temporary file left behind


def test_multipart_upload_and_download(s3_store, tmp_path):
    source = tmp_path / "big.bin"
    data = payload(2 * SMALL_PART + 12345, seed=1)
    source.write_bytes(data)
    assert storage.upload_file(source, f"{s3_store}/big.bin", part_size=SMALL_PART) == xxh3(data)
    client, bucket, prefix = raw(s3_store)
    stat = client.stat_object(bucket, f"{prefix}/big.bin")
    assert stat.size == len(data) and stat.etag.endswith("-3")  # three parts
    assert meta(s3_store, "big.bin") == xxh3(data)
    assert all_keys(s3_store) == [f"{prefix}/big.bin"] and incomplete_uploads(s3_store) == []
    target = storage.download_file(f"{s3_store}/big.bin", tmp_path / "big.out")
    assert target.read_bytes() == data
    assert storage.read_bytes(f"{s3_store}/big.bin") == data
    assert storage.local_copy(f"{s3_store}/big.bin", str(tmp_path / "copy")).read_bytes() == data


def test_only_single_part_objects_are_staged_and_copied(s3_store, tmp_path, monkeypatch):
    """One part: PUT to a temporary key, then a server-side copy. More: one multipart upload to the final key."""
    from minio import Minio

    puts, copies = [], []
    real_put, real_copy = Minio.put_object, Minio.copy_object
    monkeypatch.setattr(Minio, "put_object", lambda self, b, key, *a, **k: puts.append(key) or real_put(self, b, key, *a, **k))
    monkeypatch.setattr(Minio, "copy_object", lambda self, b, key, *a, **k: copies.append(key) or real_copy(self, b, key, *a, **k))
    _, _, prefix = raw(s3_store)
    one_part, two_parts = payload(SMALL_PART, seed=5), payload(SMALL_PART + 1, seed=6)
    (tmp_path / "one.bin").write_bytes(one_part)
    (tmp_path / "two.bin").write_bytes(two_parts)
    storage.upload_file(tmp_path / "one.bin", f"{s3_store}/one.bin", part_size=SMALL_PART)
    assert puts[0].startswith(f"{storage.UPLOADS_PREFIX}/") and copies == [f"{prefix}/one.bin"]
    puts.clear(), copies.clear()
    storage.upload_file(tmp_path / "two.bin", f"{s3_store}/two.bin", part_size=SMALL_PART)
    assert puts == [f"{prefix}/two.bin"] and copies == []
    assert storage.read_bytes(f"{s3_store}/one.bin") == one_part and storage.read_bytes(f"{s3_store}/two.bin") == two_parts
    assert all_keys(s3_store) == [f"{prefix}/one.bin", f"{prefix}/two.bin"] and incomplete_uploads(s3_store) == []


def test_a_failed_part_aborts_the_multipart_upload(s3_store, tmp_path, monkeypatch):
    import urllib3
    from minio import Minio

    real = Minio._upload_part

    def upload_part(self, bucket, key, data, headers, upload_id, part_number):
        if part_number == 2:
            raise urllib3.exceptions.ProtocolError("Connection aborted", ConnectionResetError(104, "reset"))
        return real(self, bucket, key, data, headers, upload_id, part_number)

    monkeypatch.setattr(Minio, "_upload_part", upload_part)
    source = tmp_path / "big.bin"
    source.write_bytes(payload(2 * SMALL_PART + 1, seed=7))
    with pytest.raises(StorageError, match=r"big.bin: cannot reach the S3 endpoint http://127.0.0.1:\d+ \(ProtocolError\)"):
        storage.upload_file(source, f"{s3_store}/big.bin", part_size=SMALL_PART)
    assert all_keys(s3_store) == [] and incomplete_uploads(s3_store) == []


def test_corruption_in_transit_never_reaches_a_reader(s3_store, tmp_path, monkeypatch):
    """A part changed after it was signed: the server rejects it (S3, MinIO), or the xxh3 catches it on read (nanio)."""
    import urllib3

    real = urllib3.PoolManager.urlopen

    def urlopen(self, method, url, body=None, **kwargs):
        if method == "PUT" and "partNumber=2" in url:
            body = b"X" + bytes(body)[1:]
        return real(self, method, url, body=body, **kwargs)

    data = payload(2 * SMALL_PART + 1, seed=8)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    monkeypatch.setattr(urllib3.PoolManager, "urlopen", urlopen)
    try:
        storage.upload_file(source, f"{s3_store}/big.bin", part_size=SMALL_PART)
    except StorageError:
        assert all_keys(s3_store) == [] and incomplete_uploads(s3_store) == []
        return
    monkeypatch.setattr(urllib3.PoolManager, "urlopen", real)
    with pytest.raises(DataError, match=rf"big.bin: content xxh3 [0-9a-f]{{32}} does not match .* {xxh3(data)}"):
        storage.download_file(f"{s3_store}/big.bin", tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


def test_an_upload_whose_checksum_was_not_recorded_is_removed(s3_store, tmp_path, monkeypatch):
    """A server that drops user metadata: the object could never be verified, so it is not left behind."""
    source = tmp_path / "big.bin"
    source.write_bytes(payload(SMALL_PART + 1, seed=9))
    monkeypatch.setattr(storage, "_recorded_xxh3", lambda stat: None)
    with pytest.raises(StorageError, match=r"big.bin: the uploaded object does not match the local data "
                                           r"\(5242881 bytes, xxh3 None instead of 5242881 bytes, xxh3 [0-9a-f]{32}\); "
                                           "it was removed"):
        storage.upload_file(source, f"{s3_store}/big.bin", part_size=SMALL_PART)
    with pytest.raises(StorageError, match=r"small.bin: the published object does not match what was uploaded"):
        storage.write_bytes(f"{s3_store}/small.bin", b"small")
    assert not any(key.startswith(f"{storage.UPLOADS_PREFIX}/") for key in all_keys(s3_store))
    assert incomplete_uploads(s3_store) == []


def test_corruption_behind_the_clients_back_is_detected(s3_store, tmp_path):
    storage.write_bytes(f"{s3_store}/model.bin", b"the real model")
    client, bucket, prefix = raw(s3_store)
    recorded = meta(s3_store, "model.bin")
    # Same size, same recorded checksum, different bytes: a bit flip at rest.
    client.put_object(bucket, f"{prefix}/model.bin", io.BytesIO(b"the evil model"), 14,
                      metadata={storage.XXH3_META: recorded})
    target = tmp_path / "model.bin"
    expected = rf"s3://.*/model.bin: content xxh3 {xxh3(b'the evil model')} does not match the xxh3 recorded at upload {recorded}"
    with pytest.raises(DataError, match=expected):
        storage.download_file(f"{s3_store}/model.bin", target)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match=expected):
        storage.read_bytes(f"{s3_store}/model.bin")


def test_objects_written_before_xxh3_are_checked_with_their_sha256(s3_store, tmp_path):
    client, bucket, prefix = raw(s3_store)
    good, evil = b"an older model", b"an evil model!"
    client.put_object(bucket, f"{prefix}/old.bin", io.BytesIO(good), len(good),
                      metadata={storage.SHA256_META: hashlib.sha256(good).hexdigest()})
    assert storage.read_bytes(f"{s3_store}/old.bin") == good
    assert storage.download_file(f"{s3_store}/old.bin", tmp_path / "old.bin").read_bytes() == good
    client.put_object(bucket, f"{prefix}/old.bin", io.BytesIO(evil), len(evil),
                      metadata={storage.SHA256_META: hashlib.sha256(good).hexdigest()})
    expected = (rf"old.bin: content sha256 {hashlib.sha256(evil).hexdigest()} does not match the sha256 recorded "
                rf"at upload {hashlib.sha256(good).hexdigest()}")
    with pytest.raises(DataError, match=expected):
        storage.read_bytes(f"{s3_store}/old.bin")
    with pytest.raises(DataError, match=expected):
        storage.download_file(f"{s3_store}/old.bin", tmp_path / "old.bin")
    assert (tmp_path / "old.bin").read_bytes() == good  # the earlier download is left as it was


def test_temporary_prefix_is_hidden_from_listings(s3_store):
    client, bucket, prefix = raw(s3_store)
    # What a killed upload leaves behind once its temporary object completed.
    client.put_object(bucket, f"{storage.UPLOADS_PREFIX}/abc/orphan", io.BytesIO(b"x"), 1)
    storage.write_bytes(f"{s3_store}/a/b.txt", b"b")
    assert storage.list_names(f"s3://{bucket}") == [prefix]
    assert storage.list_names(f"s3://{bucket}/") == [prefix]
    names = [name for name, _, _ in storage.list_objects(f"s3://{bucket}")]
    assert names == [f"{prefix}/a/b.txt"]


def test_list_objects_names_sizes_and_hashes(s3_store):
    storage.write_bytes(f"{s3_store}/ds/part-0.parquet", b"zero")
    storage.write_bytes(f"{s3_store}/ds/sub/part-1.parquet", b"one!!")
    client, bucket, prefix = raw(s3_store)
    client.put_object(bucket, f"{prefix}/ds/foreign.csv", io.BytesIO(b"a,b"), 3)  # uploaded by another tool
    assert storage.list_objects(f"{s3_store}/ds") == [
        ("foreign.csv", 3, None),
        ("part-0.parquet", 4, xxh3(b"zero")),
        ("sub/part-1.parquet", 5, xxh3(b"one!!")),
    ]
    assert [n for n, _, _ in storage.list_objects(f"{s3_store}/ds/", recursive=False)] == ["foreign.csv", "part-0.parquet"]
    assert storage.list_objects(f"{s3_store}/nothing-here") == []


def test_upload_dir_download_dir_round_trip_nested(s3_store, tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "weights" / "deep").mkdir(parents=True)
    files = {"MANIFEST.json": b"{}", "weights/w.bin": payload(70_000, 3), "weights/deep/x.npy": b"x" * 10}
    for name, data in files.items():
        (bundle / name).write_bytes(data)
    digests = storage.upload_dir(bundle, f"{s3_store}/models/m/v1")
    assert digests == {n: xxh3(d) for n, d in sorted(files.items())}
    assert [(n, d) for n, _, d in storage.list_objects(f"{s3_store}/models/m/v1")] == list(digests.items())
    out = storage.download_dir(f"{s3_store}/models/m/v1", tmp_path / "out" / "m")
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]  # the staging directory was renamed away
    with pytest.raises(StorageError, match=r"out/m: already exists and is not empty"):
        storage.download_dir(f"{s3_store}/models/m/v1", out)
    (out / "stale.txt").write_bytes(b"old")
    storage.download_dir(f"{s3_store}/models/m/v1", out, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "weights/w.bin").read_bytes() == files["weights/w.bin"]


def test_download_dir_failure_leaves_nothing(s3_store, tmp_path):
    storage.write_bytes(f"{s3_store}/b/ok.txt", b"ok")
    storage.write_bytes(f"{s3_store}/b/bad.txt", b"good")
    client, bucket, prefix = raw(s3_store)
    recorded = meta(s3_store, "b/bad.txt")
    client.put_object(bucket, f"{prefix}/b/bad.txt", io.BytesIO(b"evil"), 4, metadata={storage.XXH3_META: recorded})
    with pytest.raises(DataError, match=f"b/bad.txt: content xxh3 {xxh3(b'evil')} does not match .* {recorded}"):
        storage.download_dir(f"{s3_store}/b", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StorageError, match=r"nothing-here: no objects under this prefix"):
        storage.download_dir(f"{s3_store}/nothing-here", tmp_path / "out")


_KILLED_UPLOADER = textwrap.dedent("""
    import sys
    import threading
    from pathlib import Path
    from minio import Minio
    from keel.components._common import storage

    marker = Path(sys.argv[3])
    real = Minio._upload_part

    def upload_part(self, *args, **kwargs):
        etag = real(self, *args, **kwargs)
        marker.touch()  # a part is on the server; the parent kills us now
        threading.Event().wait()  # blocks for good, so the kill always lands mid-upload
        return etag

    Minio._upload_part = upload_part
    storage.PART_WORKERS = 1  # one part at a time, so the kill lands mid-upload
    storage.upload_file(sys.argv[1], sys.argv[2], part_size=5 << 20)
    print("upload finished before it was killed", flush=True)
""")


def test_interrupted_upload_leaves_no_partial_object(s3_store, tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(payload(4 * SMALL_PART, seed=4))
    marker = tmp_path / "part-sent"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_UPLOADER, str(source), f"{s3_store}/big.bin", str(marker)],
                            env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            try:
                proc.wait(timeout=0.02)  # polls the marker; notices at once if the uploader died
            except subprocess.TimeoutExpired:
                pass
        assert marker.exists(), proc.stdout.read().decode() if proc.poll() is not None else "no part was sent"
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
    assert not storage.exists(f"{s3_store}/big.bin")
    assert storage.list_names(s3_store) == []
    assert storage.list_objects(s3_store) == []
    client, bucket, prefix = raw(s3_store)
    assert storage.list_names(f"s3://{bucket}") == [] and storage.list_objects(f"s3://{bucket}") == []
    # What is left is one incomplete multipart upload to the final key (no temporary object): invisible to
    # readers, reclaimed by the bucket's lifecycle rule, or here by aborting it.
    assert all_keys(s3_store) == [] and incomplete_uploads(s3_store) == [f"{prefix}/big.bin"]
    for upload in client._list_multipart_uploads(bucket).uploads:
        client._abort_multipart_upload(bucket, upload.object_name, upload.upload_id)
    assert incomplete_uploads(s3_store) == []


def test_wrong_credentials_name_the_variables_not_the_secret(s3_store, monkeypatch):
    storage.write_bytes(f"{s3_store}/x", b"x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    with pytest.raises(StorageError, match=r"/x: S3 request failed \(SignatureDoesNotMatch\): .* rejected the credentials; "
                                           "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") as caught:
        storage.read_bytes(f"{s3_store}/x")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(StorageError, match=r"/y: S3 request failed \(InvalidAccessKeyId\): .* rejected the credentials") as caught_write:
        storage.write_bytes(f"{s3_store}/y", b"y")
    with pytest.raises(StorageError, match="check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") as caught_stat:
        storage.exists(f"{s3_store}/x")  # HEAD: no error body, only a 403
    for err in (caught, caught_write, caught_stat):
        message = str(err.value)
        assert "\n" not in message and SECRET_KEY not in message and "not-the-secret-at-all" not in message


def test_unreachable_endpoint_fails_with_a_clear_error(monkeypatch, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://user:hunter2@127.0.0.1:{port}")
    with pytest.raises(StorageError, match=rf"AWS_ENDPOINT_URL: http://127.0.0.1:{port} must not carry user:password@") as caught:
        storage.read_bytes("s3://b-k/x")
    assert "hunter2" not in str(caught.value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cret-value")
    expected = rf"s3://b-k/x: cannot reach the S3 endpoint http://127.0.0.1:{port} .*check AWS_ENDPOINT_URL"
    for call in (lambda: storage.read_bytes("s3://b-k/x"), lambda: storage.write_bytes("s3://b-k/x", b"1"),
                 lambda: storage.exists("s3://b-k/x"), lambda: storage.download_file("s3://b-k/x", tmp_path / "x")):
        with pytest.raises(StorageError, match=expected) as caught:
            call()
        assert "s3cret" not in str(caught.value)


def test_missing_bucket_and_missing_object(s3_store, tmp_path):
    missing_bucket = "s3://keel-no-such-bucket/x/y"
    with pytest.raises(StorageError, match=r"s3://keel-no-such-bucket/x/y: bucket 'keel-no-such-bucket' does not exist"):
        storage.read_bytes(missing_bucket)
    with pytest.raises(StorageError, match=r"keel-no-such-bucket/x/y: bucket 'keel-no-such-bucket' does not exist"):
        storage.write_bytes(missing_bucket, b"1")
    with pytest.raises(StorageError, match=r"bucket 'keel-no-such-bucket' does not exist"):
        storage.list_objects("s3://keel-no-such-bucket/x")
    with pytest.raises(StorageError, match=rf"{s3_store}/nope.bin: object not found"):
        storage.read_bytes(f"{s3_store}/nope.bin")
    with pytest.raises(StorageError, match=rf"{s3_store}/nope.bin: object not found"):
        storage.download_file(f"{s3_store}/nope.bin", tmp_path / "nope.bin")
    assert not storage.exists(f"{s3_store}/nope.bin")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StorageError, match=r"nope.bin: file not found; cannot upload it"):
        storage.upload_file(tmp_path / "nope.bin", f"{s3_store}/nope.bin")


def test_local_paths_use_the_same_api(tmp_path):
    source = tmp_path / "src" / "a" / "f.txt"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"local")
    assert storage.upload_file(source, tmp_path / "dst" / "f.txt") == xxh3(b"local")
    storage.download_dir(str(tmp_path / "src"), tmp_path / "copy")
    assert (tmp_path / "copy" / "a" / "f.txt").read_bytes() == b"local"
