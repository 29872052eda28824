"""Protecting model bundles at rest: signatures, encryption, and S3 server-side encryption.

The registry's MANIFEST.json already records every file's sha256, so a file
changed after publishing is caught. It cannot catch someone who edits a file
*and* the manifest. This module adds the two things a hash list cannot give,
plus the S3 side:

* Signatures, Ed25519. Asymmetric on purpose: the registering pipeline holds
  the private key (KEEL_SIGNING_KEY / KEEL_SIGNING_KEY_FILE), predictors only
  the public one (KEEL_VERIFY_KEY / KEEL_VERIFY_KEY_FILE), so a compromised
  server, or anyone who can write to the bucket, cannot mint a bundle that
  verifies. The signature covers the exact MANIFEST.json bytes (not a
  re-serialization, which could differ between JSON libraries), and the
  manifest covers every file by hash, so one signature covers the bundle. It
  lives beside the manifest in MANIFEST.sig, which the manifest cannot list.
  Keys are named by key id (first 16 hex of the sha256 of the raw public key),
  never by value. When a verify key is configured, loading refuses an
  unsigned bundle, one signed by another key, and one whose manifest changed
  after signing. KEEL_REQUIRE_SIGNED=1 makes a missing verify key an error
  too, so a predictor cannot silently fall back to trusting hashes alone.
  With no key configured, nothing changes: bundles are checked against their
  hash manifest, exactly as before.

* Encryption, AES-256-GCM per file (KEEL_BUNDLE_KEY / KEEL_BUNDLE_KEY_FILE,
  base64 of 32 bytes). Stored bytes are `KEELENC1` + a random 12-byte nonce +
  ciphertext and tag. The associated data binds the model name, the version
  and the file name, so a file moved to another version, model or name fails
  authentication even if someone recomputes the manifest's hashes. The
  manifest hashes the *stored* bytes: integrity (and the signature) is checked
  before any decryption, the bundle hash covers what is actually at rest, and
  an auditor can check a version without holding the key. Random nonces are
  safe here: a key encrypts far fewer than the 2**32 messages after which a
  96-bit random nonce may repeat. GCM authenticates each file, so a bundle
  with a recomputed manifest but no valid signature still cannot be altered
  undetected by anyone without the key. The manifest records the key id
  (sha256 of a domain prefix and the key, truncated: the id of a symmetric key
  must not be a plain hash of it), so a wrong or missing key is reported as
  such, not as tampering.

* S3 server-side encryption: KEEL_S3_SSE=AES256 (SSE-S3) or aws:kms (with an
  optional KEEL_S3_SSE_KMS_KEY_ID) is sent with every object Keel puts. It
  protects the bucket's disks, not against someone with read access to the
  bucket; bundle encryption above does that.

Keys for operators: `python -m keel.components._common.protect keygen`.
Secrets never appear in messages, logs or artifacts; key ids do.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from keel.components._common.errors import ConfigError, DataError

ENCRYPTED_MAGIC = b"KEELENC1"
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32
ENCRYPTION_ALGORITHM = "AES-256-GCM"
SIGNATURE_ALGORITHM = "Ed25519"
SIGNATURE_FILE = "MANIFEST.sig"
MANIFEST_FILE = "MANIFEST.json"  # the registry's name for it; repeated here so this module needs no registry import

SSE_VALUES = ("AES256", "aws:kms")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")
_KEYGEN_HINT = "generate one with `python -m keel.components._common.protect keygen`"


def _key_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _is_key_id(value) -> bool:
    """Whether `value` looks like a key id (16 lower-case hex), so that it may appear in a message."""
    return isinstance(value, str) and len(value) == 16 and not set(value) - set("0123456789abcdef")


# -- keys -------------------------------------------------------------------------------------------


class BundleKey:
    """An AES-256 key; its repr and str show the key id only."""

    __slots__ = ("_key", "key_id")

    def __init__(self, key: bytes):
        if len(key) != KEY_SIZE:
            raise ConfigError(f"bundle key: must be {KEY_SIZE} bytes, got {len(key)}; {_KEYGEN_HINT}")
        self._key = bytes(key)
        # Domain-separated, so the id reveals nothing usable about the key itself.
        self.key_id = _key_id(b"keel-bundle-key" + self._key)

    def __repr__(self) -> str:
        return f"BundleKey(key_id={self.key_id!r})"

    __str__ = __repr__

    def encrypt(self, data: bytes, aad: bytes) -> bytes:
        """`KEELENC1` + nonce + AES-256-GCM(data) with `aad` authenticated."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(NONCE_SIZE)
        return ENCRYPTED_MAGIC + nonce + AESGCM(self._key).encrypt(nonce, bytes(data), aad)

    def decrypt(self, where: str, data: bytes, aad: bytes) -> bytes:
        """The plaintext of `encrypt`'s output.

        Raises:
            DataError: `data` is not Keel-encrypted, or fails authentication
                (modified, moved from another version or name, or another key).
        """
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        head = len(ENCRYPTED_MAGIC) + NONCE_SIZE
        if not data.startswith(ENCRYPTED_MAGIC) or len(data) < head + TAG_SIZE:
            raise DataError(f"{where}: is not a Keel-encrypted file, but its manifest says the bundle is encrypted; "
                            "the version was modified after publishing, do not use it")
        try:
            return AESGCM(self._key).decrypt(data[len(ENCRYPTED_MAGIC):head], data[head:], aad)
        except InvalidTag:
            raise DataError(f"{where}: fails AES-GCM authentication with key id {self.key_id}; the file was modified, "
                            "or moved from another version or model, after publishing: do not use this version") from None


