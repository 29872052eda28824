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
import platform
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from keel.components._common.errors import StorageError

# The keys stamp() adds; everything else in an artifact's metadata is its own content.
STAMP_KEYS = frozenset({"content_hash", "parents", "code_version", "params", "created_by", "created_at"})
# The distributions whose versions decide a model's numbers (named in the record for a reader;
# every installed distribution goes into the lock hash).
MODEL_PACKAGES = ("numpy", "pandas", "pyarrow", "scikit-learn", "xgboost", "torch", "tensorflow", "tensorflow-cpu",
                  "shap", "fairlearn", "kfp", "keel-ml")
# Config keys that hold a seed, wherever they are nested.
_SEED_KEY = re.compile(r"^(seed|random_state|[a-z0-9_]*_seed)$")


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


def json_hash(value) -> str:
    """Content hash of a JSON-able value (metrics have no file of their own); keys sorted, others as str."""
    return "sha256:" + hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def write_metadata_file(artifact) -> None:
    """Writes a metadata-only artifact's metadata (Metrics, ClassificationMetrics) to its path as JSON.

    KFP keeps metrics in metadata and writes no file, but an artifact with no
    file counts as missing to kfp.local's cache (so every later step would
    re-run) and has nothing a reviewer can download. Call it last.
    """
    from keel.components._common import storage

    storage.write_bytes(artifact.path, json.dumps(dict(artifact.metadata), sort_keys=True, indent=1, default=str).encode())


def normalize_name(name: str) -> str:
    """A distribution name as PEP 503 compares them: `Scikit_Learn` and `scikit-learn` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_distributions() -> dict[str, str]:
    """Every importable distribution: normalised name -> version.

    When a name is installed twice on sys.path, the first one is the one
    `import` finds, so that is the one recorded.
    """
    from importlib.metadata import distributions

    found: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:  # a distribution with no Name is a broken leftover that nothing can import by name
            found.setdefault(normalize_name(name), dist.version)
    return found


def lock_hash(packages: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """sha256 over the sorted `name==version` lines of a set of distributions (names normalised)."""
    pairs = packages.items() if isinstance(packages, Mapping) else packages
    lines = sorted({f"{normalize_name(name)}=={version}" for name, version in pairs})
    return "sha256:" + hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def _environment() -> dict:
    installed = installed_distributions()
    constraints = Path(__file__).resolve().parents[2] / "images" / "constraints.txt"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: installed[name] for name in MODEL_PACKAGES if name in installed},
        # Both: the constraints file is what was asked for (it changes with a pin), the lock
        # hash is what is installed (it changes with any upgrade, pinned or not, and also
        # covers an environment not built from the file, such as a laptop's venv).
        "lock_hash": lock_hash(installed),
        "constraints_hash": file_sha256(constraints) if constraints.is_file() else None,
    }


def environment() -> dict:
    """The software a model was made with, for its lineage record.

    Read once per process (listing every distribution takes a moment, and
    it cannot change under a running step).

    Returns:
        {"python": "3.11.x", "platform": platform.platform(), "packages": {name: version}
        for the installed MODEL_PACKAGES, "lock_hash": lock_hash() of every installed
        distribution, "constraints_hash": sha256 of images/constraints.txt beside the
        package, or None where it is not shipped}.
    """
    return json.loads(json.dumps(_environment()))  # a copy: a caller may add to its record


def seeds(config: Mapping[str, Mapping]) -> dict[str, object]:
    """Every seed in the config sections, by dotted path.

    Covers data.sample_seed, split.seed, model.seed, tune.seed, fairness.seed,
    explain.seed and any key named seed, random_state or *_seed nested
    anywhere (e.g. model.params.random_state).

    Args:
        config: section name -> section (a dict, or a pydantic section).

    Returns:
        {"split.seed": 42, "model.params.random_state": 7, ...}, sorted by path.
    """
    found: dict[str, object] = {}

    def walk(value, path: str) -> None:
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        if isinstance(value, Mapping):
            for key, item in value.items():
                where = f"{path}.{key}" if path else str(key)
                if _SEED_KEY.match(str(key)) and not isinstance(item, (Mapping, list)):
                    found[where] = item
                else:
                    walk(item, where)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")

    walk(config, "")
    return dict(sorted(found.items()))
