"""Model families: one table from (model.family, task kind) to an estimator and its defaults.

Parameters are checked before any training, with the estimator's own
validation (scikit-learn's parameter constraints; XGBoost's parameter
checks), so a typo in model.params fails the CLI's pre-flight in
milliseconds instead of a pipeline an hour in.
"""

from __future__ import annotations

import difflib
import importlib
import re
import warnings
from dataclasses import dataclass
from typing import Callable

from keel.components._common.config import ModelSection
from keel.components._common.errors import ConfigError


def _seeded(seed: int) -> dict:
    return {"random_state": seed}


def _parallel(seed: int) -> dict:
    # Two threads, not all cores: a pod sees the node's core count but is
    # throttled to its CPU limit, and n_jobs=-1 would oversubscribe it.
    return {"n_jobs": 2, "random_state": seed}


@dataclass(frozen=True)
class EstimatorSpec:
    """How Keel builds one model family for one kind of task."""

    family: str
    kind: str  # "classification" or "regression"
    import_path: str  # module.Class
    framework: str  # "sklearn", "xgboost", "torch" or "tensorflow"
    defaults: Callable[[int], dict]  # seed -> constructor defaults (model.params override them)
    handles_missing: bool  # accepts NaN in the features

    @property
    def class_name(self) -> str:
        return self.import_path.rsplit(".", 1)[1]

    def load(self) -> type:
        module, name = self.import_path.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)


_SPECS = [
    EstimatorSpec("logistic_regression", "classification", "sklearn.linear_model.LogisticRegression", "sklearn",
                  # lbfgs's default 100 iterations stops short on one-hot features of real data.
                  lambda seed: {"max_iter": 1000, "random_state": seed}, handles_missing=False),
    EstimatorSpec("linear_regression", "regression", "sklearn.linear_model.LinearRegression", "sklearn",
                  lambda seed: {}, handles_missing=False),
    EstimatorSpec("random_forest", "classification", "sklearn.ensemble.RandomForestClassifier", "sklearn",
                  _parallel, handles_missing=True),
    EstimatorSpec("random_forest", "regression", "sklearn.ensemble.RandomForestRegressor", "sklearn",
                  _parallel, handles_missing=True),
    EstimatorSpec("gradient_boosting", "classification", "sklearn.ensemble.HistGradientBoostingClassifier", "sklearn",
                  _seeded, handles_missing=True),
    EstimatorSpec("gradient_boosting", "regression", "sklearn.ensemble.HistGradientBoostingRegressor", "sklearn",
                  _seeded, handles_missing=True),
    EstimatorSpec("xgboost", "classification", "xgboost.XGBClassifier", "xgboost",
                  lambda seed: {"tree_method": "hist", **_parallel(seed)}, handles_missing=True),
    EstimatorSpec("xgboost", "regression", "xgboost.XGBRegressor", "xgboost",
                  lambda seed: {"tree_method": "hist", **_parallel(seed)}, handles_missing=True),
]
# Neural networks on the same engineered features (components/train_deep): sklearn-API wrappers,
# so the Pipeline, evaluation, the card and the predictor treat them like any other family.
_MLPS = "keel.components.train_deep"
_SPECS += [
    EstimatorSpec("torch_mlp", "classification", f"{_MLPS}.torch_estimator.TorchMLPClassifier", "torch", _seeded, handles_missing=False),
    EstimatorSpec("torch_mlp", "regression", f"{_MLPS}.torch_estimator.TorchMLPRegressor", "torch", _seeded, handles_missing=False),
    EstimatorSpec("keras_mlp", "classification", f"{_MLPS}.keras_estimator.KerasMLPClassifier", "tensorflow", _seeded, handles_missing=False),
    EstimatorSpec("keras_mlp", "regression", f"{_MLPS}.keras_estimator.KerasMLPRegressor", "tensorflow", _seeded, handles_missing=False),
]
ESTIMATORS: dict[tuple[str, str], EstimatorSpec] = {(s.family, s.kind): s for s in _SPECS}


def task_kind(task: str) -> str:
    """binary / multiclass -> classification; regression -> regression."""
    return "regression" if task == "regression" else "classification"


def spec_for(family: str, task: str) -> EstimatorSpec:
    """The estimator spec for a family and a target task.

    Raises:
        ConfigError: the family does not fit the task (e.g. logistic_regression for regression).
    """
    kind = task_kind(task)
    spec = ESTIMATORS.get((family, kind))
    if spec is None:
        fits = sorted(f for f, k in ESTIMATORS if k == kind)
        raise ConfigError(f"model.family: {family!r} cannot be used with target.task {task!r}; for {kind} use one of {', '.join(fits)}")
    return spec