def signing_key_id(public_key) -> str:
    """First 16 hex of the sha256 of an Ed25519 public key's 32 raw bytes."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _key_id(raw)


def _secret_text(environ: Mapping[str, str], variable: str) -> tuple[str, bytes] | None:
    """(name of the variable it came from, raw bytes) from VARIABLE or VARIABLE_FILE; None if neither is set."""
    value = environ.get(variable) or None
    path = environ.get(f"{variable}_FILE") or None
    if value and path:
        raise ConfigError(f"{variable} and {variable}_FILE are both set; keep one")
    if path:
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise ConfigError(f"{variable}_FILE: cannot read {path} ({err.strerror or err}); "
                              "check the mounted Secret") from None
        if not data.strip():
            raise ConfigError(f"{variable}_FILE: {path} is empty; {_KEYGEN_HINT}")
        return f"{variable}_FILE", data
    if value:
        return variable, value.encode()
    return None


def _raw_32(source: str, data: bytes) -> bytes:
    """32 key bytes from base64 text (standard or URL-safe), or a *_FILE holding exactly the 32 raw bytes."""
    if len(data) == KEY_SIZE and source.endswith("_FILE"):
        # Base64 of 32 bytes is 44 characters, so a 32-byte file can only be the raw key. Not for a
        # variable: 32 printable characters there (say a hex string) would be a weak key taken silently.
        return data
    text = data.strip().replace(b"-", b"+").replace(b"_", b"/")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{source}: is neither PEM nor base64 of {KEY_SIZE} bytes; {_KEYGEN_HINT}") from None
    if len(raw) != KEY_SIZE:
        raise ConfigError(f"{source}: decodes to {len(raw)} bytes, not {KEY_SIZE}; {_KEYGEN_HINT}")
    return raw


def _bundle_key(environ: Mapping[str, str]) -> BundleKey | None:
    found = _secret_text(environ, "KEEL_BUNDLE_KEY")
    if found is None:
        return None
    return BundleKey(_raw_32(*found))


def _signing_key(environ: Mapping[str, str]):
    return _ed25519_key(environ, "KEEL_SIGNING_KEY", private=True)


def _verify_key(environ: Mapping[str, str]):
    return _ed25519_key(environ, "KEEL_VERIFY_KEY", private=False)


def _ed25519_key(environ: Mapping[str, str], variable: str, *, private: bool):
    """The Ed25519 key in `variable` (or its _FILE): PEM (PKCS8 private / SubjectPublicKeyInfo) or 32 raw bytes."""
    found = _secret_text(environ, variable)
    if found is None:
        return None
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    source, data = found
    kind = Ed25519PrivateKey if private else Ed25519PublicKey
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = (serialization.load_pem_private_key(data.strip(), password=None) if private
                   else serialization.load_pem_public_key(data.strip()))
        except (ValueError, TypeError) as err:
            # The message from cryptography names the format problem, never the key material.
            what = "an unencrypted PKCS8 PEM private key" if private else "a PEM public key"
            raise ConfigError(f"{source}: is not {what} ({type(err).__name__}); {_KEYGEN_HINT}") from None
        if not isinstance(key, kind):
            raise ConfigError(f"{source}: is a {type(key).__name__.lstrip('_')}, not an Ed25519 key; {_KEYGEN_HINT}")
        return key
    raw = _raw_32(source, data)
    return Ed25519PrivateKey.from_private_bytes(raw) if private else Ed25519PublicKey.from_public_bytes(raw)


def _flag(environ: Mapping[str, str], variable: str) -> bool:
    value = str(environ.get(variable, "")).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{variable}: {value!r} is not a yes/no value; use 1 or 0")


# -- what the environment asks for ------------------------------------------------------------------


def bundle_aad(model_name: str, version: int, filename: str) -> bytes:
    """The associated data of one file: binds its model, version and name to its ciphertext."""
    return b"\0".join([b"keel-bundle-v1", model_name.encode(), str(int(version)).encode(), filename.encode()])


@dataclass(frozen=True, repr=False)
class Protection:
    """Which keys this process holds, read from the environment (see the module docstring).

    Attributes:
        bundle_key: encrypts at publish, decrypts at load; None: bundles are published in the clear.
        signing_key: an Ed25519 private key; publish writes MANIFEST.sig when set.
        verify_key: an Ed25519 public key; loading requires a valid signature by it when set.
        require_signed: KEEL_REQUIRE_SIGNED; loading without a verify key is an error.
    """

    bundle_key: BundleKey | None = None
    signing_key: object | None = None
    verify_key: object | None = None
    require_signed: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Protection:
        """Reads KEEL_BUNDLE_KEY(_FILE), KEEL_SIGNING_KEY(_FILE), KEEL_VERIFY_KEY(_FILE), KEEL_REQUIRE_SIGNED.

        Raises:
            ConfigError: a key is malformed, unreadable, or set twice (the message names the variable, never the value).
        """
        environ = os.environ if environ is None else environ
        return cls(bundle_key=_bundle_key(environ), signing_key=_signing_key(environ),
                   verify_key=_verify_key(environ), require_signed=_flag(environ, "KEEL_REQUIRE_SIGNED"))

    def __repr__(self) -> str:
        return (f"Protection(bundle_key_id={self.bundle_key_id!r}, signing_key_id={self.signing_key_id!r}, "
                f"verify_key_id={self.verify_key_id!r}, require_signed={self.require_signed})")

    @property
    def bundle_key_id(self) -> str | None:
        return self.bundle_key.key_id if self.bundle_key else None

    @property
    def signing_key_id(self) -> str | None:
        return signing_key_id(self.signing_key.public_key()) if self.signing_key else None

    @property
    def verify_key_id(self) -> str | None:
        return signing_key_id(self.verify_key) if self.verify_key else None

    # -- publishing ---------------------------------------------------------------------------------

    def seal(self, model_name: str, version: int, files: Mapping[str, bytes]) -> tuple[dict[str, bytes], dict | None]:
        """The bytes to store for each file, and the manifest's "encryption" record (None when not encrypting)."""
        if self.bundle_key is None:
            return dict(files), None
        stored = {name: self.bundle_key.encrypt(data, bundle_aad(model_name, version, name)) for name, data in files.items()}
        return stored, {"algorithm": ENCRYPTION_ALGORITHM, "key_id": self.bundle_key.key_id}

    def sign(self, manifest_bytes: bytes) -> bytes | None:
        """MANIFEST.sig's content for these exact manifest bytes; None without a signing key."""
        if self.signing_key is None:
            return None
        signature = self.signing_key.sign(manifest_bytes)
        record = {"algorithm": SIGNATURE_ALGORITHM, "key_id": self.signing_key_id,
                  "signature": base64.b64encode(signature).decode()}
        return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()

    # -- loading ------------------------------------------------------------------------------------

    @property
    def wants_signature(self) -> bool:
        """Whether loading needs MANIFEST.sig (so a reader fetches it only then)."""
        return self.verify_key is not None

    def check_signature(self, where: str, manifest_bytes: bytes, signature: bytes | None) -> None:
        """Checks MANIFEST.sig against the exact manifest bytes, when a verify key is configured.

        Args:
            where: the version's URI or directory, for the messages.
            manifest_bytes: MANIFEST.json as stored.
            signature: MANIFEST.sig as stored, or None when there is none.

        Raises:
            ConfigError: KEEL_REQUIRE_SIGNED is set but no verify key is configured.
            DataError: the bundle is unsigned, signed by another key, or its manifest changed after signing.
        """
        if self.verify_key is None:
            if self.require_signed:
                raise ConfigError("KEEL_REQUIRE_SIGNED is set but no verify key is configured; set KEEL_VERIFY_KEY "
                                  "(or KEEL_VERIFY_KEY_FILE) to the registering pipeline's public key "
                                  f"({_KEYGEN_HINT} makes a pair)")
            return
        from cryptography.exceptions import InvalidSignature

        expected = self.verify_key_id
        if signature is None:
            raise DataError(f"{where}: is not signed (no {SIGNATURE_FILE}) but KEEL_VERIFY_KEY (key id {expected}) "
                            "requires a signature; publish it again with KEEL_SIGNING_KEY set, do not use this version")
        try:
            record = json.loads(signature)
            signed_by, algorithm = record["key_id"], record["algorithm"]
            raw = base64.b64decode(record["signature"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise DataError(f"{where}/{SIGNATURE_FILE}: is malformed (not a Keel signature record); "
                            "the version was modified after publishing, do not use it") from None
        if not _is_key_id(signed_by):
            # Unauthenticated text: never echoed into a message unless it is a key id.
            raise DataError(f"{where}/{SIGNATURE_FILE}: its key id is malformed; the version was modified after "
                            "publishing, do not use it")
        if algorithm != SIGNATURE_ALGORITHM:
            raise DataError(f"{where}/{SIGNATURE_FILE}: its algorithm is not {SIGNATURE_ALGORITHM}; "
                            "do not use this version")
        if signed_by != expected:
            raise DataError(f"{where}: is signed by key id {signed_by}, but the verify key is key id {expected}; "
                            "set KEEL_VERIFY_KEY to the key that signs your bundles, or do not use this version")
        try:
            self.verify_key.verify(raw, manifest_bytes)
        except InvalidSignature:
            raise DataError(f"{where}/{MANIFEST_FILE}: does not match its signature by key id {expected}; "
                            "the manifest was edited after signing, do not use this version") from None

    def key_for(self, where: str, manifest: Mapping) -> BundleKey | None:
        """The key that opens a bundle with this manifest; None when the bundle is not encrypted.

        Raises:
            ConfigError: the bundle is encrypted and no key, or a key with another id, is configured.
            DataError: the manifest's encryption record is malformed or names an unknown algorithm.
        """
        record = manifest.get("encryption")
        if record is None:
            return None
        if not isinstance(record, Mapping) or not _is_key_id(record.get("key_id")):
            raise DataError(f"{where}/{MANIFEST_FILE}: its encryption record is malformed; "
                            "the version was modified after publishing, do not use it")
        if record.get("algorithm") != ENCRYPTION_ALGORITHM:
            raise DataError(f"{where}/{MANIFEST_FILE}: encryption {record.get('algorithm')!r} is not supported; "
                            f"this Keel reads {ENCRYPTION_ALGORITHM}")
        if self.bundle_key is None:
            raise ConfigError(f"{where}: is encrypted with key id {record['key_id']}; set KEEL_BUNDLE_KEY or "
                              "KEEL_BUNDLE_KEY_FILE to that key")
        if self.bundle_key.key_id != record["key_id"]:
            raise ConfigError(f"{where}: is encrypted with key id {record['key_id']} but the configured key is "
                              f"{self.bundle_key.key_id}; set KEEL_BUNDLE_KEY (or KEEL_BUNDLE_KEY_FILE) to the key "
                              "the bundle was published with")
        return self.bundle_key

    def open(self, where: str, manifest: Mapping, stored: Mapping[str, bytes]) -> dict[str, bytes]:
        """The plaintext of each stored file of a hash-checked version (the stored bytes when not encrypted).

        Raises:
            ConfigError: see `key_for`.
            DataError: a file fails decryption (the message names it).
        """
        key = self.key_for(where, manifest)
        if key is None:
            return dict(stored)
        name, version = str(manifest.get("model_name", "")), int(manifest.get("version", 0))
        return {filename: key.decrypt(f"{where}/{filename}", data, bundle_aad(name, version, filename))
                for filename, data in stored.items()}


# -- S3 server-side encryption ----------------------------------------------------------------------


def s3_sse(environ: Mapping[str, str] | None = None):
    """The minio `sse=` argument KEEL_S3_SSE asks for, or None when it is unset.

    KEEL_S3_SSE=AES256 asks S3 to encrypt with its own keys (SSE-S3);
    aws:kms with KMS, under KEEL_S3_SSE_KMS_KEY_ID or the account's default
    aws/s3 key when that is unset.

    Raises:
        ConfigError: KEEL_S3_SSE has another value, or a KMS key id is given without aws:kms.
    """
    from minio.sse import Sse

    environ = os.environ if environ is None else environ
    value = str(environ.get("KEEL_S3_SSE", "")).strip()
    kms_key = str(environ.get("KEEL_S3_SSE_KMS_KEY_ID", "")).strip()
    if not value:
        if kms_key:
            raise ConfigError("KEEL_S3_SSE_KMS_KEY_ID: is set but KEEL_S3_SSE is not aws:kms; set KEEL_S3_SSE=aws:kms")
        return None
    if value not in SSE_VALUES:
        raise ConfigError(f"KEEL_S3_SSE: {value!r} is not supported; use one of {', '.join(SSE_VALUES)} "
                          "(or leave it unset for the bucket's default)")
    if value == "AES256" and kms_key:
        raise ConfigError("KEEL_S3_SSE_KMS_KEY_ID: is set but KEEL_S3_SSE is AES256; set KEEL_S3_SSE=aws:kms or unset it")

    class _Sse(Sse):
        # minio's SseKMS always sends a key id; S3 picks the default KMS key only when the header is absent.
        def headers(self) -> dict[str, str]:
            headers = {"X-Amz-Server-Side-Encryption": value}
            if kms_key:
                headers["X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id"] = kms_key
            return headers

        def tls_required(self) -> bool:
            return False  # SigV4-signed requests suffice for SSE-S3 and SSE-KMS

        def __repr__(self) -> str:
            return f"S3 SSE {value}" + (f" (KMS key {kms_key})" if kms_key else "")

    return _Sse()


# -- keygen -----------------------------------------------------------------------------------------


def generate_keys() -> dict[str, str]:
    """A new bundle key and Ed25519 key pair, base64: {"bundle", "signing", "verify", and their key ids}."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    bundle = os.urandom(KEY_SIZE)
    private = Ed25519PrivateKey.generate()
    raw_private = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                        serialization.NoEncryption())
    raw_public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "bundle": base64.b64encode(bundle).decode(), "bundle_key_id": BundleKey(bundle).key_id,
        "signing": base64.b64encode(raw_private).decode(), "verify": base64.b64encode(raw_public).decode(),
        "signing_key_id": _key_id(raw_public),
    }


KEY_FILES = {"bundle": "bundle.key", "signing": "signing.key", "verify": "verify.key"}


def write_keys(keys: Mapping[str, str], out: Path) -> dict[str, Path]:
    """Writes the keys into `out` (created 0700), one file each, mode 0600; refuses to overwrite."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    existing = [name for name in KEY_FILES.values() if (out / name).exists()]
    if existing:
        raise ConfigError(f"--out: {out} already holds {', '.join(existing)}; choose an empty directory "
                          "(keys are never overwritten)")
    written = {}
    for kind, name in KEY_FILES.items():
        path = out / name
        # O_EXCL and the mode at creation: the file is never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(keys[kind] + "\n")
        written[kind] = path
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keel.components._common.protect",
                                     description="Keys for signed and encrypted model bundles.")
    sub = parser.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="print a new bundle key and Ed25519 key pair (base64)")
    keygen.add_argument("--out", metavar="DIR", help="write them to DIR/{bundle,signing,verify}.key (mode 0600) "
                                                     "instead of printing them")
    args = parser.parse_args(argv)
    keys = generate_keys()
    ids = (f"# bundle key id {keys['bundle_key_id']}, signing key id {keys['signing_key_id']}\n"
           "# the registering pipeline gets KEEL_BUNDLE_KEY and KEEL_SIGNING_KEY; predictors get KEEL_BUNDLE_KEY "
           "and KEEL_VERIFY_KEY, never the signing key\n")
    if args.out:
        try:
            paths = write_keys(keys, Path(args.out))
        except ConfigError as err:
            print(f"keel: error: {err}", file=sys.stderr)
            return 2
        sys.stdout.write(ids + "".join(f"# {kind}: {path}\n" for kind, path in paths.items()) +
                         f"kubectl create secret generic keel-bundle-keys --from-file=bundle-key={paths['bundle']} "
                         f"--from-file=verify-key={paths['verify']}\n")
        return 0
    sys.stdout.write(ids + f"KEEL_BUNDLE_KEY={keys['bundle']}\nKEEL_SIGNING_KEY={keys['signing']}\n"
                     f"KEEL_VERIFY_KEY={keys['verify']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
