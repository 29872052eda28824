"""PII scrubbing: drop, keyed hashing, the key's sources, and the frame and Arrow paths agreeing."""

import base64
import decimal
import hashlib
import hmac

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keel.components._common import privacy, tables
from keel.components._common.errors import ConfigError, DataError

KEY = b"k" * 32
OTHER = b"o" * 32
PII = {"email": "hash", "ssn": "drop"}


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    """Each test states its key: none leaks in from the shell running the suite."""
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    monkeypatch.delenv(privacy.KEY_FILE_ENV, raising=False)


def _people():
    return pd.DataFrame({
        "id": [1, 2, 3, 4],
        "email": ["ann@example.org", None, "bob@example.org", "ann@example.org"],
        "ssn": ["123-45-6789", "987-65-4321", None, "123-45-6789"],
        "income": [10.5, 20.0, np.nan, 40.0],
    })


def test_drop_removes_the_column_and_hash_keeps_its_place():
    out = privacy.scrub_frame(_people(), PII, "people.csv", KEY)
    assert out.columns.tolist() == ["id", "email", "income"]
    expected = hmac.new(KEY, b"ann@example.org", hashlib.sha256).hexdigest()
    assert out["email"][0] == expected and len(expected) == 64
    pd.testing.assert_series_equal(out["income"], _people()["income"])


def test_hash_is_deterministic_per_key_and_differs_across_keys():
    a = privacy.scrub_frame(_people(), PII, "p", KEY)["email"]
    b = privacy.scrub_frame(_people(), PII, "p", KEY)["email"]
    other = privacy.scrub_frame(_people(), PII, "p", OTHER)["email"]
    assert a.tolist() == b.tolist()
    assert a[0] == a[3] and a[0] != a[2]  # one person, one pseudonym
    assert a[0] != other[0] and a[2] != other[2]


def test_nulls_stay_null_instead_of_becoming_one_person():
    frame = pd.DataFrame({"phone": [None, np.nan, "555-0100", pd.NA], "x": [1, 2, 3, 4]}, dtype=object)
    out = privacy.scrub_frame(frame, {"phone": "hash"}, "p", KEY)
    assert out["phone"].isna().tolist() == [True, True, False, True]
    batch = tables.to_arrow(frame).to_batches()[0]
    assert privacy.scrub_batch(batch, {"phone": "hash"}, "p", KEY).column(0).null_count == 3


def test_no_key_names_the_hashed_column(monkeypatch):
    with pytest.raises(ConfigError, match=r"data\.pii\.email: hash needs KEEL_PII_KEY or KEEL_PII_KEY_FILE"):
        privacy.scrub_frame(_people(), PII, "p")
    # Dropping needs no key.
    assert "ssn" not in privacy.scrub_frame(_people(), {"ssn": "drop"}, "p")


def test_a_missing_column_names_it_and_the_columns():
    with pytest.raises(DataError, match=r"data\.pii: \['e_mail'\] not in people\.csv; columns are: id, email, ssn, income"):
        privacy.scrub_frame(_people(), {"e_mail": "hash"}, "people.csv", KEY)
    with pytest.raises(DataError, match=r"\['e_mail'\] not in the stream"):
        privacy.scrub_batch(tables.to_arrow(_people()).to_batches()[0], {"e_mail": "drop"}, "the stream", KEY)


def test_the_arrow_batch_path_equals_the_frame_path():
    frame = _people()
    via_frame = tables.to_arrow(privacy.scrub_frame(frame, PII, "p", KEY))
    batch = privacy.scrub_batch(tables.to_arrow(frame).to_batches()[0], PII, "p", KEY)
    assert batch.schema.field("email").type == pa.string()
    assert pa.Table.from_batches([batch]).equals(via_frame)
    assert tables.arrow_hash(pa.Table.from_batches([batch])) == tables.arrow_hash(via_frame)


def test_write_batches_scrubs_every_batch_before_the_file_is_written(tmp_path):
    table = tables.to_arrow(pd.concat([_people()] * 3, ignore_index=True))
    batches = table.to_batches(max_chunksize=4)
    assert len(batches) == 3
    out = tmp_path / "data.parquet"
    meta = tables.write_batches(iter(batches), str(out), transform=lambda b: privacy.scrub_batch(b, PII, "t", KEY))
    raw = out.read_bytes()
    assert b"ann@example.org" not in raw and b"123-45-6789" not in raw and b"ssn" not in raw
    stored = pq.read_table(out)
    assert stored.column_names == ["id", "email", "income"] and meta["rows"] == 12
    whole = tables.to_arrow(privacy.scrub_frame(table.to_pandas(), PII, "t", KEY))
    assert meta["content_hash"] == tables.arrow_hash(whole)


def test_numbers_and_their_text_are_one_pseudonym():
    one = {privacy.digest(v, KEY) for v in (123, np.int64(123), 123.0, np.float64(123.0), "123", decimal.Decimal("123.00"))}
    assert len(one) == 1
    assert privacy.digest(12.5, KEY) == privacy.digest(decimal.Decimal("12.50"), KEY) == privacy.digest("12.5", KEY)
    assert privacy.digest("0123", KEY) != privacy.digest(123, KEY)
    assert privacy.digest(float("nan"), KEY) is None and privacy.digest(pd.NaT, KEY) is None
    # An int column with a gap becomes float64 in pandas and stays int64 in Arrow: the same pseudonyms.
    ids = pd.DataFrame({"member": [1001, None, 1002]})
    assert ids["member"].dtype == "float64"
    via_frame = privacy.scrub_frame(ids, {"member": "hash"}, "p", KEY)["member"].tolist()
    batch = pa.RecordBatch.from_pydict({"member": pa.array([1001, None, 1002], pa.int64())})
    assert privacy.scrub_batch(batch, {"member": "hash"}, "p", KEY).column(0).to_pylist() == via_frame


