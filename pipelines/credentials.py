"""Secrets a pipeline's steps read as environment variables (kfp-kubernetes `use_secret_as_env`).

The compiled IR names the Secrets and their keys, never a value: the
operator creates them in the run's namespace (manifests/README.md). Both
are optional, so a pipeline that reads neither S3 nor a database runs
without them; a step that needs a missing one fails with the storage
layer's own message (e.g. "no endpoint is set: export AWS_ENDPOINT_URL").
"""

from __future__ import annotations

from kfp import kubernetes

# The same Secret the predictor's ServiceAccount and the Katib trials use.
S3_SECRET = "keel-s3-credentials"
# KEEL_S3_SSE (AES256 or aws:kms) asks S3 to encrypt every object Keel writes at rest.
S3_KEYS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "KEEL_S3_SSE", "KEEL_S3_SSE_KMS_KEY_ID")
# Database passwords for ingest and write-back: libpq reads PGPASSWORD, Keel's MongoDB reader MONGODB_PASSWORD.
SOURCE_SECRET = "keel-source-credentials"
SOURCE_KEYS = ("PGPASSWORD", "MONGODB_PASSWORD")
# Governance keys, each given only to the step that uses it: the PII pseudonymisation key to
# ingest; the bundle signing and encryption keys to register (components/README.md, "Protecting artifacts").
KEYS_SECRET = "keel-governance-keys"
PII_KEYS = ("KEEL_PII_KEY",)
BUNDLE_KEYS = ("KEEL_SIGNING_KEY", "KEEL_BUNDLE_KEY")
# A step that only reads a bundle (monitoring): decrypt and verify, never the private signing key.
READER_KEYS = ("KEEL_BUNDLE_KEY", "KEEL_VERIFY_KEY")


def mount(task, *, source: bool = False, keys: tuple[str, ...] = ()):
    """Gives `task` the S3 credentials (every step may read or write an s3:// store), with `source` the
    database ones, and the named governance `keys` (PII_KEYS, BUNDLE_KEYS)."""
    kubernetes.use_secret_as_env(task, S3_SECRET, {key: key for key in S3_KEYS}, optional=True)
    if source:
        kubernetes.use_secret_as_env(task, SOURCE_SECRET, {key: key for key in SOURCE_KEYS}, optional=True)
    if keys:
        kubernetes.use_secret_as_env(task, KEYS_SECRET, {key: key for key in keys}, optional=True)
    return task
