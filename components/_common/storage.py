"""Storage URIs: local paths and `s3://bucket/key`, through the minio client.

This is the seam that decides where bytes live. Writes are atomic on both
backends, so a reader never sees a partial object or file:

* Local: a write goes to a temporary file in the same directory and is
  renamed into place; a downloaded bundle is assembled in a staging
  directory and renamed into place as a whole.
* S3, objects bigger than one part: one multipart upload straight to the
  final key, its parts sent in parallel. The multipart upload is itself the
  staging area: S3 and MinIO show none of its parts to any reader until
  CompleteMultipartUpload, which publishes the whole object atomically. So
  there is no temporary key and no server-side copy, which re-writes every
  byte on the server (it cost a third of the upload throughput on nanio,
  tests/bench/s3.py). A failed part aborts the upload (minio's put_object
  does); a killed process leaves only an incomplete multipart upload, which
  no reader and no listing sees.
* S3, objects of at most one part (STAGED_MAX_SIZE): a single PUT to a
  temporary key under `.keel-uploads/` at the bucket root, published to the
  final key with a server-side copy pinned to its ETag, then deleted. That
  is the protocol issue 7 asks for, and the copy is cheap at this size. A
  killed upload leaves at most an object under `.keel-uploads/`, which no
  listing here shows.

Give the bucket a lifecycle rule that expires `.keel-uploads/` and aborts
incomplete multipart uploads after a day, to reclaim what killed uploads
leave.

Checksums. Every object written here records the XXH3-128 of its content in
the user metadata `x-amz-meta-keel-xxh3`, computed in one pass over the
local data before the upload starts (the metadata is sent with
CreateMultipartUpload, before the first part; at about 6 GB/s the pass is
noise next to the transfer). Downloads verify it while the bytes stream in
and raise DataError naming the URI and both checksums on a mismatch. Objects
written before carry `x-amz-meta-keel-sha256` instead, and are verified
with sha256. XXH3 is a transfer checksum, chosen for speed: it guards
against corruption in transit and at rest. It is not cryptographic (sha256
runs at 1.4 GB/s here and MD5 at 0.6 GB/s, which held downloads to 0.62x of
the plain client). Tamper-evidence stays where it already is: the registry's
MANIFEST.json records each file's sha256, and a dataset version the sha256
of its Arrow data.

No MD5/ETag comparison after an upload. Over http, minio-py signs every
request with the sha256 of its body (x-amz-content-sha256, SigV4), and S3
and MinIO reject a PUT or a part whose body does not match it; over https
minio-py sends each body's Content-MD5, which the server checks, and TLS
guards the bytes. After an upload, a HEAD checks the object's size and its
recorded xxh3. nanio (0.1.7), the test server, checks the signature but not
the body against x-amz-content-sha256: there, a part corrupted in transit is
caught when the object is read, by its xxh3.

S3 endpoint and credentials come only from the environment, the same
variables KServe's storage initializer reads: AWS_ENDPOINT_URL (or
S3_ENDPOINT), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION.

Server-side encryption: KEEL_S3_SSE (AES256 or aws:kms, with an optional
KEEL_S3_SSE_KMS_KEY_ID; see keel.components._common.protect.s3_sse) is sent
with every object put here: single PUTs, the server-side copy that publishes
a staged upload (S3 encrypts a copy by the copy request's headers, not the
source's), and the CreateMultipartUpload of a multipart upload. Reads need
nothing: S3 decrypts SSE-S3 and SSE-KMS objects for any authorized reader.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from keel.components._common.errors import DataError, StorageError

# Temporary upload keys live here, at the bucket root, so that no listing of a real prefix shows them.
UPLOADS_PREFIX = ".keel-uploads"
# User metadata key (sent as x-amz-meta-keel-xxh3) holding the XXH3-128 (hex) of an object's content.
XXH3_META = "keel-xxh3"
# What objects written before XXH3 carry instead (sha256 hex); still verified when present alone.
SHA256_META = "keel-sha256"

MIB = 1 << 20
PART_SIZE = 16 * MIB  # multipart part size; S3's minimum is 5 MiB
MIN_PART_SIZE = 5 * MIB
MAX_PARTS = 10_000  # S3's limit on the parts of one upload; bigger files get bigger parts
PART_WORKERS = 4  # parts of one object sent at once
# Objects up to this size and up to the part size (one PUT) go to a temporary key and are published with a
# server-side copy, which re-writes every byte on the server: cheap for one part, costly for big objects.
# Bigger ones are multipart uploads straight to the final key, atomic by themselves (see the module
# docstring); so is the single PUT of an object above this size that a bigger part_size keeps in one part.
STAGED_MAX_SIZE = PART_SIZE
FILE_WORKERS = 4  # files of one bundle uploaded at once
# Files of one bundle downloaded at once. One stream at a time measured fastest against nanio on 2 cores
# (4 at once: 0.82 s against 0.69 s for 500 MB; parallel ranged GETs of one object: 1.3 s against 0.8 s),
# as fast as fget_object; raise it for a high-latency endpoint, where one stream cannot fill the link.
DOWNLOAD_WORKERS = 1

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 120.0  # completing a multi-GiB multipart upload can take a while server-side
RETRIES = 2  # per request, for refused connections and 500/502/503/504

_NOT_FOUND = ("NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound")
_BAD_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken")
_CHUNK = MIB  # the chunk fget_object streams in
_HASH_CHUNK = 8 * MIB


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> ("bucket", "a/b")."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"{uri!r} is not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


def join(base: str, *parts: str) -> str:
    """Joins URI parts with '/' for S3 and the OS separator for local paths."""
    if is_s3(base):
        return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(base, *parts))


def _endpoint() -> str:
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT")
    if not endpoint:
        raise StorageError(
            "s3:// URI used but no endpoint is set: export AWS_ENDPOINT_URL "
            "(e.g. http://minio.kubeflow:9000) with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    return endpoint


def _redacted_endpoint() -> str:
    """The endpoint as configured, without any user:password@ part."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT") or "(unset)"
    parsed = urllib.parse.urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    host = parsed.hostname or ""
    return f"{parsed.scheme}://{host}{f':{parsed.port}' if parsed.port else ''}"


