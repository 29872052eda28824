"""Postgres ingest and write-back against a real PostgreSQL server (testing_postgres)."""

import datetime as dt
import decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keel.components._common import postgres, tables
from keel.components._common.errors import ConfigError, DataError, StorageError
from testkit.postgres import PASSWORD


def sql(uri, *statements):
    import psycopg

    import os

    with psycopg.connect(uri, password=os.environ["PGPASSWORD"], autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def events(pg, request):
    """A table with every common column type, nulls included; 500 rows."""
    name = f"events_{request.node.name[-20:].strip('[]').replace('-', '_').lower()}"[:40]
    sql(pg, f"DROP TABLE IF EXISTS {name}",
        f"""CREATE TABLE {name} (id bigint, amount double precision, label text, at timestamptz, day date,
            ok boolean, price numeric(10,2), n int)""",
        f"""INSERT INTO {name} SELECT g, g * 1.5, CASE WHEN g % 7 = 0 THEN NULL ELSE 'label-' || (g % 5) END,
            TIMESTAMPTZ '2013-01-01 00:00:00+00' + g * INTERVAL '1 hour', DATE '2013-01-01' + (g % 30), g % 2 = 0,
            (g % 100) + 0.25, CASE WHEN g % 11 = 0 THEN NULL ELSE g END FROM generate_series(1, 500) g""")
    return pg, name


def test_a_table_streams_into_parquet_with_its_types_and_nulls(events, tmp_path):
    uri, name = events
    out = tmp_path / "raw.parquet"
    meta = tables.write_batches(postgres.stream(uri, postgres.table_query(name)), str(out))
    table = pq.read_table(out)
    assert meta["rows"] == table.num_rows == 500
    assert table.schema.field("id").type == pa.int64() and table.schema.field("amount").type == pa.float64()
    assert table.schema.field("at").type == pa.timestamp("us", tz="UTC") and table.schema.field("day").type == pa.date32()
    assert table.schema.field("ok").type == pa.bool_()
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows[7]["label"] is None and rows[8]["label"] == "label-3" and rows[11]["n"] is None
    assert rows[3]["at"] == dt.datetime(2013, 1, 1, 3, tzinfo=dt.timezone.utc) and rows[3]["day"] == dt.date(2013, 1, 4)
    assert decimal.Decimal(str(rows[3]["price"])) == decimal.Decimal("3.25")
    # The recorded hash is the hash of exactly what was written, and no driver metadata leaked into the file.
    assert meta["content_hash"] == tables.arrow_hash(table)
    assert not any(f.metadata for f in table.schema)


def test_small_batches_stream_and_hash_the_same_as_one(events, tmp_path):
    uri, name = events
    batches = list(postgres.stream(uri, postgres.table_query(name), batch_bytes=2048))
    assert len(batches) > 3  # streamed, not one buffer
    small = tables.write_batches(iter(batches), str(tmp_path / "a.parquet"))
    whole = tables.write_batches(postgres.stream(uri, postgres.table_query(name)), str(tmp_path / "b.parquet"))
    assert small["content_hash"] == whole["content_hash"] and small["rows"] == 500


def test_query_parameters_are_bound_as_values_never_as_sql(events, tmp_path):
    uri, name = events
    query = postgres.bind(f"SELECT id, label FROM {name} WHERE id <= %s AND label <> %s ORDER BY id", [20, "label-1"])
    got = pq.read_table(_write(uri, query, tmp_path)).to_pylist()
    assert [r["id"] for r in got] == [2, 3, 4, 5, 8, 9, 10, 12, 13, 15, 17, 18, 19, 20]
    hostile = postgres.bind(f"SELECT count(*) AS n FROM {name} WHERE label = %(label)s", {"label": f"x'; DROP TABLE {name}; --"})
    with pytest.raises(DataError, match="returned no rows|no rows"):
        _write(uri, hostile.replace("count(*) AS n", "id"), tmp_path)
    assert pq.read_table(_write(uri, postgres.table_query(name), tmp_path)).num_rows == 500  # still there


def _write(uri, query, tmp_path):
    out = tmp_path / "q.parquet"
    tables.write_batches(postgres.stream(uri, query), str(out), label="test query")
    return out


@pytest.mark.parametrize("query, params, message", [
    ("SELECT %s, %s", [1], "more %s placeholders than the 1"),
    ("SELECT %s", [1, 2], "2 parameters given"),
    ("SELECT %(a)s", {"b": 1}, "%(a)s, which data.params does not define"),
    ("SELECT %s", {"a": 1}, "is a mapping"),
    ("SELECT 1", "oops", "must be a list"),
])
def test_mismatched_parameters_are_refused_before_anything_runs(query, params, message):
    with pytest.raises(ConfigError, match="data.params") as err:
        postgres.bind(query, params)
    assert message in str(err.value)


def test_wrong_password_names_the_fix_and_never_echoes_the_password(postgres_server, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "not-the-password-xyz")
    with pytest.raises(StorageError, match="authentication failed; check the user in the URI and PGPASSWORD") as err:
        list(postgres.stream(postgres_server.uri, "SELECT 1"))
    assert "not-the-password-xyz" not in str(err.value) and PASSWORD not in str(err.value)


def test_an_unreachable_server_fails_within_the_connect_timeout(pg):
    from testkit.processes import free_port

    closed = f"postgresql://keel@127.0.0.1:{free_port()}/keel"
    with pytest.raises(StorageError, match="cannot connect .*check host, port, database"):
        list(postgres.stream(closed, "SELECT 1"))


def test_a_password_in_the_uri_is_refused_and_redacted():
    with pytest.raises(ConfigError, match="set PGPASSWORD") as err:
        postgres.connection_uri("postgresql://keel:hunter2@db:5432/keel")
    assert "hunter2" not in str(err.value) and "keel:***@db" in str(err.value)


@pytest.mark.parametrize("uri, message", [
    ("postgresql://keel@db:5432/", "names no database"),
    ("postgresql://keel@db:port/keel", "invalid port"),
    ("mysql://keel@db/keel", "is not a postgresql://"),
])
def test_malformed_uris_are_refused(uri, message):
    with pytest.raises(ConfigError, match=message):
        postgres.connection_uri(uri)


@pytest.mark.parametrize("query, message", [
    ("SELEC 1", "SQLSTATE 42601.*syntax error"),
    ("SELECT * FROM no_such_table", "SQLSTATE 42P01.*does not exist"),
    ("SELECT 1 / 0", "SQLSTATE 22012.*division by zero"),
])
def test_query_errors_carry_the_server_message_and_sqlstate(pg, query, message):
    with pytest.raises(DataError, match=message):
        list(postgres.stream(pg, query))


def test_an_empty_result_is_an_error_naming_the_source(events, tmp_path):
    uri, name = events
    with pytest.raises(DataError, match=r"the events query: returned no rows; check the table, query or filter"):
        tables.write_batches(postgres.stream(uri, f"SELECT * FROM {name} WHERE false"), str(tmp_path / "x.parquet"),
                             label="the events query")
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.parametrize("table", ["flights; drop table x", "a.b.c", "1abc", ""])
def test_table_names_are_checked_identifiers(table):
    with pytest.raises(ConfigError, match="data.table"):
        postgres.table_query(table)


# -- write-back -------------------------------------------------------------------------------------

def _partition(day: str, n: int, scale: float = 1.0) -> pa.Table:
    return pa.table({"day": [day] * n, "carrier": [f"c{i % 3}" for i in range(n)], "delay": [i * scale for i in range(n)]})


def test_write_back_replaces_a_partition_and_leaves_the_others(pg):
    table = "features_daily"
    sql(pg, f"DROP TABLE IF EXISTS {table}")
    first = postgres.write_partition(pg, table, _partition("2013-01-01", 5), partition_column="day", partition_value="2013-01-01")
    postgres.write_partition(pg, table, _partition("2013-01-02", 4), partition_column="day", partition_value="2013-01-02")
    again = postgres.write_partition(pg, table, _partition("2013-01-01", 3, 10.0), partition_column="day", partition_value="2013-01-01")
    assert first["rows_written"] == 5 and again == {"table": table, "rows_written": 3, "rows_replaced": 5,
                                                   "partition": {"day": "2013-01-01"}}
    rows = list(postgres.stream(pg, f"SELECT day, count(*) AS n, sum(delay) AS s FROM {table} GROUP BY day ORDER BY day"))
    got = pa.Table.from_batches(rows).to_pylist()
    assert got == [{"day": "2013-01-01", "n": 3, "s": 30.0}, {"day": "2013-01-02", "n": 4, "s": 6.0}]


def test_parallel_first_writes_to_a_new_table_all_land(pg):
    """Backfill partitions run in parallel; all of the first writers find no table, and all must succeed."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    table = "features_parallel"
    sql(pg, f"DROP TABLE IF EXISTS {table}")
    days = [f"2013-01-{d:02d}" for d in range(1, 13)]
    ready = threading.Barrier(len(days))
    real_columns = postgres.table_columns

    def columns_then_wait(conn, name):
        found = real_columns(conn, name)
        # Unserialized writers all get here having found no table, then all create it: the race.
        # Serialized ones never meet (the others wait on the table's lock), so the rendezvous is
        # abandoned and each goes on: a bound on a meeting, not a timing assertion.
        try:
            ready.wait(timeout=5)
        except threading.BrokenBarrierError:
            pass
        return found

    def write(day):
        return postgres.write_partition(pg, table, _partition(day, 3), partition_column="day", partition_value=day)

    postgres.table_columns = columns_then_wait
    try:
        with ThreadPoolExecutor(len(days)) as pool:
            results = list(pool.map(write, days))
    finally:
        postgres.table_columns = real_columns
    assert [r["rows_written"] for r in results] == [3] * len(days)
    count = pa.Table.from_batches(list(postgres.stream(pg, f"SELECT count(DISTINCT day) AS d, count(*) AS n FROM {table}")))
    assert count.to_pylist() == [{"d": len(days), "n": 3 * len(days)}]


def test_write_back_refuses_rows_outside_the_partition_and_changed_columns(pg):
    table = "features_checked"
    sql(pg, f"DROP TABLE IF EXISTS {table}")
    postgres.write_partition(pg, table, _partition("2013-01-01", 2), partition_column="day", partition_value="2013-01-01")
    with pytest.raises(DataError, match="fall outside the partition '2013-01-02'"):
        postgres.write_partition(pg, table, _partition("2013-01-01", 2), partition_column="day", partition_value="2013-01-02")
    changed = _partition("2013-01-03", 2).append_column("extra", pa.array([1, 2]))
    with pytest.raises(DataError, match=r"only in the data: \['extra'\]"):
        postgres.write_partition(pg, table, changed, partition_column="day", partition_value="2013-01-03")
    count = pa.Table.from_batches(list(postgres.stream(pg, f"SELECT count(*) AS n FROM {table}"))).to_pylist()
    assert count == [{"n": 2}]  # nothing half-written
