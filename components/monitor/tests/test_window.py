"""A window of logged calls as rows: V1 and V2 bodies, refusals, the vectorized reader against the per-call one."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pyarrow as pa
import pytest

from keel.components._common.errors import DataError
from keel.components.monitor import batches, vectorized, window
from keel.components.monitor.checks import _typed
from testkit.monitor import COLUMNS, answered, call, v1

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
TYPES = {"loan_amount": "integer", "term": "integer", "homeownership": "string"}
KINDS = {"loan_amount": "num", "term": "num", "homeownership": "cat"}
CLASSES = ["low", "high"]
NAMES = [*window.META, *COLUMNS, window.PREDICTION, "score_low", "score_high"]


V2_REQUEST = {"inputs": [{"name": "loan_amount", "shape": [2, 1], "datatype": "INT64", "data": [[5000], [7000]]},
                         {"name": "term", "shape": [2, 1], "datatype": "INT64", "data": [[36], [60]]},
                         {"name": "homeownership", "shape": [2, 1], "datatype": "BYTES", "data": [["OWN"], ["RENT"]]}]}
V2_RESPONSE = {"id": "v2", "outputs": [{"name": "predictions", "shape": [2], "datatype": "BYTES", "data": ["low", "high"]},
                                       {"name": "probabilities", "shape": [2, 2], "datatype": "FP64",
                                        "data": [0.9, 0.1, 0.4, 0.6]}]}

MIXED = [
    call("a", v1((12000, 36, "RENT")), answered("low")),
    call("b", v1((5000, 60, "OWN"), (30000, 36, None)), answered("high", "low")),  # two instances, one None
    call("c", V2_REQUEST, V2_RESPONSE),
    call("d", v1((1, 36, "RENT")), {"error": "instances[0].loan_amount: 1 is below the minimum 1000"}),
    call("e", v1((9000, 36, "RENT")), None, status="request_only"),
    call("f", v1((9000, 36, "RENT"), (8000, 60, "OWN")), answered("low")),  # fewer predictions than instances
    call("g", '{"instances": [', answered("low")),  # cut off
    call("h", json.dumps(v1((15000, 60, "MORTGAGE")), indent=1), answered("high")),  # a newline inside the body
]


def per_call(records):
    return pd.DataFrame.from_records([r for c in records for r in window.flatten(c, COLUMNS, CLASSES)], columns=NAMES)


def test_flatten_reads_v1_and_v2_and_names_every_refusal():
    rows = per_call(MIXED)
    by_id = {k: g for k, g in rows.groupby("event_id")}
    assert by_id["a"][["loan_amount", "homeownership", "prediction", "score_high"]].values.tolist() == [[12000, "RENT", "low", 0.2]]
    assert by_id["b"]["row"].tolist() == [0, 1] and by_id["b"]["homeownership"].tolist() == ["OWN", None]
    assert by_id["c"][["loan_amount", "homeownership", "prediction", "score_high"]].values.tolist() == [
        [5000, "OWN", "low", 0.1], [7000, "RENT", "high", 0.6]]
    # The predictor's location is dropped, so the same fault on any row counts as one reason.
    assert by_id["d"]["rejected"].tolist() == ["1 is below the minimum 1000"]
    assert by_id["e"]["rejected"].tolist() == ["no response logged"]
    assert by_id["f"]["prediction"].tolist() == ["low"]  # one prediction: one row
    assert by_id["g"]["rejected"].tolist() == ["unreadable payload (not JSON)"]
    assert by_id["h"]["loan_amount"].tolist() == [15000]


def test_the_vectorized_reader_takes_the_plain_v1_calls_and_gives_the_same_rows():
    batch = pa.RecordBatch.from_pylist(MIXED, schema=batches.schema())
    fast, rest = vectorized.flatten(batch, COLUMNS, CLASSES, TYPES, NAMES)
    # Every plain V1 call (the cut-off one is isolated by halving; the indented one still parses as one document)
    assert sorted(fast["event_id"].unique()) == ["a", "b", "h"]
    assert sorted(rest.column("event_id").to_pylist()) == ["c", "d", "e", "f", "g"]
    both = pd.concat([fast, per_call(rest.to_pylist())], ignore_index=True)
    expected = per_call(MIXED)
    order = ["event_id", "row"]
    both, expected = both.sort_values(order).reset_index(drop=True), expected.sort_values(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(_typed(both, KINDS), _typed(expected, KINDS), check_dtype=False)
    for column in ("event_id", "row", "rejected", "prediction", "score_low", "score_high"):
        assert both[column].isna().tolist() == expected[column].isna().tolist(), column
        assert both[column].dropna().tolist() == expected[column].dropna().tolist(), column


def test_a_call_whose_json_does_not_fit_the_schema_is_read_alone_call_by_call():
    odd = [call("x", {"instances": [{"loan_amount": "a lot", "term": 36, "homeownership": "RENT"}]}, answered("low")),
           *MIXED[:2]]
    batch = pa.RecordBatch.from_pylist(odd, schema=batches.schema())
    fast, rest = vectorized.flatten(batch, COLUMNS, CLASSES, TYPES, NAMES)
    assert sorted(fast["event_id"].unique()) == ["a", "b"] and rest.column("event_id").to_pylist() == ["x"]
    rows = pd.concat(window._frames(batch, COLUMNS, CLASSES, TYPES))
    assert len(rows) == 4
    assert rows.loc[rows["event_id"] == "x", "loan_amount"].tolist() == ["a lot"]  # the checks type it, as missing
    assert _typed(rows, KINDS).loc[rows["event_id"] == "x", "loan_amount"].isna().all()


def test_a_column_sent_as_another_type_everywhere_gives_up_on_arrow_after_a_few_parses(monkeypatch):
    everywhere = [call(f"n{i}", {"instances": [{"loan_amount": 1000 + i, "term": 36, "homeownership": i}]},
                       answered("low")) for i in range(64)]  # homeownership sent as a number by every caller
    parses = []
    read = vectorized._read
    monkeypatch.setattr(vectorized, "_read", lambda documents, schema: parses.append(len(documents)) or read(documents, schema))
    fast, rest = vectorized.flatten(pa.RecordBatch.from_pylist(everywhere, schema=batches.schema()),
                                    COLUMNS, CLASSES, TYPES, NAMES)
    assert fast is None and rest.num_rows == 64
    assert sum(parses) == 3 * 64  # the batch, its halves, its quarters: then window.flatten takes it


def test_read_window_takes_the_hours_that_overlap_and_the_calls_inside(tmp_path):
    store = str(tmp_path)
    times = [T0 + dt.timedelta(minutes=50 * i) for i in range(6)]  # 10:00 .. 14:10
    batches.write_rows(store, 1, [call(f"c{i}", v1((1000 * (i + 1), 36, "RENT")), answered("low"), when=t)
                                  for i, t in enumerate(times)])
    start, end = T0 + dt.timedelta(minutes=40), T0 + dt.timedelta(minutes=200)  # 10:40 .. 13:20
    files = window.logged_files(store, "loans", "1", start, end)
    assert [f.split("/")[-2] for f in files] == ["hour=10", "hour=11", "hour=12", "hour=13"]
    rows = pd.concat(window.read_window(store, "loans", "1", start, end, COLUMNS, CLASSES, types=TYPES))
    assert rows["event_id"].tolist() == ["c1", "c2", "c3"]  # 10:50, 11:40, 12:30; 13:20 is the end, not inside
    assert rows["loan_amount"].tolist() == [2000.0, 3000.0, 4000.0]


def test_a_damaged_stored_file_is_an_error_not_a_shorter_window(tmp_path):
    store = str(tmp_path)
    [uri] = batches.write_rows(store, 1, [call("c0", v1((1000, 36, "RENT")), answered("low"))])
    with open(uri, "r+b") as handle:
        handle.seek(0)
        handle.write(b"NOTPARQUET")
    with pytest.raises(DataError, match=f"^{uri}: is not a readable file of logged traffic"):
        list(window.read_window(store, "loans", "1", T0 - dt.timedelta(hours=1), T0 + dt.timedelta(hours=1),
                                COLUMNS, CLASSES, types=TYPES))
