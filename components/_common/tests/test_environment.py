"""The reproducibility record's environment (package versions, lock hash) and seeds."""

import platform
import re
from importlib.metadata import version
from pathlib import Path

from keel.components._common import lineage
from keel.components._common.config import DataSection, FairnessSection, ModelSection, SplitSection

PACKAGES = {"numpy": "2.4.6", "pandas": "2.3.3", "scikit-learn": "1.9.1", "pyarrow": "26.0.1"}


def test_the_lock_hash_depends_on_names_and_versions_only():
    reordered = dict(reversed(list(PACKAGES.items())))
    spelled = {"NumPy": "2.4.6", "Pandas": "2.3.3", "scikit_learn": "1.9.1", "PyArrow": "26.0.1"}
    assert lineage.lock_hash(PACKAGES) == lineage.lock_hash(reordered) == lineage.lock_hash(spelled)
    assert lineage.lock_hash(PACKAGES) == lineage.lock_hash(list(PACKAGES.items()))
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", lineage.lock_hash(PACKAGES))


def test_the_lock_hash_changes_when_any_package_version_or_package_changes():
    upgraded = {**PACKAGES, "scikit-learn": "1.9.2"}
    added = {**PACKAGES, "xxhash": "4.1.0"}
    removed = {k: v for k, v in PACKAGES.items() if k != "pyarrow"}
    hashes = {lineage.lock_hash(p) for p in (PACKAGES, upgraded, added, removed)}
    assert len(hashes) == 4


def test_environment_records_this_interpreter_and_the_model_packages():
    env = lineage.environment()
    assert env["python"] == platform.python_version()
    assert env["packages"]["scikit-learn"] == version("scikit-learn")
    assert env["packages"]["keel-ml"] == version("keel-ml")
    assert set(env["packages"]) <= set(lineage.MODEL_PACKAGES)
    assert env["lock_hash"] == lineage.lock_hash(lineage.installed_distributions())
    # The repository ships the constraints file beside the package.
    assert env["constraints_hash"] == lineage.file_sha256(Path(lineage.__file__).resolve().parents[2] / "images" / "constraints.txt")


def test_the_lock_hash_is_stable_across_calls_and_fresh_reads():
    first = lineage.environment()
    first["packages"]["numpy"] = "0"  # a caller's change must not reach the cached record
    lineage._environment.cache_clear()
    again = lineage.environment()
    assert again["lock_hash"] == first["lock_hash"]
    assert again["packages"]["numpy"] == version("numpy")


def test_every_installed_distribution_is_in_the_lock():
    installed = lineage.installed_distributions()
    assert installed["scikit-learn"] == version("scikit-learn") and installed["pyyaml"] == version("PyYAML")
    assert all(name == lineage.normalize_name(name) for name in installed)


def test_seeds_finds_every_seed_by_dotted_path_in_dicts_and_sections():
    config = {
        "data": DataSection(source="x.csv", sample_rows=600, sample_seed=3),
        "split": SplitSection(seed=7).model_dump(mode="json"),
        "model": ModelSection(seed=11, params={"random_state": 5, "max_iter": 300}),
        "fairness": FairnessSection(seed=13),
        "tune": {"seed": 17, "parameters": {"x": {"type": "int", "min": 1, "max": 3}}},
        "custom": {"steps": [{"name": "a", "bootstrap_seed": 19}], "seeded": 1},
    }
    assert lineage.seeds(config) == {
        "custom.steps[0].bootstrap_seed": 19,
        "data.sample_seed": 3,
        "fairness.seed": 13,
        "model.params.random_state": 5,
        "model.seed": 11,
        "split.seed": 7,
        "tune.seed": 17,
    }


def test_seeds_of_a_config_without_seeds_is_empty():
    assert lineage.seeds({"registry": {"store": "runs"}, "evaluation": {"min": {"roc_auc": 0.7}}}) == {}
