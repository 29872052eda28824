"""Fixtures for the pipeline-level suites."""

from keel.components._common.testing import s3_server, s3_store  # noqa: F401 (fixtures)
