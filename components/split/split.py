"""Split logic: train / validation / test sets with an encoded label column.

The label encoding (the ordered class list) is taken from the whole cleaned
table, before splitting. That is not a leak: it is the set of values the
target can take, not a statistic fitted to them, and it must be identical in
every split so that a class seen only in the test set still has a code and
encoded labels mean the same thing everywhere.

Kept free of KFP so it runs in tests and in the component alike.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from keel.components._common.config import SplitSection, TargetSection
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.target import LABEL, check_target, classes_for, encode

SPLITS = ("train", "validation", "test")
# Month strings such as "Mar-2018" (the loans data's issue_month) are not
# ISO; these explicit formats are tried before pandas' per-value guessing.
_TIME_FORMATS = ("ISO8601", "%b-%Y", "%B-%Y", "%b %Y", "%B %Y", "%Y-%m", "%m/%d/%Y", "%d.%m.%Y")
# Regression targets are stratified on quantile bins of the target; each bin
# needs a few rows so that both the test and the validation cut can sample it.
_MAX_QUANTILE_BINS = 10
_MIN_ROWS_PER_BIN = 10


@dataclass
class SplitResult:
    """What `split_frame` produced.

    Attributes:
        frames: split name -> feature columns + `__label__`, index 0..n-1.
        indices: split name -> positions of its rows in the input.
        classes: ordered raw classes (index = encoded label); empty for regression.
        task: the target task.
        method: how the rows were assigned (stratified, stratified on target quantiles, random, time).
    """

    frames: dict[str, pd.DataFrame]
    indices: dict[str, np.ndarray]
    classes: list
    task: str
    method: str
    time_ranges: dict[str, list[str]] | None = None

    def metadata(self, name: str) -> dict:
        """KFP metadata for one split: rows, class counts, classes, task, method."""
        frame = self.frames[name]
        meta = {"rows": int(len(frame)), "task": self.task, "method": self.method, "classes": json_safe(self.classes)}
        if self.task == "regression":
            labels = frame[LABEL]
            meta["label_mean"] = float(labels.mean()) if len(labels) else None
        else:
            counts = frame[LABEL].value_counts()
            meta["class_counts"] = {str(c): int(counts.get(i, 0)) for i, c in enumerate(self.classes)}
        if self.time_ranges is not None:
            meta["time_range"] = self.time_ranges[name]
        return meta


def json_safe(values: list) -> list:
    """Class values as JSON types (numpy scalars and timestamps become str where needed)."""
    return json.loads(json.dumps(values, default=str))


def split_frame(frame: pd.DataFrame, target: TargetSection, config: SplitSection) -> SplitResult:
    """Encodes the target into `__label__` and assigns every row to exactly one split.

    Args:
        frame: the cleaned table, target column included.
        target: the target section (column, task, positive_values, labels).
        config: the `split` section (method, test_size, validation_size, time_column, seed).

    Returns:
        A SplitResult; the same input and seed always give the same split.

    Raises:
        DataError: the target is missing or null, a class is too rare to
            stratify, or the time column is missing or unparseable.
        ConfigError: the time column is the target.
    """
    frame = frame.reset_index(drop=True)
    check_target(frame, target, where="the split input")
    if LABEL in frame.columns:
        raise DataError(f"column {LABEL!r} is reserved for the encoded target; rename that column at the source")
    nulls = frame[target.column].isna()
    if nulls.any():
        raise DataError(
            f"target {target.column!r} is null in {int(nulls.sum())} rows (first: row {int(np.flatnonzero(nulls)[0])}); "
            "run clean_data first, which quarantines them"
        )
    classes = [] if target.task == "regression" else classes_for(frame[target.column], target)
    labels = encode(frame[target.column], target, classes)
    data = frame.drop(columns=[target.column])
    data[LABEL] = labels

    time_ranges = None
    if config.method == "time":
        positions, time_ranges = _time_split(frame, target, config)
        method = "time"
    else:
        positions, method = _shuffled_split(labels, target, classes, config)
    frames = {name: data.iloc[positions[name]].reset_index(drop=True) for name in SPLITS}
    return SplitResult(frames=frames, indices=positions, classes=classes, task=target.task, method=method, time_ranges=time_ranges)


def _sizes(n: int, config: SplitSection) -> tuple[int, int]:
    """(test rows, validation rows), rounded up like scikit-learn's train_test_split."""
    n_test = math.ceil(config.test_size * n)
    n_validation = math.ceil(config.validation_size * n) if config.validation_size else 0
    if n - n_test - n_validation < 1:
        raise DataError(
            f"split: {n} rows are too few for test_size {config.test_size} and validation_size "
            f"{config.validation_size}; lower them or provide more rows"
        )
    return n_test, n_validation