def s3_client():
    """A minio client configured from the standard AWS_* environment variables.

    Its connection pool is big enough for the parallel transfers here, and it
    has connect/read timeouts and bounded retries, so an unreachable endpoint
    fails within seconds instead of minio's default of minutes.
    """
    import certifi
    import urllib3
    from minio import Minio

    endpoint = _endpoint()
    parsed = urllib.parse.urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        maxsize=FILE_WORKERS * PART_WORKERS + 4,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=RETRIES, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )
    if parsed.username or parsed.password:
        raise StorageError(f"AWS_ENDPOINT_URL: {_redacted_endpoint()} must not carry user:password@; "
                           "put the credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    try:
        return Minio(
            parsed.netloc,
            access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
            secure=parsed.scheme == "https",
            http_client=http,
        )
    except ValueError as err:
        raise StorageError(f"AWS_ENDPOINT_URL: {_redacted_endpoint()} is not a usable S3 endpoint ({err}); "
                           "use http(s)://host:port") from None


def _s3_error(uri: str, err: Exception) -> StorageError:
    """One line for a failed S3 call; names the URI, never the credentials."""
    from minio.error import S3Error

    if isinstance(err, StorageError):
        return err
    code = getattr(err, "code", None) or type(err).__name__
    if isinstance(err, S3Error):
        bucket = split_s3(uri)[0] if is_s3(uri) else "?"
        if code in _NOT_FOUND:
            return StorageError(f"{uri}: object not found")
        if code == "NoSuchBucket":
            return StorageError(f"{uri}: bucket {bucket!r} does not exist")
        if code in _BAD_CREDENTIALS:
            return StorageError(f"{uri}: S3 request failed ({code}): {_redacted_endpoint()} rejected the credentials; "
                                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        if code == "AccessDenied":
            return StorageError(f"{uri}: S3 request failed (AccessDenied) at {_redacted_endpoint()}; check "
                                f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY and that they may use bucket {bucket!r}")
        return StorageError(f"{uri}: S3 request failed ({code}): {err.message}")
    import urllib3

    if isinstance(err, urllib3.exceptions.HTTPError):
        reason = getattr(err, "reason", None) or err
        return StorageError(f"{uri}: cannot reach the S3 endpoint {_redacted_endpoint()} ({type(reason).__name__}); "
                            "check AWS_ENDPOINT_URL and that the server is up")
    return StorageError(f"{uri}: S3 request failed ({code}): {err}")


@contextlib.contextmanager
def _s3_errors(uri: str):
    """Turns minio and urllib3 failures into one-line StorageErrors naming `uri`."""
    import urllib3
    from minio.error import MinioException

    try:
        yield
    except (MinioException, urllib3.exceptions.HTTPError) as err:
        raise _s3_error(uri, err) from None


def exists(uri: str) -> bool:
    if not is_s3(uri):
        return Path(uri).exists()
    from minio.error import S3Error

    bucket, key = split_s3(uri)
    with _s3_errors(uri):
        try:
            s3_client().stat_object(bucket, key)
            return True
        except S3Error as err:
            if err.code in _NOT_FOUND:
                return False
            raise


def modified_at(uri: str) -> float:
    """When the file or object at `uri` was written, in seconds since the epoch (S3: its Last-Modified)."""
    if not is_s3(uri):
        try:
            return Path(uri).stat().st_mtime
        except OSError as err:
            raise StorageError(f"{uri}: cannot read its modification time ({err.strerror or err})") from err
    bucket, key = split_s3(uri)
    with _s3_errors(uri):
        return s3_client().stat_object(bucket, key).last_modified.timestamp()


def read_bytes(uri: str) -> bytes:
    """The object's content; checked against its recorded checksum when it has one.

    Raises:
        StorageError: the file, object or bucket does not exist, or S3 fails.
        DataError: the content differs from the checksum recorded at upload.
    """
    if not is_s3(uri):
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{uri}: file not found") from None
    bucket, key = split_s3(uri)
    with _s3_errors(uri):
        response = s3_client().get_object(bucket, key)
        try:
            data = response.read()
            recorded = _recorded_checksum(response.headers)
        finally:
            response.close()
            response.release_conn()
    if recorded:
        algorithm, expected = recorded
        digest = _new_hash(algorithm)
        digest.update(data)
        _check_checksum(uri, algorithm, expected, digest.hexdigest())
    return data


def write_bytes(uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    """Writes `data` to `uri` atomically (see the module docstring)."""
    if not is_s3(uri):
        atomic_write_local(Path(uri), data)
        return
    import io

    import xxhash

    _upload(uri, io.BytesIO(data), len(data), content_type, PART_SIZE, xxhash.xxh3_128_hexdigest(data))


def upload_file(path: str | Path, uri: str, *, part_size: int | None = None,
                content_type: str = "application/octet-stream") -> str:
    """Uploads a local file to `uri` atomically, in parallel parts when large.

    Args:
        path: the local file.
        uri: the target: `s3://bucket/key` or a local path.
        part_size: multipart part size in bytes (default PART_SIZE, at least
            5 MiB); files up to this size go up in one PUT.
        content_type: the object's Content-Type.

    Returns:
        The XXH3-128 (hex) of the content, as recorded in the object's
        metadata (a transfer checksum, not a cryptographic hash).

    Raises:
        StorageError: the file cannot be read, or the upload fails (the
            message names the URI; nothing is left at `uri`).
    """
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"{path}: file not found; cannot upload it to {uri}")
    with open(path, "rb") as handle:
        digest = _stream_xxh3(handle)
        if not is_s3(uri):
            _copy_local(path, Path(uri))
            return digest
        handle.seek(0)
        return _upload(uri, handle, os.fstat(handle.fileno()).st_size, content_type, part_size or PART_SIZE, digest)


def _upload(uri: str, stream, size: int, content_type: str, part_size: int, digest: str) -> str:
    """Uploads `size` bytes of `stream` to `uri` atomically, recording `digest`; returns `digest`."""
    bucket, key = split_s3(uri)
    if not key or key.endswith("/"):
        raise StorageError(f"{uri}: names no object (an s3://bucket/key URI with a key is needed)")
    part_size = max(int(part_size), MIN_PART_SIZE, -(-size // MAX_PARTS))
    client = s3_client()
    metadata = {XXH3_META: digest}
    sse = _sse()
    if size <= min(part_size, STAGED_MAX_SIZE):
        _upload_staged(client, uri, stream, size, content_type, metadata, sse)
        return digest
    with _s3_errors(uri):
        # Invisible to readers until CompleteMultipartUpload; minio aborts the upload if a part fails.
        # No ETag comparison: S3 and MinIO check each part against its signed sha256 (see the module docstring).
        result = client.put_object(bucket, key, stream, size, content_type=content_type, metadata=metadata,
                                   part_size=part_size, num_parallel_uploads=PART_WORKERS, sse=sse)
        uploaded = client.stat_object(bucket, key)
    if _differs(uploaded, size, digest):
        if (uploaded.etag or "").strip('"') == (result.etag or "").strip('"'):
            _remove_quietly(client, bucket, key)  # ours, and wrong: better gone than read
            raise StorageError(f"{uri}: the uploaded object does not match the local data ({uploaded.size} bytes, "
                               f"xxh3 {_recorded_xxh3(uploaded)} instead of {size} bytes, xxh3 {digest}); "
                               "it was removed, retry the upload")
        raise _replaced(uri, uploaded)
    return digest


def _sse():
    """The minio `sse=` for KEEL_S3_SSE, or None (keel.components._common.protect.s3_sse)."""
    from keel.components._common.protect import s3_sse

    return s3_sse()


def _upload_staged(client, uri: str, stream, size: int, content_type: str, metadata: dict, sse=None) -> None:
    """One PUT to a temporary key, published with a server-side copy pinned to its ETag, then deleted."""
    from minio.commonconfig import CopySource

    bucket, key = split_s3(uri)
    temp = f"{UPLOADS_PREFIX}/{uuid.uuid4().hex}/{key.rsplit('/', 1)[-1]}"
    try:
        with _s3_errors(uri):
            result = client.put_object(bucket, temp, stream, size, content_type=content_type, metadata=metadata, sse=sse)
            client.copy_object(bucket, key, CopySource(bucket, temp, match_etag=(result.etag or "").strip('"')), sse=sse)
            final = client.stat_object(bucket, key)
        if _differs(final, size, metadata[XXH3_META]):
            raise _replaced(uri, final)
    finally:
        _remove_quietly(client, bucket, temp)


def _differs(stat, size: int, digest: str) -> bool:
    return stat.size != size or _recorded_xxh3(stat) != digest


def _replaced(uri: str, stat) -> StorageError:
    return StorageError(f"{uri}: the published object does not match what was uploaded ({stat.size} bytes, "
                        f"xxh3 {_recorded_xxh3(stat)}); another writer may have replaced it, check it and retry")


def _stream_xxh3(handle) -> str:
    """XXH3-128 (hex) of a binary file's content, read in chunks into one reused buffer."""
    import xxhash

    digest = xxhash.xxh3_128()
    buffer = bytearray(_HASH_CHUNK)
    view = memoryview(buffer)
    while size := handle.readinto(buffer):
        digest.update(view[:size])
    return digest.hexdigest()


def _metadata(headers) -> dict[str, str]:
    return {str(name).lower(): value for name, value in (headers or {}).items()}


def _recorded_xxh3(stat) -> str | None:
    return _metadata(stat.metadata).get(f"x-amz-meta-{XXH3_META}")


def _recorded_checksum(headers) -> tuple[str, str] | None:
    """("xxh3" or "sha256", hex) recorded in an object's metadata or response headers; None if neither."""
    metadata = _metadata(headers)
    for algorithm, name in (("xxh3", XXH3_META), ("sha256", SHA256_META)):
        if value := metadata.get(f"x-amz-meta-{name}"):
            return algorithm, value
    return None


def _new_hash(algorithm: str):
    if algorithm == "sha256":
        return hashlib.sha256()
    import xxhash

    return xxhash.xxh3_128()


def _remove_quietly(client, bucket: str, key: str) -> None:
    # Best effort: the caller's own error must not be masked.
    with contextlib.suppress(Exception):
        client.remove_object(bucket, key)


def _check_checksum(uri: str, algorithm: str, recorded: str, got: str) -> None:
    if recorded != got:
        raise DataError(f"{uri}: content {algorithm} {got} does not match the {algorithm} recorded at upload "
                        f"{recorded}; the object was modified or corrupted, upload it again")


def download_file(uri: str, path: str | Path) -> Path:
    """Downloads `uri` to `path`; `path` appears only once complete and verified.

    The bytes come in one GET (parallel ranged GETs measured slower against
    nanio, tests/bench/s3.py) into a temporary file in the target directory,
    are checked as they stream against the checksum recorded at upload (xxh3,
    or sha256 for objects written before; none for objects from other tools),
    and the file is then renamed into place. The checksum comes in the GET's
    own headers, so it always belongs to the bytes it checks.

    Returns:
        The path written.

    Raises:
        StorageError: the object or bucket does not exist, or S3 fails.
        DataError: the content differs from the recorded checksum (the
            message names the URI and both checksums); `path` is left untouched.
    """
    path = Path(path)
    if not is_s3(uri):
        if not Path(uri).is_file():
            raise StorageError(f"{uri}: file not found")
        _copy_local(Path(uri), path)
        return path
    bucket, key = split_s3(uri)
    client = s3_client()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with _s3_errors(uri):
            response = client.get_object(bucket, key)
            try:
                recorded = _recorded_checksum(response.headers)
                digest = _new_hash(recorded[0]) if recorded else None
                size = response.headers.get("Content-Length")
                written = 0
                for chunk in response.stream(_CHUNK):
                    if digest is not None:
                        digest.update(chunk)
                    written += os.write(fd, chunk)  # a regular file takes the whole chunk
            finally:
                response.close()
                response.release_conn()
        if size is not None and written != int(size):
            raise StorageError(f"{uri}: the download ended early ({written} of {size} bytes); retry")
        if recorded:
            _check_checksum(uri, recorded[0], recorded[1], digest.hexdigest())
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
    return path


def upload_dir(local_dir: str | Path, uri_prefix: str, *, part_size: int | None = None) -> dict[str, str]:
    """Uploads every file under `local_dir` (recursively) below `uri_prefix`, several at once.

    Each file is uploaded atomically (see `upload_file`); the bundle as a
    whole is not: a reader that needs all-or-nothing must look for a marker
    written last (the registry's MANIFEST.json is one).

    Returns:
        relative name ('/'-separated) -> XXH3-128 hex (as `upload_file`), sorted by name.

    Raises:
        StorageError: `local_dir` is not a directory, or an upload fails.
    """
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise StorageError(f"{local_dir}: not a directory; cannot upload it to {uri_prefix}")
    names = sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file())
    if not names:
        raise StorageError(f"{local_dir}: holds no files; nothing to upload to {uri_prefix}")
    with ThreadPoolExecutor(min(FILE_WORKERS, len(names))) as pool:
        digests = list(pool.map(lambda n: upload_file(local_dir / n, join(uri_prefix, n), part_size=part_size), names))
    return dict(zip(names, digests))


def download_dir(uri_prefix: str, local_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Downloads every object under `uri_prefix` into `local_dir`, which appears only once complete.

    The files are downloaded (DOWNLOAD_WORKERS at once, each verified as in
    `download_file`) into a staging directory beside `local_dir`, which is
    then renamed to `local_dir`.

    Args:
        uri_prefix: `s3://bucket/prefix` (or a local directory).
        local_dir: the target directory; must not exist or be empty, unless
            `overwrite`, which replaces it (a reader then sees the old
            directory, briefly none, or the new one; never a mix).

    Raises:
        StorageError: no objects under the prefix, `local_dir` is not empty,
            or a download fails (nothing is left at `local_dir`).
        DataError: a file differs from its recorded checksum.
    """
    local_dir = Path(local_dir)
    if local_dir.exists() and not overwrite and (not local_dir.is_dir() or any(local_dir.iterdir())):
        raise StorageError(f"{local_dir}: already exists and is not empty; remove it or pass overwrite=True "
                           f"to replace it with {uri_prefix}")
    if is_s3(uri_prefix):
        names = [name for name, _size in _list_keys(uri_prefix)]
    else:
        root = Path(uri_prefix)
        names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    if not names:
        raise StorageError(f"{uri_prefix}: no objects under this prefix; check the URI")
    local_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=local_dir.parent, prefix=f".{local_dir.name}.staging-"))
    try:
        with ThreadPoolExecutor(min(DOWNLOAD_WORKERS, len(names))) as pool:
            list(pool.map(lambda n: download_file(join(uri_prefix, n), staging / n), names))
        if local_dir.exists() and overwrite and (not local_dir.is_dir() or any(local_dir.iterdir())):
            old = Path(tempfile.mkdtemp(dir=local_dir.parent, prefix=f".{local_dir.name}.old-"))
            os.replace(local_dir, old / "d")
            os.replace(staging, local_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, local_dir)  # onto a missing or empty directory: atomic
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return local_dir


def list_objects(uri_prefix: str, recursive: bool = True) -> list[tuple[str, int, str | None]]:
    """The objects under a prefix: (name relative to the prefix, size, recorded xxh3 hex or None), sorted.

    The xxh3 is the one `upload_file` returned for the object; None for
    objects written by other tools, or before Keel recorded xxh3. Temporary
    upload keys are never listed. With `recursive=False`, only the objects
    directly under the prefix (see `list_names` for sub-prefixes).

    Raises:
        StorageError: the bucket does not exist, or S3 fails.
    """
    bucket, prefix = split_s3(uri_prefix)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    found = _list_keys(uri_prefix, recursive)
    client = s3_client()

    def xxh3(name: str) -> str | None:
        with _s3_errors(f"s3://{bucket}/{prefix}{name}"):
            return _recorded_xxh3(client.stat_object(bucket, f"{prefix}{name}"))

    # S3 listings carry no user metadata, so each object's checksum costs one HEAD.
    with ThreadPoolExecutor(FILE_WORKERS) as pool:
        digests = list(pool.map(xxh3, [name for name, _size in found]))
    return [(name, size, digest) for (name, size), digest in zip(found, digests)]


def _list_keys(uri_prefix: str, recursive: bool = True) -> list[tuple[str, int]]:
    """(name relative to the prefix, size) of the objects under a prefix, sorted; no temporary keys."""
    bucket, prefix = split_s3(uri_prefix)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    with _s3_errors(uri_prefix):
        return sorted((o.object_name[len(prefix):], o.size or 0)
                      for o in s3_client().list_objects(bucket, prefix=prefix, recursive=recursive)
                      if not o.is_dir and not o.object_name.startswith(f"{UPLOADS_PREFIX}/"))


def atomic_write_local(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Makes a rename or delete in `path` durable: until the directory entry is on disk, a crash can undo it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_local(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_names(uri: str) -> list[str]:
    """Immediate children (files and 'directories') under a prefix, sorted."""
    if not is_s3(uri):
        path = Path(uri)
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    bucket, prefix = split_s3(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    with _s3_errors(uri):
        objects = s3_client().list_objects(bucket, prefix=prefix)
        names = {o.object_name[len(prefix):].rstrip("/").split("/")[0] for o in objects}
    return sorted(names - {UPLOADS_PREFIX} if not prefix else names)


def local_copy(uri: str, workdir: str | None = None) -> Path:
    """A local path holding the object at `uri` (the path itself when local)."""
    if not is_s3(uri):
        return Path(uri)
    target = Path(workdir or tempfile.mkdtemp(prefix="keel-")) / Path(split_s3(uri)[1]).name
    return download_file(uri, target)
