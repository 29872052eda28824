"""Tests of the features stage: fitted on train only, robust to what serving will send."""

import numpy as np
import pandas as pd
import pytest

from keel.components._common.config import FeaturesSection, SplitSection, TargetSection
from keel.components._common.errors import ConfigError, DataError
from keel.components._common.lineage import file_sha256
from keel.components._common.target import LABEL
from keel.components.features.features import engineer, input_frame, load_transformer, save_transformer, transform
from keel.components.split.split import split_frame

LOANS_TARGET = TargetSection(column="grade", positive_values=["D", "E", "F", "G"])
LEAKY = ["sub_grade", "interest_rate", "rownames"]


def cfg(**values) -> FeaturesSection:
    return FeaturesSection.parse(values, "features")


@pytest.fixture
def loans_splits(loans_sample):
    result = split_frame(loans_sample.drop(columns=LEAKY), LOANS_TARGET, SplitSection())
    return result.frames["train"], result.frames["validation"]


def frame_with_label(**columns) -> pd.DataFrame:
    frame = pd.DataFrame(columns)
    frame[LABEL] = np.arange(len(frame)) % 2
    return frame


# --- the real data ---------------------------------------------------------------------------

def test_loans_fit_on_train_only(loans_splits):
    train, validation = loans_splits
    result = engineer(train, validation, cfg())
    numeric = result.transformer.named_transformers_["numeric"]
    columns = list(numeric.feature_names_in_)
    raw_train = train[columns].astype(float)
    both = pd.concat([train, validation])[columns].astype(float)
    # Imputer medians and scaler means are the training split's, not train+validation's.
    np.testing.assert_allclose(numeric.named_steps["impute"].statistics_, raw_train.median())
    assert not np.allclose(numeric.named_steps["impute"].statistics_, both.median())
    imputed = raw_train.fillna(raw_train.median())
    np.testing.assert_allclose(numeric.named_steps["scale"].mean_[: len(columns)], imputed.mean())
    # The standardized training features have mean 0; the validation ones do not have to.
    assert result.train_features["numeric__loan_amount"].mean() == pytest.approx(0, abs=1e-9)
    # Categories are learned from train only.
    encoder = result.transformer.named_transformers_["categorical"].named_steps["encode"]
    states = list(result.transformer.named_transformers_["categorical"].feature_names_in_).index("state")
    learned = set(encoder.categories_[states])
    assert learned == set(train["state"].dropna())


def test_loans_outputs_are_named_complete_and_labelled(loans_splits):
    train, validation = loans_splits
    result = engineer(train, validation, cfg(bucketize={"annual_income": 4}))
    assert list(result.train_features.columns) == result.feature_names + [LABEL]
    assert list(result.validation_features.columns) == result.feature_names + [LABEL]
    assert len(result.train_features) == len(train) and len(result.validation_features) == len(validation)
    assert np.array_equal(result.train_features[LABEL], train[LABEL])
    assert np.array_equal(result.validation_features[LABEL], validation[LABEL])
    assert not result.train_features.isna().any().any()
    assert not result.validation_features.isna().any().any()
    assert result.input_columns == {c: str(t) for c, t in input_frame(train).dtypes.items()}
    assert result.column_types["annual_income"] == "bucketize" and result.column_types["state"] == "categorical"
    bins = [n for n in result.feature_names if n.startswith("bucketize_annual_income__")]
    assert len(bins) == 4
    assert (result.train_features[bins].sum(axis=1) == 1).all()
    assert "numeric__missingindicator_emp_length" in result.feature_names
    # max_categories caps the one-hot width of a high-cardinality column (emp_title).
    assert sum(n.startswith("categorical__emp_title_") for n in result.feature_names) <= 20


def test_saved_transformer_reloads_and_transforms_raw_rows(loans_splits, tmp_path):
    train, validation = loans_splits
    result = engineer(train, validation, cfg())
    path = tmp_path / "transformer.joblib"
    digest = save_transformer(result.transformer, str(path))
    assert digest == file_sha256(path)
    loaded = load_transformer(path)
    again = loaded.transform(input_frame(validation))
    pd.testing.assert_frame_equal(again.reset_index(drop=True), result.validation_features.drop(columns=[LABEL]))


