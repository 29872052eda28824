"""The fitted feature transform, compiled to numpy for one-request-at-a-time serving.

The registered model is a scikit-learn Pipeline whose first step is a pandas-
output ColumnTransformer. It is exact, but on a one-row request it spends about
25 ms building DataFrames and re-validating inputs in every step, ten times
the whole latency budget of a request. `compile_features` reads the fitted
statistics out of each step once, at load time, and applies them with the
same numpy operations in the same order, so the features are bit-identical.

Encoders are not re-implemented: their output for every known category (and
for one unseen value) is computed once by the fitted encoder itself and looked
up per request. A step Keel does not recognise is applied with its own
`transform` on the numpy array. Anything else (an unknown function step, a
width that does not add up) makes compilation fail, and `ServingFeatures`
keeps the scikit-learn path; `self_check` proves equality on probe rows built
from the training schema before the compiled path is used.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from keel.components._common.encoding import as_categories, as_numbers, category_text

log = logging.getLogger("keel.serve")

_UNSEEN = "__keel_unseen_category__"


class NotCompilable(Exception):
    """The fitted transform holds a step the compiler does not know how to reproduce exactly."""


@dataclass
class _Part:
    columns: list[str]
    steps: list[Callable[[np.ndarray], np.ndarray]]
    sources: list[str]  # raw column behind each output column


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _numbers(values: np.ndarray) -> np.ndarray:
    out = np.empty(values.shape, dtype="float64")
    flat_in, flat_out = values.reshape(-1), out.reshape(-1)
    for i, value in enumerate(flat_in):
        flat_out[i] = np.nan if _is_missing(value) else float(value)
    return out


def _texts(values: np.ndarray) -> np.ndarray:
    out = np.empty(values.shape, dtype=object)
    flat_in, flat_out = values.reshape(-1), out.reshape(-1)
    for i, value in enumerate(flat_in):
        flat_out[i] = np.nan if _is_missing(value) else category_text(value)
    return out


def _compile_function(step, sources):
    func = getattr(step, "func", None)
    if func is as_numbers:
        return _numbers, sources
    if func is as_categories:
        return _texts, sources
    raise NotCompilable(f"FunctionTransformer({getattr(func, '__name__', func)!r})")


def _compile_imputer(step, sources):
    statistics = step.statistics_
    numeric = statistics.dtype.kind == "f"
    if numeric and np.isnan(statistics).any() and not getattr(step, "keep_empty_features", False):
        raise NotCompilable("SimpleImputer with an all-missing training column")
    indicator = step.indicator_.features_ if getattr(step, "indicator_", None) is not None else None

    def impute(X: np.ndarray) -> np.ndarray:
        mask = np.isnan(X) if X.dtype.kind == "f" else pd.isna(X)  # None and NaN, in C
        X = X.copy()
        if mask.any():
            rows, cols = np.nonzero(mask)
            X[rows, cols] = statistics[cols]
        if indicator is None:
            return X
        # scikit-learn stacks the indicator columns after the imputed ones; for
        # numeric input the result is float64, as here.
        return np.hstack([X, mask[:, indicator].astype(X.dtype if numeric else object)])

    out_sources = list(sources) + ([sources[i] for i in indicator] if indicator is not None else [])
    return impute, out_sources


def _center_then_scale(center, scale):
    """(X - center) / scale with scikit-learn's in-place operations, so results are bit-identical."""

    def kernel(X):
        X = np.array(X, dtype="float64")
        if center is not None:
            X -= center
        if scale is not None:
            X /= scale
        return X

    return kernel


def _compile_scaler(step, sources):
    name = type(step).__name__
    if name == "StandardScaler":
        return _center_then_scale(step.mean_ if step.with_mean else None, step.scale_ if step.with_std else None), sources
    if name == "RobustScaler":
        return _center_then_scale(step.center_ if step.with_centering else None, step.scale_ if step.with_scaling else None), sources
    if name == "MinMaxScaler":
        mul, add, clip, bounds = step.scale_, step.min_, step.clip, step.feature_range

        def scale_minmax(X):
            X = np.array(X, dtype="float64")
            X *= mul
            X += add
            if clip:
                np.clip(X, bounds[0], bounds[1], out=X)
            return X

        return scale_minmax, sources
    raise NotCompilable(name)


def _compile_encoder(step, sources):
    """Per column: category -> the encoder's own output row, plus the row for an unseen value."""
    categories = step.categories_
    if type(step).__name__ == "OneHotEncoder":
        widths = list(getattr(step, "_n_features_outs", []))
    else:
        widths = [1] * len(categories)
    if len(widths) != len(categories):
        raise NotCompilable(f"{type(step).__name__} without per-feature output widths")
    anchors = [cats[0] for cats in categories]
    tables, unseen_rows, offsets = [], [], np.cumsum([0] + widths)
    for j, cats in enumerate(categories):
        probe_values = [c for c in cats if not _is_missing(c)] + [_UNSEEN]
        probe = np.empty((len(probe_values), len(categories)), dtype=object)
        probe[:] = anchors
        probe[:, j] = probe_values
        try:
            with warnings.catch_warnings():
                # The encoder was fitted on a DataFrame; the probe is the same columns as an array.
                warnings.simplefilter("ignore", UserWarning)
                encoded = np.asarray(step.transform(probe), dtype="float64")[:, offsets[j]:offsets[j + 1]]
        except ValueError as err:  # handle_unknown="error": unseen values are refused at request time
            raise NotCompilable(f"{type(step).__name__} rejects unseen categories ({err})") from None
        tables.append({value: encoded[i] for i, value in enumerate(probe_values[:-1])})
        unseen_rows.append(encoded[-1])
    total = int(offsets[-1])

    def encode(X):
        out = np.empty((X.shape[0], total), dtype="float64")
        for j in range(len(tables)):
            table, unseen = tables[j], unseen_rows[j]
            lo, hi = offsets[j], offsets[j + 1]
            for i, value in enumerate(X[:, j]):
                out[i, lo:hi] = table.get(value, unseen)
        return out

    out_sources = [sources[j] for j in range(len(categories)) for _ in range(widths[j])]
    return encode, out_sources


