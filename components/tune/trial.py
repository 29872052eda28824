"""One hyperparameter trial: `python -m keel.components.tune.trial --train=... --learning_rate=0.05`.

This is Katib's trial contract, and the local backend (local.py) runs the same
command. Hyperparameters arrive as `--name=value` flags; the trial trains with
the train stage's own `fit` and prints the objective metric, computed on the
validation features by the evaluate stage's `compute`, as `name=value` lines
on stdout (Katib's StdOut metrics collector format). Models that can be scored
part-way (HistGradientBoosting, XGBoost) print about ten intermediate values
first, so early stopping (Katib's medianstop, Optuna's pruners) has something
to compare; the last line is always the trial's result.

Anything the user can fix ends the process with one `keel: error:` line on
stderr and exit status 2; a bug keeps its traceback (exit 1).

Only the standard library is imported at module level: every trial is a fresh
process, and import time is paid once per trial.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Callable

STAGE = "tune_trial"
CHECKPOINTS = 10  # intermediate values per trial, the final one included
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DATA_FLAGS = ("train", "validation", "transformer")
_JSON_FLAGS = ("target", "model", "classes")


@dataclass
class TrialArgs:
    """The parsed command line of one trial."""

    train: str
    validation: str
    transformer: str
    target: dict
    model: dict
    metric: str
    classes: list | None = None
    hyperparameters: dict = field(default_factory=dict)


def parse_value(text: str):
    """A flag value as int, else float, else bool (true/false, any case), else the string itself.

    Katib substitutes every hyperparameter as text, so the type is recovered
    here; the local backend parses categorical values with this same rule.
    """
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def format_value(value: float) -> str:
    """A metric value in plain decimal notation.

    Katib's StdOut collector parses `name=value` with a regular expression;
    releases before 0.16 had no exponent in it, so `1e-05` would be read as 1.
    Plain decimals parse the same under every release.
    """
    import numpy as np

    return np.format_float_positional(float(value), trim="-")


def parse_args(argv: list[str]) -> TrialArgs:
    """Splits the command line into the trial's inputs and its hyperparameters.

    Args:
        argv: the arguments after the program name, every one `--name=value`.

    Returns:
        The data URIs, the config sections, the metric and the hyperparameters (typed by `parse_value`).

    Raises:
        ConfigError: a missing flag, a value that is not JSON, or an argument not of the form `--name=value`.
    """
    from keel.components._common.errors import ConfigError

    parser = _Parser(prog="python -m keel.components.tune.trial", allow_abbrev=False,
                     description="Train one model with the given hyperparameters and print the validation metric.")
    for name in _DATA_FLAGS:
        parser.add_argument(f"--{name}", required=True, metavar="URI")
    parser.add_argument("--target", required=True, metavar="JSON", help="the target config section")
    parser.add_argument("--model", required=True, metavar="JSON", help="the model config section")
    parser.add_argument("--classes", metavar="JSON", help="class names, index = label (classification)")
    parser.add_argument("--metric", required=True, help="the objective metric, e.g. roc_auc")
    known, rest = parser.parse_known_args(argv)

    hyperparameters: dict = {}
    for arg in rest:
        name, sep, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not sep or not _NAME.match(name):
            raise ConfigError(f"trial argument {arg!r}: hyperparameters must be passed as --name=value")
        if name in hyperparameters:
            raise ConfigError(f"trial argument --{name}: given twice")
        hyperparameters[name] = parse_value(value)
    sections = {name: _json_flag(name, getattr(known, name)) for name in _JSON_FLAGS}
    for name in ("target", "model"):
        if not isinstance(sections[name], dict):
            raise ConfigError(f"trial argument --{name}: must be a JSON object (the {name} config section)")
    if sections["classes"] is not None and not isinstance(sections["classes"], list):
        raise ConfigError("trial argument --classes: must be a JSON list of class names")
    return TrialArgs(train=known.train, validation=known.validation, transformer=known.transformer,
                     target=sections["target"], model=sections["model"], classes=sections["classes"],
                     metric=known.metric, hyperparameters=hyperparameters)


def run_trial(args: TrialArgs, emit: Callable[[str, float], None]) -> float:
    """Trains with the hyperparameters and emits the metric: intermediate values, then the result.

    Args:
        args: the parsed command line.
        emit: called with (metric name, value) for every value, in order; the last call is the result.

    Returns:
        The result: the metric on the validation features, as the evaluate stage computes it.

    Raises:
        ConfigError: a bad hyperparameter, model or target section, or a metric the task does not have.
        DataError: the artifacts cannot be trained on or scored (e.g. no validation rows).
    """
    from keel.components._common import tables
    from keel.components._common.config import ModelSection, TargetSection
    from keel.components._common.errors import ConfigError, DataError
    from keel.components._common.target import LABEL
    from keel.components._common.evaluation.metrics import available_metrics
    from keel.components._common.training.estimators import check_params
    from keel.components._common.training.fit import fit, load_transformer

    target = TargetSection.parse(args.target, "target")
    base = ModelSection.parse(args.model, "model")
    model = ModelSection.parse({**base.model_dump(), "params": {**base.params, **args.hyperparameters}}, "model")
    metrics = available_metrics(target.task)
    if args.metric not in metrics:
        raise ConfigError(f"tune.objective.metric: {args.metric!r} is not a metric for {target.task}; "
                          f"available: {', '.join(metrics)}")
    check_params(model, target.task)  # a bad hyperparameter fails here, before any data is read

    train_frame = tables.read_parquet(args.train)
    validation_frame = tables.read_parquet(args.validation)
    if len(validation_frame) == 0:
        raise DataError("validation_features: no rows; trials are scored on the validation set, "
                        "so set split.validation_size above 0")
    transformer = load_transformer(args.transformer)
    trained = fit(train_frame, validation_frame, transformer, target, model, args.classes)

    X_val = validation_frame.drop(columns=[LABEL])
    if not trained.metadata["feature_names_kept"]:
        X_val = X_val.to_numpy()  # fit trained this estimator on an unnamed array; predict the same way
    classification = target.task != "regression"
    y_val = validation_frame[LABEL].to_numpy().astype(int if classification else float)
    scorer = _Scorer(target.task, args.metric, y_val, len(trained.metadata["classes"]) if classification else None)

    for proba, y_pred in _staged(trained.estimator, trained.metadata["framework"], X_val, classification):
        value = scorer(y_pred, proba, final=False)
        if value is not None:
            emit(args.metric, value)
    estimator = trained.estimator
    proba = estimator.predict_proba(X_val) if classification and hasattr(estimator, "predict_proba") else None
    result = scorer(estimator.predict(X_val), proba, final=True)
    emit(args.metric, result)
    return result


def main(argv: list[str] | None = None) -> int:
    """The trial's entry point.

    Args:
        argv: the arguments after the program name; sys.argv[1:] when None.

    Returns:
        0 on success; 2 after printing one `keel: error:` line for a problem the user can fix.
    """
    from keel.components._common.errors import KeelError

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        run_trial(parse_args(argv), _print_metric)
    except KeelError as err:
        # The same line `user_errors` prints for a component: the local backend
        # and Katib's UI show a failed trial's last stderr line as its reason.
        print(f"keel: error: [{STAGE}] {err}", file=sys.stderr, flush=True)
        return 2
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one ConfigError line instead of usage text and exit 2."""

    def error(self, message):
        from keel.components._common.errors import ConfigError

        raise ConfigError(f"trial arguments: {message}")


