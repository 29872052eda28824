"""The pipeline registry: a pipeline is one descriptor, and Keel's commands work on any registered one.

The last test defines a small pipeline (ingest -> profile) here, registers it, and takes it through
`keel check`, `keel compile` and `keel run` without any other module knowing its name.
"""

# No `from __future__ import annotations` here: kfp reads the pipeline function's annotations as types.
from typing import Literal

import pandas as pd
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from keel.components._common.config import DataSection, RegistrySection, TargetSection
from keel.components._common.errors import KeelError
from keel.pipelines import registry
from keel.pipelines.cli.main import EXIT_USER_ERROR, main
from keel.pipelines.config import DEFAULT_CONFIG, load_config
from keel.pipelines.descriptor import Checked, Outcome, PipelineDescriptor, refuse_flags


def test_steps_are_read_from_the_pipeline_with_its_gated_and_looped_tasks():
    training = registry.get("training")
    cfg = load_config(DEFAULT_CONFIG)
    steps = training.steps(cfg)
    assert steps.pipeline_name == "keel-training"
    assert steps.names == ("ingest-data", "profile-data", "validate-data", "clean-data", "split-data", "engineer-features",
                           "train-model", "evaluate-model", "assess-fairness", "explain-model", "write-model-card",
                           "register-model", "deploy-model")
    assert steps.gated == ("register-model", "deploy-model") and steps.looped == ()
    assert steps.sources["passed"] == ("evaluate-model", "Output") and steps.sources["fairness_passed"] == ("assess-fairness", "Output")
    tuned = dict(training.compiled_variants(cfg))["training-tuned"]
    assert "tune-hyperparameters" in training.steps(tuned).names and "tune-hyperparameters" not in steps.names

    backfill = registry.get("backfill")
    steps = backfill.steps(load_config(backfill.example))
    assert steps.names == ("plan-partitions", "ingest-partition", "validate-data", "clean-data", "publish-partition")
    assert steps.looped == steps.names[1:] and steps.gated == ()
    assert steps.total(3) == 1 + 4 * 3 and steps.total(None) == 5


def test_every_registered_pipeline_has_its_own_names_and_a_valid_example():
    seen: set[str] = set()
    for descriptor in registry.all_pipelines():
        example = load_config(descriptor.example)
        assert registry.for_config(example) is descriptor
        names = {name for name, _ in descriptor.compiled_variants(example)}
        assert names == set(descriptor.names()) and not names & seen
        seen |= names
        assert registry.for_compiled_name(example.pipeline_name) is descriptor


def test_a_name_clash_and_an_unknown_kind_are_refused():
    training = registry.get("training")
    with pytest.raises(KeelError, match="compiled name.*training-tuned.*already belong to pipeline 'training'"):
        registry.register(PipelineDescriptor(**{**vars(training), "kind": "copy", "variant_names": ("training-tuned",)}))
    assert "copy" not in registry.kinds()
    with pytest.raises(KeelError, match="'nope' is not a Keel pipeline; use one of training, vision, backfill"):
        registry.get("nope")


def test_refused_flags_are_named_together():
    with pytest.raises(KeelError, match=r"^--target, --drop: do not apply to a demo config; edit its data section$"):
        refuse_flags({"--target": "y", "--drop": ["a"], "--store": "s", "--sensitive": None}, ("--store",), "demo", "data section")
    refuse_flags({"--store": "s", "--drop": []}, ("--store",), "demo", "data section")  # empty values were not given


# --------------------------------------------------------------------------- a pipeline defined here


class ProfileConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pipeline: Literal["profile-only"] = "profile-only"
    name: str = "profile-only"
    data: DataSection
    target: TargetSection
    registry: RegistrySection = Field(default_factory=RegistrySection)

    @property
    def pipeline_name(self) -> str:
        return "profile-only"

    def pipeline_arguments(self) -> dict:
        return {k: getattr(self, k).model_dump(mode="json", exclude_none=True) for k in ("data", "target", "registry")}