def _shuffled_split(labels: np.ndarray, target: TargetSection, classes: list, config: SplitSection):
    from sklearn.model_selection import train_test_split

    n = len(labels)
    n_test, n_validation = _sizes(n, config)
    strata, method = None, config.method
    if config.method == "stratified":
        if target.task == "regression":
            strata, method = _quantile_strata(labels)
        else:
            _check_stratifiable(labels, classes, n_validation > 0)
            strata = labels
    every = np.arange(n)
    try:
        rest, test = train_test_split(every, test_size=n_test, random_state=config.seed, stratify=strata)
        validation = np.array([], dtype=int)
        if n_validation:
            rest_strata = None if strata is None else strata[rest]
            rest, validation = train_test_split(rest, test_size=n_validation, random_state=config.seed, stratify=rest_strata)
    except ValueError as err:
        # Too few rows per class for the requested sizes (e.g. test rows < number of classes).
        raise DataError(
            f"split.method {config.method}: {err}; use split.method: random, larger split sizes, or more rows"
        ) from None
    # Input order inside each split: reproducible, and diffs of outputs stay readable.
    return {"train": np.sort(rest), "validation": np.sort(validation), "test": np.sort(test)}, method


def _check_stratifiable(labels: np.ndarray, classes: list, with_validation: bool) -> None:
    # Each stratified cut needs two members of a class; the validation cut
    # happens on what the test cut left, so a class needs one more.
    needed = 3 if with_validation else 2
    counts = np.bincount(labels, minlength=len(classes))
    for index, count in enumerate(counts):
        if 0 < count < needed:
            raise DataError(
                f"split.method stratified: class {classes[index]!r} has only {count} row(s), and stratifying needs at "
                f"least {needed}; use split.method: random, or merge rare classes (target.positive_values)"
            )


def _quantile_strata(labels: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Quantile bins of a regression target, so every split sees its whole range.

    Falls back to a random split when there are too few rows for even two bins
    of `_MIN_ROWS_PER_BIN` (the split method recorded says so).
    """
    bins = min(_MAX_QUANTILE_BINS, len(labels) // _MIN_ROWS_PER_BIN)
    if bins >= 2:
        strata = pd.qcut(labels, q=bins, labels=False, duplicates="drop")
        counts = np.bincount(strata)
        if len(counts) >= 2 and counts.min() >= 3:
            return strata, f"stratified on {len(counts)} target quantile bins"
    return None, "random (too few rows to stratify a regression target)"


def _time_split(frame: pd.DataFrame, target: TargetSection, config: SplitSection):
    name = config.time_column
    if name == target.column:
        raise ConfigError(f"split.time_column: {name!r} is the target; choose the column that holds each row's time")
    if name not in frame.columns:
        raise DataError(
            f"split.time_column: {name!r} is not a column of the data; columns are: {', '.join(map(str, frame.columns[:30]))}"
        )
    times = parse_times(frame[name], name)
    n_test, n_validation = _sizes(len(frame), config)
    # A stable sort keeps input order among equal times, so ties at a cut are
    # assigned deterministically; no seed is involved.
    order = np.argsort(times.to_numpy(), kind="stable")
    n_train = len(order) - n_test - n_validation
    positions = {
        "train": order[:n_train],
        "validation": order[n_train : n_train + n_validation],
        "test": order[n_train + n_validation :],
    }
    ranges = {
        split: ([str(times.iloc[rows].min()), str(times.iloc[rows].max())] if len(rows) else [])
        for split, rows in positions.items()
    }
    return positions, ranges


def parse_times(series: pd.Series, name: str) -> pd.Series:
    """A time column as sortable values: numbers and datetimes as they are, strings parsed.

    Raises:
        DataError: values are null or cannot be read as times (names the first bad row).
    """
    nulls = series.isna()
    if nulls.any():
        raise DataError(
            f"split.time_column: {name!r} is null in {int(nulls.sum())} rows (first: row {int(np.flatnonzero(nulls)[0])}); "
            f"set clean.missing.columns: {{{name}: drop}}"
        )
    if pd.api.types.is_datetime64_any_dtype(series) or (
        pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    ):
        return series
    text = series.astype(str)
    for fmt in _TIME_FORMATS:
        parsed = pd.to_datetime(text, format=fmt, errors="coerce")
        if parsed.notna().all():
            return parsed
    with warnings.catch_warnings():
        # "Could not infer format": expected for odd formats; failures are reported below.
        warnings.simplefilter("ignore", UserWarning)
        parsed = pd.to_datetime(text, format="mixed", errors="coerce")
    bad = parsed.isna()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"split.time_column: {name!r} has values that are not dates or times (row {row}: {series.iloc[row]!r}); "
            "use an ISO date column or fix the values"
        )
    return parsed
