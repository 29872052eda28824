"""Storage URIs: local paths and `s3://bucket/key`, through the minio client.

This is the seam that decides where bytes live. Writes are atomic on both
backends: a local write goes to a temporary file in the same directory and is
renamed into place; an S3 object only appears once its upload has completed
(a single PUT or a completed multipart upload), so a reader never sees a
partial object.

S3 endpoint and credentials come only from the environment, the same
variables KServe's storage initializer reads: AWS_ENDPOINT_URL (or
S3_ENDPOINT), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION.
"""

from __future__ import annotations

import io
import os
import tempfile
import urllib.parse
from pathlib import Path

from keel.components._common.errors import StorageError


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


def s3_client():
    """A minio client configured from the standard AWS_* environment variables."""
    from minio import Minio

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT")
    if not endpoint:
        raise StorageError(
            "s3:// URI used but no endpoint is set: export AWS_ENDPOINT_URL "
            "(e.g. http://minio.kubeflow:9000) with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    parsed = urllib.parse.urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    return Minio(
        parsed.netloc,
        access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        secure=parsed.scheme == "https",
    )


def _s3_error(uri: str, err: Exception) -> StorageError:
    code = getattr(err, "code", None) or type(err).__name__
    return StorageError(f"{uri}: S3 request failed ({code}): {err}")


def exists(uri: str) -> bool:
    if not is_s3(uri):
        return Path(uri).exists()
    from minio.error import S3Error

    bucket, key = split_s3(uri)
    try:
        s3_client().stat_object(bucket, key)
        return True
    except S3Error as err:
        if err.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
            return False
        raise _s3_error(uri, err) from err


def read_bytes(uri: str) -> bytes:
    if not is_s3(uri):
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{uri}: file not found") from None
    from minio.error import S3Error

    bucket, key = split_s3(uri)
    try:
        response = s3_client().get_object(bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()
    except S3Error as err:
        if err.code in ("NoSuchKey", "NoSuchObject"):
            raise StorageError(f"{uri}: object not found") from None
        if err.code == "NoSuchBucket":
            raise StorageError(f"{uri}: bucket {bucket!r} does not exist") from None
        raise _s3_error(uri, err) from err


def write_bytes(uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    """Writes `data` to `uri` atomically (see the module docstring)."""
    if not is_s3(uri):
        atomic_write_local(Path(uri), data)
        return
    from minio.error import S3Error

    bucket, key = split_s3(uri)
    try:
        s3_client().put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)
    except S3Error as err:
        raise _s3_error(uri, err) from err


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


def list_names(uri: str) -> list[str]:
    """Immediate children (files and 'directories') under a prefix, sorted."""
    if not is_s3(uri):
        path = Path(uri)
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    from minio.error import S3Error

    bucket, prefix = split_s3(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    try:
        objects = s3_client().list_objects(bucket, prefix=prefix)
        return sorted({o.object_name[len(prefix):].rstrip("/").split("/")[0] for o in objects})
    except S3Error as err:
        if err.code == "NoSuchBucket":
            raise StorageError(f"{uri}: bucket {bucket!r} does not exist") from None
        raise _s3_error(uri, err) from err


def local_copy(uri: str, workdir: str | None = None) -> Path:
    """A local path holding the object at `uri` (the path itself when local)."""
    if not is_s3(uri):
        return Path(uri)
    data = read_bytes(uri)
    target = Path(workdir or tempfile.mkdtemp(prefix="keel-")) / Path(split_s3(uri)[1]).name
    atomic_write_local(target, data)
    return target
