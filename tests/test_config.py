"""The pipeline config: every example loads, every bad field gets one line naming it."""

from pathlib import Path

import pytest

from keel.components._common.errors import ConfigError
from keel.pipelines.config import CONFIG_DIR, DEFAULT_CONFIG, load_config, parse_config, with_overrides
from keel.pipelines.training_config import SECTIONS

MINIMAL = {"data": {"source": "x.csv"}, "target": {"column": "y"}}


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_loads(path):
    cfg = load_config(path)
    if cfg.pipeline_name == "vision":  # `pipeline: vision`: the vision pipeline's own sections
        from keel.pipelines.vision_config import VISION_SECTIONS

        assert set(cfg.pipeline_arguments()) == set(VISION_SECTIONS)
        return
    if cfg.pipeline_name == "backfill":  # `pipeline: backfill`: its sections and the execution date
        from keel.pipelines.backfill_config import BACKFILL_SECTIONS

        assert set(cfg.pipeline_arguments()) == set(BACKFILL_SECTIONS) | {"execution_date"}
        return
    if cfg.pipeline_name == "monitoring":  # `pipeline: monitoring`: its sections and the window's end
        from keel.pipelines.monitoring_config import MONITORING_SECTIONS

        assert set(cfg.pipeline_arguments()) == set(MONITORING_SECTIONS) | {"execution_date"}
        return
    # The tuned pipeline takes one more parameter: the search.
    assert set(cfg.pipeline_arguments()) == set(SECTIONS) | ({"tune"} if cfg.tune is not None else set())
    assert cfg.pipeline_name == ("training-tuned" if cfg.tune is not None else "training")


def test_default_config_drops_the_columns_that_leak_the_grade():
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.target.column == "grade" and cfg.target.positive_values == ["D", "E", "F", "G"]
    for leak in ("sub_grade", "interest_rate", "installment", "loan_status", "paid_total", "balance"):
        assert leak in cfg.data.drop_columns


def _error(raw) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "c.yaml")
    assert "\n" not in str(err.value)
    return str(err.value)


def test_unknown_key_is_named_with_its_path():
    assert _error({**MINIMAL, "model": {"family": "xgboost", "paramz": {}}}) == (
        "c.yaml: model.paramz: unknown key; remove it or check its spelling"
    )
    assert "c.yaml: colour: unknown key" in _error({**MINIMAL, "colour": "red"})


def test_wrong_type_names_field_and_value():
    message = _error({**MINIMAL, "split": {"test_size": "a fifth"}})
    assert message.startswith("c.yaml: split.test_size:") and "'a fifth'" in message


def test_bad_choice_lists_the_allowed_values():
    message = _error({**MINIMAL, "model": {"family": "svm"}})
    assert "model.family: got 'svm'; allowed:" in message and "'xgboost'" in message


def test_missing_required_section_and_cross_field_rules():
    assert "c.yaml: target: is required" in _error({"data": {"source": "x.csv"}})
    assert "test_size + validation_size must be below 1" in _error({**MINIMAL, "split": {"test_size": 0.6, "validation_size": 0.5}})
    assert "positive_values only applies to task: binary" in _error(
        {**MINIMAL, "target": {"column": "y", "task": "regression", "positive_values": [1]}}
    )


def test_top_level_must_be_a_mapping():
    assert "the top level must be a mapping" in _error(["data", "target"])


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  source: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: not valid YAML"):
        load_config(bad)


def test_overrides_are_revalidated():
    cfg = parse_config(MINIMAL)
    assert with_overrides(cfg, {"model.family": "random_forest"}).model.family == "random_forest"
    with pytest.raises(ConfigError, match="command line: model.family: got 'nope'"):
        with_overrides(cfg, {"model.family": "nope"})


def test_pipeline_arguments_are_json_safe_dicts():
    import json

    args = load_config(DEFAULT_CONFIG).pipeline_arguments()
    assert json.loads(json.dumps(args)) == args
    assert list(args) == list(SECTIONS) and Path(args["registry"]["store"]).name == "runs"
