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
S3_KEYS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# Database passwords for ingest and write-back: libpq reads PGPASSWORD, Keel's MongoDB reader MONGODB_PASSWORD.
SOURCE_SECRET = "keel-source-credentials"
SOURCE_KEYS = ("PGPASSWORD", "MONGODB_PASSWORD")


def mount(task, *, source: bool = False):
    """Gives `task` the S3 credentials (every step may read or write an s3:// store) and, with `source`, the database ones."""
    kubernetes.use_secret_as_env(task, S3_SECRET, {key: key for key in S3_KEYS}, optional=True)
    if source:
        kubernetes.use_secret_as_env(task, SOURCE_SECRET, {key: key for key in SOURCE_KEYS}, optional=True)
    return task
