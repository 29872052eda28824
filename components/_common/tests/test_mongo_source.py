"""read_collection against a real MongoDB-wire server (SecantusDB), with small collections inserted here."""

import datetime as dt
import json
import uuid

import pyarrow as pa
import pytest
from bson import Decimal128, ObjectId

from keel.components._common.errors import ConfigError, DataError, StorageError
from keel.components._common.mongo_source import PASSWORD_ENV, read_collection, redact_uri
from testkit.processes import free_port
from testkit.mongo import AUTH_PASSWORD, AUTH_USER

UTC = dt.timezone.utc


@pytest.fixture
def mongo(mongo_server):
    """(URI naming a fresh database, that database as a pymongo Database)."""
    import pymongo

    name = f"keel_{uuid.uuid4().hex[:10]}"
    client = pymongo.MongoClient(mongo_server.uri)
    yield mongo_server.uri_for(name), client[name]
    client.drop_database(name)
    client.close()


def test_nested_documents_become_dotted_columns_in_first_seen_order(mongo):
    uri, db = mongo
    db.people.insert_many([
        {"_id": 1, "name": "ada", "address": {"city": "Oslo", "geo": {"lat": 59.9, "lon": 10.7}}},
        {"_id": 2, "name": "bob", "address": {"city": "Bergen"}, "age": 41, "empty": {}},
        {"_id": 3, "address": {"geo": {"lat": 1.5}}},
    ])
    table = read_collection(uri, "people", batch_size=2)
    assert table.column_names == ["_id", "name", "address.city", "address.geo.lat", "address.geo.lon", "age"]
    assert table.to_pydict() == {
        "_id": [1, 2, 3],
        "name": ["ada", "bob", None],  # missing -> null
        "address.city": ["Oslo", "Bergen", None],
        "address.geo.lat": [59.9, None, 1.5],
        "address.geo.lon": [10.7, None, None],
        "age": [None, 41, None],
    }
    assert table.schema.field("age").type == pa.int64()


def test_arrays_become_sorted_json_text_with_bson_values_made_json_safe(mongo):
    uri, db = mongo
    oid = ObjectId()
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    db.c.insert_many([
        {"_id": 1, "tags": ["b", "a"], "items": [{"z": 1, "a": oid, "at": when, "price": Decimal128("1.10")}]},
        {"_id": 2, "tags": []},
    ])
    table = read_collection(uri, "c", projection={"_id": 0})
    assert table.schema.field("tags").type == pa.string()
    assert table.column("tags").to_pylist() == ['["b", "a"]', "[]"]  # order kept: arrays are sequences
    item = table.column("items").to_pylist()[0]
    assert item == '[{"a": "%s", "at": "2024-05-01T12:30:00+00:00", "price": "1.10", "z": 1}]' % oid
    assert json.loads(item)[0]["price"] == "1.10"


def test_objectid_datetime_and_decimal128_mapping(mongo):
    uri, db = mongo
    oid = ObjectId()
    db.c.insert_one({"_id": oid, "at": dt.datetime(2024, 1, 2, 3, 4, 5, 678000), "amount": Decimal128("12.345")})
    table = read_collection(uri, "c")
    assert table.schema.field("_id").type == pa.string()
    assert table.column("_id").to_pylist() == [str(oid)] and len(str(oid)) == 24
    assert table.schema.field("at").type == pa.timestamp("ms", tz="UTC")
    assert table.column("at").to_pylist() == [dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)]
    assert table.schema.field("amount").type == pa.float64()
    assert table.column("amount").to_pylist() == [12.345]


def test_mixed_int_float_is_float64_and_mixed_str_int_is_str(mongo):
    uri, db = mongo
    db.c.insert_many([{"_id": i, "n": [1, 2.5, None][i], "s": ["x", 7, True][i]} for i in range(3)])
    table = read_collection(uri, "c")
    assert table.schema.field("n").type == pa.float64()
    assert table.column("n").to_pylist() == [1.0, 2.5, None]
    assert table.schema.field("s").type == pa.string()
    assert table.column("s").to_pylist() == ["x", "7", "True"]  # each value str()-ed