def _json_flag(name: str, text: str | None):
    from keel.components._common.errors import ConfigError

    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"trial argument --{name}: not valid JSON ({err.msg} at character {err.pos})") from None


def _print_metric(name: str, value: float) -> None:
    # Flushed per line: the local backend reads stdout as the trial runs.
    print(f"{name}={format_value(value)}", flush=True)


class _Scorer:
    """One metric from predictions, with `metrics.compute`, so values match the evaluate stage."""

    def __init__(self, task: str, metric: str, y_true, n_classes: int | None):
        self.task, self.metric, self.y_true, self.n_classes = task, metric, y_true, n_classes

    def __call__(self, y_pred, proba, *, final: bool) -> float | None:
        from keel.components._common.errors import DataError
        from keel.components._common.evaluation.metrics import compute

        values, skipped = compute(self.task, self.y_true, y_pred=y_pred, proba=proba, n_classes=self.n_classes)
        if self.metric in values:
            return values[self.metric]
        if not final:
            return None  # an undefined checkpoint is left out; the result decides the trial
        raise DataError(f"validation_features: {self.metric} cannot be computed: "
                        f"{skipped.get(self.metric, 'not computed')}; choose another tune.objective.metric")


def _checkpoints(n_iterations: int) -> list[int]:
    """Iteration counts for the intermediate values: evenly spaced, the last (the result) excluded."""
    points = {max(1, round(n_iterations * k / CHECKPOINTS)) for k in range(1, CHECKPOINTS)}
    return sorted(p for p in points if p < n_iterations)


def _staged(estimator, framework: str, X, classification: bool):
    """(proba, y_pred) of the model cut short at each checkpoint; nothing for models without stages."""
    import numpy as np

    def hard(proba):
        return estimator.classes_[np.argmax(proba, axis=1)]

    if framework == "xgboost":
        # Early stopping keeps the best iteration; the result is scored there, so the stages stop there too.
        best = getattr(estimator, "best_iteration", None) if estimator.get_params().get("early_stopping_rounds") else None
        total = best + 1 if best is not None else estimator.get_booster().num_boosted_rounds()
        for k in _checkpoints(total):
            if classification:
                proba = estimator.predict_proba(X, iteration_range=(0, k))
                yield proba, hard(proba)
            else:
                yield None, estimator.predict(X, iteration_range=(0, k))
        return
    if not hasattr(estimator, "staged_predict"):  # linear models, forests: one value, the result
        return
    wanted = set(_checkpoints(estimator.n_iter_))
    stages = estimator.staged_predict_proba(X) if classification else estimator.staged_predict(X)
    for iteration, prediction in enumerate(stages, start=1):
        if iteration in wanted:
            yield (prediction, hard(prediction)) if classification else (None, prediction)


if __name__ == "__main__":
    sys.exit(main())
