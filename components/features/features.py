"""Feature logic: a scikit-learn ColumnTransformer fitted on the training split only.

Imputation, scaling, encoding and binning statistics are learned from the
training rows alone and then applied, unchanged, to the validation rows (and,
inside the trained model's Pipeline, to test and serving rows). The fitted
transformer takes the raw feature columns, so the model served later accepts
the same columns that split_data wrote.

Kept free of KFP so it runs in tests and in the component alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from keel.components._common.config import FeaturesSection
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.target import LABEL
# Re-imported, not only used: transformers pickled before the coercions moved to _common refer to them here.
from keel.components._common.encoding import as_categories, as_numbers  # noqa: F401


@dataclass
class FeaturesResult:
    """What `engineer` produced.

    Attributes:
        transformer: the fitted ColumnTransformer (pandas output, named features).
        train_features: transformed training rows + `__label__`.
        validation_features: transformed validation rows + `__label__`.
        input_columns: raw column -> dtype, the input the transformer expects.
        column_types: raw column -> numeric, categorical or bucketize.
        feature_names: the transformed column names, in order.
    """

    transformer: object
    train_features: pd.DataFrame
    validation_features: pd.DataFrame
    input_columns: dict[str, str]
    column_types: dict[str, str]
    feature_names: list[str]


def input_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The raw feature columns of a split: everything except `__label__`."""
    return frame.drop(columns=[LABEL], errors="ignore")


def load_transformer(path: str | Path):
    """Loads a transformer written by engineer_features (a joblib file, local or s3://).

    Raises:
        DataError: the file is missing or is not a fitted transformer.
    """
    import io

    import joblib

    from keel.components._common import storage
    from keel.components._common.errors import StorageError

    try:
        data = storage.read_bytes(str(path))
    except (StorageError, IsADirectoryError):
        raise DataError(f"{path}: transformer file not found; pass engineer_features' transformer output") from None
    try:
        transformer = joblib.load(io.BytesIO(data))
    except Exception as err:  # joblib/pickle raise many types for a corrupt or foreign file
        raise DataError(f"{path}: not a readable joblib transformer ({type(err).__name__}: {err})") from None
    if not hasattr(transformer, "transform") or not hasattr(transformer, "feature_names_in_"):
        raise DataError(f"{path}: holds a {type(transformer).__name__}, not a fitted transformer")
    return transformer


def column_types(frame: pd.DataFrame, features: FeaturesSection) -> dict[str, str]:
    """Decides each raw column's treatment: numeric, categorical or bucketize.

    Raises:
        ConfigError: features.types or features.bucketize names an unknown column, or conflicts.
        DataError: a column cannot be treated (datetime, or text under numeric).
    """
    known = ", ".join(map(str, frame.columns[:30]))
    for field, names in (("types", features.types), ("bucketize", features.bucketize)):
        for name in names:
            if name not in frame.columns:
                raise ConfigError(f"features.{field}: {name!r} is not a feature column; columns are: {known}")
    types = {}
    for name in frame.columns:
        series = frame[name]
        if name in features.bucketize:
            types[name] = "bucketize"
        elif name in features.types:
            types[name] = features.types[name]
        elif pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series):
            raise DataError(
                f"feature column {name!r} is a {series.dtype}; derive numbers from it upstream or add it to data.drop_columns"
            )
        elif pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            types[name] = "numeric"
        else:
            types[name] = "categorical"
    for name, bins in features.bucketize.items():
        if features.types.get(name) == "categorical":
            raise ConfigError(f"features.bucketize: {name!r} is also listed as categorical in features.types; keep one")
        if bins < 2:
            raise ConfigError(f"features.bucketize: {name!r} asks for {bins} bins; use 2 or more")
    for name, kind in types.items():
        if kind in ("numeric", "bucketize") and not _numeric_like(frame[name]):
            example = frame[name].dropna().iloc[0]
            raise DataError(
                f"feature column {name!r} is treated as numeric but holds text (e.g. {example!r}); "
                f"set features.types: {{{name}: categorical}}"
            )
    return types