# --- unseen and odd values at transform time -------------------------------------------------

def test_unseen_categories_do_not_crash_onehot_or_ordinal():
    train = frame_with_label(c=["a"] * 6 + ["b"] * 6 + ["rare"], x=np.arange(13.0))
    validation = frame_with_label(c=["a", "never-seen", None], x=[1.0, 2.0, None])
    onehot = engineer(train, validation, cfg(categorical={"min_frequency": 2}))
    row = onehot.validation_features.iloc[1]
    # The unseen value goes to the infrequent bucket that "rare" formed in training.
    assert row["categorical__c_infrequent_sklearn"] == 1.0
    assert row[["categorical__c_a", "categorical__c_b"]].sum() == 0
    ordinal = engineer(train, validation, cfg(categorical={"encode": "ordinal", "min_frequency": 1}))
    assert ordinal.validation_features.loc[1, "categorical__c"] == -1


def test_unseen_category_without_infrequent_bucket_is_all_zeros():
    train = frame_with_label(c=["a", "b"] * 6)
    validation = frame_with_label(c=["z"])
    result = engineer(train, validation, cfg(categorical={"min_frequency": 1}))
    assert result.validation_features.drop(columns=[LABEL]).to_numpy().sum() == 0


def test_bool_none_and_mixed_categoricals_are_encoded():
    train = frame_with_label(
        flag=[True, False] * 6,
        maybe=pd.Series([True, None, False] * 4, dtype=object),
        code=[1.0, 2.0, None] * 4,
    )
    result = engineer(train, train, cfg(types={"code": "categorical"}, categorical={"min_frequency": 1}))
    names = result.feature_names
    assert {"categorical__flag_True", "categorical__flag_False"} <= set(names)
    assert "categorical__maybe_missing" in names  # None is imputed, not a category "None"
    assert {"categorical__code_1", "categorical__code_2", "categorical__code_missing"} <= set(names)
    # Serving may send 2 where training saw 2.0: the same category.
    served = result.transformer.transform(pd.DataFrame({"flag": [True], "maybe": [False], "code": [2]}))
    assert served.loc[0, "categorical__code_2"] == 1.0


def test_numeric_override_reads_numeric_text():
    train = frame_with_label(n=["1", "2", "3", None, "5", "6"])
    result = engineer(train, train, cfg(types={"n": "numeric"}, numeric={"scale": "none", "add_missing_indicator": False}))
    assert result.train_features["numeric__n"].tolist() == [1.0, 2.0, 3.0, 3.0, 5.0, 6.0]


def test_empty_validation_gives_empty_features_with_the_same_columns():
    train = frame_with_label(x=np.arange(10.0), c=list("ababababab"))
    result = engineer(train, train.iloc[0:0], cfg())
    assert result.validation_features.empty
    assert list(result.validation_features.columns) == list(result.train_features.columns)
    assert transform(result.transformer, input_frame(train.iloc[0:0])).shape == (0, len(result.feature_names))


@pytest.mark.parametrize("scale", ["standard", "minmax", "robust", "none"])
def test_every_scaler_and_imputer_option_builds(scale):
    train = frame_with_label(x=[1.0, 2.0, None, 4.0, 100.0, 6.0])
    for impute in ("median", "mean", "constant"):
        result = engineer(train, train, cfg(numeric={"scale": scale, "impute": impute}))
        assert result.train_features.shape == (6, 3)  # x, its missing indicator, the label
        if scale == "none":
            expected = {"median": 4.0, "mean": 22.6, "constant": 0.0}[impute]
            assert result.train_features.loc[2, "numeric__x"] == pytest.approx(expected)


