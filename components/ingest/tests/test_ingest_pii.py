"""data.pii at ingest: nothing stored (dataset version, raw artifact, record) holds a raw PII value."""

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from keel.components._common import datasets, privacy, tables
from keel.components._common.config import DataSection, TargetSection
from keel.components._common.errors import ConfigError, DataError
from keel.components.ingest.ingest import ingest, read_unpublished

KEY = "keel-test-pii-key-0123456789abcdef"
TARGET = TargetSection(column="y", task="binary")
PII = {"email": "hash", "ssn": "drop"}
N = 40
EMAILS = [f"zq-person-{i:04d}@example.org" for i in range(N)]
SSNS = [f"900-{i:02d}-{7000 + i:04d}" for i in range(N)]
RAW = [*EMAILS, *SSNS]


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.delenv(privacy.KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(privacy.KEY_ENV, KEY)
    return KEY.encode()


def _people() -> pd.DataFrame:
    email = list(EMAILS)
    email[3] = None  # a missing email stays missing
    return pd.DataFrame({"member": range(1000, 1000 + N), "email": email, "ssn": SSNS,
                         "x": [i * 0.5 for i in range(N)], "y": [0, 1] * (N // 2)})


def _csv(tmp_path, frame=None) -> str:
    path = tmp_path / "people.csv"
    (frame if frame is not None else _people()).to_csv(path, index=False)
    return str(path)


def _leaks(path, needles=RAW) -> list[str]:
    """The raw values found in a stored file: in its bytes, and in its decoded rows (Parquet is compressed)."""
    raw = Path(path).read_bytes()
    text = raw.decode("latin-1")
    if raw[:4] == b"PAR1":
        table = pq.read_table(path)
        text += " ".join(table.column_names) + table.to_pandas().to_csv()
    return [n for n in needles if n in text]


def _assert_nothing_stored_leaks(store, *, dropped="ssn"):
    """No raw value anywhere in the store; the dropped column named only by the records' `pii` policy."""
    files = [p for p in Path(store).rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert _leaks(path) == [], path
        if path.name == datasets.RECORD_FILE:
            record = json.loads(path.read_text())
            assert dropped not in json.dumps({k: v for k, v in record.items() if k != "pii"}), path
        else:
            assert _leaks(path, [dropped]) == [], path


def test_the_leak_check_finds_raw_values_when_they_are_there(tmp_path):
    """The control for the tests below: an unscrubbed ingest is caught, in compressed Parquet too."""
    meta = ingest(DataSection(source=_csv(tmp_path)), TARGET, str(tmp_path / "raw"), store=str(tmp_path / "store"))
    assert set(_leaks(tmp_path / "raw")) == set(RAW) - {EMAILS[3]}
    assert _leaks(Path(meta["dataset"]["uri"]))


def test_a_csv_ingest_stores_no_raw_pii(tmp_path, key):
    store = tmp_path / "store"
    data = DataSection(source=_csv(tmp_path), pii=PII)
    meta = ingest(data, TARGET, str(tmp_path / "raw"), store=str(store))
    _assert_nothing_stored_leaks(store)
    assert _leaks(tmp_path / "raw", [*RAW, "ssn"]) == []
    raw = tables.read_parquet(str(tmp_path / "raw"))
    assert raw.columns.tolist() == ["member", "email", "x", "y"]
    assert raw["email"][0] == privacy.digest(EMAILS[0], key) and raw["email"].isna().tolist()[3]
    assert raw["email"].nunique() == N - 1  # one pseudonym per person: still countable and joinable
    expected = {"columns": {"email": "hash", "ssn": "drop"}, "algorithm": "hmac-sha256", "key_id": privacy.key_id(key)}
    [record] = datasets.versions(str(store))
    assert record["pii"] == expected and meta["pii"] == expected
    assert "ssn" not in record["schema"] and record["schema"]["email"] == "object"
    assert KEY not in json.dumps(record) and KEY not in json.dumps(meta)
    # The CLI's pre-flight read: scrubbed the same way, nothing stored.
    preflight = read_unpublished(data)
    assert "ssn" not in preflight and preflight["email"].tolist()[:3] == raw["email"].tolist()[:3]


def test_without_a_key_nothing_is_read_or_stored(tmp_path, monkeypatch):
    monkeypatch.delenv(privacy.KEY_ENV)
    with pytest.raises(ConfigError, match=r"data\.pii\.email: hash needs KEEL_PII_KEY or KEEL_PII_KEY_FILE"):
        ingest(DataSection(source=_csv(tmp_path), pii=PII), TARGET, str(tmp_path / "raw"), store=str(tmp_path / "store"))
    assert not (tmp_path / "store").exists() and not (tmp_path / "raw").exists()


def test_a_pii_column_missing_from_the_source_is_named(tmp_path):
    with pytest.raises(DataError, match=r"data\.pii: \['phone'\] not in .*people\.csv; columns are: member, email, ssn, x, y"):
        ingest(DataSection(source=_csv(tmp_path), pii={"phone": "drop"}), TARGET, str(tmp_path / "raw"))


def test_the_target_cannot_be_pii(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.pii\.y: is the target column"):
        ingest(DataSection(source=_csv(tmp_path), pii={"y": "hash"}), TARGET, str(tmp_path / "raw"))


def test_a_refused_table_quotes_no_pii(tmp_path):
    """Errors after the scrub (here the all-null check) see only the scrubbed table."""
    frame = _people()
    frame["email"] = frame["email"].str.upper()
    frame["empty"] = None
    with pytest.raises(DataError) as err:
        ingest(DataSection(source=_csv(tmp_path, frame), pii=PII), TARGET, str(tmp_path / "raw"), store=str(tmp_path / "s"))
    assert "['empty'] are entirely null" in str(err.value)
    assert "@example.org" not in str(err.value).lower() and "900-" not in str(err.value)


def test_a_pinned_version_stored_raw_is_scrubbed_on_load(tmp_path, key):
    """A version stored before data.pii listed its columns stays as it is; the run gets it scrubbed."""
    store = str(tmp_path / "store")
    first = ingest(DataSection(source=_csv(tmp_path)), TARGET, str(tmp_path / "raw0"), store=store)
    version = first["dataset"]["version"]
    pinned = DataSection(source="unused.csv", name="people", version=version[:16], pii=PII)
    meta = ingest(pinned, TARGET, str(tmp_path / "raw"), store=store)
    assert _leaks(tmp_path / "raw", [*RAW, "ssn"]) == []
    assert meta["dataset"]["version"] == version and meta["pii"] == privacy.policy(PII, key)
    assert tables.read_parquet(str(tmp_path / "raw"))["email"][0] == privacy.digest(EMAILS[0], key)


def test_a_pinned_scrubbed_version_is_not_hashed_again(tmp_path, key, monkeypatch):
    store = str(tmp_path / "store")
    data = DataSection(source=_csv(tmp_path), pii=PII)
    first = ingest(data, TARGET, str(tmp_path / "raw1"), store=store)
    # Reproducing the run from the pinned version needs no key: nothing is left to hash.
    monkeypatch.delenv(privacy.KEY_ENV)
    again = ingest(data.model_copy(update={"version": first["dataset"]["version"], "name": "people"}), TARGET,
                   str(tmp_path / "raw2"), store=store)
    assert again["content_hash"] == first["content_hash"] and again["pii"] == first["pii"]
    # A key other than the version's, where a column must be hashed now: refused, not mixed.
    monkeypatch.setenv(privacy.KEY_ENV, "another-key-entirely-0123456789")
    more = data.model_copy(update={"version": first["dataset"]["version"], "name": "people", "pii": {**PII, "member": "hash"}})
    with pytest.raises(ConfigError, match=r"was hashed with key id .* but the configured key has id"):
        ingest(more, TARGET, str(tmp_path / "raw3"), store=store)


def test_a_postgres_source_is_scrubbed_in_the_stream(pg, tmp_path, key):
    """The rows go from the driver through the scrub batch by batch; CSV and Postgres give the same pseudonyms."""
    from keel.components._common import postgres

    people = _people()
    in_db = people.assign(member=people["member"].astype(str))  # the same ids, as text in the database
    postgres.write_partition(pg, "people_pii", tables.to_arrow(in_db))
    store = tmp_path / "store"
    pii = {**PII, "member": "hash"}
    meta = ingest(DataSection(source=pg, table="people_pii", pii=pii), TARGET, str(tmp_path / "raw"), store=str(store))
    _assert_nothing_stored_leaks(store)
    assert _leaks(tmp_path / "raw", [*RAW, "ssn"]) == []
    [record] = datasets.versions(str(store))
    assert record["pii"]["columns"] == dict(sorted(pii.items())) and meta["dataset"]["version"] == record["version"]
    from_db = tables.read_parquet(str(tmp_path / "raw"))
    ingest(DataSection(source=_csv(tmp_path), pii=pii), TARGET, str(tmp_path / "csv"))
    from_csv = tables.read_parquet(str(tmp_path / "csv"))
    assert from_db["member"].tolist() == from_csv["member"].tolist()  # "1000" in Postgres, 1000 in the CSV
    assert from_db["email"].tolist() == from_csv["email"].tolist()


def test_a_mongodb_collection_is_scrubbed_by_its_flattened_field_names(mongo_server, tmp_path, key):
    """A nested identifier is named as the flattened column (`contact.email`) the run sees."""
    import pymongo

    client = pymongo.MongoClient(mongo_server.uri)
    db = client["keel_pii"]
    db.people.drop()
    db.people.insert_many([{"_id": i, "name": f"Zqname {i}", "contact": {"email": EMAILS[i], "city": "Oslo"},
                            "x": i, "y": i % 2} for i in range(N)])
    client.close()
    data = DataSection(source=mongo_server.uri_for("keel_pii"), collection="people", projection={"_id": 0},
                       pii={"contact.email": "hash", "name": "drop"})
    store = tmp_path / "store"
    ingest(data, TARGET, str(tmp_path / "raw"), store=str(store))
    _assert_nothing_stored_leaks(store, dropped="Zqname")
    raw = tables.read_parquet(str(tmp_path / "raw"))
    assert "name" not in raw and raw["contact.email"].tolist() == [privacy.digest(e, key) for e in EMAILS]
    assert _leaks(tmp_path / "raw", [*EMAILS, "Zqname"]) == []