def _compile_generic(step, sources):
    """A step applied with its own transform on the numpy array (e.g. KBinsDiscretizer)."""
    name = type(step).__name__
    if name == "KBinsDiscretizer":
        widths = [int(n) for n in step.n_bins_] if step.encode != "ordinal" else [1] * len(sources)
        out_sources = [sources[j] for j in range(len(sources)) for _ in range(widths[j])]

        def discretize(X):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return np.asarray(step.transform(X), dtype="float64")

        return discretize, out_sources
    raise NotCompilable(name)


_COMPILERS = {
    "FunctionTransformer": _compile_function,
    "SimpleImputer": _compile_imputer,
    "StandardScaler": _compile_scaler,
    "MinMaxScaler": _compile_scaler,
    "RobustScaler": _compile_scaler,
    "OneHotEncoder": _compile_encoder,
    "OrdinalEncoder": _compile_encoder,
}


class CompiledFeatures:
    """The fitted ColumnTransformer's transform as numpy operations on request columns."""

    def __init__(self, column_transformer, input_columns: list[str]):
        if getattr(column_transformer, "remainder", "drop") != "drop":
            raise NotCompilable("ColumnTransformer with a remainder other than 'drop'")
        self.input_columns = list(input_columns)
        self.parts: list[_Part] = []
        for name, pipeline, columns in column_transformer.transformers_:
            if name == "remainder" or pipeline == "drop":
                continue
            columns = list(columns)
            steps, sources = [], list(columns)
            for _, step in getattr(pipeline, "steps", [(name, pipeline)]):
                compiler = _COMPILERS.get(type(step).__name__, _compile_generic)
                kernel, sources = compiler(step, sources)
                steps.append(kernel)
            self.parts.append(_Part(columns, steps, sources))
        self.sources = [s for part in self.parts for s in part.sources]

    def transform(self, columns: dict[str, list]) -> np.ndarray:
        """Request columns (name -> list of Python values) -> the feature matrix (float64)."""
        blocks = []
        for part in self.parts:
            X = np.empty((len(columns[part.columns[0]]), len(part.columns)), dtype=object)
            for j, name in enumerate(part.columns):
                X[:, j] = columns[name]
            for step in part.steps:
                X = step(X)
            blocks.append(np.asarray(X, dtype="float64"))
        return np.hstack(blocks) if len(blocks) > 1 else blocks[0]


def request_frame(columns: dict[str, list], input_columns: list[str]) -> pd.DataFrame:
    """The DataFrame the registered Pipeline would be given in-process (pandas infers each
    column's dtype from the values, as it would from a table: numbers with nulls become float64)."""
    return pd.DataFrame({name: pd.Series(columns[name]) for name in input_columns})


class ServingFeatures:
    """Feature transform for serving: the compiled path when proven exact, else scikit-learn's own.

    Attributes:
        compiled: whether the numpy path is in use.
        sources: the raw input column behind each feature (for per-column attributions),
            or None when the scikit-learn path cannot tell.
        reason: why the scikit-learn path is used (empty when compiled).
    """

    def __init__(self, column_transformer, input_columns: list[str], probe: dict[str, list]):
        self._sklearn = column_transformer
        self.input_columns = list(input_columns)
        self._compiled: CompiledFeatures | None = None
        self.reason = ""
        try:
            candidate = CompiledFeatures(column_transformer, input_columns)
            problem = self_check(candidate, column_transformer, probe)
        except NotCompilable as err:
            problem = f"step not compilable: {err}"
        if problem:
            self.reason = problem
            log.warning("serving features use scikit-learn's transform (slower): %s", problem)
        else:
            self._compiled = candidate
        self.sources = self._compiled.sources if self._compiled else None

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def transform(self, columns: dict[str, list]) -> np.ndarray:
        if self._compiled is not None:
            return self._compiled.transform(columns)
        return np.asarray(self._sklearn.transform(request_frame(columns, self.input_columns)), dtype="float64")


def self_check(compiled: CompiledFeatures, column_transformer, probe: dict[str, list]) -> str:
    """'' when the compiled transform equals scikit-learn's on the probe rows, else why not."""
    try:
        fast = compiled.transform(probe)
    except Exception as err:  # noqa: BLE001 - any failure means: do not use the compiled path
        return f"compiled transform failed on probe rows ({type(err).__name__}: {err})"
    exact = np.asarray(column_transformer.transform(request_frame(probe, compiled.input_columns)), dtype="float64")
    if fast.shape != exact.shape:
        return f"compiled transform gives {fast.shape[1]} features, scikit-learn {exact.shape[1]}"
    if not np.array_equal(fast, exact, equal_nan=True):
        bad = int(np.argwhere(~((fast == exact) | (np.isnan(fast) & np.isnan(exact))))[0][1])
        return f"compiled transform differs from scikit-learn at feature {bad}"
    return ""
