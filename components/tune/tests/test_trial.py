"""The trial entry point: Katib's contract (flags in, `metric=value` lines out) on real engineered features."""

import json
import os
import re
import subprocess
import sys

import joblib
import pytest

from keel.components._common import tables
from keel.components._common.config import ModelSection, TargetSection
from testkit.models import stage_inputs
from keel.components._common.training.fit import fit
from keel.components.tune import trial
from keel.components.tune.trial import main, parse_args, parse_value

BINARY = TargetSection(column="grade", positive_values=["D", "E", "F", "G"])
REGRESSION = TargetSection(column="interest_rate", task="regression")
# Katib's StdOut filter before 0.16 had no exponent; a line this matches parses the same under every release.
PLAIN_DECIMAL = r"-?\d+(\.\d+)?"


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def frame(loans):
    return loans.sample(n=2000, random_state=0).reset_index(drop=True)  # the loans_sample rows, module-scoped


def _write(parts: dict, folder) -> dict:
    folder.mkdir()
    paths = {"train": str(folder / "train.parquet"), "validation": str(folder / "validation.parquet"),
             "transformer": str(folder / "transformer.joblib")}
    tables.write_parquet(parts["train_features"], paths["train"])
    tables.write_parquet(parts["validation_features"], paths["validation"])
    joblib.dump(parts["transformer"], paths["transformer"])
    return {**paths, "parts": parts}


@pytest.fixture(scope="module")
def binary(frame, tmp_path_factory):
    parts = stage_inputs(frame, frame["grade"].isin(BINARY.positive_values).astype(int))
    return _write(parts, tmp_path_factory.mktemp("trial") / "binary")


@pytest.fixture(scope="module")
def regression(frame, tmp_path_factory):
    parts = stage_inputs(frame, frame["interest_rate"].astype(float))
    return _write(parts, tmp_path_factory.mktemp("trial") / "regression")


def _argv(data, *, target=BINARY, family="gradient_boosting", metric="roc_auc", params=None, **hyperparameters):
    model = {"family": family, "params": params or {}, "seed": 42}
    argv = [f"--train={data['train']}", f"--validation={data['validation']}", f"--transformer={data['transformer']}",
            f"--target={json.dumps(target.model_dump(mode='json'))}", f"--model={json.dumps(model)}", f"--metric={metric}"]
    return argv + [f"--{name}={value}" for name, value in hyperparameters.items()]


def _run(capsys, argv) -> tuple[int, list[str], list[str]]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def _values(lines, metric) -> list[float]:
    assert all(re.fullmatch(rf"{metric}={PLAIN_DECIMAL}", line) for line in lines), lines
    return [float(line.split("=", 1)[1]) for line in lines]


def _fitted(data, target, family, params) -> dict:
    parts = data["parts"]
    trained = fit(parts["train_features"], parts["validation_features"], parts["transformer"], target,
                  ModelSection(family=family, params=params, seed=42))
    return trained.metrics


# ---- the contract, end to end ------------------------------------------------------------------


def test_module_takes_flags_and_prints_metric_lines_ending_with_the_validation_score(binary):
    proc = subprocess.run([sys.executable, "-m", "keel.components.tune.trial",
                           *_argv(binary, learning_rate=0.1, max_iter=20, max_leaf_nodes=15)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # pytest workers share the cores
    assert proc.returncode == 0, proc.stderr
    values = _values(proc.stdout.splitlines(), "roc_auc")
    assert len(values) == trial.CHECKPOINTS  # nine part-way values, then the result
    # The result is what train_model reports for the same model on the validation set.
    expected = _fitted(binary, BINARY, "gradient_boosting", {"learning_rate": 0.1, "max_iter": 20, "max_leaf_nodes": 15})
    assert values[-1] == expected["validation_roc_auc"]


# ---- intermediate values -----------------------------------------------------------------------


def test_hist_gradient_boosting_intermediate_values_are_the_model_cut_short(binary, capsys):
    code, out, _ = _run(capsys, _argv(binary, metric="log_loss", learning_rate=0.2, max_iter=20))
    assert code == 0
    values = _values(out, "log_loss")
    assert len(values) == 10
    # Checkpoints at 2, 4, ... 18 iterations: the third one is the model trained with max_iter=6.
    short = _fitted(binary, BINARY, "gradient_boosting", {"learning_rate": 0.2, "max_iter": 6})
    assert values[2] == pytest.approx(short["validation_log_loss"], rel=1e-12)
    assert values[-1] == pytest.approx(_fitted(binary, BINARY, "gradient_boosting",
                                               {"learning_rate": 0.2, "max_iter": 20})["validation_log_loss"], rel=1e-12)
    assert len(set(values)) == len(values)  # every checkpoint is a different model, not a copy of the result


def test_xgboost_intermediate_values_are_the_model_cut_short(regression, capsys):
    code, out, _ = _run(capsys, _argv(regression, target=REGRESSION, family="xgboost", metric="rmse",
                                      n_estimators=20, max_depth=3))
    assert code == 0
    values = _values(out, "rmse")
    assert len(values) == 10
    short = _fitted(regression, REGRESSION, "xgboost", {"n_estimators": 8, "max_depth": 3})
    assert values[3] == pytest.approx(short["validation_rmse"], rel=1e-6)
    assert len(set(values)) == len(values)


def test_a_model_without_stages_prints_only_its_result(binary, capsys):
    code, out, _ = _run(capsys, _argv(binary, family="logistic_regression", C=0.5))
    assert code == 0
    assert _values(out, "roc_auc") == [_fitted(binary, BINARY, "logistic_regression", {"C": 0.5})["validation_roc_auc"]]


def test_checkpoints_are_evenly_spaced_and_leave_the_result_to_the_last_line():
    assert trial._checkpoints(100) == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert trial._checkpoints(5) == [1, 2, 3, 4]  # fewer iterations than checkpoints: one per iteration
    assert trial._checkpoints(1) == []


# ---- hyperparameters ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [("31", 31), ("-2", -2), ("0.05", 0.05), ("1e-3", 0.001), ("true", True),
                                         ("False", False), ("sqrt", "sqrt"), ("log_loss", "log_loss")])
