"""Lineage stamps: who made an artifact, from what, with which code.

Every Keel output artifact carries these keys in its KFP metadata, so the
lineage of any artifact can be read from the artifact alone, and the
register step folds them into the bundle's lineage record.
"""

from __future__ import annotations

import datetime as dt
import functools
import getpass
import hashlib
import json
import os
import subprocess
from pathlib import Path

from keel.components._common.errors import StorageError

# The keys stamp() adds; everything else in an artifact's metadata is its own content.
STAMP_KEYS = frozenset({"content_hash", "parents", "code_version", "params", "created_by", "created_at"})


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The code that ran: KEEL_CODE_VERSION (set in images), else git, else the package version."""
    if os.environ.get("KEEL_CODE_VERSION"):
        return os.environ["KEEL_CODE_VERSION"]
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("keel-ml")
    except PackageNotFoundError:
        pkg = "unknown"
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        return f"{pkg}+git.{sha[:12]}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return pkg


def actor() -> str:
    """Who made it: KEEL_USER, else the OS user (in a pod, the ServiceAccount env)."""
    return os.environ.get("KEEL_USER") or os.environ.get("KFP_POD_NAME") or getpass.getuser()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def parent(name: str, artifact) -> dict:
    """A parent reference from a KFP input artifact (or anything with uri/metadata)."""
    metadata = dict(getattr(artifact, "metadata", {}) or {})
    return {"name": name, "uri": getattr(artifact, "uri", ""), "content_hash": metadata.get("content_hash", "")}


def stamp(*, content_hash: str, parents: list[dict], params: dict | None = None, **extra) -> dict:
    """The standard lineage keys for an output artifact's metadata."""
    return {
        "content_hash": content_hash,
        "parents": parents,
        "code_version": code_version(),
        "params": params or {},
        "created_by": actor(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def artifact_hash(artifact) -> str:
    """The artifact's recorded content hash, else the sha256 of its file(s), else of its metadata."""
    metadata = dict(getattr(artifact, "metadata", {}) or {})
    if metadata.get("content_hash"):
        return str(metadata["content_hash"])
    path = Path(getattr(artifact, "path", "") or "")
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{file_sha256(item)}  {item.relative_to(path).as_posix()}\n".encode())
        return "sha256:" + digest.hexdigest()
    # A Metrics artifact may live only in its metadata (KFP writes no file for it).
    values = {k: v for k, v in metadata.items() if k not in STAMP_KEYS}
    if not values:
        raise StorageError(
            f"{getattr(artifact, 'uri', '') or path}: has no content_hash, no file and no metadata, so its lineage "
            "cannot be recorded; rerun the step that produces it"
        )
    return "sha256:" + hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def write_metadata_file(artifact) -> None:
    """Writes a metadata-only artifact's metadata (Metrics, ClassificationMetrics) to its path as JSON.

    KFP keeps metrics in metadata and writes no file, but an artifact with no
    file counts as missing to kfp.local's cache (so every later step would
    re-run) and has nothing a reviewer can download. Call it last.
    """
    from keel.components._common import storage

    storage.write_bytes(artifact.path, json.dumps(dict(artifact.metadata), sort_keys=True, indent=1, default=str).encode())
