"""The content hash of a table depends on its data only: not on batching, origin or what null slots hold."""

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.components._common import tables


def _table(n=300):
    rng = np.random.default_rng(0)
    values = rng.normal(size=n)
    return pd.DataFrame({
        "x": np.where(rng.random(n) < 0.2, np.nan, values),          # pandas puts NaN in null slots
        "n": pd.array(np.where(rng.random(n) < 0.2, None, np.arange(n)), dtype="Int64"),
        "s": np.where(rng.random(n) < 0.2, None, [f"v{i % 7}" for i in range(n)]),
        "t": pd.to_datetime(np.where(rng.random(n) < 0.2, None, [dt.datetime(2013, 1, 1) + dt.timedelta(hours=i) for i in range(n)]),
                            utc=True),
        "b": pd.array(np.where(rng.random(n) < 0.2, None, rng.random(n) < 0.5), dtype="boolean"),
    })


def test_the_same_rows_hash_alike_from_pandas_from_parquet_and_in_batches(tmp_path):
    frame = _table()
    from_pandas = tables.content_hash(frame)
    tables.write_parquet(frame, str(tmp_path / "t.parquet"))
    read_back = pq.read_table(tmp_path / "t.parquet")
    assert tables.arrow_hash(read_back) == from_pandas
    streamed = tables.write_batches(read_back.to_batches(max_chunksize=7), str(tmp_path / "s.parquet"))
    assert streamed["content_hash"] == from_pandas and streamed["rows"] == len(frame)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=299), max_size=12))
def test_any_batching_gives_the_same_hash(cuts):
    table = tables.to_arrow(_table())
    bounds = [0, *sorted(set(cuts)), table.num_rows]
    batches = [table.slice(a, b - a).combine_chunks().to_batches()[0] for a, b in zip(bounds, bounds[1:]) if b > a]
    hasher = tables.ArrowHasher(table.schema)
    for batch in batches:
        hasher.update(batch)
    assert hasher.hexdigest() == tables.arrow_hash(table)


@pytest.mark.parametrize("change", ["value", "null", "column", "type"])
def test_any_change_to_the_data_changes_the_hash(change):
    frame = _table()
    before = tables.content_hash(frame)
    if change == "value":
        frame.loc[5, "s"] = "changed"
    elif change == "null":
        frame.loc[6, "x"] = np.nan if not np.isnan(frame.loc[6, "x"]) else 1.0
    elif change == "column":
        frame = frame.rename(columns={"x": "y"})
    else:
        frame["x"] = frame["x"].astype("float32")
    assert tables.content_hash(frame) != before


def test_null_slot_contents_do_not_matter():
    valid = pa.py_buffer(bytes([0b101]))
    a = pa.Array.from_buffers(pa.float64(), 3, [valid, pa.py_buffer(np.array([1.0, np.nan, 3.0]).tobytes())], null_count=1)
    b = pa.Array.from_buffers(pa.float64(), 3, [valid, pa.py_buffer(np.array([1.0, 42.0, 3.0]).tobytes())], null_count=1)
    assert tables.arrow_hash(pa.table({"x": a})) == tables.arrow_hash(pa.table({"x": b}))