def test_input_frame_drops_only_the_label():
    frame = frame_with_label(a=[1, 2], b=["x", "y"])
    assert list(input_frame(frame).columns) == ["a", "b"]
    assert list(input_frame(frame.drop(columns=[LABEL])).columns) == ["a", "b"]


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "values, error, message",
    [
        ({"bucketize": {"nope": 3}}, ConfigError, "features.bucketize: 'nope' is not a feature column"),
        ({"types": {"nope": "numeric"}}, ConfigError, "features.types: 'nope' is not a feature column"),
        ({"types": {LABEL: "numeric"}}, ConfigError, "'__label__' is not a feature column"),
        ({"bucketize": {"x": 1}}, ConfigError, "features.bucketize: 'x' asks for 1 bins"),
        ({"bucketize": {"x": 3}, "types": {"x": "categorical"}}, ConfigError, "'x' is also listed as categorical"),
        ({"bucketize": {"c": 3}}, DataError, "'c' is treated as numeric but holds text"),
        ({"types": {"c": "numeric"}}, DataError, "'c' is treated as numeric but holds text"),
    ],
)
def test_bad_column_config_names_the_column(values, error, message):
    train = frame_with_label(x=np.arange(8.0), c=list("abababab"))
    with pytest.raises(error, match=message):
        engineer(train, train, cfg(**values))


def test_all_null_train_column_is_a_data_error_naming_it():
    train = frame_with_label(x=np.arange(4.0), empty=[None] * 4)
    with pytest.raises(DataError, match=r"\['empty'\] are entirely null in the training split"):
        engineer(train, train, cfg())


def test_missing_label_or_columns_are_data_errors():
    train = frame_with_label(x=np.arange(4.0), c=list("abab"))
    with pytest.raises(DataError, match="validation: no '__label__' column"):
        engineer(train, train.drop(columns=[LABEL]), cfg())
    with pytest.raises(DataError, match=r"validation: lacks feature columns \['c'\]"):
        engineer(train, train.drop(columns=["c"]), cfg())
    with pytest.raises(DataError, match="no feature columns"):
        engineer(train[[LABEL]], train[[LABEL]], cfg())
    with pytest.raises(DataError, match="the training split has no rows"):
        engineer(train.iloc[0:0], train, cfg())


def test_datetime_feature_is_refused_by_name():
    train = frame_with_label(t=pd.date_range("2020-01-01", periods=4))
    with pytest.raises(DataError, match="feature column 't' is a datetime64"):
        engineer(train, train, cfg())


def test_load_transformer_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(DataError, match="transformer file not found"):
        load_transformer(tmp_path / "absent")
    (tmp_path / "junk").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a readable joblib transformer"):
        load_transformer(tmp_path / "junk")
    import joblib

    joblib.dump({"a": 1}, tmp_path / "dict")
    with pytest.raises(DataError, match="holds a dict, not a fitted transformer"):
        load_transformer(tmp_path / "dict")


def test_transformers_pickled_before_the_coercions_moved_still_load_and_compile():
    """A transformer fitted before the coercions moved to _common names them by their old module path."""
    import pickle

    from sklearn.preprocessing import FunctionTransformer

    from keel.components._common import encoding
    from keel.components._common.compiled_features import _compile_function

    for name in ("as_numbers", "as_categories"):
        # protocol 0's GLOBAL opcode: exactly the (module, name) lookup an older pickle's transformer step does
        old = pickle.loads(f"ckeel.components.features.features\n{name}\n.".encode())
        assert old is getattr(encoding, name)

        step = FunctionTransformer(old)  # the step as unpickled: the compiled serving transform recognises it
        compiled, _ = _compile_function(step, [0])
        assert compiled.__name__ == {"as_numbers": "_numbers", "as_categories": "_texts"}[name]


def test_bad_features_section_is_a_config_error():
    with pytest.raises(ConfigError, match="features.numeric.scale"):
        FeaturesSection.parse({"numeric": {"scale": "zscore"}}, "features")


# --- the component ---------------------------------------------------------------------------

def test_component_compiles_with_its_inputs_and_outputs(tmp_path):
    import yaml
    from kfp import compiler

    from keel.components.features import engineer_features

    path = tmp_path / "c.yaml"
    compiler.Compiler().compile(engineer_features, str(path))
    component = yaml.safe_load(path.read_text())["components"]["comp-engineer-features"]
    assert set(component["inputDefinitions"]["artifacts"]) == {"train", "validation"}
    assert set(component["inputDefinitions"]["parameters"]) == {"features"}
    outputs = component["outputDefinitions"]["artifacts"]
    assert set(outputs) == {"transformer", "train_features", "validation_features"}
    assert outputs["transformer"]["artifactType"]["schemaTitle"] == "system.Model"
