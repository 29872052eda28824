"""The parameters of the two MLP families (`torch_mlp`, `keras_mlp`): one constructor, one constraint table.

scikit-learn's `_validate_params` checks them against the table before any
data is read (train.estimators runs it in the CLI's pre-flight).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval

from keel.components._common.errors import DataError


class MLPParams(BaseEstimator):
    """The parameters both MLP families take, checked by scikit-learn's constraint table."""

    _parameter_constraints: dict = {
        "hidden": [list, tuple, Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
        "verbose": ["verbose"],
    }

    def __init__(self, hidden=(128, 64), dropout: float = 0.1, learning_rate: float = 1e-3, weight_decay: float = 1e-4,
                 epochs: int = 30, batch_size: int = 256, patience: int = 5, random_state: int | None = None,
                 verbose: int = 0):
        self.hidden = hidden
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.random_state = random_state
        self.verbose = verbose


def checked_inputs(estimator, X, y, eval_set):
    """Validates the training rows (and eval_set) as sklearn does: (X, targets, n_outputs, validation or None).

    Raises:
        DataError: more than one eval_set pair, or labels the training rows did not have.
    """
    from sklearn.base import ClassifierMixin
    from sklearn.utils.validation import validate_data

    estimator._validate_params()
    X, y = validate_data(estimator, X, y, dtype=np.float32, y_numeric=not isinstance(estimator, ClassifierMixin))
    targets, n_outputs = estimator._targets(y)
    validation = None
    if eval_set:
        if len(eval_set) != 1:
            raise DataError(f"eval_set: give one (X_val, y_val) pair, got {len(eval_set)}")
        X_val = validate_data(estimator, eval_set[0][0], dtype=np.float32, reset=False)
        validation = (X_val, estimator._encode(np.asarray(eval_set[0][1])))
    return X, targets, n_outputs, validation


def hidden_sizes(hidden) -> list[int]:
    """Layer widths as ints; KFP carries config numbers as doubles, so 32.0 counts as 32."""
    sizes = [hidden] if isinstance(hidden, Real) else list(hidden)
    if not sizes or any(not isinstance(s, Real) or s < 1 or float(s) != int(s) for s in sizes):
        raise DataError(f"model.params.hidden: layer sizes must be whole numbers >= 1, got {hidden!r}")
    return [int(s) for s in sizes]


class ClassifierOutputs:
    """What an MLP classifier trains on and answers: class indexes in, softmax over `classes_` out.

    The framework class supplies `_raw(X)` (the network's logits).
    """

    def _targets(self, y):
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise DataError(f"y: one class ({self.classes_[0]!r}) in the training rows; a classifier needs two or more")
        return self._encode(y), len(self.classes_)

    def _encode(self, y):
        index = np.searchsorted(self.classes_, y)
        unknown = (index >= len(self.classes_)) | (self.classes_[np.minimum(index, len(self.classes_) - 1)] != y)
        if unknown.any():
            raise DataError(f"eval_set: label {y[np.argmax(unknown)]!r} is not one of the training classes {list(self.classes_)}")
        return index.astype(np.int64)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, columns in the order of `classes_`."""
        from scipy.special import softmax

        return softmax(self._raw(X).astype(np.float64), axis=1)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self._raw(X), axis=1)]


class RegressorOutputs:
    """An MLP regressor's target: standardised for training (one output), restored in `predict`."""

    def _targets(self, y):
        self.y_mean_, self.y_scale_ = float(np.mean(y)), float(np.std(y)) or 1.0
        return self._encode(y), 1

    def _encode(self, y):
        return ((np.asarray(y, dtype=np.float64) - self.y_mean_) / self.y_scale_).astype(np.float32)

    def predict(self, X) -> np.ndarray:
        return self._raw(X)[:, 0].astype(np.float64) * self.y_scale_ + self.y_mean_
