"""`model.family: keras_mlp`: a Keras MLP behind the scikit-learn estimator API, for the tabular pipeline.

The tabular train step composes `Pipeline([("features", transformer),
("model", estimator)])` and pickles it with joblib; these classes let a Keras
network sit in that slot like any scikit-learn model: `fit(X, y,
eval_set=None)`, `predict`, `predict_proba`, `classes_`, `get_params` /
`set_params` and parameter validation through scikit-learn's own
constraint table (`_validate_params`, which train.estimators runs before
any data is read).

A Keras model cannot be pickled, so `__getstate__` stores it as the bytes of
a `.keras` file and `__setstate__` loads it back: the joblib bundle stays
one self-contained file.

Seeding: `fit` calls `keras.utils.set_random_seed(random_state)` (Python,
NumPy and TensorFlow's global seeds) and enables TensorFlow's op
determinism, so the same data and parameters give the same model.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from keel.components.train_deep.mlp_params import ClassifierOutputs, MLPParams, RegressorOutputs, checked_inputs, hidden_sizes


class _KerasMLP(MLPParams):
    """Shared fitting and pickling of the classifier and the regressor."""

    # -- what the subclasses define ------------------------------------------------------------------

    def _targets(self, y) -> tuple[np.ndarray, int]:
        """The training targets as the network sees them, and its number of outputs."""
        raise NotImplementedError

    def _loss(self, keras):
        raise NotImplementedError

    # -- fitting -------------------------------------------------------------------------------------

    def fit(self, X, y, eval_set=None):
        """Trains the network; with `eval_set=[(X_val, y_val)]` it stops when the validation loss has not
        improved for `patience` epochs and keeps the best epoch's weights (as XGBoost's eval_set does).

        Raises:
            DataError: features or targets that are not finite numbers.
        """
        X, targets, n_outputs, validation = checked_inputs(self, X, y, eval_set)

        from keel.components._common import tf_import
        from keel.components._common.deep_model.keras_models import build_keras_mlp

        keras, tf = tf_import.keras(), tf_import.tensorflow()

        seed = 0 if self.random_state is None else int(self.random_state)
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        model = build_keras_mlp(X.shape[1], n_outputs, {"hidden": hidden_sizes(self.hidden), "dropout": float(self.dropout)})
        optimizer = keras.optimizers.AdamW(learning_rate=float(self.learning_rate), weight_decay=float(self.weight_decay))
        optimizer.exclude_from_weight_decay(var_names=["bias"])
        model.compile(optimizer=optimizer, loss=self._loss(keras))
        callbacks = []
        if validation is not None:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(self.patience),
                                                           restore_best_weights=True))
        history = model.fit(X, targets, validation_data=validation, epochs=int(self.epochs),
                            batch_size=int(self.batch_size), shuffle=True, callbacks=callbacks, verbose=self.verbose)
        self.model_ = model
        self.history_ = {k: [float(v) for v in values] for k, values in history.history.items()}
        self.n_iter_ = len(history.history["loss"])
        losses = self.history_.get("val_loss") or self.history_["loss"]
        self.best_iteration = int(np.argmin(losses)) if validation is not None else self.n_iter_ - 1
        return self

    def _encode(self, y: np.ndarray) -> np.ndarray:
        return y

    def _raw(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return np.asarray(self.model_.predict(X, batch_size=max(int(self.batch_size), 1024), verbose=0))

    # -- pickling ------------------------------------------------------------------------------------

    def __getstate__(self):
        # A copy: object.__getstate__ hands back the live __dict__, and popping from it would unfit this estimator.
        state = dict(super().__getstate__())
        model = state.pop("model_", None)
        if model is not None:
            with tempfile.TemporaryDirectory(prefix="keel-keras-") as tmp:
                path = os.path.join(tmp, "model.keras")
                model.save(path)
                with open(path, "rb") as handle:
                    state["_model_keras_bytes"] = handle.read()
        return state

    def __setstate__(self, state):
        data = state.pop("_model_keras_bytes", None)
        super().__setstate__(state)
        if data is not None:
            from keel.components._common.tf_import import keras as _keras

            keras = _keras()

            with tempfile.TemporaryDirectory(prefix="keel-keras-") as tmp:
                path = os.path.join(tmp, "model.keras")
                with open(path, "wb") as handle:
                    handle.write(data)
                self.model_ = keras.saving.load_model(path, compile=False)


class KerasMLPClassifier(ClassifierOutputs, ClassifierMixin, _KerasMLP):
    """A Keras MLP classifier (softmax over the classes seen in `fit`)."""

    def _loss(self, keras):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class KerasMLPRegressor(RegressorOutputs, RegressorMixin, _KerasMLP):
    """A Keras MLP regressor on squared error; the target is standardised for training and restored on predict."""

    def _loss(self, keras):
        return keras.losses.MeanSquaredError()