def _numeric_like(series: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(series):
        return True
    return bool(pd.to_numeric(series.dropna(), errors="coerce").notna().all())


def build_transformer(types: dict[str, str], features: FeaturesSection):
    """An unfitted ColumnTransformer for columns of the given treatments."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import (
        FunctionTransformer, KBinsDiscretizer, MinMaxScaler, OneHotEncoder, OrdinalEncoder, RobustScaler, StandardScaler,
    )

    num, cat = features.numeric, features.categorical
    scalers = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}
    numeric_steps = [
        ("to_numbers", FunctionTransformer(as_numbers, feature_names_out="one-to-one")),
        ("impute", SimpleImputer(strategy=num.impute, add_indicator=num.add_missing_indicator)),
    ]
    if num.scale != "none":
        numeric_steps.append(("scale", scalers[num.scale]()))
    if cat.encode == "onehot":
        encoder = OneHotEncoder(
            handle_unknown="infrequent_if_exist", max_categories=cat.max_categories, min_frequency=cat.min_frequency, sparse_output=False
        )
    else:
        # Unseen categories become -1, a value no training category has.
        encoder = OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=-1, max_categories=cat.max_categories, min_frequency=cat.min_frequency
        )
    categorical_steps = [
        ("to_text", FunctionTransformer(as_categories, feature_names_out="one-to-one")),
        ("impute", SimpleImputer(strategy=cat.impute, fill_value="missing")),
        ("encode", encoder),
    ]
    parts = []
    numeric = [c for c, t in types.items() if t == "numeric"]
    categorical = [c for c, t in types.items() if t == "categorical"]
    if numeric:
        parts.append(("numeric", Pipeline(numeric_steps), numeric))
    if categorical:
        parts.append(("categorical", Pipeline(categorical_steps), categorical))
    for name, kind in types.items():
        if kind == "bucketize":
            binning = Pipeline([
                ("to_numbers", FunctionTransformer(as_numbers, feature_names_out="one-to-one")),
                ("impute", SimpleImputer(strategy="median")),
                ("bin", KBinsDiscretizer(n_bins=features.bucketize[name], strategy="quantile", encode="onehot-dense", random_state=0)),
            ])
            parts.append((f"bucketize_{name}", binning, [name]))
    return ColumnTransformer(parts, remainder="drop").set_output(transform="pandas")


def engineer(train: pd.DataFrame, validation: pd.DataFrame, features: FeaturesSection) -> FeaturesResult:
    """Fits the transformer on `train` only and transforms both splits.

    Args:
        train: the training split (feature columns + `__label__`).
        validation: the validation split, same columns (may be empty).
        features: the `features` section.

    Returns:
        A FeaturesResult with the fitted transformer and both transformed frames.

    Raises:
        ConfigError: a configured column is unknown or conflicting.
        DataError: `__label__` or a feature column is missing, or a column is all-null in train.
    """
    for name, frame in (("train", train), ("validation", validation)):
        if LABEL not in frame.columns:
            raise DataError(f"{name}: no {LABEL!r} column; pass split_data's {name} output")
    unknown = [c for c in features.exclude if c not in train.columns or c == LABEL]
    if unknown:
        raise ConfigError(f"features.exclude: {unknown} are not feature columns of train; columns are: "
                          f"{', '.join(map(str, input_frame(train).columns[:30]))}")
    # Excluded columns (sensitive attributes) stay in the splits for the fairness
    # assessment; the transformer never sees them, so the served model cannot ask for them.
    raw_train = input_frame(train).drop(columns=features.exclude)
    if raw_train.shape[1] == 0:
        raise DataError(f"train: there are no feature columns besides {LABEL!r}; check data.drop_columns")
    if len(raw_train) == 0:
        raise DataError("train: the training split has no rows; check split sizes and the clean quarantine")
    missing = [c for c in raw_train.columns if c not in validation.columns]
    if missing:
        raise DataError(f"validation: lacks feature columns {missing[:10]} that train has; pass outputs of one split_data run")
    empty = [c for c in raw_train.columns if raw_train[c].isna().all()]
    if empty:
        raise DataError(
            f"train: feature column(s) {empty[:10]} are entirely null in the training split; "
            "add them to data.drop_columns"
        )
    types = column_types(raw_train, features)
    transformer = build_transformer(types, features)
    train_features = transformer.fit_transform(raw_train)
    validation_features = transform(transformer, input_frame(validation)[list(raw_train.columns)])
    names = [str(c) for c in transformer.get_feature_names_out()]
    return FeaturesResult(
        transformer=transformer,
        train_features=_with_label(train_features, train),
        validation_features=_with_label(validation_features, validation),
        input_columns={c: str(t) for c, t in raw_train.dtypes.items()},
        column_types=types,
        feature_names=names,
    )


def transform(transformer, frame: pd.DataFrame) -> pd.DataFrame:
    """Applies a fitted transformer; an empty frame gives an empty result with the feature columns."""
    if frame.empty:
        return pd.DataFrame({name: pd.Series(dtype="float64") for name in transformer.get_feature_names_out()})
    return transformer.transform(frame)


def _with_label(features: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    out = features.reset_index(drop=True)
    out.columns = [str(c) for c in out.columns]
    out[LABEL] = split[LABEL].to_numpy()
    return out


def save_transformer(transformer, path: str) -> str:
    """Writes the transformer with joblib, atomically (no partial file on failure).

    Returns:
        The written file's content hash, `sha256:<hex>`.
    """
    import hashlib
    import io

    import joblib

    from keel.components._common import storage

    buffer = io.BytesIO()
    joblib.dump(transformer, buffer)
    data = buffer.getvalue()
    storage.write_bytes(path, data)
    return "sha256:" + hashlib.sha256(data).hexdigest()
