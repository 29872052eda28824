"""A versioned, append-only model registry on a local directory or S3.

Layout: `{store}/registry/{model_name}/v{N}/` holds the bundle's files and a
`MANIFEST.json` with every file's sha256 and size. A version exists only once
its MANIFEST.json exists, and nothing is ever overwritten:

* Local: the files (MANIFEST included) are written into a hidden staging
  directory beside the versions, which is then renamed to `v{N}`. rename(2)
  is atomic and fails when `v{N}` already holds files, so two publishers
  racing for the same number cannot both win: the loser takes N+1.
* S3 has no rename and the minio client sends no conditional PUT, so a
  publisher first *claims* N: it writes `.claims/v{N}.{random}` and lists the
  claims for N. It goes on only if its claim is the only one there. S3 (and
  MinIO) list-after-write is strongly consistent, so of two racing claimers at
  least one sees both claims and backs off; both may back off, which burns N
  (versions then skip a number, they never repeat one). The files go under
  `v{N}/`, the MANIFEST last, after re-checking that no MANIFEST exists for N.
  What remains: a writer that ignores the claims (another tool, a human with
  `aws s3 cp`) can still overwrite files of a version; `verify` then fails on
  the changed file, it never passes silently. A publisher killed mid-upload
  leaves files under `v{N}/` without a MANIFEST: invisible, and its claim
  keeps N from being reused.

Protection (keel.components._common.protect): with KEEL_SIGNING_KEY set, a
version also gets `MANIFEST.sig`, an Ed25519 signature over the exact
MANIFEST.json bytes, written before the manifest (whose existence is what
makes a version visible), so a visible signed version always has its
signature. With KEEL_BUNDLE_KEY set, every file is stored AES-256-GCM
encrypted and the manifest records the key id; its hashes are those of the
stored bytes, so integrity and the signature are checked before anything is
decrypted. Whether to sign or encrypt is decided from the environment at
publish, so `publish(name, files)` is the same call either way. Every read
that returns file contents (`read_verified`, `read_file`, and
keel.components._common.registry.bundle's loaders) takes the same steps, in this
order: the signature (Protection.check_signature), the hashes of the stored
bytes (check_files), then decryption (Protection.open); `open_version` is
that path for bytes already in hand. `verify` and `export_version` stop
before decryption: checking and copying a version needs no key.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from collections.abc import Callable, Mapping
from pathlib import Path

from keel.components._common import lineage, storage
from keel.components._common.config import NAME_PATTERN, RegistrySection
from keel.components._common.errors import DataError, StorageError
from keel.components._common.protect import SIGNATURE_FILE, Protection

MANIFEST = "MANIFEST.json"
SIGNATURE = SIGNATURE_FILE  # MANIFEST.sig: beside the manifest, never listed in it
RESERVED = (MANIFEST, SIGNATURE)
_CLAIMS = ".claims"
_VERSION_DIR = re.compile(r"^v([1-9][0-9]*)$")
# registry.model_name's pattern: other entries under registry/ are not models.
_MODEL_NAME = re.compile(NAME_PATTERN)
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAX_ATTEMPTS = 50

Files = Mapping[str, bytes]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bundle_hash(entries: Mapping[str, Mapping]) -> str:
    """The bundle's content hash: sha256 over `"<sha256>  <name>\\n"` lines sorted by name.

    The same lines `sha256sum` prints, so an auditor can recompute it with
    `sha256sum * | sort -k2 | sha256sum` in a downloaded version directory
    (without MANIFEST.json).
    """
    lines = "".join(f"{entries[name]['sha256']}  {name}\n" for name in sorted(entries))
    return "sha256:" + sha256_hex(lines.encode())


def build_manifest(model_name: str, version: int, files: Files, encryption: Mapping | None = None) -> dict:
    """The manifest of `files` as stored (encrypted bytes when `encryption`, its record, is given)."""
    entries = {name: {"sha256": sha256_hex(files[name]), "size": len(files[name])} for name in sorted(files)}
    manifest = {"version": version, "model_name": model_name, "files": entries, "bundle_hash": bundle_hash(entries)}
    if encryption is not None:
        manifest["encryption"] = dict(encryption)
    return manifest


def seal(model_name: str, version: int, files: Files, protection: Protection) -> tuple[dict[str, bytes], bytes, bytes | None]:
    """What publishing writes: (stored files, MANIFEST.json bytes, MANIFEST.sig bytes or None).

    The files are encrypted when `protection` holds a bundle key, and the
    manifest is signed when it holds a signing key.
    """
    stored, encryption = protection.seal(model_name, version, files)
    manifest_bytes = _json_bytes(build_manifest(model_name, version, stored, encryption))
    return stored, manifest_bytes, protection.sign(manifest_bytes)


def parse_manifest(path: str, data: bytes) -> dict:
    """MANIFEST.json's content; DataError naming `path` when it is not a Keel manifest."""
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err}); the version is corrupt, do not use it") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise DataError(f"{path}: is not a Keel manifest (no files map); the version is corrupt, do not use it")
    version = manifest.get("version")
    if not isinstance(manifest.get("model_name"), str) or not isinstance(version, int) or isinstance(version, bool):
        raise DataError(f"{path}: names no model_name and version; the version is corrupt, do not use it")
    return manifest