def test_schema_differing_between_batches_is_unified(mongo):
    uri, db = mongo
    docs = []
    for i in range(60):
        doc = {"_id": i, "x": i}
        if i >= 25:  # batch_size 10: first appears in batch 3
            doc["late"] = f"v{i}"
        doc["num"] = i if i < 30 else i + 0.5  # int in batches 1-3, float from batch 4
        doc["code"] = i if i < 50 else f"c{i}"  # int, then str in batch 6
        docs.append(doc)
    db.c.insert_many(docs)
    table = read_collection(uri, "c", batch_size=10)
    assert table.num_rows == 60
    assert table.column_names == ["_id", "x", "num", "code", "late"]
    assert table.column("late").to_pylist() == [None] * 25 + [f"v{i}" for i in range(25, 60)]
    assert table.schema.field("num").type == pa.float64()
    assert table.column("num").to_pylist()[28:32] == [28.0, 29.0, 30.5, 31.5]
    assert table.schema.field("code").type == pa.string()
    assert table.column("code").to_pylist()[48:52] == ["48", "49", "c50", "c51"]


def test_filter_and_projection_are_honoured(mongo):
    uri, db = mongo
    db.c.insert_many([{"_id": i, "age": i, "name": f"n{i}", "secret": "s"} for i in range(100)])
    table = read_collection(uri, "c", filter={"age": {"$gte": 90}}, projection={"name": 1, "_id": 0}, batch_size=3)
    assert table.column_names == ["name"]
    assert sorted(table.column("name").to_pylist()) == [f"n{i}" for i in range(90, 100)]
    listed = read_collection(uri, "c", filter={"age": 5}, projection=["age"])
    assert listed.to_pydict() == {"_id": [5], "age": [5]}


def test_dotted_field_name_colliding_with_nested_field_names_both(mongo):
    uri, db = mongo
    db.one.insert_one({"_id": 1, "a.b": 1, "a": {"b": 2}})
    with pytest.raises(DataError) as err:
        read_collection(uri, "one")
    assert "field 'a.b' and nested field 'a' -> 'b' both flatten to column 'a.b'" in str(err.value)
    db.two.insert_many([{"_id": 1, "a": {"b": 2}}, {"_id": 2, "a.b": 1}])  # across documents too
    with pytest.raises(DataError, match=r"nested field 'a' -> 'b' and field 'a.b' both flatten to column 'a.b' \(document _id 2\)"):
        read_collection(uri, "two")
    db.three.insert_many([{"_id": 1, "a.b": 1}, {"_id": 2, "a": {"b": 2}}])
    with pytest.raises(DataError, match="field 'a.b' and nested field 'a' -> 'b'"):
        read_collection(uri, "three")
    db.fine.insert_one({"_id": 1, "a.b": 1, "c": {"d": 2}})  # a dotted name alone is no collision
    assert read_collection(uri, "fine").column_names == ["_id", "a.b", "c.d"]


def test_unreachable_host_fails_within_the_timeout_naming_host_and_port():
    import time

    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(StorageError, match=rf"cannot reach a MongoDB server at 127\.0\.0\.1:{port} within 0\.5 s"):
        read_collection(f"mongodb://127.0.0.1:{port}/db?directConnection=true", "c", timeout_s=0.5)
    # Not a speed check: pymongo's own default would wait 30 s, so this shows timeout_s is what bounds it.
    assert time.monotonic() - started < 15


def test_missing_collection_lists_the_collections(mongo):
    uri, db = mongo
    db.alpha.insert_one({"x": 1})
    db.beta.insert_one({"x": 1})
    with pytest.raises(DataError, match="collection 'gamma' not found in database 'keel_.*'; it has: alpha, beta$"):
        read_collection(uri, "gamma")
    with pytest.raises(DataError, match="has no collections"):
        read_collection(uri.replace(db.name, db.name + "_none"), "gamma")


def test_empty_result_names_the_filter(mongo):
    uri, db = mongo
    db.c.insert_many([{"age": 1}, {"age": 2}])
    with pytest.raises(DataError, match=r"no documents match data.filter \{'age': \{'\$gt': 5\}\} in collection keel_\w+\.c"):
        read_collection(uri, "c", filter={"age": {"$gt": 5}})
    db.empty.insert_one({"x": 1})
    db.empty.delete_many({})
    with pytest.raises(DataError, match="no documents in collection"):
        read_collection(uri, "empty")


