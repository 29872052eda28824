"""Ground truth for logged predictions: checked, stored once per content, joined by request id or entity key."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from keel.components._common.errors import DataError
from keel.components.monitor import batches, labels
from testkit.monitor import answered, call, v1

T0 = dt.datetime(2026, 7, 1, 10, tzinfo=dt.timezone.utc)


@pytest.fixture
def store(tmp_path):
    batches.write_rows(str(tmp_path), 1, [call(f"id-{i}", v1((1000 * (i + 1), 36, "RENT")), answered("low"), when=T0)
                                          for i in range(3)])
    return str(tmp_path)


def test_a_label_table_without_its_key_or_label_column_is_refused_by_name():
    frame = pd.DataFrame({"request": ["id-0"], "label": ["high"]})
    with pytest.raises(DataError, match=r"^labels.csv: has no column 'event_id' \(--key\); its columns are request, label$"):
        labels.normalize(frame, "labels.csv")
    with pytest.raises(DataError, match=r"has no column 'outcome' \(--label\)"):
        labels.normalize(frame, "labels.csv", key="request", label="outcome")


def test_an_empty_key_or_label_names_its_row():
    frame = pd.DataFrame({"event_id": ["id-0", "id-1", None], "label": ["high", "low", "low"]})
    with pytest.raises(DataError, match=r"^labels.csv: row 4: empty 'event_id' or 'label'"):  # the CSV's line
        labels.normalize(frame, "labels.csv")


def test_labels_are_stored_once_per_content_and_unknown_ids_are_counted(store):
    frame = labels.normalize(pd.DataFrame({"event_id": ["id-0", "id-2", "id-9"], "label": ["high", "low", "high"]}), "t")
    first = labels.load(store, "loans", frame)
    assert (first.rows, first.matched, first.unknown, first.new) == (3, 2, ["id-9"], True)
    again = labels.load(store, "loans", frame)
    assert again.uri == first.uri and not again.new
    assert len(labels.stored_labels(store, "loans")) == 3  # id-9 is kept: its call may still be in a batch


def test_a_later_load_of_the_same_key_wins_and_labels_join_by_id_row_or_entity(store):
    early = dt.datetime(2026, 7, 2, tzinfo=dt.timezone.utc)
    labels.load(store, "loans", labels.normalize(pd.DataFrame({"event_id": ["id-0", "id-1"], "label": ["high", "high"],
                                                               "row": [0, 0]}), "t"), now=early)
    labels.load(store, "loans", labels.normalize(pd.DataFrame({"event_id": ["id-1"], "label": ["low"]}), "t"),
                now=early + dt.timedelta(days=1))
    labels.load(store, "loans", labels.normalize(pd.DataFrame({"loan_amount": [3000], "outcome": ["high"]}), "t",
                                                 key="loan_amount", label="outcome"), now=early)
    stored = labels.stored_labels(store, "loans")
    # The window reads numbers as floats: the entity key 3000 still matches 3000.0.
    window = pd.DataFrame({"event_id": ["id-0", "id-1", "id-1", "id-2"], "row": [0, 0, 1, 0],
                           "loan_amount": [1000.0, 2000.0, 2500.0, 3000.0]})
    assert [None if pd.isna(v) else v for v in labels.attach(window, stored)] == ["high", "low", None, "high"]


def test_a_postgres_label_source_needs_its_query():
    with pytest.raises(DataError, match="a Postgres label source needs --query"):
        labels.read_table("postgresql://keel@localhost/keel")
    with pytest.raises(DataError, match="--query: applies to a postgresql:// label source only"):
        labels.read_table("labels.csv", "SELECT 1")