def open_version(where: str, manifest_bytes: bytes, signature: bytes | None, stored: Files,
                 protection: Protection | None = None, *, decrypt: bool = True) -> tuple[dict, dict[str, bytes]]:
    """The one path from stored bytes to usable files: signature, hashes, then decryption.

    Args:
        where: the version's URI or directory, used in the messages.
        manifest_bytes: MANIFEST.json exactly as stored.
        signature: MANIFEST.sig as stored, or None when absent.
        stored: every other file found in the version, as stored.
        protection: the keys to use (default: from the environment).
        decrypt: False returns the stored bytes, checked but not decrypted.

    Returns:
        (the manifest, file name -> content).

    Raises:
        ConfigError: a key the bundle needs is not configured (see Protection).
        StorageError: a listed file is missing.
        DataError: the signature, a hash or a decryption fails (the message names the file).
    """
    protection = Protection.from_env() if protection is None else protection
    protection.check_signature(where, manifest_bytes, signature)
    manifest = parse_manifest(f"{where}/{MANIFEST}", manifest_bytes)
    if decrypt:
        protection.key_for(where, manifest)  # a missing or wrong key is named before the files are hashed
    return manifest, _unseal(where, manifest, stored, protection, decrypt)


def export_version(where: str, target: str | Path) -> dict:
    """Copies a version, exactly as stored, into a local directory (e.g. a KFP output); returns its manifest.

    The bytes are copied verbatim (still encrypted, MANIFEST.sig included),
    so `load_bundle_dir(target)` verifies the copy exactly as the registry
    would, and no plaintext of an encrypted bundle is written. The version is
    checked first (signature when a verify key is configured, and every hash);
    it is not decrypted, so this needs no bundle key.

    Args:
        where: the version's URI or directory (`Registry.uri(name, version)`).
        target: the local directory; created if missing, files in it replaced.

    Raises:
        StorageError: no MANIFEST.json at `where`, or a listed file is missing.
        DataError: the signature or a hash fails (the message names the file).
    """
    manifest_uri = storage.join(where, MANIFEST)
    if not storage.exists(manifest_uri):
        raise StorageError(f"{where}: no {MANIFEST}; not a registered version (…/registry/<model>/v<N>)")
    present = storage.list_names(where)
    stored = {n: storage.read_bytes(storage.join(where, n)) for n in present if n != MANIFEST}
    manifest_bytes = storage.read_bytes(manifest_uri)
    manifest, _ = open_version(where, manifest_bytes, stored.get(SIGNATURE), stored, decrypt=False)
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    for filename in sorted(stored):
        storage.atomic_write_local(out / filename, stored[filename])
    storage.atomic_write_local(out / MANIFEST, manifest_bytes)  # last, as in the registry
    return manifest


def _unseal(where: str, manifest: dict, stored: Files, protection: Protection, decrypt: bool) -> dict[str, bytes]:
    """Hashes first (of the stored bytes), then decryption: nothing unverified reaches the cipher."""
    check_files(where, manifest, stored)
    files = {n: d for n, d in stored.items() if n not in RESERVED}
    return protection.open(where, manifest, files) if decrypt else files


