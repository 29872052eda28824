"""Fixtures for the pipeline-level suites."""

from keel.components._common.tf_import import load_triton_first

# A test worker runs TensorFlow and torch tests in one process; triton must load before TensorFlow
# (see keel.components._common.tf_import), and tests import TensorFlow directly too.
load_triton_first()

from keel.components._common.testing import s3_server, s3_store  # noqa: F401 (fixtures)
from keel.components._common.testing_mongo import mongo_auth_server, mongo_server  # noqa: F401 (fixtures)
from keel.components._common.testing_postgres import pg, postgres_server  # noqa: F401 (fixtures)