def test_nested_values_cannot_be_hashed():
    batch = pa.RecordBatch.from_pydict({"address": pa.array([{"street": "1 Main St"}]), "x": [1]})
    with pytest.raises(DataError, match=r"data\.pii\.address: holds nested values"):
        privacy.scrub_batch(batch, {"address": "hash"}, "people", KEY)
    with pytest.raises(DataError, match=r"data\.pii\.address: holds nested values"):
        privacy.scrub_frame(batch.to_pandas(), {"address": "hash"}, "people", KEY)
    assert privacy.scrub_batch(batch, {"address": "drop"}, "people", KEY).schema.names == ["x"]


def test_key_from_env_text_base64_or_a_mounted_file(monkeypatch, tmp_path):
    monkeypatch.setenv(privacy.KEY_ENV, "a-text-key-of-enough-bytes\n")
    assert privacy.pii_key() == b"a-text-key-of-enough-bytes"
    raw = bytes(range(32))
    monkeypatch.setenv(privacy.KEY_ENV, "base64:" + base64.b64encode(raw).decode())
    assert privacy.pii_key() == raw
    monkeypatch.delenv(privacy.KEY_ENV)
    (tmp_path / "key").write_bytes(raw + b"\n")
    monkeypatch.setenv(privacy.KEY_FILE_ENV, str(tmp_path / "key"))
    assert privacy.pii_key() == raw
    assert privacy.key_id(raw) == hashlib.sha256(b"keel-pii" + raw).hexdigest()[:12]


@pytest.mark.parametrize("env, message", [
    ({privacy.KEY_ENV: "short"}, r"KEEL_PII_KEY: the key is 5 bytes; use at least 16"),
    ({privacy.KEY_ENV: "base64:not base64!"}, r"not valid base64"),
    ({privacy.KEY_FILE_ENV: "/nonexistent/keel-pii-key"}, r"KEEL_PII_KEY_FILE: cannot read /nonexistent/keel-pii-key"),
    ({privacy.KEY_ENV: "x" * 20, privacy.KEY_FILE_ENV: "/k"}, r"both KEEL_PII_KEY and KEEL_PII_KEY_FILE are set"),
], ids=["short", "bad-base64", "no-file", "both"])
def test_bad_keys_are_refused(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        privacy.pii_key("data.pii.email")


def test_the_policy_records_the_key_id_never_the_key():
    record = privacy.policy(PII, KEY)
    assert record == {"columns": {"email": "hash", "ssn": "drop"}, "algorithm": "hmac-sha256", "key_id": privacy.key_id(KEY)}
    assert KEY.decode() not in str(record)
    assert privacy.policy({"ssn": "drop"}, None) == {"columns": {"ssn": "drop"}}
    assert privacy.policy({}, None) == {}


def test_rescrub_does_only_what_the_stored_version_lacks(monkeypatch):
    monkeypatch.setenv(privacy.KEY_ENV, KEY.decode())
    stored = privacy.scrub_frame(_people(), {"email": "hash"}, "p", KEY)  # stored before ssn was listed
    applied = privacy.policy({"email": "hash"}, KEY)
    out, now = privacy.rescrub(stored, PII, applied, "dataset people")
    pd.testing.assert_series_equal(out["email"], stored["email"])  # never a hash of a hash
    assert "ssn" not in out and now == privacy.policy(PII, KEY)
    # Fully scrubbed already: no key is needed to reproduce a run from it.
    monkeypatch.delenv(privacy.KEY_ENV)
    again, same = privacy.rescrub(out, PII, now, "dataset people")
    pd.testing.assert_frame_equal(again, out)
    assert same == now


def test_rescrub_hashes_a_raw_pinned_column_and_refuses_mixing_keys(monkeypatch):
    monkeypatch.setenv(privacy.KEY_ENV, KEY.decode())
    out, now = privacy.rescrub(_people(), PII, {}, "dataset people")
    assert out["email"].tolist() == privacy.scrub_frame(_people(), PII, "p", KEY)["email"].tolist() and "ssn" not in out
    hashed_elsewhere = privacy.policy({"phone": "hash"}, OTHER)
    with pytest.raises(ConfigError, match=r"was hashed with key id .* but the configured key has id"):
        privacy.rescrub(_people(), PII, hashed_elsewhere, "dataset people")


def test_dates_and_timestamps_give_the_same_pseudonyms_on_both_paths():
    import datetime as dt

    frame = pd.DataFrame({
        "born": [dt.date(1980, 1, 2), None, dt.date(1990, 3, 4)],
        "seen": pd.to_datetime(["2020-01-01 10:00:00", None, "2021-05-05 00:00:00.123456"], format="ISO8601"),
        "seen_utc": pd.to_datetime(["2020-01-01", None, "2020-01-02"]).tz_localize("UTC"),
    })
    pii = dict.fromkeys(frame.columns, "hash")
    via_frame = tables.to_arrow(privacy.scrub_frame(frame, pii, "p", KEY))
    via_batch = pa.Table.from_batches([privacy.scrub_batch(tables.to_arrow(frame).to_batches()[0], pii, "p", KEY)])
    assert via_batch.equals(via_frame)
    assert via_frame.column("born")[0].as_py() == privacy.digest("1980-01-02", KEY)