def check_files(where: str, manifest: dict, files: Files) -> None:
    """Checks `files` against `manifest`; the error names the first file that differs.

    Args:
        where: the version's URI or directory, used in the messages.
        manifest: the parsed MANIFEST.json.
        files: every file found in the version (MANIFEST.json and MANIFEST.sig,
            which the manifest cannot list, are ignored if present).

    Raises:
        StorageError: a listed file is missing.
        DataError: a file's hash or size differs, an unlisted file is present,
            or the manifest's own bundle hash does not add up.
    """
    entries = manifest.get("files")
    if not isinstance(entries, dict) or not entries:
        raise DataError(f"{where}/{MANIFEST}: lists no files; the version is corrupt, publish a new one")
    for name in sorted(entries):
        if name not in files:
            raise StorageError(f"{where}/{name}: listed in {MANIFEST} but missing; the version is incomplete, do not use it")
    for name in sorted(files):
        if name not in entries and name not in RESERVED:
            raise DataError(f"{where}/{name}: not listed in {MANIFEST}; the version was modified after publishing, do not use it")
    for name in sorted(entries):
        check_file(where, name, entries[name] if isinstance(entries[name], Mapping) else {}, files[name])
    if bundle_hash(entries) != manifest.get("bundle_hash"):
        raise DataError(f"{where}/{MANIFEST}: bundle_hash does not match its file list; the manifest was edited, do not use this version")


def check_file(where: str, name: str, entry: Mapping, data: bytes) -> None:
    """Raises DataError naming `name` when `data` differs from its manifest entry."""
    got = sha256_hex(data)
    if got != entry.get("sha256") or len(data) != entry.get("size"):
        raise DataError(
            f"{where}/{name}: sha256 {got[:16]}... ({len(data)} bytes) does not match {MANIFEST} "
            f"({str(entry.get('sha256'))[:16]}..., {entry.get('size')} bytes); "
            "the file was modified after publishing, do not use this version"
        )


@dataclass(frozen=True)
class VersionRef:
    """One registered version: the store, the model name and the version number."""

    store: str
    model_name: str
    version: int

    @property
    def label(self) -> str:
        return f"{self.model_name}:v{self.version}"