def check_params(section: ModelSection, task: str) -> dict:
    """Checks model.params against the estimator, before any data is read.

    Args:
        section: the model config section.
        task: binary, multiclass or regression.

    Returns:
        The constructor arguments: the family's defaults, overridden by model.params.

    Raises:
        ConfigError: one line naming model.family or model.params.<name>.
    """
    spec = spec_for(section.family, task)
    cls = spec.load()
    valid = sorted(cls().get_params(deep=False))
    for name in section.params:
        if name == "random_state" and "random_state" in valid:
            raise ConfigError("model.params.random_state: set model.seed instead (one seed drives the whole model)")
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"model.params.{name}: not a parameter of {cls.__name__}{hint}; valid: {', '.join(valid)}")
    kwargs = {**spec.defaults(section.seed), **section.params}
    if spec.framework == "xgboost":
        # KFP carries config numbers as doubles (max_depth: 6 arrives as 6.0) and
        # XGBoost rejects 6.0 where it wants an int, while its float
        # parameters take ints, so whole numbers go back to int.
        kwargs = {k: int(v) if _whole_float(v) else v for k, v in kwargs.items()}
        _check_xgboost(cls, kwargs, section.params, task)
        return kwargs
    return _check_sklearn(cls, kwargs)


def build(section: ModelSection, task: str):
    """An unfitted estimator for the section, its parameters already checked."""
    kwargs = check_params(section, task)
    return spec_for(section.family, task).load()(**kwargs)


_SKLEARN_MESSAGE = re.compile(r"The '(?P<name>\w+)' parameter of (?P<cls>\w+) must be (?P<rule>.*)\. Got (?P<got>.*) instead\.", re.S)


def _whole_float(value) -> bool:
    return isinstance(value, float) and value.is_integer()


def _check_sklearn(cls, kwargs: dict) -> dict:
    """Validates with scikit-learn's own constraint table (what fit() checks first).

    `_validate_params` is private, but it is the validation every estimator
    runs. KFP turns config ints into floats (max_depth: 6 arrives as 6.0), so
    a whole float that is rejected is retried as an int; one the estimator
    accepts as a float keeps that meaning (max_features: 1.0 is all features).
    """
    from sklearn.utils._param_validation import InvalidParameterError

    kwargs = dict(kwargs)
    for _ in range(len(kwargs) + 1):
        try:
            cls(**kwargs)._validate_params()
            return kwargs
        except InvalidParameterError as err:
            match = _SKLEARN_MESSAGE.search(str(err))
            name = match["name"] if match else None
            if name is None or not _whole_float(kwargs.get(name)):
                raise ConfigError(_param_error_line(str(err))) from None
            kwargs[name] = int(kwargs[name])
    raise AssertionError("unreachable: each retry fixes one parameter")


def _param_error_line(message: str) -> str:
    match = _SKLEARN_MESSAGE.search(message)
    if match is None:
        return f"model.params: {message.splitlines()[0]}"
    return f"model.params.{match['name']}: must be {match['rule']} (got {match['got']})"


def _check_xgboost(cls, kwargs: dict, user_params: dict, task: str) -> None:
    """XGBoost checks its parameters only when it trains, so train a one-round model on 12 rows."""
    from numbers import Integral

    import numpy as np
    from sklearn.utils._param_validation import Interval, InvalidParameterError, validate_parameter_constraints

    # The two parameters that size the dry run are checked here instead.
    rules = {
        "n_estimators": [Interval(Integral, 1, None, closed="left"), None],
        "early_stopping_rounds": [Interval(Integral, 1, None, closed="left"), None],
    }
    try:
        validate_parameter_constraints(rules, {k: kwargs.get(k) for k in rules}, caller_name=cls.__name__)
    except InvalidParameterError as err:
        raise ConfigError(_param_error_line(str(err))) from None
    import xgboost

    rng = np.random.default_rng(0)
    X = rng.random((12, 2))
    y = {"binary": np.arange(12) % 2, "multiclass": np.arange(12) % 3}.get(task, rng.random(12))
    # CPU and one thread: the pre-flight may run on a laptop for a GPU run on the cluster.
    dry = {**kwargs, "n_estimators": 1, "early_stopping_rounds": None, "device": "cpu", "n_jobs": 1, "verbosity": 0}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cls(**dry).fit(X, y)
    except (xgboost.core.XGBoostError, ValueError, TypeError) as err:
        raise ConfigError(_xgboost_error_line(str(err), user_params)) from None


_XGB_VALUE = re.compile(r"value (?P<got>\S+) for Parameter (?P<name>\w+) (?P<rule>[^\n]*)")
_XGB_PREFIX = re.compile(r"^\[[\d:]+\] \S+: ")


def _xgboost_error_line(message: str, user_params: dict) -> str:
    match = _XGB_VALUE.search(message)
    if match:
        return f"model.params.{match['name']}: {match['rule']} (got {match['got']})"
    first = _XGB_PREFIX.sub("", message.strip().splitlines()[0] if message.strip() else message)
    # XGBoost's enum errors quote the bad value but not the parameter's name.
    named = [k for k, v in user_params.items() if isinstance(v, str) and re.search(rf"(?<![\w.]){re.escape(v)}(?![\w.])", first)]
    where = f"model.params.{named[0]}" if len(named) == 1 else "model.params"
    return f"{where}: {first}"
