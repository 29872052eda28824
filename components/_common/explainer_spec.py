"""Per-request feature attributions with shap, reported per raw input column.

The model sees engineered features (one-hot columns, missing indicators), but
a reviewer asks about the columns they sent. Shapley values add up, so the
attributions of every feature derived from one raw column are summed into
that column's attribution; `base_value + sum(attributions)` still equals the
model's output, which the response states next to them.

A bundle registered with an explainer (`explainer.json`, written by the
explain_model step) is explained exactly as that step explained the test
set: the same method, background and feature -> column grouping. The spec is
read and checked here, by its consumer, and the explain step imports
`parse_spec`, `model_output` and `Attributions` from here, so writer and
reader cannot drift apart.

- tree: TreeExplainer with the trees' own cover statistics (no background).
- linear: LinearExplainer against one background row (the training mean).
- permutation: shap's PermutationExplainer over the estimator's probabilities
  (or predictions) with k-means centroids of the training features as the
  masker. Forward and backward passes over each permutation telescope, so a
  row's attributions add up to its output exactly, for any model.

Bundles without the file (registered before the explain step existed) keep
the old behaviour: tree, else linear against the all-zero feature row, else
no explainer.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np

from keel.components._common.errors import DataError

SPEC_FILE = "explainer.json"
SPEC_FORMAT = 1
METHODS = ("tree", "linear", "permutation")
OUTPUTS = ("log_odds", "probability", "value")


class NoExplainer(Exception):
    """shap has no explainer for this estimator without background data."""


def parse_spec(data: bytes | str | dict, where: str = SPEC_FILE) -> dict:
    """Reads and checks an explainer spec (the JSON the explain step writes).

    Args:
        data: the file's bytes, or the already-parsed object.
        where: what to name in errors (the file's path or URI).

    Returns:
        The spec as a dict.

    Raises:
        DataError: not JSON, an unknown format or method, or fields of the wrong shape.
    """
    if isinstance(data, dict):
        spec = data
    else:
        try:
            spec = json.loads(data)
        except (ValueError, UnicodeDecodeError) as err:
            raise DataError(f"{where}: not valid JSON ({err}); register the model again with its explain_model output") from None
    if not isinstance(spec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(spec).__name__}")
    if spec.get("format") != SPEC_FORMAT:
        raise DataError(f"{where}: format {spec.get('format')!r} is not understood by this predictor (it reads format "
                        f"{SPEC_FORMAT}); serve it with the Keel version that registered it")
    method = spec.get("method")
    if method not in METHODS:
        raise DataError(f"{where}: method {method!r} is unknown; this predictor explains with {', '.join(METHODS)}")
    if spec.get("output") not in OUTPUTS:
        raise DataError(f"{where}: output {spec.get('output')!r} is unknown; expected one of {', '.join(OUTPUTS)}")
    names, sources = spec.get("feature_names"), spec.get("sources")
    if not isinstance(names, list) or not names or not isinstance(sources, list) or len(sources) != len(names):
        raise DataError(f"{where}: feature_names and sources must be lists of the same, non-zero length "
                        f"(got {_length(names)} and {_length(sources)})")
    background = spec.get("background")
    if method == "tree":
        if background not in (None, []):
            raise DataError(f"{where}: method tree takes no background, but one is given; the file is inconsistent")
    else:
        rows = np.asarray(background if background is not None else [], dtype=float)
        if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] != len(names):
            raise DataError(f"{where}: method {method} needs background rows of {len(names)} values each, got shape "
                            f"{rows.shape}; the file is inconsistent")
        if not np.all(np.isfinite(rows)):
            raise DataError(f"{where}: background holds non-finite values; the file is inconsistent")
    if method == "permutation" and not (isinstance(spec.get("permutations"), int) and spec["permutations"] >= 1):
        raise DataError(f"{where}: method permutation needs permutations >= 1, got {spec.get('permutations')!r}")
    return spec


def _texts(classes) -> list[str]:
    # KFP metadata turns int classes into floats (2 -> 2.0) on the way to bundle.json.
    return [str(int(c)) if isinstance(c, float) and c.is_integer() else str(c) for c in classes]


def _length(value) -> str:
    return str(len(value)) if isinstance(value, list) else type(value).__name__


def model_output(estimator, output: str, n_classes: int | None):
    """The function a permutation explainer explains: engineered features -> the model's output.

    Binary: the positive class's probability; multiclass: every class's probability;
    regression: the prediction.
    """
    if output == "value":
        return lambda X: np.asarray(estimator.predict(X), dtype=float)
    if output != "probability":
        raise ValueError(f"a permutation explainer explains probabilities or values, not {output!r}")
    if n_classes == 2:
        return lambda X: np.asarray(estimator.predict_proba(X), dtype=float)[:, 1]
    return lambda X: np.asarray(estimator.predict_proba(X), dtype=float)


class Attributions:
    """shap attributions for an estimator, aggregated to raw input columns.

    Attributes:
        method: "tree", "linear" or "permutation".
        output: what the values are measured in ("log_odds", "probability", "value"),
            or None for the old, spec-less path (the predictor then derives it from the family).
        columns: the raw column behind each engineered feature.
    """

    def __init__(self, estimator, n_features: int, sources: list[str] | None, feature_names: list[str]):
        import shap

        try:
            self._explainer = shap.TreeExplainer(estimator)
            self.method = "tree"
        except Exception as tree_error:  # noqa: BLE001 - shap raises several types for "not a tree model"
            if not hasattr(estimator, "coef_"):
                raise NoExplainer(f"{type(estimator).__name__}: {tree_error}") from None
            background = shap.maskers.Independent(np.zeros((1, n_features)))
            self._explainer = shap.LinearExplainer(estimator, background)
            self.method = "linear"
        self.output = None
        self._max_evals = None
        self._seed = None
        # Without a source per feature (scikit-learn fallback path), report per feature.
        self._group(sources if sources is not None else feature_names)

    @classmethod
    def from_spec(cls, spec: dict, estimator, feature_names: list[str], classes: list | None,
                  where: str = SPEC_FILE) -> Attributions:
        """The explainer an explainer.json describes, for this estimator.

        Args:
            spec: a spec from `parse_spec`.
            estimator: the fitted estimator (engineered features in).
            feature_names: the model's engineered feature names, in order.
            classes: the model's classes (None for regression).
            where: what to name in errors.

        Raises:
            DataError: the spec does not fit this model (features, classes, or a method the
                estimator cannot be explained with).
        """
        import shap

        names = [str(n) for n in feature_names]
        if len(spec["feature_names"]) != len(names):
            raise DataError(f"{where}: lists {len(spec['feature_names'])} features but the model has {len(names)}; "
                            "register the explainer made for this model")
        if [str(n) for n in spec["feature_names"]] != names:
            bad = next(i for i, (a, b) in enumerate(zip(spec["feature_names"], names)) if str(a) != b)
            raise DataError(f"{where}: feature {bad} is {spec['feature_names'][bad]!r} but the model's is {names[bad]!r}; "
                            "register the explainer made for this model")
        if classes is not None and spec.get("classes") is not None and _texts(spec["classes"]) != _texts(classes):
            raise DataError(f"{where}: classes {spec['classes']} differ from the model's {list(classes)}; "
                            "register the explainer made for this model")
        self = cls.__new__(cls)
        self.method, self.output = spec["method"], spec["output"]
        self._max_evals, self._seed = None, int(spec.get("seed") or 0)
        try:
            if self.method == "tree":
                self._explainer = shap.TreeExplainer(estimator)
            elif self.method == "linear":
                background = np.asarray(spec["background"], dtype=float)
                self._explainer = shap.LinearExplainer(estimator, shap.maskers.Independent(background, max_samples=len(background)))
            else:
                background = np.asarray(spec["background"], dtype=float)
                n_classes = len(classes) if classes is not None else None
                masker = shap.maskers.Independent(background, max_samples=len(background))
                with _seeded(self._seed):  # shap's constructor reseeds numpy's global generator
                    self._explainer = shap.PermutationExplainer(model_output(estimator, self.output, n_classes), masker,
                                                                seed=self._seed)
                self._max_evals = int(spec["permutations"]) * (2 * len(names) + 1)
        except Exception as err:  # noqa: BLE001 - shap raises several types for "cannot explain this model"
            raise DataError(f"{where}: method {self.method} cannot explain {type(estimator).__name__} "
                            f"({type(err).__name__}: {err}); register the explainer made for this model") from err
        self._group([str(s) for s in spec["sources"]])
        if self.method == "permutation":
            # shap's masking kernels are numba functions compiled on first use (seconds);
            # pay that at load, not on the first request.
            self.values(np.asarray(spec["background"], dtype=float)[:1])
        return self

    def _group(self, columns: list[str]) -> None:
        self.columns = list(columns)
        self._order = list(dict.fromkeys(self.columns))
        index = {name: i for i, name in enumerate(self._order)}
        self._groups = np.zeros((len(self.columns), len(self._order)))
        for j, column in enumerate(self.columns):
            self._groups[j, index[column]] = 1.0

    @property
    def raw_columns(self) -> list[str]:
        """The columns attributions are reported for, in the order of `values` below."""
        return list(self._order)

    def values(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-column attributions and base values of the rows of X (engineered features).

        Returns:
            (values, base): values is (rows, raw columns, outputs) and base (rows, outputs).
            outputs is 1 for regression and binary models (the positive class), else one per class.
        """
        if self._max_evals is not None:
            # One seed for every call: the same request gets the same attributions
            # (the permutations are random), without touching anyone else's random state.
            with _seeded(self._seed):
                result = self._explainer(X, max_evals=self._max_evals, silent=True)
        else:
            result = self._explainer(X)
        values, base = np.asarray(result.values, dtype=float), np.asarray(result.base_values, dtype=float)
        n = X.shape[0]
        if values.ndim == 2:  # one output: regression, or a binary model's log-odds / probability
            values = values[:, :, None]
        base = np.broadcast_to(base.reshape(n, -1) if base.ndim else base, (n, values.shape[2])).astype(float)
        if values.shape[2] == 2:  # binary with one column per class: the positive one
            values, base = values[:, :, 1:], base[:, 1:]
        return np.einsum("nfk,fc->nck", values, self._groups), base

    def explain(self, X: np.ndarray, classes: list | None) -> list[dict]:
        """One explanation per row: base value, output and per-column attributions (largest first)."""
        values, base = self.values(X)
        out = []
        for i in range(X.shape[0]):
            if values.shape[2] == 1:
                out.append(self._one(values[i, :, 0], float(base[i, 0])))
            else:
                names = classes if classes is not None and len(classes) == values.shape[2] else range(values.shape[2])
                out.append({"per_class": {str(c): self._one(values[i, :, k], float(base[i, k])) for k, c in enumerate(names)}})
        return out

    def _one(self, summed: np.ndarray, base: float) -> dict:
        order = np.argsort(-np.abs(summed), kind="stable")
        return {
            "base_value": base,
            "output": float(base + summed.sum()),
            "attributions": {self._order[k]: float(summed[k]) for k in order},
        }


@contextlib.contextmanager
def _seeded(seed: int):
    """numpy's global generator seeded for a block, then put back as it was."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