def test_flag_values_are_typed_int_then_float_then_bool_then_string(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_hyperparameter_flags_override_model_params(binary, capsys):
    args = parse_args(_argv(binary, params={"max_iter": 100, "learning_rate": 0.1}, max_iter=5))
    assert args.hyperparameters == {"max_iter": 5}
    code, out, _ = _run(capsys, _argv(binary, params={"max_iter": 100, "learning_rate": 0.1}, max_iter=5))
    assert code == 0
    assert len(out) == 5  # checkpoints at 1..4 iterations, then the result: max_iter 5 won over 100


@pytest.mark.parametrize("flag, message", [
    ("--max_iter=0", r"model\.params\.max_iter: must be an int in the range \[1, inf\) \(got 0\)"),
    ("--lerning_rate=0.1", r"model\.params\.lerning_rate: not a parameter of HistGradientBoostingClassifier "
                           r"\(did you mean 'learning_rate'\?\)"),
    ("--loss=hinge", r"model\.params\.loss: must be a str among"),
    ("--random_state=3", r"model\.params\.random_state: set model\.seed instead"),
])
def test_a_bad_hyperparameter_is_one_error_line_and_a_non_zero_exit(binary, capsys, flag, message):
    code, out, err = _run(capsys, _argv(binary) + [flag])
    assert code == 2
    assert out == []  # no metric line: nothing for a collector to mistake for a result
    assert len(err) == 1 and re.match(rf"keel: error: \[tune_trial\] {message}", err[0]), err


@pytest.mark.parametrize("change, message", [
    (lambda argv: argv + ["--max_iter", "5"], r"trial argument '--max_iter': hyperparameters must be passed as --name=value"),
    (lambda argv: argv + ["--max_iter=5", "--max_iter=6"], r"trial argument --max_iter: given twice"),
    (lambda argv: [a for a in argv if not a.startswith("--train=")], r"trial arguments: the following arguments are required: --train"),
    (lambda argv: [a if not a.startswith("--model=") else "--model={family: xgboost}" for a in argv],
     r"trial argument --model: not valid JSON"),
    (lambda argv: [a if not a.startswith("--model=") else '--model={"family": "svm"}' for a in argv], r"model\.family: got 'svm'"),
])
def test_malformed_arguments_are_one_error_line(binary, capsys, change, message):
    code, out, err = _run(capsys, change(_argv(binary)))
    assert code == 2 and out == []
    assert len(err) == 1 and re.match(rf"keel: error: \[tune_trial\] {message}", err[0]), err


def test_a_metric_the_task_does_not_have_is_named(binary, capsys):
    code, _, err = _run(capsys, _argv(binary, metric="rmse"))
    assert code == 2
    assert err == ["keel: error: [tune_trial] tune.objective.metric: 'rmse' is not a metric for binary; available: "
                   "accuracy, precision, recall, f1, roc_auc, pr_auc, log_loss, brier"]


def test_no_validation_rows_is_a_data_error(binary, capsys, tmp_path):
    empty = tmp_path / "validation.parquet"
    tables.write_parquet(binary["parts"]["validation_features"].iloc[:0], str(empty))
    code, _, err = _run(capsys, _argv({**binary, "validation": str(empty)}))
    assert code == 2
    assert err == ["keel: error: [tune_trial] validation_features: no rows; trials are scored on the validation set, "
                   "so set split.validation_size above 0"]
