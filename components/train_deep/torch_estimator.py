"""`model.family: torch_mlp`: a PyTorch MLP behind the scikit-learn estimator API, for the tabular pipeline.

The tabular train step composes `Pipeline([("features", transformer),
("model", estimator)])`, so the network trains on exactly the engineered
features every other family sees, and the registered bundle predicts from
raw columns. Same parameters and early-stopping contract as
`keras_mlp` (keras_estimator.py): `fit(X, y, eval_set=[(X_val, y_val)])`
stops when the validation loss has not improved for `patience` epochs and
keeps the best epoch's weights.

The features are one float32 tensor and each step indexes a shuffled batch
out of it (no DataLoader: the whole table fits in memory); shuffling comes
from a generator seeded by `random_state`, so the same data and parameters
give the same model. The fitted module pickles with the estimator (joblib),
so serving such a bundle needs torch (the keel-torch image).
"""

from __future__ import annotations

import copy

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from keel.components.train_deep.mlp_params import ClassifierOutputs, MLPParams, RegressorOutputs, checked_inputs, hidden_sizes


class _TorchMLP(MLPParams):
    def _targets(self, y) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def _encode(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _loss(self, out, target):
        raise NotImplementedError

    def fit(self, X, y, eval_set=None):
        """Trains the network (see the module docstring for early stopping and seeding).

        Raises:
            DataError: features or targets that are not finite numbers.
        """
        import torch

        from keel.components._common.deep_model.models import build_mlp

        X, targets, n_outputs, validation = checked_inputs(self, X, y, eval_set)
        if validation is not None:
            validation = tuple(torch.from_numpy(part) for part in validation)
        seed = 0 if self.random_state is None else int(self.random_state)
        torch.manual_seed(seed)
        shuffle = torch.Generator().manual_seed(seed)
        model = build_mlp(X.shape[1], n_outputs, {"hidden": hidden_sizes(self.hidden), "dropout": float(self.dropout)})
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(self.learning_rate), weight_decay=float(self.weight_decay))
        x, t = torch.from_numpy(X), torch.from_numpy(targets)
        batch = int(self.batch_size)
        history, best, best_state, waited = {"loss": [], "val_loss": []}, None, None, 0
        for epoch in range(int(self.epochs)):
            model.train()
            order = torch.randperm(len(t), generator=shuffle)
            total = 0.0
            for start in range(0, len(t), batch):
                index = order[start:start + batch]
                loss = self._loss(model(x[index]), t[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(index)
            history["loss"].append(total / len(t))
            if validation is None:
                continue
            model.eval()
            with torch.inference_mode():
                val_loss = self._loss(model(validation[0]), validation[1]).item()
            history["val_loss"].append(val_loss)
            if self.verbose:
                print(f"epoch {epoch + 1}: loss={history['loss'][-1]:.5f} val_loss={val_loss:.5f}", flush=True)
            if best is None or val_loss < best:
                best, best_state, waited = val_loss, copy.deepcopy(model.state_dict()), 0
            else:
                waited += 1
                if waited >= int(self.patience):
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
        self.module_ = model.eval()
        self.history_ = {k: v for k, v in history.items() if v}
        self.n_iter_ = len(history["loss"])
        self.best_iteration = int(np.argmin(history["val_loss"])) if history["val_loss"] else self.n_iter_ - 1
        return self

    def _raw(self, X) -> np.ndarray:
        import torch

        check_is_fitted(self, "module_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        with torch.inference_mode():
            return self.module_(torch.from_numpy(X)).numpy()


class TorchMLPClassifier(ClassifierOutputs, ClassifierMixin, _TorchMLP):
    """A PyTorch MLP classifier (softmax over the classes seen in `fit`)."""

    def _loss(self, out, target):
        import torch.nn.functional as F

        return F.cross_entropy(out, target)


class TorchMLPRegressor(RegressorOutputs, RegressorMixin, _TorchMLP):
    """A PyTorch MLP regressor; the target is standardised while training and restored in `predict`."""

    def _loss(self, out, target):
        import torch.nn.functional as F

        return F.mse_loss(out[:, 0], target)