def test_filter_and_projection_types_and_server_rejections(mongo):
    uri, db = mongo
    db.c.insert_one({"a": 1, "b": 2})
    with pytest.raises(DataError, match="data.filter: must be a mapping .* got list"):
        read_collection(uri, "c", filter=[{"a": 1}])
    with pytest.raises(DataError, match="data.projection: must be a mapping .* got str"):
        read_collection(uri, "c", projection="a")
    with pytest.raises(DataError, match=r"^data.filter: the server rejected \{'a': \{'\$bogus': 1\}\}: unknown operator: \$bogus"):
        read_collection(uri, "c", filter={"a": {"$bogus": 1}}, projection={"a": 1})
    with pytest.raises(DataError, match=r"^data.projection: the server rejected"):
        read_collection(uri, "c", projection={"a": 1, "b": 0})


@pytest.mark.parametrize("bad, why", [
    ("http://127.0.0.1/db", "is not a MongoDB URI"),
    ("mongodb://127.0.0.1:1/", "names no database"),
    ("mongodb://127.0.0.1:port/db", "is not a valid MongoDB URI .*Port"),
    ("mongodb://127.0.0.1/db?noSuchOption=1", "is not a valid MongoDB URI"),
])
def test_invalid_uris_are_config_errors(bad, why):
    with pytest.raises(ConfigError, match=why):
        read_collection(bad, "c")


def test_password_in_the_uri_is_refused_and_redacted():
    uri = "mongodb://alice:hunter2-secret@127.0.0.1:1/db?directConnection=true"
    with pytest.raises(ConfigError) as err:
        read_collection(uri, "c")
    assert "hunter2" not in str(err.value)
    assert "mongodb://alice:***@127.0.0.1:1/db" in str(err.value) and PASSWORD_ENV in str(err.value)
    # An unescaped "@" or "/" in a password must not leak either, even when the URI does not parse.
    for raw in ["mongodb://bob:xyzzy/qq42@127.0.0.1:1/db", "mongodb://bob:xyzzy@qq42@h:x/db?a=b"]:
        with pytest.raises(ConfigError) as err:
            read_collection(raw, "c")
        assert "xyzzy" not in str(err.value) and "qq42" not in str(err.value)
    assert redact_uri("mongodb://u:p@h:1/d?x=1") == "mongodb://u:***@h:1/d?x=1"
    assert redact_uri("mongodb://u@h:1/d") == "mongodb://u@h:1/d"


def test_user_without_mongodb_password_is_a_config_error(monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"names user 'alice'; set {PASSWORD_ENV}"):
        read_collection("mongodb://alice@127.0.0.1:1/db", "c")


def test_password_comes_from_the_environment_and_never_shows(mongo_auth_server, monkeypatch):
    import pymongo

    admin = pymongo.MongoClient(mongo_auth_server.uri, username=AUTH_USER, password=AUTH_PASSWORD)
    admin.shop.orders.insert_many([{"_id": i, "total": i * 1.5} for i in range(5)])
    admin.close()
    uri = mongo_auth_server.uri_for("shop", user=AUTH_USER, options="authSource=admin")

    monkeypatch.setenv(PASSWORD_ENV, AUTH_PASSWORD)
    table = read_collection(uri, "orders", batch_size=2)
    assert table.column("total").to_pylist() == [0.0, 1.5, 3.0, 4.5, 6.0]

    monkeypatch.setenv(PASSWORD_ENV, "wrong-" + AUTH_PASSWORD)
    with pytest.raises(StorageError) as err:
        read_collection(uri, "orders")
    assert f"authentication failed for user '{AUTH_USER}' (authSource 'admin')" in str(err.value)
    assert AUTH_PASSWORD not in str(err.value)

    with pytest.raises(StorageError, match="the URI names no user.* not allowed to read database 'shop'"):
        read_collection(mongo_auth_server.uri_for("shop"), "orders")