class Registry:
    """Versioned model bundles under `{store}/registry/{model_name}/v{N}/`.

    Args:
        store: a local directory or `s3://bucket/prefix` (credentials from the
            AWS_* environment, see keel.components._common.storage).
    """

    def __init__(self, store: str):
        store = str(store or "").strip()
        if not store:
            raise StorageError("registry.store: is empty; set a local directory or s3://bucket/prefix")
        if storage.is_s3(store):
            storage.split_s3(store)  # rejects s3:// without a bucket
            self.store = store.rstrip("/")
        else:
            # Absolute, so URIs recorded in lineage still resolve from another directory.
            self.store = str(Path(store).expanduser().resolve())
        self.root = storage.join(self.store, "registry")

    def __repr__(self) -> str:
        return f"Registry({self.store!r})"

    # -- reading ---------------------------------------------------------------

    def model_uri(self, name: str) -> str:
        RegistrySection.parse({"store": self.store, "model_name": name}, "registry")
        return storage.join(self.root, name)

    def uri(self, name: str, version: int) -> str:
        """The version's directory (local path or s3:// prefix)."""
        return storage.join(self.model_uri(name), f"v{int(version)}")

    def _numbered(self, name: str) -> list[int]:
        """Every version number in use, complete or not."""
        names = storage.list_names(self.model_uri(name))
        return sorted(int(m.group(1)) for n in names if (m := _VERSION_DIR.match(n)))

    def versions(self, name: str) -> list[int]:
        """The complete versions (those with a MANIFEST.json), ascending."""
        return [v for v in self._numbered(name) if storage.exists(storage.join(self.uri(name, v), MANIFEST))]

    def latest(self, name: str) -> int | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def models(self) -> list[str]:
        """Every model with at least one complete version, sorted by name."""
        return [n for n in storage.list_names(self.root) if _MODEL_NAME.match(n) and self.versions(n)]

    def newest(self) -> VersionRef | None:
        """The most recently registered version in the store, whichever model; None when it has none.

        Registration time is when the version's MANIFEST.json was written: it is written once, last,
        and a version is immutable after. Equal times (S3 keeps whole seconds) go to the later name.
        """
        found = []
        for name in self.models():
            version = self.latest(name)
            found.append((storage.modified_at(storage.join(self.uri(name, version), MANIFEST)), name, version))
        if not found:
            return None
        _, name, version = max(found)
        return VersionRef(self.store, name, version)

    def _manifest_bytes(self, name: str, version: int, protection: Protection) -> tuple[bytes, bytes | None]:
        """(MANIFEST.json, MANIFEST.sig or None) as stored; the signature is fetched only when one is checked."""
        where = self.uri(name, version)
        path = storage.join(where, MANIFEST)
        if not storage.exists(path):
            known = ", ".join(f"v{v}" for v in self.versions(name)) or "none"
            raise StorageError(f"{where}: no such version of model {name!r} in {self.store} (versions: {known})")
        data = storage.read_bytes(path)
        signature = None
        if protection.wants_signature and storage.exists(storage.join(where, SIGNATURE)):
            signature = storage.read_bytes(storage.join(where, SIGNATURE))
        return data, signature

    def _checked_manifest(self, name: str, version: int, data: bytes, signature: bytes | None,
                          protection: Protection) -> dict:
        where = self.uri(name, version)
        protection.check_signature(where, data, signature)
        path = storage.join(where, MANIFEST)
        manifest = parse_manifest(path, data)
        if manifest.get("model_name") != name or manifest.get("version") != int(version):
            raise DataError(
                f"{path}: describes {manifest.get('model_name')!r} v{manifest.get('version')}, not {name!r} v{version}; "
                "the version was copied or edited, do not use it"
            )
        return manifest

    def load_manifest(self, name: str, version: int) -> dict:
        """A version's MANIFEST.json, its signature checked when a verify key is configured."""
        protection = Protection.from_env()
        data, signature = self._manifest_bytes(name, version, protection)
        return self._checked_manifest(name, version, data, signature, protection)

    def _open(self, name: str, version: int, decrypt: bool) -> tuple[dict, dict[str, bytes]]:
        protection = Protection.from_env()
        where = self.uri(name, version)
        data, signature = self._manifest_bytes(name, version, protection)
        manifest = self._checked_manifest(name, version, data, signature, protection)
        if decrypt:
            protection.key_for(where, manifest)  # named before the files are downloaded
        present = [n for n in storage.list_names(where) if n not in RESERVED]
        stored = {n: storage.read_bytes(storage.join(where, n)) for n in present}
        return manifest, _unseal(where, manifest, stored, protection, decrypt)

    def read_verified(self, name: str, version: int) -> tuple[dict, dict[str, bytes]]:
        """The manifest and every file of a version (decrypted), after checking the signature and all hashes.

        Raises:
            ConfigError: the version is encrypted and KEEL_BUNDLE_KEY is missing or another key, or
                KEEL_REQUIRE_SIGNED is set without a verify key.
            StorageError: the version or a listed file is missing.
            DataError: the signature, a file's hash or its decryption fails (the message names it).
        """
        return self._open(name, version, decrypt=True)

    def verify(self, name: str, version: int) -> dict:
        """Checks every file of a version against its MANIFEST.json (and MANIFEST.sig); returns the manifest.

        Decrypts nothing: an encrypted version can be checked without its key.

        Raises:
            StorageError: the version or a listed file is missing.
            DataError: a file differs from its recorded hash (the message names it), or the signature fails.
        """
        return self._open(name, version, decrypt=False)[0]

    def read_file(self, name: str, version: int, filename: str) -> bytes:
        """One file of a version (decrypted), checked against its recorded hash and the signature."""
        protection = Protection.from_env()
        where = self.uri(name, version)
        data, signature = self._manifest_bytes(name, version, protection)
        manifest = self._checked_manifest(name, version, data, signature, protection)
        if filename not in manifest["files"]:
            raise StorageError(f"{where}: has no file {filename!r}; files are: {', '.join(sorted(manifest['files']))}")
        protection.key_for(where, manifest)
        stored = storage.read_bytes(storage.join(where, filename))
        check_file(where, filename, manifest["files"][filename], stored)
        return protection.open(where, manifest, {filename: stored})[filename]

    # -- publishing ------------------------------------------------------------

    def publish(self, name: str, files: Files | Callable[[int], Files]) -> int:
        """Publishes a new version and returns its number.

        Args:
            name: the model name (same rules as registry.model_name).
            files: file name -> bytes, or a function of the version number that
                returns them (for files that record their own version; it is
                called again if a concurrent publisher takes the number first).

        The files are encrypted and the manifest signed when the environment
        holds the keys (keel.components._common.protect.Protection.from_env).

        Raises:
            ConfigError: a key in the environment is malformed (nothing is written).
            StorageError: the store cannot be written; nothing is left visible.
        """
        build = files if callable(files) else (lambda _version: files)
        self.model_uri(name)  # validates the name before anything is written
        protection = Protection.from_env()  # a bad key fails here, before anything is written
        if storage.is_s3(self.store):
            return self._publish_s3(name, build, protection)
        return self._publish_local(name, build, protection)

    def _payload(self, build: Callable[[int], Files], version: int) -> dict[str, bytes]:
        payload = dict(build(version))
        if not payload:
            raise StorageError("registry publish: no files to publish")
        for filename, data in payload.items():
            if filename in RESERVED or not _FILE_NAME.match(filename):
                raise StorageError(f"registry publish: file name {filename!r} is not allowed (reserved or not a plain file name)")
            if not isinstance(data, (bytes, bytearray)):
                raise StorageError(f"registry publish: {filename!r} must be bytes, got {type(data).__name__}")
        return payload

    def _publish_local(self, name: str, build: Callable[[int], Files], protection: Protection) -> int:
        base = Path(self.model_uri(name))
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageError(f"{base}: cannot create the registry directory ({err.strerror or err}); check registry.store") from err
        for _ in range(_MAX_ATTEMPTS):
            numbers = self._numbered(name)
            version = (numbers[-1] if numbers else 0) + 1
            stored, manifest_bytes, signature = seal(name, version, self._payload(build, version), protection)
            staging = Path(tempfile.mkdtemp(prefix=f".staging-v{version}-", dir=base))
            try:
                # The whole directory appears at once (the rename), so the order here matters to no reader.
                extra = {SIGNATURE: signature} if signature is not None else {}
                for filename, data in {**stored, **extra, MANIFEST: manifest_bytes}.items():
                    _write_synced(staging / filename, data)
                storage.fsync_dir(staging)
                try:
                    os.rename(staging, base / f"v{version}")
                except OSError as err:
                    if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        continue  # another publisher took v{version}; the finally removes our copy
                    raise
                storage.fsync_dir(base)
                return version
            except OSError as err:
                raise StorageError(f"{base}: cannot publish v{version} ({err.strerror or err})") from err
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        raise StorageError(f"{base}: gave up after {_MAX_ATTEMPTS} attempts; other publishers kept taking the next version")

    def _publish_s3(self, name: str, build: Callable[[int], Files], protection: Protection) -> int:
        base = self.model_uri(name)
        for attempt in range(_MAX_ATTEMPTS):
            version = self._next_s3_version(name)
            if not self._claim(base, version):
                # Both racers can lose a round; jitter keeps them from meeting again.
                time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
                continue
            stored, manifest_bytes, signature = seal(name, version, self._payload(build, version), protection)
            where = self.uri(name, version)
            written: list[str] = []
            try:
                for filename in sorted(stored):
                    written.append(filename)
                    storage.write_bytes(storage.join(where, filename), stored[filename])
                if signature is not None:
                    # Before the manifest: a visible (manifested) version always has its signature.
                    written.append(SIGNATURE)
                    storage.write_bytes(storage.join(where, SIGNATURE), signature, content_type="application/json")
                if storage.exists(storage.join(where, MANIFEST)):
                    written.clear()  # those objects now belong to the other writer: leave them
                    raise StorageError(
                        f"{where}: was published concurrently by a writer that ignores {_CLAIMS}/; "
                        f"run `verify` on v{version} and publish again"
                    )
                written.append(MANIFEST)
                storage.write_bytes(storage.join(where, MANIFEST), manifest_bytes, content_type="application/json")
                return version
            except BaseException:
                _remove_s3(where, written)
                raise
        raise StorageError(f"{base}: gave up after {_MAX_ATTEMPTS} attempts; other publishers kept taking the next version")

    def _claims(self, base: str) -> list[str]:
        return storage.list_names(storage.join(base, _CLAIMS))

    def _next_s3_version(self, name: str) -> int:
        claimed = [int(m.group(1)) for c in self._claims(self.model_uri(name)) if (m := re.match(r"^v([0-9]+)\.", c))]
        return max([0, *self._numbered(name), *claimed]) + 1

    def _claim(self, base: str, version: int) -> bool:
        mine = f"v{version}.{uuid.uuid4().hex}"
        record = {"created_by": lineage.actor(), "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        storage.write_bytes(storage.join(base, _CLAIMS, mine), _json_bytes(record), content_type="application/json")
        rivals = [c for c in self._claims(base) if c.startswith(f"v{version}.")]
        return rivals == [mine]


def _json_bytes(value) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _remove_s3(where: str, filenames: list[str]) -> None:
    """Deletes what a failed publish uploaded; a failure here must not hide the original error."""
    if not filenames:
        return
    from minio.deleteobjects import DeleteObject

    bucket, prefix = storage.split_s3(where)
    try:
        errors = list(storage.s3_client().remove_objects(bucket, [DeleteObject(f"{prefix}/{n}") for n in filenames]))
    except Exception as err:  # noqa: BLE001 - reported, then the original error propagates
        errors = [err]
    if errors:
        logging.getLogger(__name__).warning(
            "%s: could not remove %d object(s) of a failed publish (%s); they are invisible without a MANIFEST",
            where, len(errors), errors[0],
        )