def _build(cfg, local):
    from kfp import dsl

    from keel.components.ingest.component import ingest_data
    from keel.components.profile.component import profile_data

    @dsl.pipeline(name="keel-profile-only")
    def profile_only(data: dict, target: dict, registry: dict):
        ingest = ingest_data(data=data, target=target, registry=registry).set_caching_options(enable_caching=False)
        profile = profile_data(data=ingest.outputs["raw"], target=target)
        for task in (ingest, profile):
            for name, value in (local.step_env if local else {}).items():
                task.set_env_variable(name, value)

    return profile_only


def _overrides(cfg, flags: dict) -> dict:
    refuse_flags(flags, ("--store",), "profile-only", "data section")
    return {"registry.store": flags["--store"]} if "--store" in flags else {}


def _rows(cfg) -> int:
    return len(pd.read_csv(cfg.data.source))


@pytest.fixture
def profile_only(tmp_path):
    frame = pd.DataFrame({"amount": range(60), "region": ["n", "s", "e"] * 20, "late": [0, 1] * 30})
    frame.to_csv(tmp_path / "table.csv", index=False)
    example = tmp_path / "profile-only.yaml"
    example.write_text(yaml.safe_dump({"pipeline": "profile-only", "data": {"source": str(tmp_path / "table.csv")},
                                       "target": {"column": "late", "task": "binary"},
                                       "registry": {"store": str(tmp_path / "store")}}))
    descriptor = PipelineDescriptor(
        kind="profile-only", config_model=ProfileConfig, build=_build, example=example,
        check=lambda cfg: f"{_rows(cfg)} rows to profile",
        preflight=lambda cfg: Checked(cfg, f"{_rows(cfg)} rows; profiling them"),
        summary=lambda checked, run, seconds: Outcome([f"profiled: {run.artifact('profile-data', 'summary')['uri']}"]),
        cli_overrides=_overrides,
        runners=("local",),
    )
    registry.register(descriptor)
    yield example
    registry.unregister("profile-only")


@pytest.mark.slow
def test_a_pipeline_registered_here_is_checked_compiled_and_run_by_the_cli(profile_only, tmp_path, capsys):
    from keel.pipelines.records.runs import list_runs, runs_root

    assert main(["check", str(profile_only)]) == 0
    assert capsys.readouterr().out.strip() == "ok: profile-only: 60 rows to profile"

    assert main(["compile", str(profile_only), "--out", str(tmp_path / "dist")]) == 0
    assert {p.stem for p in (tmp_path / "dist").glob("*.yaml")} == {"training", "training-tuned", "vision", "backfill", "monitoring",
                                                                      "profile-only"}
    ir = next(yaml.safe_load_all((tmp_path / "dist" / "profile-only.yaml").read_text()))
    assert set(ir["root"]["dag"]["tasks"]) == {"ingest-data", "profile-data"}
    assert ir["root"]["inputDefinitions"]["parameters"]["target"]["defaultValue"]["column"] == "late"

    assert main(["run", str(profile_only), "--target", "amount"]) == EXIT_USER_ERROR
    assert "--target: does not apply to a profile-only config; edit its data section" in capsys.readouterr().err
    assert main(["run", str(profile_only), "--runner", "docker"]) == EXIT_USER_ERROR
    assert "--runner docker: the profile-only pipeline runs with --runner local only" in capsys.readouterr().err

    store = tmp_path / "elsewhere"
    assert main(["run", str(profile_only), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "keel: profile-only: 60 rows; profiling them (local runner)" in out
    assert "[ 2/2] profile-data" in out and "profiled: " in out
    [record] = list_runs(runs_root(str(store)))
    assert record.pipeline == "profile-only" and record.outcome == "succeeded"
    assert [(s.name, s.status) for s in record.steps] == [("ingest-data", "succeeded"), ("profile-data", "succeeded")]
